//! Everything `build_spec` reads: the CRI config, the image, the pod, and facts about the
//! host that the caller looked up (this module does no I/O).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;

use crate::container::config::ContainerConfig;

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
    /// With the systemd driver, containers are scopes `<prefix>-<id>.scope` in the pod's
    /// slice; None: a cgroup named by the id.
    pub scope_prefix: Option<String>,
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

/// Runtime-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeDefaults {
    /// The lowest oom_score_adj berth may give (its own: without CAP_SYS_RESOURCE a process
    /// cannot go below it).
    pub min_oom_score_adj: i32,
    /// RLIMIT_NOFILE, soft and hard.
    pub nofile: u64,
    /// What AppArmor the host has (`container::apparmor::prepare`, at the daemon's start).
    pub apparmor: AppArmorHost,
}

/// AppArmor on the host, as the daemon found it when it started.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AppArmorHost {
    /// The kernel does not enforce AppArmor: no profile can be applied.
    #[default]
    Disabled,
    /// Enforced; the runtime default profile's name, or why berth could not load it.
    Enabled {
        default_profile: Result<String, String>,
    },
}

impl Default for RuntimeDefaults {
    fn default() -> Self {
        RuntimeDefaults {
            min_oom_score_adj: -1000,
            nofile: 1_048_576,
            apparmor: AppArmorHost::Disabled,
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
