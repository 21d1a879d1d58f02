//! CRI ContainerConfig (proto) → berth's ContainerConfig, validating as it goes: every bad
//! value is an InvalidArgument naming its field.

use crate::cri::api as cri;

use crate::container::config::{
    Capabilities, ContainerConfig, ContainerMetadata, ContainerNamespaces, ContainerResources,
    Device, HugepageLimit, ImageVolume, Mount, MountPropagation, NamespaceMode, ProfileType,
    SecurityContext, SecurityProfile, SupplementalGroupsPolicy,
};
use crate::error::Error;

/// Validates and converts a CRI ContainerConfig.
pub fn container_config(cri: cri::ContainerConfig) -> Result<ContainerConfig, Error> {
    let metadata = cri
        .metadata
        .ok_or_else(|| Error::invalid_argument("metadata: required"))?;
    if metadata.name.is_empty() {
        return Err(Error::invalid_argument("metadata.name: required"));
    }
    let image = cri.image.map(|i| i.image).unwrap_or_default();
    if image.is_empty() {
        return Err(Error::invalid_argument("image.image: required"));
    }
    if !cri.working_dir.is_empty() && !cri.working_dir.starts_with('/') {
        return Err(Error::invalid_argument(format!(
            "working_dir: {:?} is not an absolute path",
            cri.working_dir
        )));
    }
    let mounts = cri
        .mounts
        .into_iter()
        .enumerate()
        .map(|(i, m)| mount(i, m))
        .collect::<Result<_, _>>()?;
    let devices = cri
        .devices
        .into_iter()
        .enumerate()
        .map(|(i, d)| device(i, d))
        .collect::<Result<_, _>>()?;
    let envs = cri
        .envs
        .into_iter()
        .enumerate()
        .map(|(i, kv)| env(i, kv))
        .collect::<Result<_, _>>()?;
    let linux = cri.linux.unwrap_or_default();
    Ok(ContainerConfig {
        metadata: ContainerMetadata {
            name: metadata.name,
            attempt: metadata.attempt,
        },
        image,
        command: cri.command,
        args: cri.args,
        working_dir: cri.working_dir,
        envs,
        mounts,
        devices,
        labels: cri.labels.into_iter().collect(),
        annotations: cri.annotations.into_iter().collect(),
        log_path: cri.log_path,
        stdin: cri.stdin,
        stdin_once: cri.stdin_once,
        tty: cri.tty,
        resources: linux.resources.as_ref().map(resources).unwrap_or_default(),
        security: security_context(linux.security_context.unwrap_or_default())?,
        stop_signal: stop_signal(cri.stop_signal)?,
    })
}

/// The CRI's Signal enum and the Linux numbers, both ways. Aliases (SIGCLD, SIGIOT,
/// SIGPOLL) come after the name a number is reported under.
fn signal_table() -> Vec<(cri::Signal, i32)> {
    use cri::Signal as S;
    let mut table = vec![
        (S::Sigabrt, libc::SIGABRT),
        (S::Sigalrm, libc::SIGALRM),
        (S::Sigbus, libc::SIGBUS),
        (S::Sigchld, libc::SIGCHLD),
        (S::Sigcld, libc::SIGCHLD),
        (S::Sigcont, libc::SIGCONT),
        (S::Sigfpe, libc::SIGFPE),
        (S::Sighup, libc::SIGHUP),
        (S::Sigill, libc::SIGILL),
        (S::Sigint, libc::SIGINT),
        (S::Sigio, libc::SIGIO),
        (S::Sigiot, libc::SIGIOT),
        (S::Sigkill, libc::SIGKILL),
        (S::Sigpipe, libc::SIGPIPE),
        (S::Sigpoll, libc::SIGPOLL),
        (S::Sigprof, libc::SIGPROF),
        (S::Sigpwr, libc::SIGPWR),
        (S::Sigquit, libc::SIGQUIT),
        (S::Sigsegv, libc::SIGSEGV),
        (S::Sigstkflt, libc::SIGSTKFLT),
        (S::Sigstop, libc::SIGSTOP),
        (S::Sigsys, libc::SIGSYS),
        (S::Sigterm, libc::SIGTERM),
        (S::Sigtrap, libc::SIGTRAP),
        (S::Sigtstp, libc::SIGTSTP),
        (S::Sigttin, libc::SIGTTIN),
        (S::Sigttou, libc::SIGTTOU),
        (S::Sigurg, libc::SIGURG),
        (S::Sigusr1, libc::SIGUSR1),
        (S::Sigusr2, libc::SIGUSR2),
        (S::Sigvtalrm, libc::SIGVTALRM),
        (S::Sigwinch, libc::SIGWINCH),
        (S::Sigxcpu, libc::SIGXCPU),
        (S::Sigxfsz, libc::SIGXFSZ),
    ];
    // SIGRTMIN .. SIGRTMIN+15, SIGRTMAX-14 .. SIGRTMAX: consecutive in the enum.
    let rtmin = libc::SIGRTMIN();
    let rtmax = libc::SIGRTMAX();
    for offset in 0..=15 {
        if let Ok(signal) = S::try_from(S::Sigrtmin as i32 + offset) {
            table.push((signal, rtmin + offset));
        }
    }
    for offset in 0..=14 {
        if let Ok(signal) = S::try_from(S::Sigrtmax as i32 - offset) {
            table.push((signal, rtmax - offset));
        }
    }
    table
}

