//! The OCI runtime spec of a container, built as a pure function of the CRI config, the image
//! config, the pod sandbox and a few facts the caller looked up (the image's /etc/passwd and
//! /etc/group, host device numbers, a target container's pid). `berth init` applies it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDevice,
    LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResources, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use crate::container::config::{
    ContainerConfig, ContainerResources, MountPropagation, NamespaceMode,
};
use crate::container::users::{self, IdOrName, UserError, UserSpec};
use crate::error::{Error, ErrorKind};

/// The OCI runtime spec version berth writes.
pub const OCI_VERSION: &str = "1.2.0";
/// PATH when neither the image nor the CRI config sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const ANNOTATION_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
pub const ANNOTATION_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

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

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command specified")]
    NoCommand,
    #[error("user: {0}")]
    User(#[source] UserError),
    #[error("image USER {user:?}: {source}")]
    ImageUser {
        user: String,
        #[source]
        source: UserError,
    },
    #[error("run_as_user/run_as_group: {0} is not a valid id")]
    InvalidId(i64),
    #[error("supplemental_groups: {0} is not a valid gid")]
    InvalidGid(i64),
    #[error("mount {container_path}: {reason}")]
    BadMount {
        container_path: String,
        reason: String,
    },
    #[error("device {host_path}: {reason}")]
    BadDevice { host_path: String, reason: String },
    #[error("apparmor profile {0:?}: AppArmor is not enabled on this host")]
    NoAppArmor(String),
    #[error("apparmor: localhost_ref is required with profile type Localhost")]
    AppArmorMissingRef,
    #[error("privileged: not possible in a pod with its own user namespace")]
    PrivilegedInUserNamespace,
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("pid namespace of target container {0:?}: the container is not running")]
    NoTargetPid(String),
    #[error(transparent)]
    Seccomp(#[from] crate::container::seccomp::SeccompError),
    #[error("building the OCI spec")]
    Oci(#[from] oci_spec::OciSpecError),
}

impl From<SpecError> for Error {
    fn from(err: SpecError) -> Self {
        let kind = match &err {
            SpecError::ImageUser { .. } | SpecError::NoTargetPid(_) => {
                ErrorKind::FailedPrecondition
            }
            SpecError::Oci(_) => ErrorKind::Internal,
            _ => ErrorKind::InvalidArgument,
        };
        Error::with_source(kind, "building the container spec", err)
    }
}

/// What the spec needs to know about the pod sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SandboxInfo {
    pub id: String,
    /// The pod's hostname (the pause process's UTS namespace already has it).
    pub hostname: String,
    pub pause_pid: u32,
    /// The pinned pod netns; None only for host-network pods.
    pub netns_path: Option<PathBuf>,
    pub host_ipc: bool,
    /// Holds `hostname`, `hosts` and `resolv.conf`.
    pub pod_files_dir: PathBuf,
    /// The pod cgroup (cgroupfs path relative to each hierarchy root).
    pub pod_cgroup: String,
    /// The pod's /dev/shm to bind (for host IPC: the host's /dev/shm); None: a private tmpfs.
    pub shm_path: Option<PathBuf>,
    pub runtime_handler: String,
    /// The pod's own user namespace (the pause process's), None for the host's.
    pub userns: Option<crate::sandbox::spec::UserNamespace>,
}

/// A host device's identity, looked up by the caller (`host_device`) for every CRI device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostDevice {
    pub block: bool,
    pub major: i64,
    pub minor: i64,
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Stats a device node on the host (following symlinks, as /dev/disk/by-* links need).
/// Blocking: call it off the async executor.
pub fn host_device(path: &Path) -> io::Result<HostDevice> {
    let meta = std::fs::metadata(path)?;
    let ft = meta.file_type();
    if !ft.is_char_device() && !ft.is_block_device() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a character or block device",
        ));
    }
    let rdev = meta.rdev();
    Ok(HostDevice {
        block: ft.is_block_device(),
        major: i64::from(rustix::fs::major(rdev)),
        minor: i64::from(rustix::fs::minor(rdev)),
        file_mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// Directories of /dev that hold no device of the host's own (per-mount-namespace
/// filesystems and udev's state).
const SKIPPED_DEV_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
/// Device nodes every container gets anyway (bound from the host by init) or that belong
/// to its own terminal.
const CONTAINER_OWN_DEVICES: [&str; 8] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/console",
    "/dev/ptmx",
];

/// Every device node under the host's /dev, by path: what a privileged container gets.
/// Blocking: call it off the async executor.
pub fn all_host_devices() -> io::Result<BTreeMap<String, HostDevice>> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![PathBuf::from("/dev")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let ft = entry.file_type()?;
            if ft.is_dir() {
                let name = entry.file_name();
                if !SKIPPED_DEV_DIRS.iter().any(|s| name == *s) {
                    dirs.push(path);
                }
            } else if ft.is_char_device() || ft.is_block_device() {
                let key = path.to_string_lossy().to_string();
                if !CONTAINER_OWN_DEVICES.contains(&key.as_str()) {
                    // A node that vanished while walking is not the container's business.
                    if let Ok(device) = host_device(&path) {
                        found.insert(key, device);
                    }
                }
            }
        }
    }
    Ok(found)
}

/// Runtime-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeDefaults {
    /// The lowest oom_score_adj berth may give (its own: without CAP_SYS_RESOURCE a process
    /// cannot go below it).
    pub min_oom_score_adj: i32,
    /// RLIMIT_NOFILE, soft and hard.
    pub nofile: u64,
    /// The host enforces AppArmor (`host_has_apparmor`).
    pub apparmor: bool,
}

/// Whether the kernel has AppArmor enabled (what critest and the kubelet check too).
pub fn host_has_apparmor() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.starts_with('Y'))
}

impl Default for RuntimeDefaults {
    fn default() -> Self {
        RuntimeDefaults {
            min_oom_score_adj: -1000,
            nofile: 1_048_576,
            apparmor: false,
        }
    }
}

/// Everything `build_spec` reads.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub container_id: &'a str,
    pub config: &'a ContainerConfig,
    pub image: &'a ImageConfiguration,
    pub sandbox: &'a SandboxInfo,
    /// `<state>/containers/<id>/bundle`; the rootfs is `<bundle>/rootfs`.
    pub bundle_dir: &'a Path,
    /// The image's /etc/passwd and /etc/group (`users::read_image_file`), None when absent.
    pub passwd: Option<&'a str>,
    pub group: Option<&'a str>,
    /// The pid of the container named by `namespaces.target_id` (pid mode TARGET).
    pub target_pid: Option<u32>,
    /// `host_device` of each CRI device's host_path.
    pub host_devices: &'a BTreeMap<String, HostDevice>,
    pub defaults: &'a RuntimeDefaults,
    /// The Localhost seccomp profile file's contents (`seccomp::read_localhost`).
    pub seccomp_localhost: Option<&'a str>,
}

