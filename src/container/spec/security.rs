//! Privileges of a container: capabilities, AppArmor, and the paths masked or made
//! read-only for unprivileged containers.

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilitiesBuilder};

use super::error::SpecError;

/// Paths hidden from unprivileged containers (as every major runtime does).
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths unprivileged containers see read-only.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The capabilities of an unprivileged container unless the CRI config adds or drops some.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability the kernel defines (through CAP_CHECKPOINT_RESTORE, Linux 5.9).
pub const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

pub(super) fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    use serde::Deserialize;
    use serde::de::IntoDeserializer;
    // oci-spec's deserializer accepts any case, with or without the CAP_ prefix.
    let de: serde::de::value::StrDeserializer<serde::de::value::Error> = name.into_deserializer();
    Capability::deserialize(de).map_err(|_| SpecError::UnknownCapability(name.to_owned()))
}

pub(super) fn is_all(name: &str) -> bool {
    name.eq_ignore_ascii_case("ALL") || name.eq_ignore_ascii_case("CAP_ALL")
}

/// The default set, or every capability when privileged; then "ALL" adds or drops
/// everything, and the named ones are added, then dropped (so add ALL + drop X = all but X).
/// Ambient capabilities go into the ambient and inheritable sets.
pub(super) fn capabilities(
    security: &crate::container::config::SecurityContext,
) -> Result<oci_spec::runtime::LinuxCapabilities, SpecError> {
    let caps = &security.capabilities;
    let set: Capabilities = if security.privileged {
        ALL_CAPABILITIES.into_iter().collect()
    } else {
        let mut set: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
        if caps.add.iter().any(|c| is_all(c)) {
            set.extend(ALL_CAPABILITIES);
        }
        if caps.drop.iter().any(|c| is_all(c)) {
            set.clear();
        }
        for name in caps.add.iter().filter(|c| !is_all(c)) {
            set.insert(parse_capability(name)?);
        }
        for name in caps.drop.iter().filter(|c| !is_all(c)) {
            set.remove(&parse_capability(name)?);
        }
        set
    };
    let ambient: Capabilities = caps
        .add_ambient
        .iter()
        .map(|c| parse_capability(c))
        .collect::<Result<_, _>>()?;
    let mut caps = LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .build()?;
    // Set both explicitly: the builder would fill them with oci-spec's default set.
    let ambient = (!ambient.is_empty()).then_some(ambient);
    caps.set_inheritable(ambient.clone());
    caps.set_ambient(ambient);
    Ok(caps)
}

/// The AppArmor profile to exec into. Unconfined or privileged: none. RuntimeDefault or
/// no choice: berth's default profile where the host enforces AppArmor (none where it
/// does not: nothing could enforce it), refused when berth could not load it, rather than
/// run unconfined in silence. A named (Localhost) profile on a host without AppArmor is
/// refused, as it cannot be honoured; whether it is loaded the caller checks (I/O).
pub(super) fn apparmor_profile(
    security: &crate::container::config::SecurityContext,
    host: &super::AppArmorHost,
) -> Result<Option<String>, SpecError> {
    use crate::container::config::ProfileType;
    if security.privileged {
        return Ok(None);
    }
    let (profile_type, localhost_ref) = match security.apparmor.as_ref() {
        Some(p) => (p.profile_type, p.localhost_ref.as_str()),
        None => (ProfileType::RuntimeDefault, ""),
    };
    match (profile_type, host) {
        (ProfileType::Unconfined, _) => Ok(None),
        (ProfileType::RuntimeDefault, super::AppArmorHost::Disabled) => Ok(None),
        (ProfileType::RuntimeDefault, super::AppArmorHost::Enabled { default_profile }) => {
            match default_profile {
                Ok(name) => Ok(Some(name.clone())),
                Err(reason) => Err(SpecError::AppArmorNoDefault(reason.clone())),
            }
        }
        (ProfileType::Localhost, _) if localhost_ref.is_empty() => {
            Err(SpecError::AppArmorMissingRef)
        }
        (ProfileType::Localhost, _) if !is_profile_name(localhost_ref) => {
            Err(SpecError::AppArmorBadName(localhost_ref.to_owned()))
        }
        (ProfileType::Localhost, super::AppArmorHost::Disabled) => {
            Err(SpecError::NoAppArmor(localhost_ref.to_owned()))
        }
        (ProfileType::Localhost, _) => Ok(Some(localhost_ref.to_owned())),
    }
}

/// A profile name berth passes to the kernel: no path (a `/` would name a profile by the
/// program it attaches to, or a child profile), no namespace (`:`), no spaces or control
/// characters that the `exec <name>` request cannot carry.
pub fn is_profile_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+@".contains(&b))
}
