//! Daemon start: every container record loaded; creations a crash interrupted (and
//! containers whose pod is gone) rolled back.

use std::sync::Arc;

use super::create::delete_process;
use super::record::{ContainerExt, RECORD_FILE};
use super::{Container, ContainerManager, ContainerRecord, ContainerState, KILL_GRACE};
use crate::error::{Error, Result};
use crate::lifecycle::{Rollback, remove_cgroup, remove_dir};
use crate::persist;

impl ContainerManager {
    pub async fn recover(&self) -> Result<()> {
        let dir = self.config.root.join("containers");
        let records: Vec<ContainerRecord> =
            persist::load_records(&dir, RECORD_FILE, "container")
                .map_err(|e| Error::internal(format!("reading {}", dir.display()), e))?;
        for record in records {
            if record.state == ContainerState::Creating
                || self.sandboxes.get(&record.sandbox_id).is_err()
            {
                tracing::warn!(container_id = %record.id, "removing a container whose creation was interrupted or whose pod is gone");
                // Pushed in the order a creation takes them, so they unwind in reverse.
                let mut undo = Rollback::new(format!("container {}", record.id));
                for dir in [self.record_dir(&record.id), self.state_dir(&record.id)] {
                    undo.push(format!("remove {}", dir.display()), remove_dir(dir));
                }
                if let (Some(driver), Some(scope)) = (
                    self.sandboxes.systemd(),
                    crate::linux::systemd::unit_of_path(&record.cgroup_path),
                ) {
                    undo.push(
                        format!("stop {scope}"),
                        crate::linux::systemd::release_quietly(
                            driver.clone(),
                            scope.to_string(),
                            crate::linux::systemd::UnitKind::Container,
                            record.id.clone(),
                        ),
                    );
                }
                let (cgroups, cg) = (self.sandboxes.cgroups().clone(), record.cgroup_path.clone());
                undo.push(
                    format!("remove cgroup {cg}"),
                    remove_cgroup(cgroups, cg, KILL_GRACE),
                );
                let (sandboxes, sandbox_id) = (self.sandboxes.clone(), record.sandbox_id.clone());
                let delete = delete_process(sandboxes, sandbox_id, record.id.clone());
                undo.push("delete the process", delete);
                undo.unwind().await;
                continue;
            }
            self.records.bind(&record);
            let ext = ContainerExt::new(record.state);
            let container = Arc::new(Container::new(record, ext));
            self.reconcile_recovered(&container).await;
            let record = container.record();
            tracing::info!(container_id = %record.id, state = ?record.state, "container recovered");
            self.records.insert(container);
        }
        Ok(())
    }
}
