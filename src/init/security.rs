//! Capabilities and rlimits as data: OCI names → kernel numbers, and the sets to apply.

use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{Capability, LinuxCapabilities, PosixRlimitType, Process};

use super::error::{InitError, Result};

/// Kernel capability numbers, in order (CAP_CHOWN = 0 ...).
const CAPABILITY_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The kernel number of a capability.
pub fn capability_number(cap: &Capability) -> Option<u8> {
    let name = serde_json::to_value(cap).ok()?;
    let name = name.as_str()?;
    CAPABILITY_NAMES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u8::try_from(i).ok())
}

/// What to do to the capability state, computed before any change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapabilityPlan {
    /// Capabilities to remove from the bounding set (ascending).
    pub drop_bounding: Vec<u8>,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    /// Capabilities to raise in the ambient set (ascending).
    pub ambient: Vec<u8>,
}

fn mask(set: &Option<oci_spec::runtime::Capabilities>, allowed: u64) -> u64 {
    set.iter()
        .flatten()
        .filter_map(capability_number)
        .filter(|n| *n < 64)
        .fold(0u64, |m, n| m | (1 << n))
        & allowed
}

fn bits(mask: u64) -> Vec<u8> {
    (0u8..64).filter(|n| mask & (1 << n) != 0).collect()
}

/// `last_cap` is the kernel's highest capability (/proc/sys/kernel/cap_last_cap);
/// `held` the permitted set init has: a capability it does not hold cannot be granted
/// (this machine lacks CAP_SYS_RESOURCE), so it is left out rather than failing capset.
pub fn plan_capabilities(caps: &LinuxCapabilities, last_cap: u8, held: u64) -> CapabilityPlan {
    let known = if last_cap >= 63 {
        u64::MAX
    } else {
        (1u64 << (last_cap + 1)) - 1
    };
    let allowed = known & held;
    let bounding = mask(caps.bounding(), known);
    let permitted = mask(caps.permitted(), allowed) & bounding;
    let inheritable = mask(caps.inheritable(), allowed) & bounding;
    let effective = mask(caps.effective(), allowed) & permitted;
    // Ambient capabilities must be permitted and inheritable.
    let ambient = mask(caps.ambient(), allowed) & permitted & inheritable;
    CapabilityPlan {
        drop_bounding: bits(known & !bounding),
        effective,
        permitted,
        inheritable,
        ambient: bits(ambient),
    }
}