/// Builds the container's OCI runtime spec.
pub fn build_spec(input: &SpecInput) -> Result<Spec, SpecError> {
    let config = input.config;
    let security = &config.security;
    let image = input.image.config().clone().unwrap_or_default();

    let args = process_args(
        &config.command,
        &config.args,
        image.entrypoint().as_deref().unwrap_or_default(),
        image.cmd().as_deref().unwrap_or_default(),
    )?;
    let user = resolve_user(input, image.user().as_deref().unwrap_or_default())?;
    let env = process_env(
        &input.sandbox.hostname,
        image.env().as_deref().unwrap_or_default(),
        &config.envs,
        user.home.as_deref(),
    );
    let cwd = working_dir(&config.working_dir, image.working_dir().as_deref());
    let capabilities = capabilities(security)?;
    let seccomp = crate::container::seccomp::container_seccomp(
        security.seccomp.as_ref(),
        security.privileged,
        &capabilities.bounding().clone().unwrap_or_default(),
        input.seccomp_localhost,
    )?;

    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build()?,
        )
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(input.defaults.nofile)
                .hard(input.defaults.nofile)
                .build()?,
        ])
        .no_new_privileges(security.no_new_privs)
        .build()?;
    process.set_apparmor_profile(apparmor_profile(security, input.defaults.apparmor)?);
    process.set_oom_score_adj(Some(oom_score_adj(
        config.resources.oom_score_adj,
        input.defaults.min_oom_score_adj,
    )));

    let (masked, readonly) = if security.privileged {
        (Vec::new(), Vec::new())
    } else {
        (
            security
                .masked_paths
                .clone()
                .unwrap_or_else(|| DEFAULT_MASKED_PATHS.map(String::from).to_vec()),
            security
                .readonly_paths
                .clone()
                .unwrap_or_else(|| DEFAULT_READONLY_PATHS.map(String::from).to_vec()),
        )
    };

    let mut resources = linux_resources(&config.resources)?;
    let (devices, device_rules) = devices(input)?;
    resources.set_devices(Some(device_rules));

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(input)?)
        .cgroups_path(PathBuf::from(format!(
            "{}/{}",
            input.sandbox.pod_cgroup.trim_end_matches('/'),
            input.container_id
        )))
        .resources(resources)
        .devices(devices)
        .masked_paths(masked)
        .readonly_paths(readonly)
        .build()?;
    if let Some(propagation) = rootfs_propagation(config) {
        linux.set_rootfs_propagation(Some(propagation.to_owned()));
    }
    linux.set_seccomp(seccomp);
    if let Some(userns) = &input.sandbox.userns {
        if security.privileged {
            return Err(SpecError::PrivilegedInUserNamespace);
        }
        use crate::sandbox::spec::UserNamespace;
        linux.set_uid_mappings(Some(UserNamespace::oci_mappings(&userns.uids)));
        linux.set_gid_mappings(Some(UserNamespace::oci_mappings(&userns.gids)));
    }

    let mut annotations: HashMap<String, String> = config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(ANNOTATION_CONTAINER_TYPE.into(), "container".into());
    annotations.insert(ANNOTATION_SANDBOX_ID.into(), input.sandbox.id.clone());
    annotations.insert(
        ANNOTATION_CONTAINER_NAME.into(),
        config.metadata.name.clone(),
    );
    annotations.insert(ANNOTATION_IMAGE_NAME.into(), config.image.clone());

    let mut spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path(input.bundle_dir.join("rootfs"))
                .readonly(security.readonly_rootfs)
                .build()?,
        )
        .mounts(mounts(input)?)
        .process(process)
        .annotations(annotations)
        .linux(linux)
        .build()?;
    // The container joins the pause process's UTS namespace, which already has the pod's
    // hostname; oci-spec's builder default would set one of its own.
    spec.set_hostname(None);
    Ok(spec)
}

/// The kubelet's rules: `command` replaces the image's Entrypoint and drops its Cmd; `args`
/// alone replace Cmd and keep Entrypoint; neither runs Entrypoint + Cmd. `ENTRYPOINT [""]`
/// means no entrypoint.
pub fn process_args(
    command: &[String],
    args: &[String],
    entrypoint: &[String],
    image_cmd: &[String],
) -> Result<Vec<String>, SpecError> {
    let result: Vec<String> = if !command.is_empty() {
        command.iter().chain(args).cloned().collect()
    } else {
        let entrypoint: &[String] = if entrypoint.len() == 1 && entrypoint[0].is_empty() {
            &[]
        } else {
            entrypoint
        };
        let rest = if args.is_empty() { image_cmd } else { args };
        entrypoint.iter().chain(rest).cloned().collect()
    };
    if result.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(result)
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// PATH (default) and HOSTNAME first, then the image's env, then the CRI envs; a later entry
/// with the same name replaces the earlier one in place. HOME comes from passwd (else `/`)
/// when nobody set it, as runc does at exec.
pub fn process_env(
    hostname: &str,
    image_env: &[String],
    cri_envs: &[(String, String)],
    home: Option<&str>,
) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |entry: String| {
        let key = env_key(&entry).to_owned();
        match env.iter_mut().find(|e| env_key(e) == key) {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    };
    set(format!("PATH={DEFAULT_PATH}"));
    set(format!("HOSTNAME={hostname}"));
    for entry in image_env {
        set(entry.clone());
    }
    for (key, value) in cri_envs {
        set(format!("{key}={value}"));
    }
    if !env.iter().any(|e| env_key(e) == "HOME") {
        let home = home.filter(|h| !h.is_empty()).unwrap_or("/");
        env.push(format!("HOME={home}"));
    }
    env
}

/// CRI working_dir, else the image's (made absolute), else `/`.
pub fn working_dir(cri: &str, image: Option<&str>) -> String {
    if !cri.is_empty() {
        return cri.to_owned();
    }
    match image {
        Some(dir) if !dir.is_empty() && dir.starts_with('/') => dir.to_owned(),
        Some(dir) if !dir.is_empty() => format!("/{dir}"),
        _ => "/".to_owned(),
    }
}

fn id_u32(value: i64) -> Result<u32, SpecError> {
    u32::try_from(value).map_err(|_| SpecError::InvalidId(value))
}

/// CRI run_as_username (or run_as_user), with run_as_group, else the image's USER.
fn resolve_user(input: &SpecInput, image_user: &str) -> Result<users::ResolvedUser, SpecError> {
    let security = &input.config.security;
    let extra: Vec<u32> = security
        .supplemental_groups
        .iter()
        .map(|g| u32::try_from(*g).map_err(|_| SpecError::InvalidGid(*g)))
        .collect::<Result<_, _>>()?;
    let group = security.run_as_group.map(id_u32).transpose()?;
    let cri_user = if !security.run_as_username.is_empty() {
        Some(IdOrName::Name(security.run_as_username.clone()))
    } else {
        security
            .run_as_user
            .map(id_u32)
            .transpose()?
            .map(IdOrName::Id)
    };
    let (spec, from_image) = match cri_user {
        Some(user) => (
            UserSpec {
                user,
                group: group.map(IdOrName::Id),
            },
            false,
        ),
        None => {
            let mut spec =
                users::parse_user(image_user).map_err(|source| SpecError::ImageUser {
                    user: image_user.to_owned(),
                    source,
                })?;
            // run_as_group alone regroups the image's user.
            if let Some(gid) = group {
                spec.group = Some(IdOrName::Id(gid));
            }
            (spec, true)
        }
    };
    let strict = security.supplemental_groups_policy
        == crate::container::config::SupplementalGroupsPolicy::Strict;
    users::resolve_user(&spec, input.passwd, input.group, &extra, strict).map_err(|source| {
        if from_image {
            SpecError::ImageUser {
                user: image_user.to_owned(),
                source,
            }
        } else {
            SpecError::User(source)
        }
    })
}

fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    use serde::Deserialize;
    use serde::de::IntoDeserializer;
    // oci-spec's deserializer accepts any case, with or without the CAP_ prefix.
    let de: serde::de::value::StrDeserializer<serde::de::value::Error> = name.into_deserializer();
    Capability::deserialize(de).map_err(|_| SpecError::UnknownCapability(name.to_owned()))
}

fn is_all(name: &str) -> bool {
    name.eq_ignore_ascii_case("ALL") || name.eq_ignore_ascii_case("CAP_ALL")
}

