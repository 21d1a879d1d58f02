//! The pod sandbox record (what is on disk) and how it is written and announced.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{PodMetadata, PodSpec, SandboxState};
use crate::cni::{CniResult, NetworkConfigList};
use crate::error::Error;
use crate::events::{EventKind, SandboxPublisher};
use crate::lifecycle::{Entry, Hooks, Record, Saving};
use crate::persist;
use crate::shim::ShimClient;
use crate::store::lock;

pub(super) const RECORD_VERSION: u32 = 1;
pub(super) const RECORD_FILE: &str = "sandbox.json";

/// What CNI was asked and answered, kept so that DEL uses the very same config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub config: NetworkConfigList,
    pub result: Option<CniResult>,
    pub torn_down: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

impl Record for SandboxRecord {
    type State = SandboxState;
    const KIND: &'static str = "pod sandbox";
    const ID_FIELD: &'static str = "pod_sandbox_id";

    fn id(&self) -> &str {
        &self.id
    }
    fn state(&self) -> SandboxState {
        self.state
    }
    fn set_state(&mut self, state: SandboxState) {
        self.state = state;
    }
    fn name_key(&self) -> Option<String> {
        self.metadata().map(|m| m.reservation_key())
    }
    fn fingerprint(&self) -> String {
        crate::lifecycle::fingerprint(&self.spec)
    }
}

/// What the sandbox manager keeps beside each record: its shim connection.
#[derive(Default)]
pub struct SandboxExt {
    pub(super) shim: Mutex<Option<ShimClient>>,
}

pub type Sandbox = Entry<SandboxRecord, SandboxExt>;

pub(super) fn new_sandbox(record: SandboxRecord, shim: Option<ShimClient>) -> Arc<Sandbox> {
    Arc::new(Entry::new(
        record,
        SandboxExt {
            shim: Mutex::new(shim),
        },
    ))
}

pub(super) fn shim_client(sb: &Sandbox) -> Option<ShimClient> {
    lock(&sb.ext.shim).clone()
}

/// Records under `<root>/sandboxes/<id>/`; events to the daemon's bus.
pub(super) struct SandboxHooks {
    pub root: PathBuf,
    pub events: Arc<dyn SandboxPublisher<(SandboxRecord, SandboxState)>>,
}

pub(super) fn record_path(root: &std::path::Path, id: &str) -> PathBuf {
    root.join("sandboxes").join(id).join(RECORD_FILE)
}

impl Hooks<SandboxRecord> for SandboxHooks {
    fn persist<'a>(&'a self, record: &'a SandboxRecord) -> Saving<'a> {
        Box::pin(async move {
            let path = record_path(&self.root, &record.id);
            persist::save_json(&path, record)
                .await
                .map_err(|e| Error::internal(format!("writing {}", path.display()), e))
        })
    }

    fn publish(&self, kind: EventKind, record: &SandboxRecord) {
        let state = match kind {
            EventKind::Created | EventKind::Started => SandboxState::Ready,
            EventKind::Stopped | EventKind::Deleted => SandboxState::NotReady,
        };
        let snapshot = || (record.clone(), state);
        self.events.publish_sandbox(kind, &record.id, &snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