/// `ContainerConfig.stop_signal`: None for RUNTIME_DEFAULT; a value outside the enum is
/// refused.
fn stop_signal(value: i32) -> Result<Option<i32>, Error> {
    if value == cri::Signal::RuntimeDefault as i32 {
        return Ok(None);
    }
    signal_table()
        .into_iter()
        .find(|(s, _)| *s as i32 == value)
        .map(|(_, number)| Some(number))
        .ok_or_else(|| Error::invalid_argument(format!("stop_signal: unknown signal {value}")))
}

/// The CRI Signal a Linux signal number is reported as (RUNTIME_DEFAULT when none).
pub fn signal_to_cri(number: i32) -> i32 {
    signal_table()
        .into_iter()
        .find(|(_, n)| *n == number)
        .map_or(cri::Signal::RuntimeDefault as i32, |(s, _)| s as i32)
}

/// 1.36 made `KeyValue.value` bytes; the OCI spec carries `KEY=VALUE` strings, so a value
/// that is not UTF-8 is refused rather than mangled.
fn env(i: usize, kv: cri::KeyValue) -> Result<(String, String), Error> {
    let value = String::from_utf8(kv.value).map_err(|_| {
        Error::invalid_argument(format!("envs[{i}] ({}): value is not UTF-8", kv.key))
    })?;
    Ok((kv.key, value))
}

/// CRI LinuxContainerResources → berth's (also for UpdateContainerResources).
pub fn resources(cri: &cri::LinuxContainerResources) -> ContainerResources {
    ContainerResources {
        cpu_period: cri.cpu_period,
        cpu_quota: cri.cpu_quota,
        cpu_shares: cri.cpu_shares,
        memory_limit_in_bytes: cri.memory_limit_in_bytes,
        oom_score_adj: cri.oom_score_adj,
        cpuset_cpus: cri.cpuset_cpus.clone(),
        cpuset_mems: cri.cpuset_mems.clone(),
        hugepage_limits: cri
            .hugepage_limits
            .iter()
            .map(|h| HugepageLimit {
                page_size: h.page_size.clone(),
                limit: h.limit,
            })
            .collect(),
        unified: cri
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        memory_swap_limit_in_bytes: cri.memory_swap_limit_in_bytes,
    }
}

fn absolute_container_path(field: &str, path: &str) -> Result<(), Error> {
    if path.is_empty() {
        return Err(Error::invalid_argument(format!(
            "{field}.container_path: required"
        )));
    }
    if !path.starts_with('/') {
        return Err(Error::invalid_argument(format!(
            "{field}.container_path: {path:?} is not an absolute path"
        )));
    }
    Ok(())
}

fn mount(index: usize, m: cri::Mount) -> Result<Mount, Error> {
    let field = format!("mounts[{index}]");
    absolute_container_path(&field, &m.container_path)?;
    let propagation = match cri::MountPropagation::try_from(m.propagation) {
        Ok(cri::MountPropagation::PropagationPrivate) => MountPropagation::Private,
        Ok(cri::MountPropagation::PropagationHostToContainer) => MountPropagation::HostToContainer,
        Ok(cri::MountPropagation::PropagationBidirectional) => MountPropagation::Bidirectional,
        Err(_) => {
            return Err(Error::invalid_argument(format!(
                "{field}.propagation: unknown value {}",
                m.propagation
            )));
        }
    };
    // selinux_relabel is ignored: SELinux is not supported. Id-mapped mounts are not
    // supported either; refuse them rather than mount something else.
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(Error::invalid_argument(format!(
            "{field}: id-mapped mounts are not supported"
        )));
    }
    let image = image_volume(&field, &m)?;
    Ok(Mount {
        container_path: m.container_path,
        host_path: m.host_path,
        // An image volume is read-only whatever the request says.
        readonly: m.readonly || image.is_some(),
        propagation,
        recursive_read_only: m.recursive_read_only,
        image,
    })
}