/// The default set, or every capability when privileged; then "ALL" adds or drops
/// everything, and the named ones are added, then dropped (so add ALL + drop X = all but X).
/// Ambient capabilities go into the ambient and inheritable sets.
fn capabilities(
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

/// The AppArmor profile to exec into. Unconfined, privileged or no choice: none. The
/// runtime default is applied only where the host has AppArmor (and berth ships no profile
/// of its own yet, so it means the host's default: unconfined); a named (Localhost)
/// profile on a host without AppArmor is refused, as it cannot be honoured.
fn apparmor_profile(
    security: &crate::container::config::SecurityContext,
    host_apparmor: bool,
) -> Result<Option<String>, SpecError> {
    use crate::container::config::ProfileType;
    let Some(profile) = security.apparmor.as_ref() else {
        return Ok(None);
    };
    if security.privileged {
        return Ok(None);
    }
    match profile.profile_type {
        ProfileType::Unconfined | ProfileType::RuntimeDefault => Ok(None),
        ProfileType::Localhost if profile.localhost_ref.is_empty() => {
            Err(SpecError::AppArmorMissingRef)
        }
        ProfileType::Localhost if !host_apparmor => {
            Err(SpecError::NoAppArmor(profile.localhost_ref.clone()))
        }
        ProfileType::Localhost => Ok(Some(profile.localhost_ref.clone())),
    }
}

/// The requested score, never below what berth itself may set, within the kernel's range.
fn oom_score_adj(requested: i64, floor: i32) -> i32 {
    let clamped = requested.clamp(-1000, 1000) as i32;
    if clamped < floor {
        tracing::debug!(
            requested,
            applied = floor,
            "oom_score_adj below the runtime's own; clamped"
        );
        return floor.min(1000);
    }
    clamped
}

fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> Result<LinuxNamespace, SpecError> {
    let builder = LinuxNamespaceBuilder::default().typ(typ);
    Ok(match path {
        Some(path) => builder.path(path).build()?,
        None => builder.build()?,
    })
}

/// The pod's network (none for host network), IPC (none for host IPC) and UTS; PID per mode;
/// always a new mount namespace.
fn namespaces(input: &SpecInput) -> Result<Vec<LinuxNamespace>, SpecError> {
    let pause = |ns: &str| PathBuf::from(format!("/proc/{}/ns/{ns}", input.sandbox.pause_pid));
    let mut list = vec![namespace(LinuxNamespaceType::Mount, None)?];
    if input.sandbox.userns.is_some() {
        list.push(namespace(LinuxNamespaceType::User, Some(pause("user")))?);
    }
    if let Some(netns) = &input.sandbox.netns_path {
        list.push(namespace(LinuxNamespaceType::Network, Some(netns.clone()))?);
    }
    if !input.sandbox.host_ipc {
        list.push(namespace(LinuxNamespaceType::Ipc, Some(pause("ipc")))?);
    }
    list.push(namespace(LinuxNamespaceType::Uts, Some(pause("uts")))?);
    // On cgroup v2 a container sees its own cgroup as the root (as containerd and CRI-O
    // do); a privileged one keeps the host's view.
    if !input.config.security.privileged && crate::linux::cgroup::unified_host() {
        list.push(namespace(LinuxNamespaceType::Cgroup, None)?);
    }
    let pid_ns = &input.config.security.namespaces;
    match pid_ns.pid {
        NamespaceMode::Pod => list.push(namespace(LinuxNamespaceType::Pid, Some(pause("pid")))?),
        NamespaceMode::Container => list.push(namespace(LinuxNamespaceType::Pid, None)?),
        NamespaceMode::Node => {}
        NamespaceMode::Target => {
            let pid = input
                .target_pid
                .ok_or_else(|| SpecError::NoTargetPid(pid_ns.target_id.clone()))?;
            list.push(namespace(
                LinuxNamespaceType::Pid,
                Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))),
            )?);
        }
    }
    Ok(list)
}

fn mount(
    destination: &str,
    typ: &str,
    source: impl Into<PathBuf>,
    options: &[&str],
) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source.into())
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn depth(path: &str) -> usize {
    path.split('/').filter(|p| !p.is_empty()).count()
}

/// The standard filesystems, then the pod files, /dev/shm and the CRI mounts, those sorted so
/// that a parent is mounted before its children. A CRI mount replaces a default mount at the
/// same place (and a CRI /dev replaces everything under /dev).
fn mounts(input: &SpecInput) -> Result<Vec<Mount>, SpecError> {
    let config = input.config;
    let privileged = config.security.privileged;
    let sys_mode = if privileged { "rw" } else { "ro" };
    let mut defaults = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )?,
    ];
    let cri_targets: HashSet<&str> = config
        .mounts
        .iter()
        .map(|m| m.container_path.trim_end_matches('/'))
        .collect();
    let covered = |dest: &str| {
        cri_targets.contains(dest)
            || (cri_targets.contains("/dev") && dest.starts_with("/dev/"))
            || (cri_targets.contains("/sys") && dest.starts_with("/sys/"))
    };
    defaults.retain(|m| !covered(&m.destination().to_string_lossy()));

    let mut extra: Vec<(String, Mount)> = Vec::new();
    if !covered("/dev/shm") {
        let shm = match &input.sandbox.shm_path {
            Some(path) => mount(
                "/dev/shm",
                "bind",
                path.clone(),
                &["rbind", "rprivate", "rw"],
            )?,
            None => mount(
                "/dev/shm",
                "tmpfs",
                "shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            )?,
        };
        extra.push(("/dev/shm".into(), shm));
    }
    let pod_file_mode = if config.security.readonly_rootfs {
        "ro"
    } else {
        "rw"
    };
    for (dest, file) in [
        ("/etc/hostname", "hostname"),
        ("/etc/hosts", "hosts"),
        ("/etc/resolv.conf", "resolv.conf"),
    ] {
        if !covered(dest) {
            extra.push((
                dest.into(),
                mount(
                    dest,
                    "bind",
                    input.sandbox.pod_files_dir.join(file),
                    &["rbind", "rprivate", pod_file_mode],
                )?,
            ));
        }
    }
    for m in &config.mounts {
        if !m.host_path.starts_with('/') {
            return Err(SpecError::BadMount {
                container_path: m.container_path.clone(),
                reason: format!("host_path {:?} is not an absolute path", m.host_path),
            });
        }
        let propagation = match m.propagation {
            MountPropagation::Private => "rprivate",
            MountPropagation::HostToContainer => "rslave",
            MountPropagation::Bidirectional => "rshared",
        };
        if m.recursive_read_only && !m.readonly {
            return Err(SpecError::BadMount {
                container_path: m.container_path.clone(),
                reason: "recursive_read_only requires readonly".into(),
            });
        }
        // A read-only tree that receives new mounts from the host would not stay
        // read-only (the kubelet and other runtimes refuse it too).
        if m.recursive_read_only && m.propagation != MountPropagation::Private {
            return Err(SpecError::BadMount {
                container_path: m.container_path.clone(),
                reason: "recursive_read_only requires private propagation".into(),
            });
        }
        let mode = if m.readonly { "ro" } else { "rw" };
        let mut options = vec!["rbind", propagation, mode];
        // `rro` (runc's name) asks for read-only all the way down (mount_setattr with
        // AT_RECURSIVE); `ro` stays so that an init that ignores `rro` still mounts the
        // top read-only.
        if m.recursive_read_only {
            options.push("rro");
        }
        extra.push((
            m.container_path.clone(),
            mount(&m.container_path, "bind", m.host_path.clone(), &options)?,
        ));
    }
    // Stable: same-depth mounts keep their order (pod files, then the kubelet's order).
    extra.sort_by_key(|(dest, _)| depth(dest));
    defaults.extend(extra.into_iter().map(|(_, m)| m));
    Ok(defaults)
}

/// The rootfs must propagate for rslave/rshared CRI mounts to work.
fn rootfs_propagation(config: &ContainerConfig) -> Option<&'static str> {
    let has = |p: MountPropagation| config.mounts.iter().any(|m| m.propagation == p);
    if has(MountPropagation::Bidirectional) {
        Some("rshared")
    } else if has(MountPropagation::HostToContainer) {
        Some("rslave")
    } else {
        None
    }
}

