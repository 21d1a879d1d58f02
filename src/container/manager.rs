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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::error::Result;
use crate::events::EventKind;
use crate::image::ImageService;
use crate::lifecycle::{Dirs, Filter, Registry};
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

pub type ContainerFilter = Filter<ContainerState>;

pub struct ContainerManager {
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
        let dirs = Dirs::new::<ContainerRecord>(&config.root, &config.state);
        // Each event carries the pod as it is now.
        let pods = sandboxes.clone();
        let publish = move |kind: EventKind, record: &ContainerRecord| {
            let oom_kill = kind == EventKind::Stopped && record.reason == "OOMKilled";
            let pod = || (record.clone(), pods.status(&record.sandbox_id).ok());
            events.publish_container(kind, &record.id, &record.sandbox_id, oom_kill, pod);
        };
        ContainerManager {
            sandboxes,
            images,
            records: Registry::new(dirs, publish),
            apparmor,
        }
    }

    /// The host's AppArmor and berth's default profile on it.
    pub fn apparmor(&self) -> &crate::container::spec::AppArmorHost {
        &self.apparmor
    }

    /// The container's writable layer (overlay upper dir), for its disk usage.
    pub fn writable_dir(&self, id: &str) -> PathBuf {
        self.records.dirs().record_dir(id).join("upper")
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
        let listed = self.records.list(filter).into_iter();
        listed.map(|(record, _)| record).collect()
    }

    pub fn containers_of(&self, sandbox_id: &str) -> Vec<ContainerRecord> {
        self.list(&ContainerFilter {
            sandbox_id: Some(sandbox_id.to_string()),
            ..Default::default()
        })
    }
}