/// The libc resource number of an OCI rlimit.
pub fn rlimit_resource(typ: PosixRlimitType) -> Option<i32> {
    use PosixRlimitType::*;
    let resource = match typ {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    i32::try_from(resource).ok()
}

/// Asks the kernel to switch to the process's AppArmor profile at the coming execve.
pub fn apply_apparmor(process: &Process) -> Result<()> {
    let Some(profile) = process
        .apparmor_profile()
        .as_deref()
        .filter(|p| !p.is_empty())
    else {
        return Ok(());
    };
    let step = format!("set apparmor profile {profile}");
    let value = format!("exec {profile}");
    // The stacking-aware file first (Linux 5.8+), then the older shared one.
    let result = std::fs::write("/proc/self/attr/apparmor/exec", &value)
        .or_else(|_| std::fs::write("/proc/self/attr/exec", &value));
    result.map_err(|e| InitError::io(&step, &e))
}

/// Applies the process's rlimits, no_new_privs, user, groups and capabilities, in the
/// order that keeps init able to do each step: bounding set while still root, then the
/// user change with PR_SET_KEEPCAPS (so the permitted set survives setuid), then the
/// final sets and the ambient ones. `seccomp` (a filter for a process without
/// no_new_privs) is loaded before the user change, while init still has CAP_SYS_ADMIN.
/// `user_ns` is joined after the rlimits (raising them needs the host's rights) and
/// before everything else (the capabilities are then the namespace's).
pub fn apply_process_identity(
    process: &Process,
    seccomp: Option<&crate::linux::seccomp::Filter>,
    user_ns: Option<std::os::fd::OwnedFd>,
) -> Result<()> {
    for rlimit in process.rlimits().iter().flatten() {
        let step = format!("set rlimit {:?}", rlimit.typ());
        let resource =
            rlimit_resource(rlimit.typ()).ok_or_else(|| InitError::new(&step, "unknown"))?;
        let new = libc::rlimit {
            rlim_cur: rlimit.soft(),
            rlim_max: rlimit.hard(),
        };
        // SAFETY: prlimit64 on this process with a valid struct and no old-value pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                libc::c_long::from(resource),
                &new as *const libc::rlimit,
                std::ptr::null_mut::<libc::rlimit>(),
            )
        };
        if rc != 0 {
            return Err(InitError::io(&step, &std::io::Error::last_os_error()));
        }
    }

    if let Some(fd) = user_ns {
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWUSER)
            .map_err(|e| InitError::errno("join userns", e))?;
    }

    let plan = match process.capabilities() {
        Some(caps) => {
            let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .ok()
                .and_then(|t| t.trim().parse::<u8>().ok())
                .unwrap_or(40);
            let held = rustix::thread::capabilities(None)
                .map_err(|e| InitError::io("read capabilities", &e.into()))?
                .permitted
                .bits();
            Some(plan_capabilities(caps, last_cap, held))
        }
        None => None,
    };
    if let Some(plan) = &plan {
        for cap in &plan.drop_bounding {
            // SAFETY: prctl with integer arguments only.
            let rc =
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(*cap), 0, 0, 0) };
            // EINVAL: a capability this kernel does not know.
            if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(InitError::io(
                    format!("drop capability {cap} from the bounding set"),
                    &std::io::Error::last_os_error(),
                ));
            }
        }
        rustix::thread::set_keep_capabilities(true)
            .map_err(|e| InitError::io("keep capabilities", &e.into()))?;
    }

    if let Some(filter) = seccomp {
        filter.load().map_err(|e| {
            InitError::new("load the seccomp profile", super::error::describe_chain(&e))
        })?;
    }

    let user = process.user();
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    let uid = Uid::from_raw(user.uid());
    let gid = Gid::from_raw(user.gid());
    let step = format!("set user {}:{}", user.uid(), user.gid());
    nix::unistd::setgroups(&groups).map_err(|e| InitError::errno(format!("{step} (groups)"), e))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| InitError::errno(&step, e))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| InitError::errno(&step, e))?;

    if let Some(plan) = &plan {
        rustix::thread::set_keep_capabilities(false)
            .map_err(|e| InitError::io("keep capabilities", &e.into()))?;
        let sets = rustix::thread::CapabilitySets {
            effective: rustix::thread::CapabilitySet::from_bits_retain(plan.effective),
            permitted: rustix::thread::CapabilitySet::from_bits_retain(plan.permitted),
            inheritable: rustix::thread::CapabilitySet::from_bits_retain(plan.inheritable),
        };
        rustix::thread::set_capabilities(None, sets)
            .map_err(|e| InitError::io("set capabilities", &e.into()))?;
        for cap in &plan.ambient {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    libc::c_ulong::from(*cap),
                    0,
                    0,
                )
            };
            if rc != 0 {
                return Err(InitError::io(
                    format!("raise ambient capability {cap}"),
                    &std::io::Error::last_os_error(),
                ));
            }
        }
    }
    if process.no_new_privileges() == Some(true) {
        rustix::thread::set_no_new_privs(true)
            .map_err(|e| InitError::io("set no_new_privs", &e.into()))?;
    }
    let umask = user.umask().unwrap_or(0o022) & 0o777;
    // SAFETY: umask cannot fail; init is single-threaded, the mask is its own.
    unsafe { libc::umask(umask as libc::mode_t) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(json: &str) -> LinuxCapabilities {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn names_map_to_kernel_numbers() {
        assert_eq!(capability_number(&Capability::Chown), Some(0));
        assert_eq!(capability_number(&Capability::NetBindService), Some(10));
        assert_eq!(capability_number(&Capability::SysAdmin), Some(21));
        assert_eq!(capability_number(&Capability::CheckpointRestore), Some(40));
    }

    #[test]
    fn sets_are_computed_from_the_spec() {
        let c = caps(
            r#"{"bounding":["CAP_CHOWN","CAP_KILL","CAP_NET_BIND_SERVICE","CAP_SYS_RESOURCE"],
                "effective":["CAP_CHOWN","CAP_KILL","CAP_SYS_ADMIN"],
                "permitted":["CAP_CHOWN","CAP_KILL","CAP_NET_BIND_SERVICE","CAP_SYS_RESOURCE"],
                "inheritable":["CAP_NET_BIND_SERVICE"],
                "ambient":["CAP_NET_BIND_SERVICE","CAP_KILL"]}"#,
        );
        // Held: everything but CAP_SYS_RESOURCE (24), like this machine.
        let held = ((1u64 << 41) - 1) & !(1 << 24);
        let plan = plan_capabilities(&c, 40, held);
        assert_eq!(plan.permitted, 1 | (1 << 5) | (1 << 10));
        // SYS_ADMIN is not permitted, so not effective either.
        assert_eq!(plan.effective, 1 | (1 << 5));
        assert_eq!(plan.inheritable, 1 << 10);
        // KILL is not inheritable: it cannot be ambient.
        assert_eq!(plan.ambient, vec![10]);
        let kept = [0u8, 5, 10, 24];
        let expected: Vec<u8> = (0..=40).filter(|n| !kept.contains(n)).collect();
        assert_eq!(plan.drop_bounding, expected);
    }

    #[test]
    fn no_capabilities_drops_everything() {
        let plan = plan_capabilities(&caps("{}"), 40, u64::MAX);
        assert_eq!(plan.drop_bounding.len(), 41);
        assert_eq!(plan.permitted, 0);
        assert!(plan.ambient.is_empty());
    }

    #[test]
    fn rlimits_map_to_libc() {
        assert_eq!(
            rlimit_resource(PosixRlimitType::RlimitNofile),
            Some(libc::RLIMIT_NOFILE as i32)
        );
        assert_eq!(
            rlimit_resource(PosixRlimitType::RlimitCore),
            Some(libc::RLIMIT_CORE as i32)
        );
    }
}
