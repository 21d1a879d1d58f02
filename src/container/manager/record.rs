//! The container record (what is on disk) and how records are written and announced.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::state::ContainerState;
use crate::container::config::ContainerConfig;
use crate::lifecycle::{Entry, Record, record_fields};
use crate::shim::client::ProcessExit;

/// The bus of container and sandbox transitions, with the snapshots each event carries.
pub type LifecycleEvents = crate::events::EventBus<
    ContainerRecord,
    (crate::sandbox::SandboxRecord, crate::sandbox::SandboxState),
>;

pub(super) const RECORD_VERSION: u32 = 1;

/// A default record is one being created, with nothing run yet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// The images mounted as volumes (CRI `Mount.image`), by ID: in use while this
    /// record exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_image_ids: Vec<String>,
}

/// (sandbox id, name, attempt): what one pod may hold once.
pub(super) fn name_key(sandbox_id: &str, name: &str, attempt: u32) -> String {
    format!("{name:?} (attempt {attempt}) in pod {sandbox_id}")
}

impl Record for ContainerRecord {
    type State = ContainerState;
    const KIND: &'static str = "container";
    const ID_FIELD: &'static str = "container_id";
    const DIR: &'static str = "containers";
    const FILE: &'static str = "container.json";
    record_fields!(ContainerState);

    fn labels(&self) -> &std::collections::BTreeMap<String, String> {
        &self.config.labels
    }
    fn sandbox_id(&self) -> Option<&str> {
        Some(&self.sandbox_id)
    }
    fn name_key(&self) -> Option<String> {
        let meta = &self.config.metadata;
        Some(name_key(&self.sandbox_id, &meta.name, meta.attempt))
    }
    fn fingerprint(&self) -> String {
        crate::lifecycle::fingerprint(&self.config)
    }
}

/// What the container manager keeps beside each record.
#[derive(Default)]
pub struct ContainerExt {
    /// Set while StartContainer opens the gate until it has published STARTED: an exit
    /// pushed meanwhile is held and applied after that, so the events come in order.
    pub(super) starting: AtomicBool,
    /// The exit the shim reported, until applied (see exits.rs).
    pub(super) exit: Mutex<Option<ProcessExit>>,
}

pub type Container = Entry<ContainerRecord, ContainerExt>;

/// Clears `starting` however the start ends (also when its future is dropped).
pub(super) struct StartingFlag<'a>(pub &'a AtomicBool);

impl Drop for StartingFlag<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
