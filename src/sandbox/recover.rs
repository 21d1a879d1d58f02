//! Daemon start: every sandbox record loaded, live shims reconnected, runs a crash
//! interrupted rolled back.

use super::record::{RECORD_FILE, SandboxRecord, new_sandbox};
use super::run::{cni_del, shutdown_shim, unpin};
use super::{KILL_WAIT, SandboxManager, SandboxState, attachment};
use crate::error::{Error, Result};
use crate::lifecycle::{Rollback, remove_cgroup, remove_dir};
use crate::linux::systemd::{self as systemd_unit, UnitKind};
use crate::persist;

impl SandboxManager {
    /// Loads every record; reconnects live shims; rolls back runs a crash interrupted.
    pub async fn recover(&self) -> Result<()> {
        let dir = self.config.root.join("sandboxes");
        let records: Vec<SandboxRecord> = persist::load_records(&dir, RECORD_FILE, "sandbox")
            .map_err(|e| Error::internal(format!("reading {}", dir.display()), e))?;
        for record in records {
            self.recover_one(record).await;
        }
        Ok(())
    }

    async fn recover_one(&self, record: SandboxRecord) {
        let id = record.id.clone();
        let shim = if record.state == SandboxState::NotReady {
            None
        } else {
            match crate::shim::connect(&record.shim_socket).await {
                Ok(shim) => match shim.clone().info().await {
                    Ok((sandbox_id, _)) if sandbox_id == id => Some(shim),
                    _ => None,
                },
                Err(_) => None,
            }
        };
        if record.state == SandboxState::Creating {
            tracing::warn!(sandbox_id = %id, "rolling back a pod sandbox whose creation was interrupted");
            // Pushed in the order a run takes them, so they unwind in reverse.
            let mut undo = Rollback::new(format!("pod sandbox {id}"));
            for dir in [self.record_dir(&id), self.state_dir(&id)] {
                undo.push(format!("remove {}", dir.display()), remove_dir(dir));
            }
            if let Some(path) = &record.netns {
                undo.push(format!("unpin {}", path.display()), unpin(path.clone()));
            }
            if let (Some(network), Some(path), Some(meta)) =
                (&record.network, &record.netns, record.metadata())
            {
                let attachment = attachment(&id, path, meta, &record.spec.port_mappings);
                let result = network.result.as_ref().map(|r| r.raw.clone());
                let del = cni_del(self.cni.clone(), network.config.clone(), attachment, result);
                undo.push("CNI DEL", del);
            }
            if let (Some(driver), Some(units)) = (self.systemd(), &record.units) {
                if record.owns_pod_cgroup {
                    let stop = systemd_unit::release_quietly(
                        driver.clone(),
                        units.slice.clone(),
                        UnitKind::Pod,
                        id.clone(),
                    );
                    undo.push(format!("stop {}", units.slice), stop);
                }
                let stop = systemd_unit::release_quietly(
                    driver.clone(),
                    units.scope(&id),
                    UnitKind::Pause,
                    id.clone(),
                );
                undo.push(format!("stop {}", units.scope(&id)), stop);
            }
            let mut cgroups = vec![
                super::shim_cgroup(&record.pod_cgroup, record.units.as_ref(), &id),
                record.pause_cgroup.clone(),
            ];
            if record.owns_pod_cgroup {
                cgroups.push(record.pod_cgroup.clone());
            }
            for cg in cgroups {
                undo.push(
                    format!("remove cgroup {cg}"),
                    remove_cgroup(self.cgroups.clone(), cg, KILL_WAIT),
                );
            }
            if let Some(shim) = shim {
                undo.push("shut the shim down", shutdown_shim(shim));
            }
            undo.unwind().await;
            let _ = persist::remove_file_if_exists(&record.shim_socket);
            return;
        }
        let unreachable = record.state == SandboxState::Ready && shim.is_none();
        self.records.bind(&record);
        let sandbox = new_sandbox(record, shim);
        self.records.insert(sandbox.clone());
        if unreachable {
            tracing::warn!(sandbox_id = %id, "shim unreachable after restart; pod is not ready");
            if let Err(e) = self
                .records
                .transition(&sandbox, SandboxState::NotReady, |_| {})
                .await
            {
                tracing::warn!(sandbox_id = %id, error = %e, "persisting a pod whose shim is gone");
            }
        }
        tracing::info!(sandbox_id = %id, state = ?sandbox.state(), "pod sandbox recovered");
    }
}