/// `Mount.image` with `image_sub_path`, checked as text: the image itself (pulled or not,
/// and whether the path exists in it) is the container manager's to check.
fn image_volume(field: &str, m: &cri::Mount) -> Result<Option<ImageVolume>, Error> {
    let reference = m.image.as_ref().map(|i| i.image.as_str()).unwrap_or("");
    if reference.is_empty() {
        if !m.image_sub_path.is_empty() {
            return Err(Error::invalid_argument(format!(
                "{field}.image_sub_path: only meaningful with {field}.image"
            )));
        }
        return Ok(None);
    }
    if !m.host_path.is_empty() {
        return Err(Error::invalid_argument(format!(
            "{field}: host_path {:?} and image {reference:?} are exclusive",
            m.host_path
        )));
    }
    // An image cannot receive mounts from the host nor send them back.
    if m.propagation != cri::MountPropagation::PropagationPrivate as i32 {
        return Err(Error::invalid_argument(format!(
            "{field}.propagation: an image volume takes only private propagation"
        )));
    }
    let sub_path = &m.image_sub_path;
    if sub_path.starts_with('/') {
        return Err(Error::invalid_argument(format!(
            "{field}.image_sub_path: {sub_path:?} is absolute; it is relative to the image root"
        )));
    }
    if sub_path.split('/').any(|part| part == "..") {
        return Err(Error::invalid_argument(format!(
            "{field}.image_sub_path: {sub_path:?} has a `..`; it must stay inside the image"
        )));
    }
    if sub_path.contains('\0') {
        return Err(Error::invalid_argument(format!(
            "{field}.image_sub_path: {sub_path:?} holds a NUL byte"
        )));
    }
    Ok(Some(ImageVolume {
        reference: reference.to_string(),
        sub_path: sub_path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect::<Vec<_>>()
            .join("/"),
    }))
}

fn device(index: usize, d: cri::Device) -> Result<Device, Error> {
    let field = format!("devices[{index}]");
    absolute_container_path(&field, &d.container_path)?;
    if !d.host_path.starts_with('/') {
        return Err(Error::invalid_argument(format!(
            "{field}.host_path: {:?} is not an absolute path",
            d.host_path
        )));
    }
    if let Some(bad) = d
        .permissions
        .chars()
        .find(|c| !matches!(c, 'r' | 'w' | 'm'))
    {
        return Err(Error::invalid_argument(format!(
            "{field}.permissions: {:?} has {bad:?}; only r, w and m are allowed",
            d.permissions
        )));
    }
    Ok(Device {
        container_path: d.container_path,
        host_path: d.host_path,
        permissions: d.permissions,
    })
}

fn namespace_mode(field: &str, value: i32) -> Result<NamespaceMode, Error> {
    match cri::NamespaceMode::try_from(value) {
        Ok(cri::NamespaceMode::Pod) => Ok(NamespaceMode::Pod),
        Ok(cri::NamespaceMode::Container) => Ok(NamespaceMode::Container),
        Ok(cri::NamespaceMode::Node) => Ok(NamespaceMode::Node),
        Ok(cri::NamespaceMode::Target) => Ok(NamespaceMode::Target),
        Err(_) => Err(Error::invalid_argument(format!(
            "{field}: unknown namespace mode {value}"
        ))),
    }
}

/// CRI userns_options of a pod → its user namespace (None: the host's). Mode POD needs
/// exactly one uid and one gid mapping, each mapping container ID 0; CONTAINER and TARGET
/// are not supported (nor by the kubelet).
pub fn pod_userns(
    options: Option<&cri::UserNamespace>,
) -> Result<Option<crate::sandbox::spec::UserNamespace>, Error> {
    use crate::sandbox::spec::{IdMapping, UserNamespace};
    const FIELD: &str = "security_context.namespace_options.userns_options";
    let Some(options) = options else {
        return Ok(None);
    };
    match namespace_mode(&format!("{FIELD}.mode"), options.mode)? {
        NamespaceMode::Node => return Ok(None),
        NamespaceMode::Pod => {}
        other => {
            return Err(Error::invalid_argument(format!(
                "{FIELD}.mode: {other:?} is not supported; use POD or NODE"
            )));
        }
    }
    let mapping = |name: &str, maps: &[cri::IdMapping]| -> Result<IdMapping, Error> {
        let [m] = maps else {
            return Err(Error::invalid_argument(format!(
                "{FIELD}.{name}: exactly one mapping is supported, got {}",
                maps.len()
            )));
        };
        if m.container_id != 0 {
            return Err(Error::invalid_argument(format!(
                "{FIELD}.{name}: container ID 0 must be mapped (the mapping starts at {})",
                m.container_id
            )));
        }
        if m.length == 0 || m.host_id.checked_add(m.length - 1).is_none() {
            return Err(Error::invalid_argument(format!(
                "{FIELD}.{name}: host IDs {}+{} are not a valid range",
                m.host_id, m.length
            )));
        }
        Ok(IdMapping {
            container_id: m.container_id,
            host_id: m.host_id,
            length: m.length,
        })
    };
    Ok(Some(UserNamespace {
        uids: vec![mapping("uids", &options.uids)?],
        gids: vec![mapping("gids", &options.gids)?],
    }))
}

