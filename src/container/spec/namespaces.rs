//! The namespaces a container joins (the pod's, through the pause process) or gets of
//! its own.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType};

use super::error::SpecError;
use super::input::SpecInput;
use crate::container::config::NamespaceMode;

pub(super) fn namespace(
    typ: LinuxNamespaceType,
    path: Option<PathBuf>,
) -> Result<LinuxNamespace, SpecError> {
    let builder = LinuxNamespaceBuilder::default().typ(typ);
    Ok(match path {
        Some(path) => builder.path(path).build()?,
        None => builder.build()?,
    })
}

/// The pod's network (none for host network), IPC (none for host IPC) and UTS; PID per mode;
/// always a new mount namespace.
pub(super) fn namespaces(input: &SpecInput) -> Result<Vec<LinuxNamespace>, SpecError> {
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