fn device_rule(
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, SpecError> {
    let mut builder = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(typ)
        .access(access);
    if let Some(major) = major {
        builder = builder.major(major);
    }
    if let Some(minor) = minor {
        builder = builder.minor(minor);
    }
    Ok(builder.build()?)
}

/// The device cgroup: deny everything, allow mknod, the standard nodes and the CRI devices
/// (everything when privileged); and the CRI devices as nodes to create.
fn devices(input: &SpecInput) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    use LinuxDeviceType::{B, C};
    let mut rules = vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .typ(LinuxDeviceType::A)
            .access("rwm")
            .build()?,
    ];
    if input.config.security.privileged {
        rules.push(device_rule(LinuxDeviceType::A, None, None, "rwm")?);
    } else {
        rules.push(device_rule(C, None, None, "m")?);
        rules.push(device_rule(B, None, None, "m")?);
        for (major, minor) in [
            (1, Some(3)), // null
            (1, Some(5)), // zero
            (1, Some(7)), // full
            (1, Some(8)), // random
            (1, Some(9)), // urandom
            (5, Some(0)), // tty
            (5, Some(2)), // ptmx
            (136, None),  // pts
        ] {
            rules.push(device_rule(C, Some(major), minor, "rwm")?);
        }
    }
    let mut nodes = Vec::new();
    for d in &input.config.devices {
        let host = input
            .host_devices
            .get(&d.host_path)
            .ok_or_else(|| SpecError::BadDevice {
                host_path: d.host_path.clone(),
                reason: "not a device on this host".into(),
            })?;
        let typ = if host.block { B } else { C };
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            &d.permissions
        };
        nodes.push(
            LinuxDeviceBuilder::default()
                .path(&d.container_path)
                .typ(typ)
                .major(host.major)
                .minor(host.minor)
                .file_mode(host.file_mode)
                .uid(host.uid)
                .gid(host.gid)
                .build()?,
        );
        rules.push(device_rule(
            typ,
            Some(host.major),
            Some(host.minor),
            access,
        )?);
    }
    if input.config.security.privileged {
        // Every host device at its own path (the caller put them in host_devices), unless
        // a CRI device already takes the path.
        let taken: HashSet<String> = nodes
            .iter()
            .map(|n| n.path().to_string_lossy().to_string())
            .collect();
        for (path, host) in input.host_devices {
            if !path.starts_with("/dev/")
                || taken.contains(path)
                || CONTAINER_OWN_DEVICES.contains(&path.as_str())
            {
                continue;
            }
            nodes.push(
                LinuxDeviceBuilder::default()
                    .path(path)
                    .typ(if host.block { B } else { C })
                    .major(host.major)
                    .minor(host.minor)
                    .file_mode(host.file_mode)
                    .uid(host.uid)
                    .gid(host.gid)
                    .build()?,
            );
        }
    }
    Ok((nodes, rules))
}