fn security_profile(field: &str, p: &cri::SecurityProfile) -> Result<SecurityProfile, Error> {
    let profile_type = match cri::security_profile::ProfileType::try_from(p.profile_type) {
        Ok(cri::security_profile::ProfileType::RuntimeDefault) => ProfileType::RuntimeDefault,
        Ok(cri::security_profile::ProfileType::Unconfined) => ProfileType::Unconfined,
        Ok(cri::security_profile::ProfileType::Localhost) => ProfileType::Localhost,
        Err(_) => {
            return Err(Error::invalid_argument(format!(
                "{field}.profile_type: unknown value {}",
                p.profile_type
            )));
        }
    };
    Ok(SecurityProfile {
        profile_type,
        localhost_ref: p.localhost_ref.clone(),
    })
}

/// The deprecated string form (`runtime/default`, `unconfined`, `localhost/<path>`);
/// anything else is refused rather than guessed at.
fn legacy_profile(field: &str, value: &str) -> Result<Option<SecurityProfile>, Error> {
    let (profile_type, localhost_ref) = match value {
        "" => return Ok(None),
        "unconfined" => (ProfileType::Unconfined, String::new()),
        "runtime/default" | "docker/default" => (ProfileType::RuntimeDefault, String::new()),
        other => match other.strip_prefix(LOCALHOST_PREFIX) {
            Some(path) => (ProfileType::Localhost, path.to_owned()),
            None => {
                return Err(Error::invalid_argument(format!(
                    "{field}: {other:?} is none of runtime/default, unconfined, localhost/<name>"
                )));
            }
        },
    };
    Ok(Some(SecurityProfile {
        profile_type,
        localhost_ref,
    }))
}

/// The prefix the deprecated string form puts before a Localhost profile's name, and the
/// one kubelets also send in the `apparmor` field's `localhost_ref`.
const LOCALHOST_PREFIX: &str = "localhost/";

/// The AppArmor choice from either field; a `localhost_ref` names the same profile with or
/// without `localhost/`.
fn apparmor_profile(
    field: Option<&cri::SecurityProfile>,
    legacy: &str,
) -> Result<Option<SecurityProfile>, Error> {
    let Some(p) = field else {
        return legacy_profile("security_context.apparmor_profile", legacy);
    };
    let mut profile = security_profile("security_context.apparmor", p)?;
    if let Some(name) = profile.localhost_ref.strip_prefix(LOCALHOST_PREFIX) {
        profile.localhost_ref = name.to_owned();
    }
    Ok(Some(profile))
}

