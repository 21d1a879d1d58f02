//! What a container is asked to be, in berth's own types (the CRI proto stays in `cri/`).
//! Stored in container records, so every type is serde and compares by value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::sandbox::NamespaceMode;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContainerMetadata {
    pub name: String,
    pub attempt: u32,
}

/// CRI ContainerConfig (Linux part only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ContainerConfig {
    pub metadata: ContainerMetadata,
    /// The image reference as the kubelet gave it (a name or an image ID).
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// Empty: the image's WorkingDir, else `/`.
    pub working_dir: String,
    /// In the order given; a later duplicate wins.
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Relative to the pod's log_directory.
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub resources: ContainerResources,
    pub security: SecurityContext,
    /// The signal number StopContainer sends first when the CRI names one (else the
    /// image's STOPSIGNAL, else SIGTERM). A number: real-time signals have no nix name.
    pub stop_signal: Option<i32>,
}

/// CRI MountPropagation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MountPropagation {
    /// `rprivate`.
    #[default]
    Private,
    /// `rslave`.
    HostToContainer,
    /// `rshared`.
    Bidirectional,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Mount {
    /// Absolute, inside the container.
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub propagation: MountPropagation,
    /// With `readonly`: read-only all the way down (the spec adds `rro` to `ro`; init must
    /// apply it with `mount_setattr(MOUNT_ATTR_RDONLY, AT_RECURSIVE)`).
    pub recursive_read_only: bool,
    /// An image volume: the pulled image (or one directory of it) instead of `host_path`.
    /// Left out of records that have none, so their fingerprints stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageVolume>,
}

/// `Mount.image` and `Mount.image_sub_path`: always read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageVolume {
    /// A reference or an image ID, as the kubelet sent it.
    pub reference: String,
    /// Relative to the image root, without `..`; empty for the whole image.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Device {
    pub container_path: String,
    pub host_path: String,
    /// cgroup permissions, a subset of `rwm`; empty means `rwm`.
    pub permissions: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HugepageLimit {
    /// As the kubelet writes it: `2MB`, `1GB`.
    pub page_size: String,
    pub limit: u64,
}

/// CRI LinuxContainerResources; zero or empty means "not set".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContainerResources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub hugepage_limits: Vec<HugepageLimit>,
    /// cgroup v2 file name → value.
    pub unified: BTreeMap<String, String>,
    /// Memory plus swap, like cgroup v1's `memory.memsw.limit_in_bytes`.
    pub memory_swap_limit_in_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Capabilities {
    /// As given: `NET_ADMIN`, `CAP_NET_ADMIN` or `ALL`.
    pub add: Vec<String>,
    pub drop: Vec<String>,
    pub add_ambient: Vec<String>,
}

/// The container's PID namespace (network and IPC are the pod's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContainerNamespaces {
    pub pid: NamespaceMode,
    /// The container whose PID namespace a TARGET container joins.
    pub target_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProfileType {
    #[default]
    RuntimeDefault,
    Unconfined,
    Localhost,
}

/// A seccomp or AppArmor profile choice, kept as data until berth applies them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SecurityProfile {
    pub profile_type: ProfileType,
    pub localhost_ref: String,
}

/// CRI SupplementalGroupsPolicy: how the process's groups are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SupplementalGroupsPolicy {
    /// The user's groups from the image's /etc/group, plus the given ones.
    #[default]
    Merge,
    /// Only the primary group and the given ones.
    Strict,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SecurityContext {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: String,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    /// Absent in records written before berth knew the policy: Merge, what it did then.
    #[serde(default)]
    pub supplemental_groups_policy: SupplementalGroupsPolicy,
    pub privileged: bool,
    pub capabilities: Capabilities,
    pub no_new_privs: bool,
    /// None: the runtime's default list; Some(empty): nothing masked.
    pub masked_paths: Option<Vec<String>>,
    /// None: the runtime's default list; Some(empty): nothing read-only.
    pub readonly_paths: Option<Vec<String>>,
    pub namespaces: ContainerNamespaces,
    pub seccomp: Option<SecurityProfile>,
    pub apparmor: Option<SecurityProfile>,
}
