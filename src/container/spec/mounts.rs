//! The mounts of a container: the CRI mounts, the pod files, /dev/shm, and the ones every
//! container gets.

use std::collections::HashSet;
use std::path::PathBuf;

use oci_spec::runtime::{Mount, MountBuilder};

use super::error::SpecError;
use super::input::SpecInput;
use crate::container::config::{ContainerConfig, MountPropagation};

pub(super) fn mount(
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

pub(super) fn depth(path: &str) -> usize {
    path.split('/').filter(|p| !p.is_empty()).count()
}

/// The standard filesystems, then the pod files, /dev/shm and the CRI mounts, those sorted so
/// that a parent is mounted before its children. A CRI mount replaces a default mount at the
/// same place (and a CRI /dev replaces everything under /dev).
pub(super) fn mounts(input: &SpecInput) -> Result<Vec<Mount>, SpecError> {
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
    for (index, m) in config.mounts.iter().enumerate() {
        if m.image.is_some() {
            // Init mounts the image there first (init/image_volume.rs); read-only, and
            // nothing set-uid or device-like in an image gains power through a volume.
            let source = crate::init::mounts::image_volume_source(input.bundle_dir, index);
            extra.push((
                m.container_path.clone(),
                mount(
                    &m.container_path,
                    "bind",
                    source,
                    &["rbind", "rprivate", "ro", "nosuid", "nodev"],
                )?,
            ));
            continue;
        }
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
pub(super) fn rootfs_propagation(config: &ContainerConfig) -> Option<&'static str> {
    let has = |p: MountPropagation| config.mounts.iter().any(|m| m.propagation == p);
    if has(MountPropagation::Bidirectional) {
        Some("rshared")
    } else if has(MountPropagation::HostToContainer) {
        Some("rslave")
    } else {
        None
    }
}
