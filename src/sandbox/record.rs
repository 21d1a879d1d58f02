//! The pod sandbox record (what is on disk) and how it is written and announced.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{PodMetadata, PodSpec, SandboxState};
use crate::cni::{Attachment, CniResult, NetworkConfigList};
use crate::lifecycle::{Entry, Record, record_fields};
use crate::shim::ShimClient;

pub(super) const RECORD_VERSION: u32 = 1;

/// What CNI was asked and answered, kept so that DEL uses the very same config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub config: NetworkConfigList,
    pub result: Option<CniResult>,
    pub torn_down: bool,
}

/// A default record is one being created, with nothing run yet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub version: u32,
    pub id: String,
    pub spec: PodSpec,
    pub state: SandboxState,
    /// The hostname the pod got (the request's, else the node's).
    #[serde(default)]
    pub hostname: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub netns: Option<PathBuf>,
    pub network: Option<NetworkRecord>,
    /// The pod-level cgroup (the kubelet's `cgroup_parent`, or one berth made).
    pub pod_cgroup: String,
    pub owns_pod_cgroup: bool,
    pub pause_cgroup: String,
    pub shim_socket: PathBuf,
    pub shim_pid: Option<u32>,
    pub pause_pid: Option<u32>,
    /// Start time of the pause process (clock ticks since boot), to tell it from a reused pid.
    pub pause_start_time: Option<u64>,
    /// With the systemd cgroup driver: the pod's slice and how its scopes are named
    /// (`pod_cgroup` is then the slice's path, `pause_cgroup` the pause scope's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<crate::linux::systemd::PodUnits>,
}

impl SandboxRecord {
    pub fn ips(&self) -> Vec<IpAddr> {
        self.network
            .as_ref()
            .and_then(|n| n.result.as_ref())
            .map(|r| r.ips.clone())
            .unwrap_or_default()
    }

    pub fn metadata(&self) -> Option<&PodMetadata> {
        self.spec.metadata.as_ref()
    }

    /// What CNI is given for this pod; none when it has no network namespace of its own.
    pub(super) fn attachment(&self) -> Option<Attachment> {
        let (netns, meta) = (self.netns.clone()?, self.metadata()?);
        let (namespace, name, uid) = (&meta.namespace, &meta.name, &meta.uid);
        let mut attachment = Attachment::new(&self.id, Some(netns), namespace, name, uid);
        // A mapping without a host port only documents the container port.
        let ports = self.spec.port_mappings.iter().filter(|p| p.host_port != 0);
        attachment.port_mappings = ports.cloned().collect();
        Some(attachment)
    }
}

impl Record for SandboxRecord {
    type State = SandboxState;
    const KIND: &'static str = "pod sandbox";
    const ID_FIELD: &'static str = "pod_sandbox_id";
    const DIR: &'static str = "sandboxes";
    const FILE: &'static str = "sandbox.json";
    record_fields!(SandboxState);

    fn labels(&self) -> &std::collections::BTreeMap<String, String> {
        &self.spec.labels
    }
    /// Ready only while the pause process is the one we started.
    fn reads_as(&self) -> SandboxState {
        let alive = || match (self.pause_pid, self.pause_start_time) {
            (Some(pid), Some(start)) => process_start_time(pid) == Some(start),
            (Some(pid), None) => process_start_time(pid).is_some(),
            _ => false,
        };
        match self.state {
            SandboxState::Ready if !alive() => SandboxState::NotReady,
            state => state,
        }
    }
    fn name_key(&self) -> Option<String> {
        self.metadata().map(|m| m.reservation_key())
    }
    fn fingerprint(&self) -> String {
        crate::lifecycle::fingerprint(&self.spec)
    }
}

/// Field 22 of /proc/<pid>/stat: start time in clock ticks since boot.
pub(super) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let start = rest.split(' ').nth(19)?;
    let state = rest.split(' ').next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    start.parse().ok()
}

/// What the sandbox manager keeps beside each record: its shim connection.
#[derive(Default)]
pub struct SandboxExt {
    pub(super) shim: Mutex<Option<ShimClient>>,
}

pub type Sandbox = Entry<SandboxRecord, SandboxExt>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_known_and_stable() {
        let pid = std::process::id();
        let a = process_start_time(pid).unwrap();
        assert_eq!(process_start_time(pid), Some(a));
        assert_eq!(process_start_time(u32::MAX / 2), None);
    }

    #[test]
    fn record_round_trips_through_json() {
        let record = SandboxRecord {
            version: RECORD_VERSION,
            id: "a".repeat(64),
            spec: PodSpec::default(),
            state: SandboxState::Ready,
            hostname: "node".into(),
            created_at: 5,
            netns: Some("/run/berth/netns/x".into()),
            network: None,
            pod_cgroup: "/berth/x".into(),
            owns_pod_cgroup: true,
            pause_cgroup: "/berth/x/x".into(),
            shim_socket: "/run/berth/s/x.sock".into(),
            shim_pid: Some(3),
            pause_pid: Some(4),
            pause_start_time: Some(99),
            units: None,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"state\":\"ready\""));
        let back: SandboxRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.pause_start_time, Some(99));
        assert_eq!(back.state, SandboxState::Ready);
    }
}
