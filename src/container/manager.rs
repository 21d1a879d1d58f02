//! Container lifecycle: records, the bundle, the pod's shim, and exit files.
//!
//! Records, names, rollback and state moves go through the lifecycle core
//! (`crate::lifecycle`); the state machine is drawn in `manager/state.rs`. The files here
//! keep what is the container's own: `create.rs`, `start.rs`, `stop.rs` (stop and
//! remove), `exec.rs` (ExecSync, log reopening, resource updates), `exits.rs` (the exits
//! shims push, and every move to Exited), `recover.rs` and `lost.rs` (containers whose
//! shim is gone).
//!
//! Every mutating call runs in its own task (`crate::lifecycle::detach`): a client that
//! gives up does not cut it short, and its retry joins it or finds it done.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::error::Result;
use crate::image::ImageService;
use crate::lifecycle::Registry;
use crate::sandbox::SandboxManager;

mod create;
mod exec;
mod exits;
mod lost;
mod record;
mod recover;
mod start;
mod state;
mod stop;
pub use create::CreateRequest;
pub use lost::SHIM_LOST_REASON;
pub use record::{Container, ContainerExt, ContainerRecord, LifecycleEvents};
pub use state::ContainerState;

/// How long a killed container may take to disappear before its cgroup is killed.
const KILL_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Default, Clone)]
pub struct ContainerFilter {
    pub id: Option<String>,
    pub sandbox_id: Option<String>,
    pub state: Option<ContainerState>,
    pub labels: HashMap<String, String>,
}

pub struct ContainerManager {
    config: Arc<Config>,
    sandboxes: Arc<SandboxManager>,
    images: ImageService,
    records: Registry<ContainerRecord, ContainerExt>,
    /// The host's AppArmor, as found at the daemon's start.
    apparmor: crate::container::spec::AppArmorHost,
}

impl ContainerManager {
    /// `events` is the daemon's bus, which every container transition is published to.
    pub fn new(
        config: Arc<Config>,
        sandboxes: Arc<SandboxManager>,
        images: ImageService,
        events: Arc<LifecycleEvents>,
        apparmor: crate::container::spec::AppArmorHost,
    ) -> ContainerManager {
        let hooks = record::ContainerHooks {
            root: config.root.clone(),
            events,
            sandboxes: sandboxes.clone(),
        };
        ContainerManager {
            config,
            sandboxes,
            images,
            records: Registry::new(hooks),
            apparmor,
        }
    }

    /// The host's AppArmor and berth's default profile on it.
    pub fn apparmor(&self) -> &crate::container::spec::AppArmorHost {
        &self.apparmor
    }

    fn record_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("containers").join(id)
    }

    fn state_dir(&self, id: &str) -> PathBuf {
        self.config.state.join("containers").join(id)
    }

    /// The container's writable layer (overlay upper dir), for its disk usage.
    pub fn writable_dir(&self, id: &str) -> PathBuf {
        self.record_dir(id).join("upper")
    }

    /// Finds a container by full id or unique prefix.
    pub fn get(&self, id: &str) -> Result<Arc<Container>> {
        self.records.get(id)
    }

    /// The record as it is: exits are applied when the shim pushes them (exits.rs), so
    /// reading never writes.
    pub fn status(&self, id: &str) -> Result<ContainerRecord> {
        Ok(self.get(id)?.record())
    }

    pub fn list(&self, filter: &ContainerFilter) -> Vec<ContainerRecord> {
        let mut out: Vec<_> = self
            .records
            .all()
            .into_iter()
            .map(|c| c.record())
            .filter(|r| r.state != ContainerState::Creating)
            .filter(|r| filter.id.as_ref().is_none_or(|id| r.id.starts_with(id)))
            .filter(|r| {
                filter
                    .sandbox_id
                    .as_ref()
                    .is_none_or(|id| r.sandbox_id.starts_with(id))
            })
            .filter(|r| filter.state.is_none_or(|s| s == r.state))
            .filter(|r| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| r.config.labels.get(k) == Some(v))
            })
            .collect();
        out.sort_by_key(|r| r.created_at);
        out
    }

    pub fn containers_of(&self, sandbox_id: &str) -> Vec<ContainerRecord> {
        self.list(&ContainerFilter {
            sandbox_id: Some(sandbox_id.to_string()),
            ..Default::default()
        })
    }
}

/// The pod's log directory joined with the container's log path (absolute), if any.
pub fn log_path(log_directory: &str, log_path: &str) -> Option<PathBuf> {
    if log_directory.is_empty() || log_path.is_empty() {
        return None;
    }
    Some(Path::new(log_directory).join(log_path))
}