// Older kubelets still send the deprecated string forms of the profiles.
#[allow(deprecated)]
fn security_context(sc: cri::LinuxContainerSecurityContext) -> Result<SecurityContext, Error> {
    let ns = sc.namespace_options.unwrap_or_default();
    let pid = namespace_mode("security_context.namespace_options.pid", ns.pid)?;
    if pid == NamespaceMode::Target && ns.target_id.is_empty() {
        return Err(Error::invalid_argument(
            "security_context.namespace_options.target_id: required with pid mode TARGET",
        ));
    }
    // The container's user namespace is its pod's: only say so, or refuse what berth
    // cannot do.
    if let Some(userns) = &ns.userns_options {
        let mode = namespace_mode(
            "security_context.namespace_options.userns_options.mode",
            userns.mode,
        )?;
        if matches!(mode, NamespaceMode::Container | NamespaceMode::Target) {
            return Err(Error::invalid_argument(format!(
                "security_context.namespace_options.userns_options.mode: {mode:?} is not supported; containers share their pod's user namespace"
            )));
        }
    }
    let apparmor = apparmor_profile(sc.apparmor.as_ref(), &sc.apparmor_profile)?;
    let caps = sc.capabilities.unwrap_or_default();
    let seccomp = match &sc.seccomp {
        Some(p) => Some(security_profile("security_context.seccomp", p)?),
        None => legacy_profile(
            "security_context.seccomp_profile_path",
            &sc.seccomp_profile_path,
        )?,
    };

    // proto3 cannot tell an empty list from an absent one; like containerd, empty means
    // "the defaults" (the kubelet always sends the defaults unless procMount is Unmasked).
    let non_empty = |v: Vec<String>| (!v.is_empty()).then_some(v);
    // A group alone would run as the image's user with a group the pod chose for another
    // user: the kubelet and containerd refuse it.
    if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
        return Err(Error::invalid_argument(
            "security_context.run_as_group: set without run_as_user or run_as_username",
        ));
    }
    let supplemental_groups_policy =
        match cri::SupplementalGroupsPolicy::try_from(sc.supplemental_groups_policy) {
            Ok(cri::SupplementalGroupsPolicy::Merge) => SupplementalGroupsPolicy::Merge,
            Ok(cri::SupplementalGroupsPolicy::Strict) => SupplementalGroupsPolicy::Strict,
            Err(_) => {
                return Err(Error::invalid_argument(format!(
                    "security_context.supplemental_groups_policy: unknown value {}",
                    sc.supplemental_groups_policy
                )));
            }
        };
    Ok(SecurityContext {
        run_as_user: sc.run_as_user.map(|v| v.value),
        run_as_group: sc.run_as_group.map(|v| v.value),
        run_as_username: sc.run_as_username,
        readonly_rootfs: sc.readonly_rootfs,
        supplemental_groups: sc.supplemental_groups,
        supplemental_groups_policy,
        privileged: sc.privileged,
        capabilities: Capabilities {
            add: caps.add_capabilities,
            drop: caps.drop_capabilities,
            add_ambient: caps.add_ambient_capabilities,
        },
        no_new_privs: sc.no_new_privs,
        masked_paths: non_empty(sc.masked_paths),
        readonly_paths: non_empty(sc.readonly_paths),
        namespaces: ContainerNamespaces {
            pid,
            target_id: ns.target_id,
        },
        seccomp,
        apparmor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn stop_signal_maps_every_enum_value_to_a_linux_number_and_back() {
        assert_eq!(
            stop_signal(cri::Signal::RuntimeDefault as i32).unwrap(),
            None
        );
        assert_eq!(
            stop_signal(cri::Signal::Sigusr1 as i32).unwrap(),
            Some(libc::SIGUSR1)
        );
        assert_eq!(
            stop_signal(cri::Signal::Sigrtminplus1 as i32).unwrap(),
            Some(libc::SIGRTMIN() + 1)
        );
        assert_eq!(
            stop_signal(cri::Signal::Sigrtmax as i32).unwrap(),
            Some(libc::SIGRTMAX())
        );
        for value in 1..=cri::Signal::Sigrtmax as i32 {
            let number = stop_signal(value).unwrap().unwrap();
            let back = signal_to_cri(number);
            // Aliases come back under their main name, with the same number.
            assert_eq!(
                stop_signal(back).unwrap(),
                Some(number),
                "enum value {value}"
            );
        }
        assert_eq!(signal_to_cri(libc::SIGTERM), cri::Signal::Sigterm as i32);
        assert_eq!(signal_to_cri(libc::SIGCHLD), cri::Signal::Sigchld as i32);
    }

    #[test]
    fn a_stop_signal_outside_the_enum_is_invalid_argument() {
        let mut config = minimal();
        config.stop_signal = 66;
        let err = container_config(config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("stop_signal"), "{err}");
    }

    #[test]
    fn an_env_value_that_is_not_utf8_is_invalid_argument() {
        let mut config = minimal();
        config.envs = vec![cri::KeyValue {
            key: "K".into(),
            value: vec![0xff, 0xfe],
        }];
        let err = container_config(config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("envs[0]"), "{err}");
    }

    fn minimal() -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 2,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn invalid(config: cri::ContainerConfig, field: &str) {
        let err = container_config(config).expect_err("must be refused");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains(field), "{err} should name {field}");
    }

    #[test]
    #[allow(deprecated)]
    fn converts_every_field() {
        let mut c = minimal();
        c.command = vec!["/bin/sh".into()];
        c.args = vec!["-c".into(), "true".into()];
        c.working_dir = "/work".into();
        c.envs = vec![
            cri::KeyValue {
                key: "B".into(),
                value: "1".into(),
            },
            cri::KeyValue {
                key: "A".into(),
                value: "2".into(),
            },
        ];
        c.mounts = vec![cri::Mount {
            container_path: "/data".into(),
            host_path: "/srv/data".into(),
            readonly: true,
            propagation: cri::MountPropagation::PropagationBidirectional as i32,
            recursive_read_only: true,
            ..Default::default()
        }];
        c.devices = vec![cri::Device {
            container_path: "/dev/fuse".into(),
            host_path: "/dev/fuse".into(),
            permissions: "rw".into(),
        }];
        c.labels.insert("l".into(), "v".into());
        c.annotations.insert("a".into(), "b".into());
        c.log_path = "app/0.log".into();
        c.stdin = true;
        c.stdin_once = true;
        c.tty = true;
        c.linux = Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                cpu_period: 100000,
                cpu_quota: 50000,
                cpu_shares: 512,
                memory_limit_in_bytes: 1 << 20,
                oom_score_adj: 5,
                cpuset_cpus: "0".into(),
                cpuset_mems: "0".into(),
                hugepage_limits: vec![cri::HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 4096,
                }],
                unified: [("memory.high".to_string(), "1000".to_string())].into(),
                memory_swap_limit_in_bytes: 2 << 20,
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: vec!["NET_ADMIN".into()],
                    drop_capabilities: vec!["ALL".into()],
                    add_ambient_capabilities: vec!["CAP_CHOWN".into()],
                }),
                privileged: true,
                namespace_options: Some(cri::NamespaceOption {
                    pid: cri::NamespaceMode::Target as i32,
                    target_id: "other".into(),
                    ..Default::default()
                }),
                run_as_user: Some(cri::Int64Value { value: 1000 }),
                run_as_group: Some(cri::Int64Value { value: 0 }),
                run_as_username: "".into(),
                readonly_rootfs: true,
                supplemental_groups: vec![5, 6],
                no_new_privs: true,
                masked_paths: vec![],
                readonly_paths: vec!["/proc/sys".into()],
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::Localhost as i32,
                    localhost_ref: "/p.json".into(),
                }),
                seccomp_profile_path: "unconfined".into(),
                apparmor_profile: "runtime/default".into(),
                ..Default::default()
            }),
        });
        let got = container_config(c).expect("valid");
        assert_eq!(got.metadata.name, "app");
        assert_eq!(got.metadata.attempt, 2);
        assert_eq!(got.image, "busybox");
        assert_eq!(got.command, ["/bin/sh"]);
        assert_eq!(got.args, ["-c", "true"]);
        assert_eq!(got.working_dir, "/work");
        assert_eq!(
            got.envs,
            [("B".into(), "1".into()), ("A".into(), "2".into())]
        );
        assert_eq!(
            got.mounts,
            [Mount {
                container_path: "/data".into(),
                host_path: "/srv/data".into(),
                readonly: true,
                propagation: MountPropagation::Bidirectional,
                recursive_read_only: true,
                image: None,
            }]
        );
        assert_eq!(got.devices[0].permissions, "rw");
        assert_eq!(got.labels["l"], "v");
        assert_eq!(got.annotations["a"], "b");
        assert_eq!(got.log_path, "app/0.log");
        assert!(got.stdin && got.stdin_once && got.tty);
        let r = &got.resources;
        assert_eq!(
            (r.cpu_period, r.cpu_quota, r.cpu_shares),
            (100000, 50000, 512)
        );
        assert_eq!(r.memory_limit_in_bytes, 1 << 20);
        assert_eq!(r.memory_swap_limit_in_bytes, 2 << 20);
        assert_eq!(r.oom_score_adj, 5);
        assert_eq!((r.cpuset_cpus.as_str(), r.cpuset_mems.as_str()), ("0", "0"));
        assert_eq!(r.hugepage_limits[0].limit, 4096);
        assert_eq!(r.unified["memory.high"], "1000");
        let s = &got.security;
        assert_eq!(s.run_as_user, Some(1000));
        assert_eq!(s.run_as_group, Some(0));
        assert!(s.readonly_rootfs && s.privileged && s.no_new_privs);
        assert_eq!(s.supplemental_groups, [5, 6]);
        assert_eq!(s.capabilities.add, ["NET_ADMIN"]);
        assert_eq!(s.capabilities.drop, ["ALL"]);
        assert_eq!(s.capabilities.add_ambient, ["CAP_CHOWN"]);
        assert_eq!(s.masked_paths, None);
        assert_eq!(s.readonly_paths, Some(vec!["/proc/sys".to_string()]));
        assert_eq!(s.namespaces.pid, NamespaceMode::Target);
        assert_eq!(s.namespaces.target_id, "other");
        // The structured field wins over the deprecated string.
        assert_eq!(
            s.seccomp,
            Some(SecurityProfile {
                profile_type: ProfileType::Localhost,
                localhost_ref: "/p.json".into()
            })
        );
        assert_eq!(
            s.apparmor.as_ref().map(|p| p.profile_type),
            Some(ProfileType::RuntimeDefault)
        );
    }

    #[test]
    fn run_as_group_without_a_user_is_refused() {
        let mut config = minimal();
        config.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                run_as_group: Some(cri::Int64Value { value: 7 }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let err = container_config(config).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("run_as_group"), "{err}");
    }

    #[test]
    fn absent_run_as_user_stays_none() {
        let got = container_config(minimal()).expect("valid");
        assert_eq!(got.security.run_as_user, None);
        assert_eq!(got.security.run_as_group, None);
        assert_eq!(got.security.namespaces.pid, NamespaceMode::Pod);
        assert_eq!(got.resources, ContainerResources::default());
    }

    #[test]
    fn missing_metadata_or_name_is_invalid() {
        let mut c = minimal();
        c.metadata = None;
        invalid(c, "metadata");
        let mut c = minimal();
        c.metadata = Some(cri::ContainerMetadata::default());
        invalid(c, "metadata.name");
    }

    #[test]
    fn missing_image_is_invalid() {
        let mut c = minimal();
        c.image = None;
        invalid(c, "image");
    }

    #[test]
    fn relative_working_dir_is_invalid() {
        let mut c = minimal();
        c.working_dir = "work".into();
        invalid(c, "working_dir");
    }

    #[test]
    fn mount_without_or_with_relative_container_path_is_invalid() {
        let mut c = minimal();
        c.mounts = vec![cri::Mount {
            host_path: "/x".into(),
            ..Default::default()
        }];
        invalid(c, "mounts[0].container_path");
        let mut c = minimal();
        c.mounts = vec![cri::Mount {
            container_path: "data".into(),
            host_path: "/x".into(),
            ..Default::default()
        }];
        invalid(c, "mounts[0].container_path");
    }

    fn image_mount(reference: &str, sub_path: &str) -> cri::Mount {
        cri::Mount {
            container_path: "/vol".into(),
            image: Some(cri::ImageSpec {
                image: reference.into(),
                ..Default::default()
            }),
            image_sub_path: sub_path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_image_volume_is_read_only_with_its_sub_path_cleaned() {
        let mut c = minimal();
        c.mounts = vec![image_mount("busybox", "./etc//ssl/")];
        let got = container_config(c).unwrap();
        assert_eq!(
            got.mounts,
            [Mount {
                container_path: "/vol".into(),
                readonly: true,
                image: Some(ImageVolume {
                    reference: "busybox".into(),
                    sub_path: "etc/ssl".into(),
                }),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn image_sub_paths_that_leave_the_image_or_lack_an_image_are_invalid() {
        for bad in ["/etc", "..", "a/../../b", "a/..", "a\0b"] {
            let mut c = minimal();
            c.mounts = vec![image_mount("busybox", bad)];
            invalid(c, "mounts[0].image_sub_path");
        }
        let mut c = minimal();
        c.mounts = vec![image_mount("", "etc")];
        invalid(c, "mounts[0].image_sub_path");
        let mut c = minimal();
        c.mounts = vec![cri::Mount {
            host_path: "/x".into(),
            ..image_mount("busybox", "")
        }];
        invalid(c, "mounts[0]: host_path");
        let mut c = minimal();
        c.mounts = vec![cri::Mount {
            propagation: cri::MountPropagation::PropagationHostToContainer as i32,
            ..image_mount("busybox", "")
        }];
        invalid(c, "mounts[0].propagation");
    }

    #[test]
    fn bad_enum_values_are_invalid() {
        let mut c = minimal();
        c.mounts = vec![cri::Mount {
            container_path: "/data".into(),
            host_path: "/x".into(),
            propagation: 7,
            ..Default::default()
        }];
        invalid(c, "mounts[0].propagation");
        let mut c = minimal();
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: 9,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        invalid(c, "namespace_options.pid");
    }

    #[test]
    fn target_pid_needs_a_target_id() {
        let mut c = minimal();
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: cri::NamespaceMode::Target as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        invalid(c, "target_id");
    }

    #[test]
    fn bad_devices_are_invalid() {
        let mut c = minimal();
        c.devices = vec![cri::Device {
            container_path: "/dev/x".into(),
            host_path: "/dev/x".into(),
            permissions: "rwx".into(),
        }];
        invalid(c, "devices[0].permissions");
        let mut c = minimal();
        c.devices = vec![cri::Device {
            container_path: "dev/x".into(),
            host_path: "/dev/x".into(),
            permissions: "r".into(),
        }];
        invalid(c, "devices[0].container_path");
    }

    #[test]
    fn pod_user_namespaces() {
        let map = |c, h, l| cri::IdMapping {
            container_id: c,
            host_id: h,
            length: l,
        };
        let opts = |mode: cri::NamespaceMode, uids: Vec<cri::IdMapping>| cri::UserNamespace {
            mode: mode as i32,
            gids: uids.clone(),
            uids,
        };
        assert_eq!(pod_userns(None).unwrap(), None);
        assert_eq!(
            pod_userns(Some(&opts(cri::NamespaceMode::Node, vec![]))).unwrap(),
            None
        );
        let got = pod_userns(Some(&opts(
            cri::NamespaceMode::Pod,
            vec![map(0, 1000, 100000)],
        )))
        .unwrap()
        .unwrap();
        assert_eq!(got.uids[0].host_id, 1000);
        assert_eq!(got.gids[0].length, 100000);
        for (bad, words) in [
            (opts(cri::NamespaceMode::Pod, vec![]), "exactly one"),
            (
                opts(
                    cri::NamespaceMode::Pod,
                    vec![map(0, 1000, 10), map(0, 2000, 10)],
                ),
                "exactly one",
            ),
            (
                opts(cri::NamespaceMode::Pod, vec![map(1, 1000, 10)]),
                "container ID 0",
            ),
            (
                opts(cri::NamespaceMode::Pod, vec![map(0, u32::MAX, 10)]),
                "valid range",
            ),
            (opts(cri::NamespaceMode::Container, vec![]), "Container"),
            (opts(cri::NamespaceMode::Target, vec![]), "Target"),
        ] {
            let err = pod_userns(Some(&bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert!(err.to_string().contains(words), "{err} lacks {words}");
            assert!(err.to_string().contains("userns_options"), "{err}");
        }
    }

    #[test]
    fn legacy_profile_strings() {
        let legacy = |v| legacy_profile("f", v).expect("known form");
        assert_eq!(legacy(""), None);
        assert_eq!(
            legacy("localhost/a/b.json"),
            Some(SecurityProfile {
                profile_type: ProfileType::Localhost,
                localhost_ref: "a/b.json".into()
            })
        );
        assert_eq!(
            legacy("unconfined").map(|p| p.profile_type),
            Some(ProfileType::Unconfined)
        );
    }

    #[test]
    fn legacy_profile_unknown_form_is_invalid_argument() {
        for value in ["localhost", "Localhost/x", "docker/x", "x"] {
            let err = legacy_profile("security_context.apparmor_profile", value).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{value}");
            assert!(err.to_string().contains("apparmor_profile"), "{err}");
        }
    }

    #[allow(deprecated)]
    fn with_apparmor(
        apparmor: Option<cri::SecurityProfile>,
        legacy: &str,
    ) -> Result<Option<SecurityProfile>, Error> {
        let mut c = minimal();
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                apparmor,
                apparmor_profile: legacy.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        container_config(c).map(|c| c.security.apparmor)
    }

    /// Regression (critest in an AppArmor VM): the `apparmor` field's localhost_ref came
    /// with `localhost/`, which only the deprecated string field stripped.
    #[test]
    fn apparmor_localhost_ref_names_the_profile_with_or_without_prefix() {
        let localhost = |r: &str| cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: r.into(),
        };
        let want = Some(SecurityProfile {
            profile_type: ProfileType::Localhost,
            localhost_ref: "cri-deny-write".into(),
        });
        assert_eq!(
            with_apparmor(Some(localhost("localhost/cri-deny-write")), "").unwrap(),
            want
        );
        assert_eq!(
            with_apparmor(Some(localhost("cri-deny-write")), "").unwrap(),
            want
        );
        assert_eq!(
            with_apparmor(None, "localhost/cri-deny-write").unwrap(),
            want
        );
        // The field wins over the deprecated string.
        assert_eq!(
            with_apparmor(Some(localhost("cri-deny-write")), "unconfined").unwrap(),
            want
        );
        assert_eq!(with_apparmor(None, "").unwrap(), None);
        assert_eq!(
            with_apparmor(None, "runtime/default")
                .unwrap()
                .map(|p| p.profile_type),
            Some(ProfileType::RuntimeDefault)
        );
        let err = with_apparmor(None, "cri-deny-write").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}
