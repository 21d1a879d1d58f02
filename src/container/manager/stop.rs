//! StopContainer and RemoveContainer. Both are idempotent (an unknown or removed
//! container is success), run in their own task and hold the container's op lock.

use std::sync::Arc;
use std::time::Duration;

use super::{Container, ContainerManager, ContainerState, KILL_GRACE};
use crate::error::{Result, io_err};
use crate::lifecycle::Rollback;
use crate::metrics::{step, timed};
use crate::persist;

impl ContainerManager {
    /// StopContainer: the stop signal, `timeout`, SIGKILL, then the whole cgroup. It always
    /// returns; a container being created is FailedPrecondition.
    pub async fn stop(self: &Arc<Self>, id: &str, timeout: Duration) -> Result<()> {
        let this = self.clone();
        let work = move |c: Arc<Container>| async move {
            this.stop_locked(&c, timeout).await?;
            let record = c.record();
            if record.state != ContainerState::Exited {
                return Ok(());
            }
            // Its children may outlive the main process in a shared PID namespace.
            let cgroups = this.sandboxes.cgroups();
            crate::container::cgroup_sweep::kill_leftovers(cgroups, &c.id, &record.cgroup_path)
                .await
        };
        let call = format!("stop {}", timeout.as_millis());
        self.records.run_found(&call, id, work).await
    }

    /// Returns as soon as the shim pushes the exit (see exits.rs), not at a poll.
    async fn stop_locked(&self, container: &Container, timeout: Duration) -> Result<()> {
        let record = container.check(ContainerState::Exited)?;
        if record.state == ContainerState::Exited {
            return Ok(());
        }
        if let Ok(mut shim) = self.sandboxes.shim(&record.sandbox_id).await {
            // A process still at the start gate has no handler for the stop signal yet.
            let gated = record.state == ContainerState::Created;
            let signal = if gated {
                libc::SIGKILL
            } else {
                record.stop_signal
            };
            if !timeout.is_zero() || signal == libc::SIGKILL {
                let _ = shim.kill(&record.id, signal, false).await;
                crate::fault::point("container.stop.after_signal");
                let timeout = timeout.max(Duration::from_millis(1));
                // Children left by the main process in a shared PID namespace hold the
                // output pipes, so the shim's exit waits on them: they are killed as soon
                // as the main process is gone (cgroup_sweep.rs), raced against the push.
                let sweep = crate::container::cgroup_sweep::sweep_once_main_is_gone(
                    record.pid,
                    self.sandboxes.cgroups(),
                    &record.id,
                    &record.cgroup_path,
                );
                let _wait = step("StopContainer", "signal_to_exit");
                let exited = tokio::select! {
                    biased;
                    exited = container.wait_for(ContainerState::Exited, timeout) => exited,
                    never = sweep => match never {},
                };
                if exited {
                    return Ok(());
                }
            }
            let _ = shim.kill(&record.id, libc::SIGKILL, true).await;
            if container.wait_for(ContainerState::Exited, KILL_GRACE).await {
                return Ok(());
            }
        }
        let message = "killed by berth: the pod's shim was not reachable";
        self.kill_and_record(container, "Error", message).await
    }

    /// RemoveContainer: kills it if running, then removes every trace.
    pub async fn remove(self: &Arc<Self>, id: &str) -> Result<()> {
        let this = self.clone();
        let work = |c: Arc<Container>| async move { this.remove_locked(&c).await };
        self.records.run_found("remove", id, work).await
    }

    async fn remove_locked(&self, container: &Container) -> Result<()> {
        self.stop_locked(container, Duration::ZERO).await?;
        let record = container.record();
        if let Ok(mut shim) = self.sandboxes.shim(&record.sandbox_id).await {
            let _ = timed("RemoveContainer", "shim_delete", shim.delete(&record.id)).await;
        }
        crate::fault::point("container.remove.after_shim_delete");
        let mut taken = Rollback::new(format!("container {}", record.id));
        self.undo_cgroup(&record, &mut taken);
        timed("RemoveContainer", "cgroup", taken.finish()).await?;
        let _files = step("RemoveContainer", "files");
        persist::remove_file_if_exists(&self.exit_file(&record))
            .map_err(io_err("removing the exit file"))?;
        self.records.remove(container)?;
        tracing::info!(container_id = %record.id, "container removed");
        Ok(())
    }

    /// Every container of a pod stopped at once, as StopContainer with no grace period
    /// would (StopPodSandbox): each one's exit is recorded and nothing of it runs after.
    /// A container that will not die does not keep the others running: the first error
    /// is returned after all were tried.
    pub async fn stop_all_of(self: &Arc<Self>, sandbox_id: &str) -> Result<()> {
        let mut first_error = None;
        for record in self.containers_of(sandbox_id) {
            if let Err(e) = self.stop(&record.id, Duration::ZERO).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Every container of a pod removed (RemovePodSandbox).
    pub async fn remove_all_of(self: &Arc<Self>, sandbox_id: &str) -> Result<()> {
        for record in self.containers_of(sandbox_id) {
            self.remove(&record.id).await?;
        }
        Ok(())
    }
}