/// CRI resources → `linux.resources` (without the device rules). Zero or empty means unset.
/// Also what UpdateContainerResources applies.
pub fn linux_resources(r: &ContainerResources) -> Result<LinuxResources, SpecError> {
    let mut cpu = LinuxCpuBuilder::default();
    if r.cpu_shares > 0 {
        cpu = cpu.shares(r.cpu_shares as u64);
    }
    if r.cpu_quota != 0 {
        cpu = cpu.quota(r.cpu_quota);
    }
    if r.cpu_period > 0 {
        cpu = cpu.period(r.cpu_period as u64);
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
    }
    let mut memory = LinuxMemoryBuilder::default();
    if r.memory_limit_in_bytes > 0 {
        memory = memory.limit(r.memory_limit_in_bytes);
    }
    if r.memory_swap_limit_in_bytes > 0 {
        memory = memory.swap(r.memory_swap_limit_in_bytes);
    }
    let hugepages = r
        .hugepage_limits
        .iter()
        .map(|h| {
            LinuxHugepageLimitBuilder::default()
                .page_size(h.page_size.clone())
                .limit(i64::try_from(h.limit).unwrap_or(i64::MAX))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (cpu, memory) = (cpu.build()?, memory.build()?);
    let mut builder = LinuxResourcesBuilder::default();
    if cpu != Default::default() {
        builder = builder.cpu(cpu);
    }
    if memory != Default::default() {
        builder = builder.memory(memory);
    }
    if !hugepages.is_empty() {
        builder = builder.hugepage_limits(hugepages);
    }
    if !r.unified.is_empty() {
        builder = builder.unified(
            r.unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
    }
    Ok(builder.build()?)
}

/// A signal by name (`SIGTERM`, `TERM`, any case) or number.
pub fn parse_signal(value: &str) -> Option<Signal> {
    let value = value.trim();
    if let Ok(number) = value.parse::<i32>() {
        return Signal::try_from(number).ok();
    }
    let upper = value.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().ok()
}

/// The signal StopContainer sends first: the CRI's, else the image's STOPSIGNAL, else SIGTERM.
/// (k8s-cri 0.11's ContainerConfig has no stop_signal; the caller passes it when it has one.)
/// An unparsable value is logged and skipped.
pub fn stop_signal(image: &ImageConfiguration, cri_override: Option<&str>) -> Signal {
    let image_signal = image
        .config()
        .as_ref()
        .and_then(|c| c.stop_signal().clone());
    for candidate in [cri_override.map(str::to_owned), image_signal]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
    {
        match parse_signal(&candidate) {
            Some(signal) => return signal,
            None => tracing::warn!(signal = %candidate, "unknown stop signal; trying the next"),
        }
    }
    Signal::SIGTERM
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::config::{
        Capabilities as CriCaps, ContainerMetadata, Device, HugepageLimit, Mount as CriMount,
    };
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:33:\nstaff:x:50:www-data\n";

    struct Fixture {
        config: ContainerConfig,
        image: ImageConfiguration,
        sandbox: SandboxInfo,
        target_pid: Option<u32>,
        host_devices: BTreeMap<String, HostDevice>,
        defaults: RuntimeDefaults,
        seccomp_localhost: Option<String>,
    }

    fn image(build: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> ImageConfiguration {
        ImageConfigurationBuilder::default()
            .config(build(ConfigBuilder::default()).build().unwrap())
            .build()
            .unwrap()
    }

    fn fixture() -> Fixture {
        Fixture {
            config: ContainerConfig {
                metadata: ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                },
                image: "busybox:latest".into(),
                ..Default::default()
            },
            image: image(|c| c.cmd(vec!["sh".to_string()])),
            sandbox: SandboxInfo {
                id: "sb1".into(),
                hostname: "pod-host".into(),
                pause_pid: 42,
                netns_path: Some("/run/berth/netns/sb1".into()),
                host_ipc: false,
                pod_files_dir: "/var/lib/berth/sandboxes/sb1".into(),
                pod_cgroup: "/berth/pod-sb1/".into(),
                shm_path: None,
                runtime_handler: String::new(),
                userns: None,
            },
            target_pid: None,
            host_devices: BTreeMap::new(),
            defaults: RuntimeDefaults::default(),
            seccomp_localhost: None,
        }
    }

    impl Fixture {
        fn build(&self) -> Result<Spec, SpecError> {
            build_spec(&SpecInput {
                container_id: "c1",
                config: &self.config,
                image: &self.image,
                sandbox: &self.sandbox,
                bundle_dir: Path::new("/run/berth/containers/c1/bundle"),
                passwd: Some(PASSWD),
                group: Some(GROUP),
                target_pid: self.target_pid,
                host_devices: &self.host_devices,
                defaults: &self.defaults,
                seccomp_localhost: self.seccomp_localhost.as_deref(),
            })
        }
        fn spec(&self) -> Spec {
            self.build().expect("spec builds")
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn args(spec: &Spec) -> Vec<String> {
        spec.process().as_ref().unwrap().args().clone().unwrap()
    }

    fn env(spec: &Spec) -> Vec<String> {
        spec.process().as_ref().unwrap().env().clone().unwrap()
    }

    fn user(spec: &Spec) -> (u32, u32, Vec<u32>) {
        let u = spec.process().as_ref().unwrap().user();
        (
            u.uid(),
            u.gid(),
            u.additional_gids().clone().unwrap_or_default(),
        )
    }

    fn caps(spec: &Spec) -> oci_spec::runtime::LinuxCapabilities {
        spec.process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap()
    }

    fn linux(spec: &Spec) -> &oci_spec::runtime::Linux {
        spec.linux().as_ref().unwrap()
    }

    fn mount_at<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
        spec.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new(dest))
    }

    fn options(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    fn entrypoint_image() -> ImageConfiguration {
        image(|c| {
            c.entrypoint(strings(&["/entry", "e1"]))
                .cmd(strings(&["c1", "c2"]))
        })
    }

    #[test]
    fn command_replaces_entrypoint_and_drops_cmd() {
        let mut f = fixture();
        f.image = entrypoint_image();
        f.config.command = strings(&["/bin/run"]);
        assert_eq!(args(&f.spec()), ["/bin/run"]);
        f.config.args = strings(&["a"]);
        assert_eq!(args(&f.spec()), ["/bin/run", "a"]);
    }

    #[test]
    fn args_alone_replace_cmd_and_keep_entrypoint() {
        let mut f = fixture();
        f.image = entrypoint_image();
        f.config.args = strings(&["a", "b"]);
        assert_eq!(args(&f.spec()), ["/entry", "e1", "a", "b"]);
    }

    #[test]
    fn neither_runs_entrypoint_then_cmd() {
        let mut f = fixture();
        f.image = entrypoint_image();
        assert_eq!(args(&f.spec()), ["/entry", "e1", "c1", "c2"]);
    }

    #[test]
    fn empty_string_entrypoint_means_none() {
        let mut f = fixture();
        f.image = image(|c| c.entrypoint(strings(&[""])).cmd(strings(&["sh"])));
        assert_eq!(args(&f.spec()), ["sh"]);
    }

    #[test]
    fn no_command_at_all_is_invalid_argument() {
        let mut f = fixture();
        f.image = ImageConfiguration::default();
        let err = f.build().unwrap_err();
        assert!(matches!(err, SpecError::NoCommand));
        let err = Error::from(err);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("no command specified"));
    }

    #[test]
    fn env_image_then_cri_overrides_by_name_in_place() {
        let mut f = fixture();
        f.image = image(|c| {
            c.cmd(strings(&["sh"]))
                .env(strings(&["PATH=/img/bin", "A=image", "B=image"]))
        });
        f.config.envs = vec![
            ("B".into(), "cri".into()),
            ("C".into(), "new".into()),
            ("HOSTNAME".into(), "mine".into()),
        ];
        assert_eq!(
            env(&f.spec()),
            [
                "PATH=/img/bin",
                "HOSTNAME=mine",
                "A=image",
                "B=cri",
                "C=new",
                "HOME=/root"
            ]
        );
    }

    #[test]
    fn path_default_and_hostname_env() {
        let f = fixture();
        let env = env(&f.spec());
        assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));
        assert_eq!(env[1], "HOSTNAME=pod-host");
    }

    #[test]
    fn home_from_passwd_unless_set() {
        let mut f = fixture();
        f.config.security.run_as_username = "www-data".into();
        assert!(env(&f.spec()).contains(&"HOME=/var/www".to_string()));
        f.config.security.run_as_username.clear();
        f.config.security.run_as_user = Some(1234);
        assert!(env(&f.spec()).contains(&"HOME=/".to_string()));
        f.config.envs = vec![("HOME".into(), "/h".into())];
        let env = env(&f.spec());
        assert_eq!(env.iter().filter(|e| e.starts_with("HOME=")).count(), 1);
        assert!(env.contains(&"HOME=/h".to_string()));
    }

    #[test]
    fn hostname_is_not_set_in_the_spec() {
        // The container joins the pause's UTS namespace, which has the pod's hostname.
        assert_eq!(fixture().spec().hostname(), &None);
    }

    #[test]
    fn working_dir_cri_then_image_then_root() {
        let mut f = fixture();
        let cwd = |f: &Fixture| f.spec().process().as_ref().unwrap().cwd().clone();
        assert_eq!(cwd(&f), Path::new("/"));
        f.image = image(|c| c.cmd(strings(&["sh"])).working_dir("/srv"));
        assert_eq!(cwd(&f), Path::new("/srv"));
        f.config.working_dir = "/work".into();
        assert_eq!(cwd(&f), Path::new("/work"));
        assert_eq!(working_dir("", Some("rel")), "/rel");
    }

    #[test]
    fn apparmor_localhost_needs_the_host_to_have_it() {
        use crate::container::config::{ProfileType, SecurityProfile};
        let mut f = fixture();
        let profile = |t, r: &str| {
            Some(SecurityProfile {
                profile_type: t,
                localhost_ref: r.into(),
            })
        };
        f.config.security.apparmor = profile(ProfileType::RuntimeDefault, "");
        assert_eq!(
            f.spec().process().as_ref().unwrap().apparmor_profile(),
            &None
        );
        f.config.security.apparmor = profile(ProfileType::Localhost, "berth-test");
        let err = Error::from(f.build().unwrap_err());
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("berth-test"), "{err}");
        f.defaults.apparmor = true;
        assert_eq!(
            f.spec().process().as_ref().unwrap().apparmor_profile(),
            &Some("berth-test".to_string())
        );
        f.config.security.privileged = true;
        assert_eq!(
            f.spec().process().as_ref().unwrap().apparmor_profile(),
            &None
        );
    }

    #[test]
    fn supplemental_groups_policy_merges_or_not() {
        let mut f = fixture();
        f.config.security.run_as_user = Some(33);
        f.config.security.supplemental_groups = vec![1234];
        assert_eq!(user(&f.spec()), (33, 33, vec![33, 50, 1234]));
        f.config.security.supplemental_groups_policy =
            crate::container::config::SupplementalGroupsPolicy::Strict;
        assert_eq!(user(&f.spec()), (33, 33, vec![33, 1234]));
    }

    #[test]
    fn user_from_cri_ids() {
        let mut f = fixture();
        assert_eq!(user(&f.spec()), (0, 0, vec![0]));
        f.config.security.run_as_user = Some(33);
        assert_eq!(user(&f.spec()), (33, 33, vec![33, 50]));
        f.config.security.run_as_group = Some(7);
        f.config.security.supplemental_groups = vec![8, 7, 50];
        assert_eq!(user(&f.spec()), (33, 7, vec![7, 50, 8]));
        f.config.security.run_as_user = Some(-1);
        let err = Error::from(f.build().unwrap_err());
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn user_from_cri_username_wins_over_uid() {
        let mut f = fixture();
        f.config.security.run_as_user = Some(1000);
        f.config.security.run_as_username = "www-data".into();
        assert_eq!(user(&f.spec()), (33, 33, vec![33, 50]));
        f.config.security.run_as_username = "ghost".into();
        let err = Error::from(f.build().unwrap_err());
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("ghost"), "{err}");
    }

    #[test]
    fn user_from_image_in_every_form() {
        type Ids = (u32, u32, Vec<u32>);
        let cases: [(&str, Ids); 6] = [
            ("1002", (1002, 0, vec![0])),
            ("www-data", (33, 33, vec![33, 50])),
            ("1003:1004", (1003, 1004, vec![1004])),
            ("www-data:staff", (33, 50, vec![50])),
            ("1003:staff", (1003, 50, vec![50])),
            ("www-data:1004", (33, 1004, vec![1004, 50])),
        ];
        for (image_user, expected) in cases {
            let mut f = fixture();
            f.image = image(|c| c.cmd(strings(&["sh"])).user(image_user));
            assert_eq!(user(&f.spec()), expected, "USER {image_user}");
        }
    }

    #[test]
    fn cri_user_overrides_image_user_and_group_alone_regroups_it() {
        let mut f = fixture();
        f.image = image(|c| c.cmd(strings(&["sh"])).user("www-data"));
        f.config.security.run_as_user = Some(1000);
        assert_eq!(user(&f.spec()), (1000, 0, vec![0]));
        f.config.security.run_as_user = None;
        f.config.security.run_as_group = Some(9);
        assert_eq!(user(&f.spec()), (33, 9, vec![9, 50]));
    }

    #[test]
    fn unknown_image_user_name_fails_naming_it() {
        let mut f = fixture();
        f.image = image(|c| c.cmd(strings(&["sh"])).user("nobody:staff"));
        let err = Error::from(f.build().unwrap_err());
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert!(err.to_string().contains("nobody"), "{err}");
        f.image = image(|c| c.cmd(strings(&["sh"])).user("www-data:nogroup"));
        let err = f.build().unwrap_err().to_string();
        assert!(err.contains("www-data:nogroup"), "{err}");
    }

    #[test]
    fn default_capabilities() {
        let caps = caps(&fixture().spec());
        let expected: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
        assert_eq!(caps.bounding().as_ref(), Some(&expected));
        assert_eq!(caps.effective().as_ref(), Some(&expected));
        assert_eq!(caps.permitted().as_ref(), Some(&expected));
        assert_eq!(caps.inheritable(), &None);
        assert_eq!(caps.ambient(), &None);
    }

    #[test]
    fn capabilities_add_and_drop_with_or_without_prefix() {
        let mut f = fixture();
        f.config.security.capabilities = CriCaps {
            add: strings(&["NET_ADMIN", "CAP_SYS_TIME", "sys_nice"]),
            drop: strings(&["CAP_CHOWN", "KILL"]),
            add_ambient: vec![],
        };
        let set = caps(&f.spec()).effective().clone().unwrap();
        assert!(set.contains(&Capability::NetAdmin));
        assert!(set.contains(&Capability::SysTime));
        assert!(set.contains(&Capability::SysNice));
        assert!(!set.contains(&Capability::Chown));
        assert!(!set.contains(&Capability::Kill));
        assert_eq!(set.len(), DEFAULT_CAPABILITIES.len() + 3 - 2);
    }

    #[test]
    fn capabilities_all() {
        let mut f = fixture();
        f.config.security.capabilities.add = strings(&["ALL"]);
        f.config.security.capabilities.drop = strings(&["NET_RAW"]);
        let set = caps(&f.spec()).bounding().clone().unwrap();
        assert_eq!(set.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!set.contains(&Capability::NetRaw));
        f.config.security.capabilities.add = strings(&["CHOWN"]);
        f.config.security.capabilities.drop = strings(&["all"]);
        let set = caps(&f.spec()).bounding().clone().unwrap();
        assert_eq!(set, [Capability::Chown].into_iter().collect());
    }

    #[test]
    fn unknown_capability_is_invalid_argument() {
        let mut f = fixture();
        f.config.security.capabilities.add = strings(&["CAP_FLY"]);
        let err = Error::from(f.build().unwrap_err());
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("CAP_FLY"));
    }

    #[test]
    fn ambient_capabilities_are_ambient_and_inheritable() {
        let mut f = fixture();
        f.config.security.capabilities.add_ambient = strings(&["NET_BIND_SERVICE"]);
        let caps = caps(&f.spec());
        let expected: Capabilities = [Capability::NetBindService].into_iter().collect();
        assert_eq!(caps.ambient().as_ref(), Some(&expected));
        assert_eq!(caps.inheritable().as_ref(), Some(&expected));
    }

    #[test]
    fn privileged_gets_everything() {
        let mut f = fixture();
        f.config.security.privileged = true;
        f.config.security.capabilities.drop = strings(&["ALL"]);
        f.config.security.masked_paths = Some(strings(&["/proc/kcore"]));
        let spec = f.spec();
        assert_eq!(
            caps(&spec).bounding().as_ref().map(|s| s.len()),
            Some(ALL_CAPABILITIES.len())
        );
        assert_eq!(linux(&spec).masked_paths().as_deref(), Some(&[][..]));
        assert_eq!(linux(&spec).readonly_paths().as_deref(), Some(&[][..]));
        assert!(options(mount_at(&spec, "/sys").unwrap()).contains(&"rw".to_string()));
        assert!(options(mount_at(&spec, "/sys/fs/cgroup").unwrap()).contains(&"rw".to_string()));
        let rules = linux(&spec)
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert!(rules.iter().any(|r| r.allow()
            && r.typ() == Some(LinuxDeviceType::A)
            && r.access().as_deref() == Some("rwm")));
    }

    #[test]
    fn masked_and_readonly_paths_default_or_given() {
        let mut f = fixture();
        let spec = f.spec();
        assert_eq!(
            linux(&spec).masked_paths().clone().unwrap(),
            strings(&DEFAULT_MASKED_PATHS)
        );
        assert_eq!(
            linux(&spec).readonly_paths().clone().unwrap(),
            strings(&DEFAULT_READONLY_PATHS)
        );
        f.config.security.masked_paths = Some(strings(&["/proc/x"]));
        f.config.security.readonly_paths = Some(vec![]);
        let spec = f.spec();
        assert_eq!(linux(&spec).masked_paths().clone().unwrap(), ["/proc/x"]);
        assert_eq!(linux(&spec).readonly_paths().clone().unwrap(), [""; 0]);
    }

    #[test]
    fn default_mounts() {
        let spec = fixture().spec();
        let m = |d| mount_at(&spec, d).unwrap_or_else(|| panic!("{d} mounted"));
        let typ = |d| m(d).typ().clone().unwrap();
        assert_eq!(typ("/proc"), "proc");
        assert_eq!(typ("/dev"), "tmpfs");
        assert_eq!(
            options(m("/dev")),
            ["nosuid", "strictatime", "mode=755", "size=65536k"]
        );
        assert_eq!(typ("/dev/pts"), "devpts");
        for o in ["newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] {
            assert!(options(m("/dev/pts")).contains(&o.to_string()), "{o}");
        }
        assert_eq!(typ("/dev/mqueue"), "mqueue");
        assert_eq!(typ("/sys"), "sysfs");
        assert!(options(m("/sys")).contains(&"ro".to_string()));
        assert_eq!(typ("/sys/fs/cgroup"), "cgroup");
        assert!(options(m("/sys/fs/cgroup")).contains(&"ro".to_string()));
        // Without a pod shm: a private tmpfs.
        assert_eq!(typ("/dev/shm"), "tmpfs");
        assert!(options(m("/dev/shm")).contains(&"size=65536k".to_string()));
    }

    #[test]
    fn pod_shm_is_bind_mounted() {
        let mut f = fixture();
        f.sandbox.shm_path = Some("/run/berth/sandboxes/sb1/shm".into());
        let spec = f.spec();
        let shm = mount_at(&spec, "/dev/shm").unwrap();
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        assert_eq!(
            shm.source().as_deref(),
            Some(Path::new("/run/berth/sandboxes/sb1/shm"))
        );
        assert!(options(shm).contains(&"rbind".to_string()));
    }

    #[test]
    fn pod_files_are_bind_mounted_unless_cri_mounts_them() {
        let mut f = fixture();
        let spec = f.spec();
        for (dest, file) in [
            ("/etc/hosts", "hosts"),
            ("/etc/resolv.conf", "resolv.conf"),
            ("/etc/hostname", "hostname"),
        ] {
            let m = mount_at(&spec, dest).unwrap();
            assert_eq!(
                m.source().clone().unwrap(),
                Path::new("/var/lib/berth/sandboxes/sb1").join(file)
            );
            assert_eq!(options(m), ["rbind", "rprivate", "rw"]);
        }
        f.config.mounts = vec![CriMount {
            container_path: "/etc/hosts".into(),
            host_path: "/my/hosts".into(),
            ..Default::default()
        }];
        f.config.security.readonly_rootfs = true;
        let spec = f.spec();
        let hosts: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|m| m.destination() == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].source().as_deref(), Some(Path::new("/my/hosts")));
        // With a read-only rootfs the pod files are read-only too.
        assert!(options(mount_at(&spec, "/etc/resolv.conf").unwrap()).contains(&"ro".to_string()));
    }

    #[test]
    fn cri_mounts_are_binds_with_mode_and_propagation() {
        let mut f = fixture();
        let m = |dest: &str, host: &str, readonly, propagation| CriMount {
            container_path: dest.into(),
            host_path: host.into(),
            readonly,
            propagation,
            recursive_read_only: false,
        };
        f.config.mounts = vec![
            m("/a", "/h/a", true, MountPropagation::Private),
            m("/b", "/h/b", false, MountPropagation::HostToContainer),
        ];
        let spec = f.spec();
        assert_eq!(
            options(mount_at(&spec, "/a").unwrap()),
            ["rbind", "rprivate", "ro"]
        );
        let b = mount_at(&spec, "/b").unwrap();
        assert_eq!(options(b), ["rbind", "rslave", "rw"]);
        assert_eq!(b.typ().as_deref(), Some("bind"));
        assert_eq!(b.source().as_deref(), Some(Path::new("/h/b")));
        assert_eq!(linux(&spec).rootfs_propagation().as_deref(), Some("rslave"));
        f.config
            .mounts
            .push(m("/c", "/h/c", false, MountPropagation::Bidirectional));
        let spec = f.spec();
        assert_eq!(
            options(mount_at(&spec, "/c").unwrap()),
            ["rbind", "rshared", "rw"]
        );
        assert_eq!(
            linux(&spec).rootfs_propagation().as_deref(),
            Some("rshared")
        );
        assert_eq!(linux(&fixture().spec()).rootfs_propagation(), &None);
    }

    #[test]
    fn recursive_read_only_mounts() {
        let mut f = fixture();
        f.config.mounts = vec![CriMount {
            container_path: "/data".into(),
            host_path: "/h".into(),
            readonly: true,
            recursive_read_only: true,
            ..Default::default()
        }];
        assert_eq!(
            options(mount_at(&f.spec(), "/data").unwrap()),
            ["rbind", "rprivate", "ro", "rro"]
        );
        f.config.mounts[0].readonly = false;
        let err = Error::from(f.build().unwrap_err());
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("recursive_read_only"), "{err}");
        f.config.mounts[0].readonly = true;
        for propagation in [
            MountPropagation::HostToContainer,
            MountPropagation::Bidirectional,
        ] {
            f.config.mounts[0].propagation = propagation;
            let err = Error::from(f.build().unwrap_err());
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert!(err.to_string().contains("private propagation"), "{err}");
        }
    }

    #[test]
    fn cri_mounts_are_sorted_parents_first() {
        let mut f = fixture();
        let m = |dest: &str| CriMount {
            container_path: dest.into(),
            host_path: format!("/h{dest}"),
            ..Default::default()
        };
        f.config.mounts = vec![m("/data/sub/deeper"), m("/data/sub"), m("/data"), m("/x")];
        let spec = f.spec();
        let order: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .filter(|d| d.starts_with("/data") || d == "/x")
            .collect();
        assert_eq!(order, ["/data", "/x", "/data/sub", "/data/sub/deeper"]);
    }

    #[test]
    fn cri_dev_mount_replaces_default_dev_mounts() {
        let mut f = fixture();
        f.config.mounts = vec![CriMount {
            container_path: "/dev".into(),
            host_path: "/dev".into(),
            ..Default::default()
        }];
        let spec = f.spec();
        assert_eq!(
            mount_at(&spec, "/dev").unwrap().typ().as_deref(),
            Some("bind")
        );
        assert!(mount_at(&spec, "/dev/pts").is_none());
        assert!(mount_at(&spec, "/dev/shm").is_none());
    }

    #[test]
    fn relative_mount_source_is_invalid_argument() {
        let mut f = fixture();
        f.config.mounts = vec![CriMount {
            container_path: "/data".into(),
            host_path: "data".into(),
            ..Default::default()
        }];
        let err = Error::from(f.build().unwrap_err());
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("mount /data"), "{err}");
    }

    #[test]
    fn containers_join_the_pods_user_namespace() {
        use crate::sandbox::spec::{IdMapping, UserNamespace};
        let mut f = fixture();
        let map = IdMapping {
            container_id: 0,
            host_id: 100000,
            length: 65536,
        };
        f.sandbox.userns = Some(UserNamespace {
            uids: vec![map],
            gids: vec![map],
        });
        let spec = f.spec();
        let user = linux(&spec)
            .namespaces()
            .iter()
            .flatten()
            .find(|n| n.typ() == LinuxNamespaceType::User)
            .expect("user namespace");
        assert_eq!(user.path().as_deref(), Some(Path::new("/proc/42/ns/user")));
        let uid = &linux(&spec).uid_mappings().as_ref().unwrap()[0];
        assert_eq!(
            (uid.container_id(), uid.host_id(), uid.size()),
            (0, 100000, 65536)
        );
        assert!(linux(&spec).gid_mappings().is_some());
        assert!(
            linux(&fixture().spec())
                .namespaces()
                .iter()
                .flatten()
                .all(|n| n.typ() != LinuxNamespaceType::User)
        );
        f.config.security.privileged = true;
        let err = Error::from(f.build().unwrap_err());
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn privileged_containers_get_every_host_device() {
        let mut f = fixture();
        let dev = |minor| HostDevice {
            block: true,
            major: 8,
            minor,
            file_mode: 0o660,
            uid: 0,
            gid: 6,
        };
        f.host_devices.insert("/dev/sda".into(), dev(0));
        f.host_devices.insert("/dev/sda1".into(), dev(1));
        f.host_devices.insert("/dev/null".into(), dev(3));
        let paths = |spec: &Spec| -> Vec<String> {
            linux(spec)
                .devices()
                .iter()
                .flatten()
                .map(|d| d.path().to_string_lossy().to_string())
                .collect()
        };
        assert!(paths(&f.spec()).is_empty());
        f.config.security.privileged = true;
        // /dev/null is bound from the host by init like in every container.
        assert_eq!(paths(&f.spec()), ["/dev/sda", "/dev/sda1"]);
    }

    #[test]
    fn host_devices_are_found_under_dev() {
        let all = all_host_devices().expect("walk /dev");
        assert!(!all.contains_key("/dev/null"));
        assert!(
            all.keys()
                .all(|k| k.starts_with("/dev/") && !k.starts_with("/dev/pts/"))
        );
    }

    #[test]
    fn devices_become_nodes_and_cgroup_rules() {
        let mut f = fixture();
        f.host_devices.insert(
            "/dev/fuse".into(),
            HostDevice {
                block: false,
                major: 10,
                minor: 229,
                file_mode: 0o666,
                uid: 0,
                gid: 0,
            },
        );
        f.config.devices = vec![Device {
            container_path: "/dev/myfuse".into(),
            host_path: "/dev/fuse".into(),
            permissions: "rw".into(),
        }];
        let spec = f.spec();
        let nodes = linux(&spec).devices().clone().unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].path(), Path::new("/dev/myfuse"));
        assert_eq!(nodes[0].typ(), LinuxDeviceType::C);
        assert_eq!((nodes[0].major(), nodes[0].minor()), (10, 229));
        assert_eq!(nodes[0].file_mode(), Some(0o666));
        let rules = linux(&spec)
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert!(!rules[0].allow() && rules[0].access().as_deref() == Some("rwm"));
        let allowed = |major, minor| {
            rules.iter().any(|r| {
                r.allow()
                    && r.typ() == Some(LinuxDeviceType::C)
                    && r.major() == Some(major)
                    && r.minor() == minor
            })
        };
        for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)] {
            assert!(allowed(major, Some(minor)), "{major}:{minor}");
        }
        assert!(allowed(136, None));
        let fuse = rules.last().unwrap();
        assert_eq!((fuse.major(), fuse.minor()), (Some(10), Some(229)));
        assert_eq!(fuse.access().as_deref(), Some("rw"));
    }

    #[test]
    fn device_not_on_host_is_invalid_argument() {
        let mut f = fixture();
        f.config.devices = vec![Device {
            container_path: "/dev/x".into(),
            host_path: "/dev/nothing".into(),
            permissions: String::new(),
        }];
        let err = Error::from(f.build().unwrap_err());
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("/dev/nothing"));
    }

    #[test]
    fn host_device_stats_dev_null() {
        let null = host_device(Path::new("/dev/null")).unwrap();
        assert_eq!((null.block, null.major, null.minor), (false, 1, 3));
        assert!(host_device(Path::new("/etc/hostname")).is_err());
    }

    #[test]
    fn resources_map_to_linux_resources() {
        let mut f = fixture();
        f.config.resources = ContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: 0,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "1000000".to_string())].into(),
            memory_swap_limit_in_bytes: 128 << 20,
        };
        let spec = f.spec();
        let r = linux(&spec).resources().clone().unwrap();
        let cpu = r.cpu().clone().unwrap();
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let mem = r.memory().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.swap(), Some(128 << 20));
        let huge = r.hugepage_limits().clone().unwrap();
        assert_eq!(huge[0].page_size(), "2MB");
        assert_eq!(huge[0].limit(), 4 << 20);
        assert_eq!(r.unified().as_ref().unwrap()["memory.high"], "1000000");
    }

    #[test]
    fn unset_resources_stay_unset() {
        let r = linux_resources(&ContainerResources::default()).unwrap();
        assert_eq!(r.cpu(), &None);
        assert_eq!(r.memory(), &None);
        assert_eq!(r.hugepage_limits(), &None);
        assert_eq!(r.unified(), &None);
    }

    #[test]
    fn oom_score_adj_is_clamped() {
        let mut f = fixture();
        let adj = |f: &Fixture| f.spec().process().as_ref().unwrap().oom_score_adj();
        f.config.resources.oom_score_adj = 1000;
        assert_eq!(adj(&f), Some(1000));
        f.config.resources.oom_score_adj = -997;
        assert_eq!(adj(&f), Some(-997));
        f.defaults.min_oom_score_adj = 0;
        assert_eq!(adj(&f), Some(0));
        f.config.resources.oom_score_adj = 5000;
        assert_eq!(adj(&f), Some(1000));
    }

    #[test]
    fn root_is_the_bundle_rootfs_and_readonly_rootfs() {
        let mut f = fixture();
        let spec = f.spec();
        let root = spec.root().as_ref().unwrap();
        assert_eq!(
            root.path(),
            Path::new("/run/berth/containers/c1/bundle/rootfs")
        );
        assert_eq!(root.readonly(), Some(false));
        f.config.security.readonly_rootfs = true;
        assert_eq!(f.spec().root().as_ref().unwrap().readonly(), Some(true));
    }

    #[test]
    fn tty_is_terminal_and_no_new_privs() {
        let mut f = fixture();
        let p = f.spec().process().clone().unwrap();
        assert_eq!(p.terminal(), Some(false));
        assert_eq!(p.no_new_privileges(), Some(false));
        f.config.tty = true;
        f.config.security.no_new_privs = true;
        let p = f.spec().process().clone().unwrap();
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(p.no_new_privileges(), Some(true));
    }

    /// The namespaces, without the cgroup one (it depends on the host's hierarchy: see
    /// `unprivileged_containers_get_a_private_cgroup_namespace_on_cgroup_v2_only`).
    fn ns(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<String>)> {
        linux(spec)
            .namespaces()
            .clone()
            .unwrap()
            .iter()
            .filter(|n| n.typ() != LinuxNamespaceType::Cgroup)
            .map(|n| {
                (
                    n.typ(),
                    n.path().as_ref().map(|p| p.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn namespaces_of_a_pod_container() {
        use LinuxNamespaceType::*;
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            ns(&fixture().spec()),
            [
                (Mount, None),
                (Network, s("/run/berth/netns/sb1")),
                (Ipc, s("/proc/42/ns/ipc")),
                (Uts, s("/proc/42/ns/uts")),
                (Pid, s("/proc/42/ns/pid")),
            ]
        );
    }

    #[test]
    fn unprivileged_containers_get_a_private_cgroup_namespace_on_cgroup_v2_only() {
        let private_cgroupns = |f: &Fixture| {
            linux(&f.spec())
                .namespaces()
                .clone()
                .unwrap()
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::Cgroup && n.path().is_none())
        };
        let mut f = fixture();
        // This host's hierarchy decides: v2 (the test VM) gets one, v1 (hybrid) does not.
        assert_eq!(
            private_cgroupns(&f),
            crate::linux::cgroup::unified_host(),
            "cgroup v2 host: {}",
            crate::linux::cgroup::unified_host()
        );
        f.config.security.privileged = true;
        assert!(
            !private_cgroupns(&f),
            "a privileged container keeps the host's view"
        );
    }

    #[test]
    fn namespaces_for_host_network_and_ipc() {
        use LinuxNamespaceType::*;
        let mut f = fixture();
        f.sandbox.netns_path = None;
        f.sandbox.host_ipc = true;
        let types: Vec<_> = ns(&f.spec()).into_iter().map(|(t, _)| t).collect();
        assert_eq!(types, [Mount, Uts, Pid]);
    }

    #[test]
    fn pid_namespace_modes() {
        use LinuxNamespaceType::Pid;
        let pid = |f: &Fixture| -> Option<Option<String>> {
            ns(&f.spec())
                .into_iter()
                .find(|(t, _)| *t == Pid)
                .map(|(_, p)| p)
        };
        let mut f = fixture();
        f.config.security.namespaces.pid = NamespaceMode::Container;
        assert_eq!(pid(&f), Some(None));
        f.config.security.namespaces.pid = NamespaceMode::Node;
        assert_eq!(pid(&f), None);
        f.config.security.namespaces.pid = NamespaceMode::Target;
        f.config.security.namespaces.target_id = "other".into();
        let err = Error::from(f.build().unwrap_err());
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert!(err.to_string().contains("other"));
        f.target_pid = Some(777);
        assert_eq!(pid(&f), Some(Some("/proc/777/ns/pid".into())));
    }

    #[test]
    fn cgroups_path_is_under_the_pod_cgroup() {
        assert_eq!(
            linux(&fixture().spec()).cgroups_path().as_deref(),
            Some(Path::new("/berth/pod-sb1/c1"))
        );
    }

    #[test]
    fn nofile_rlimit() {
        let spec = fixture().spec();
        let rlimits = spec.process().as_ref().unwrap().rlimits().clone().unwrap();
        assert_eq!(rlimits.len(), 1);
        assert_eq!(rlimits[0].typ(), PosixRlimitType::RlimitNofile);
        assert_eq!(
            (rlimits[0].soft(), rlimits[0].hard()),
            (1_048_576, 1_048_576)
        );
    }

    #[test]
    fn annotations_copied_and_added() {
        let mut f = fixture();
        f.config.annotations.insert("user/key".into(), "v".into());
        let spec = f.spec();
        let a = spec.annotations().as_ref().unwrap();
        assert_eq!(a["user/key"], "v");
        assert_eq!(a[ANNOTATION_CONTAINER_TYPE], "container");
        assert_eq!(a[ANNOTATION_SANDBOX_ID], "sb1");
        assert_eq!(a[ANNOTATION_CONTAINER_NAME], "app");
        assert_eq!(a[ANNOTATION_IMAGE_NAME], "busybox:latest");
    }

    #[test]
    fn oci_version_and_json_shape() {
        let spec = fixture().spec();
        assert_eq!(spec.version(), OCI_VERSION);
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["ociVersion"], "1.2.0");
        assert!(json.get("hostname").is_none());
        assert_eq!(json["linux"]["cgroupsPath"], "/berth/pod-sb1/c1");
        let back: Spec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn stop_signal_cri_then_image_then_sigterm() {
        let plain = ImageConfiguration::default();
        assert_eq!(stop_signal(&plain, None), Signal::SIGTERM);
        let img = image(|c| c.stop_signal("SIGQUIT"));
        assert_eq!(stop_signal(&img, None), Signal::SIGQUIT);
        assert_eq!(stop_signal(&img, Some("SIGINT")), Signal::SIGINT);
        assert_eq!(stop_signal(&img, Some("")), Signal::SIGQUIT);
        assert_eq!(stop_signal(&img, Some("BOGUS")), Signal::SIGQUIT);
    }

    #[test]
    fn signal_names_and_numbers_parse() {
        assert_eq!(parse_signal("SIGUSR1"), Some(Signal::SIGUSR1));
        assert_eq!(parse_signal("usr1"), Some(Signal::SIGUSR1));
        assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("TERM"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
    }
}
