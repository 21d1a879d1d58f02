//! The container record (what is on disk), the exit file the shim writes, and how records
//! are written and announced.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::state::ContainerState;
use crate::container::config::ContainerConfig;
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::lifecycle::{Entry, Hooks, Record};
use crate::persist;
use crate::sandbox::SandboxManager;

/// The bus of container and sandbox transitions, with the snapshots each event carries.
pub type LifecycleEvents = crate::events::EventBus<
    ContainerRecord,
    (crate::sandbox::SandboxRecord, crate::sandbox::SandboxState),
>;

pub(super) const RECORD_VERSION: u32 = 1;
pub(super) const RECORD_FILE: &str = "container.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub version: u32,
    pub id: String,
    pub sandbox_id: String,
    pub config: ContainerConfig,
    /// The image as the kubelet named it, and the image ID it resolved to.
    pub image_ref: String,
    pub image_id: String,
    /// A repo digest or tag of that image, for ContainerStatus.image_ref.
    pub image_name: String,
    pub state: ContainerState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub pid: u32,
    /// Absolute log path (the pod's log_directory joined with the container's log_path).
    pub log_path: Option<PathBuf>,
    pub bundle: PathBuf,
    pub cgroup_path: String,
    pub stop_signal: i32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// (sandbox id, name, attempt): what one pod may hold once.
pub(super) fn name_key(sandbox_id: &str, name: &str, attempt: u32) -> String {
    format!("{name:?} (attempt {attempt}) in pod {sandbox_id}")
}

impl Record for ContainerRecord {
    type State = ContainerState;
    const KIND: &'static str = "container";
    const ID_FIELD: &'static str = "container_id";

    fn id(&self) -> &str {
        &self.id
    }
    fn state(&self) -> ContainerState {
        self.state
    }
    fn set_state(&mut self, state: ContainerState) {
        self.state = state;
    }
    fn name_key(&self) -> Option<String> {
        let meta = &self.config.metadata;
        Some(name_key(&self.sandbox_id, &meta.name, meta.attempt))
    }
    fn fingerprint(&self) -> String {
        crate::lifecycle::fingerprint(&self.config)
    }
}

/// The exit file a shim writes when a process ends.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ExitFile {
    pub exit_code: i32,
    pub exited_at: i64,
    #[serde(default)]
    pub oom_killed: bool,
}

impl ExitFile {
    /// The record's fields for this exit (the move to Exited is the transition's).
    pub fn apply(&self, record: &mut ContainerRecord) {
        record.exit_code = self.exit_code;
        record.finished_at = self.exited_at;
        record.reason = if self.oom_killed {
            "OOMKilled".to_string()
        } else if self.exit_code == 0 {
            "Completed".to_string()
        } else {
            "Error".to_string()
        };
    }
}

/// What the container manager keeps beside each record.
#[derive(Default)]
pub struct ContainerExt {
    /// Set while StartContainer opens the gate until it has published STARTED: readers
    /// leave a fast exit to after that, so the events come in order.
    pub(super) starting: AtomicBool,
}

pub type Container = Entry<ContainerRecord, ContainerExt>;

/// Clears `starting` however the start ends (also when its future is dropped).
pub(super) struct StartingFlag<'a>(pub &'a AtomicBool);

impl Drop for StartingFlag<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Records under `<root>/containers/<id>/`; events carry the pod as it is now.
pub(super) struct ContainerHooks {
    pub root: PathBuf,
    pub events: Arc<LifecycleEvents>,
    pub sandboxes: Arc<SandboxManager>,
}

pub(super) fn record_path(root: &std::path::Path, id: &str) -> PathBuf {
    root.join("containers").join(id).join(RECORD_FILE)
}

impl Hooks<ContainerRecord> for ContainerHooks {
    fn persist(&self, record: &ContainerRecord) -> Result<()> {
        let path = record_path(&self.root, &record.id);
        persist::write_json_atomic(&path, record)
            .map_err(|e| Error::internal(format!("writing {}", path.display()), e))
    }

    fn publish(&self, kind: EventKind, record: &ContainerRecord) {
        let oom_kill = kind == EventKind::Stopped && record.reason == "OOMKilled";
        let sandboxes = &self.sandboxes;
        self.events
            .publish_container(kind, &record.id, &record.sandbox_id, oom_kill, || {
                (record.clone(), sandboxes.status(&record.sandbox_id).ok())
            });
    }
}
