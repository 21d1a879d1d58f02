//! Daemon start: every container record loaded; creations a crash interrupted (and
//! containers whose pod is gone) rolled back.

use super::record::ContainerExt;
use super::{ContainerManager, ContainerRecord, ContainerState, KILL_GRACE};
use crate::error::Result;
use crate::lifecycle::{Rollback, remove_cgroup};

impl ContainerManager {
    pub async fn recover(&self) -> Result<()> {
        let doomed = |r: &ContainerRecord| {
            r.state == ContainerState::Creating || self.sandboxes.get(&r.sandbox_id).is_err()
        };
        let undo = |r: &ContainerRecord, undo: &mut Rollback| self.undo_process(r, undo);
        for record in self.records.recover(doomed, undo).await? {
            let container = self.records.recovered(record, ContainerExt::default());
            self.reconcile_recovered(&container).await;
            tracing::info!(container_id = %container.id, state = ?container.state(), "container recovered");
        }
        Ok(())
    }

    /// The container's process deleted from the shim, then its cgroup removed: the undo
    /// of a creation, also of one a crash cut short (a missing one is no error).
    pub(super) fn undo_process(&self, record: &ContainerRecord, undo: &mut Rollback) {
        self.undo_cgroup(record, undo);
        let (sandboxes, sandbox_id, id) = (
            self.sandboxes.clone(),
            record.sandbox_id.clone(),
            record.id.clone(),
        );
        undo.push("delete the process", async move {
            if let Ok(mut shim) = sandboxes.shim(&sandbox_id).await {
                let _ = shim.kill(&id, libc::SIGKILL, true).await;
                let _ = shim.delete(&id).await;
            }
        });
    }
}

impl ContainerManager {
    /// The cgroup removed, then (systemd driver) its scope: undo steps of a creation, and
    /// what RemoveContainer gives back.
    pub(super) fn undo_cgroup(&self, record: &ContainerRecord, undo: &mut Rollback) {
        // The scope goes after its processes (undo steps run in reverse).
        let scope = crate::linux::systemd::unit_of_path(&record.cgroup_path);
        if let (Some(driver), Some(scope)) = (self.sandboxes.systemd().cloned(), scope) {
            let (what, scope, id) = (
                format!("stop {scope}"),
                scope.to_string(),
                record.id.clone(),
            );
            let kind = crate::linux::systemd::UnitKind::Container;
            undo.push_try(what, async move { driver.release(&scope, kind, &id).await });
        }
        let (cgroups, cg) = (self.sandboxes.cgroups().clone(), record.cgroup_path.clone());
        let remove = remove_cgroup(cgroups, cg.clone(), KILL_GRACE);
        undo.push_try(format!("remove cgroup {cg}"), remove);
    }
}
