//! The running kernel: the floor berth needs, and the features above it that berth uses
//! when present (with an equivalent, or a per-request refusal, when not).

use std::fmt;

/// A kernel release, major.minor (the patch level adds no feature berth uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl KernelVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        KernelVersion { major, minor }
    }

    /// Parses `uname -r` text: `6.1.0-50-amd64`, `5.15.0-91-generic`, `6.12.43+deb12-amd64`.
    pub fn parse(release: &str) -> Option<Self> {
        let mut parts = release.trim().splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor_text = parts.next()?;
        let digits: String = minor_text
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        Some(KernelVersion::new(major, digits.parse().ok()?))
    }

    /// The running kernel's version (one small file read: cheap enough for init).
    pub fn running() -> Option<Self> {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|r| Self::parse(&r))
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The oldest kernel berth runs on (Ubuntu 22.04's; Debian 12 and Amazon Linux 2023 run
/// 6.1). Everything in [`FLOOR_FEATURES`] is there from this version on.
pub const FLOOR: KernelVersion = KernelVersion::new(5, 15);

/// What berth cannot work without, and the kernel that added it: named when a kernel
/// below the floor is refused.
pub const FLOOR_FEATURES: &[(&str, KernelVersion)] = &[
    ("pidfd_open (process handles)", KernelVersion::new(5, 3)),
    (
        "openat2 RESOLVE_IN_ROOT (mounts inside the rootfs)",
        KernelVersion::new(5, 6),
    ),
    ("close_range", KernelVersion::new(5, 9)),
    (
        "mount_setattr (recursive read-only mounts, id-mapped mounts)",
        KernelVersion::new(5, 12),
    ),
    (
        "cgroup.kill (cgroup v2 teardown)",
        KernelVersion::new(5, 14),
    ),
];

/// overlayfs's `lowerdir+` (one layer per fsconfig call, no option string limit).
pub const OVERLAY_LOWERDIR_PLUS: KernelVersion = KernelVersion::new(6, 8);
/// overlayfs over id-mapped lower layers, which a pod in its own user namespace needs.
pub const OVERLAY_IDMAPPED_LAYERS: KernelVersion = KernelVersion::new(5, 19);

/// Refuses a kernel below the floor, naming what it lacks.
pub fn check_floor(running: KernelVersion) -> Result<(), String> {
    if running >= FLOOR {
        return Ok(());
    }
    let missing: Vec<String> = FLOOR_FEATURES
        .iter()
        .filter(|(_, since)| running < *since)
        .map(|(name, since)| format!("{name} (Linux {since})"))
        .collect();
    let lacks = if missing.is_empty() {
        String::new()
    } else {
        format!("; it lacks {}", missing.join(", "))
    };
    Err(format!(
        "kernel {running} is older than {FLOOR}, the oldest berth runs on{lacks}"
    ))
}

/// Whether overlayfs takes `lowerdir+` on this kernel (unknown versions: assume not, the
/// classic option works everywhere).
pub fn overlay_lowerdir_plus() -> bool {
    KernelVersion::running().is_some_and(|v| v >= OVERLAY_LOWERDIR_PLUS)
}

/// Why a pod in its own user namespace cannot run here, if it cannot.
pub fn userns_pods_unsupported() -> Option<String> {
    let running = KernelVersion::running()?;
    (running < OVERLAY_IDMAPPED_LAYERS).then(|| {
        format!(
            "userns_options: a pod in its own user namespace needs overlayfs over id-mapped \
             layers (Linux {OVERLAY_IDMAPPED_LAYERS}); this kernel is {running}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_releases_parse() {
        assert_eq!(
            KernelVersion::parse("6.1.0-50-amd64"),
            Some(KernelVersion::new(6, 1))
        );
        assert_eq!(
            KernelVersion::parse("6.12.43+deb12-amd64"),
            Some(KernelVersion::new(6, 12))
        );
        assert_eq!(
            KernelVersion::parse("5.15.0-91-generic\n"),
            Some(KernelVersion::new(5, 15))
        );
        assert_eq!(
            KernelVersion::parse("6.8-rc1"),
            Some(KernelVersion::new(6, 8))
        );
        assert_eq!(KernelVersion::parse("garbage"), None);
    }

    #[test]
    fn kernels_from_the_floor_up_pass_and_older_ones_name_what_they_lack() {
        assert!(check_floor(KernelVersion::new(5, 15)).is_ok());
        assert!(check_floor(KernelVersion::new(6, 1)).is_ok());
        let err = check_floor(KernelVersion::new(5, 10)).unwrap_err();
        assert!(err.contains("5.10 is older than 5.15"), "{err}");
        assert!(err.contains("cgroup.kill"), "{err}");
        assert!(err.contains("mount_setattr"), "{err}");
        assert!(!err.contains("close_range"), "5.10 has close_range: {err}");
    }

    #[test]
    fn the_running_kernel_is_known() {
        assert!(KernelVersion::running().is_some());
    }
}
