//! StopContainer and RemoveContainer. Both are idempotent (an unknown or removed
//! container is success), run in their own task and hold the container's op lock.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Container, ContainerManager, ContainerState, KILL_GRACE, io_err};
use crate::error::{Error, Result};
use crate::persist;
use crate::sandbox::now_nanos;

impl ContainerManager {
    /// StopContainer: the stop signal, `timeout`, SIGKILL, then the whole cgroup. It always
    /// returns; a container being created is FailedPrecondition.
    pub async fn stop(self: &Arc<Self>, id: &str, timeout: Duration) -> Result<()> {
        let Some(container) = self.target(id)? else {
            return Ok(());
        };
        let this = self.clone();
        let key = format!("stop {} {}", container.id, timeout.as_millis());
        self.calls
            .run(key, async move {
                let _op = container.op.lock().await;
                this.stop_locked(&container, timeout).await
            })
            .await
    }

    async fn stop_locked(&self, container: &Container, timeout: Duration) -> Result<()> {
        let record = self.refresh(container);
        if container.is_removed() || record.state == ContainerState::Exited {
            return Ok(());
        }
        container.check(ContainerState::Exited)?;
        let exit_file = self.exit_file(&record);
        if let Ok(mut shim) = self.sandboxes.shim(&record.sandbox_id).await {
            let signal = if record.state == ContainerState::Created {
                libc::SIGKILL
            } else {
                record.stop_signal
            };
            if !timeout.is_zero() || signal == libc::SIGKILL {
                let _ = shim.kill(&record.id, signal, false).await;
                crate::fault::point("container.stop.after_signal");
                if wait_for_file(&exit_file, timeout.max(Duration::from_millis(1))).await {
                    self.refresh(container);
                    return Ok(());
                }
            }
            let _ = shim.kill(&record.id, libc::SIGKILL, true).await;
            if wait_for_file(&exit_file, KILL_GRACE).await {
                self.refresh(container);
                return Ok(());
            }
        }
        // The shim is gone (nobody will write the exit file) or the process will not die:
        // the cgroup takes everything with it, and the exit is recorded here.
        let cgroups = self.sandboxes.cgroups().clone();
        let path = record.cgroup_path.clone();
        let _ = tokio::task::spawn_blocking(move || cgroups.kill_all(&path, KILL_GRACE)).await;
        if exit_file.exists() {
            self.refresh(container);
            return Ok(());
        }
        self.records
            .transition(container, ContainerState::Exited, |r| {
                r.exit_code = 137;
                r.finished_at = now_nanos();
                r.reason = "Error".into();
                r.message = "killed by berth: the pod's shim was not reachable".into();
            })?;
        Ok(())
    }

    /// RemoveContainer: kills it if running, then removes every trace.
    pub async fn remove(self: &Arc<Self>, id: &str) -> Result<()> {
        let Some(container) = self.target(id)? else {
            return Ok(());
        };
        let this = self.clone();
        let key = format!("remove {}", container.id);
        self.calls
            .run(key, async move {
                let _op = container.op.lock().await;
                this.remove_locked(&container).await
            })
            .await
    }

    async fn remove_locked(&self, container: &Container) -> Result<()> {
        if container.is_removed() {
            return Ok(());
        }
        self.stop_locked(container, Duration::ZERO).await?;
        let record = container.record();
        if let Ok(mut shim) = self.sandboxes.shim(&record.sandbox_id).await {
            let _ = shim.delete(&record.id).await;
        }
        crate::fault::point("container.remove.after_shim_delete");
        let cgroups = self.sandboxes.cgroups().clone();
        let path = record.cgroup_path.clone();
        tokio::task::spawn_blocking(move || {
            cgroups.kill_all(&path, KILL_GRACE)?;
            cgroups.remove(&path)
        })
        .await
        .map_err(|e| Error::internal("cgroup task", e))?
        .map_err(Error::from)?;
        persist::remove_file_if_exists(&self.exit_file(&record))
            .map_err(io_err("removing the exit file"))?;
        persist::remove_dir_all_if_exists(&self.state_dir(&record.id))
            .map_err(io_err("removing the container state dir"))?;
        persist::remove_dir_all_if_exists(&self.record_dir(&record.id))
            .map_err(io_err("removing the container record"))?;
        self.records.remove(container);
        tracing::info!(container_id = %record.id, "container removed");
        Ok(())
    }

    /// Every container of a pod removed (RemovePodSandbox).
    pub async fn remove_all_of(self: &Arc<Self>, sandbox_id: &str) -> Result<()> {
        for record in self.containers_of(sandbox_id) {
            self.remove(&record.id).await?;
        }
        Ok(())
    }
}

/// Waits until `path` exists, checking often at first (most processes exit at once).
async fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_micros(500);
    loop {
        if path.exists() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
