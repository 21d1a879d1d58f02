//! Containers whose shim is gone: the pod's shim died (noticed by the sandbox manager's
//! pidfd watch) or was not running when the daemon restarted. Their processes are killed
//! with their cgroup and they become Exited with a reason saying why, so Stop and Remove
//! then only clean up.
//!
//! Recovery also settles a container whose start a crash interrupted: the gate was opened
//! but the record still says Created, so the shim is asked what really happened.

use super::{Container, ContainerManager, ContainerRecord, ContainerState, KILL_GRACE};
use crate::error::{Result, blocking};
use crate::linux::process::now_unix_nanos;
use crate::shim_api::ProcessStatus;

/// Exit code of a container berth had to kill (128 + SIGKILL), as a kill -9 reports it.
const KILLED_EXIT_CODE: i32 = 128 + libc::SIGKILL;
/// The CRI reason of a container that ended because its shim did.
pub const SHIM_LOST_REASON: &str = "ShimDied";

impl ContainerManager {
    /// Every live container of the pod marked exited after its shim died.
    pub async fn shim_lost(&self, sandbox_id: &str) {
        for container in self.records.of_sandbox(sandbox_id) {
            let _op = container.op.lock().await;
            let why = "the pod's shim died; berth killed the container";
            self.mark_lost(&container, why).await;
        }
    }

    /// After a restart: a container whose pod has no shim any more is lost; a Created one
    /// whose start was under way is brought up to date from the shim.
    pub(super) async fn reconcile_recovered(&self, container: &Container) {
        let record = self.apply_exit_file(container).await;
        if !record.state.is_live() {
            return;
        }
        if !self.sandboxes.shim_connected(&record.sandbox_id) {
            let why = "the pod's shim was gone when berth restarted; berth killed the container";
            self.mark_lost(container, why).await;
            return;
        }
        if record.state != ContainerState::Created {
            return;
        }
        let Ok(mut shim) = self.sandboxes.shim(&record.sandbox_id).await else {
            return;
        };
        match shim.state(&record.id).await {
            Ok(state) if state.status == ProcessStatus::Running => {
                tracing::info!(container_id = %record.id, pid = state.pid, "container was started before the restart");
                let running =
                    |r: &mut ContainerRecord| (r.pid, r.started_at) = (state.pid, state.started_at);
                self.records
                    .observed(container, ContainerState::Running, running)
                    .await;
            }
            Ok(state) if state.status == ProcessStatus::Exited => {
                // Its exit file is written.
                self.apply_exit_file(container).await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(container_id = %record.id, error = %e, "the shim does not know the container");
                self.mark_lost(container, "the pod's shim lost the container's process")
                    .await;
            }
        }
    }

    async fn mark_lost(&self, container: &Container, message: &str) {
        if !self.apply_exit_file(container).await.state.is_live() {
            return;
        }
        let killed = self.kill_and_record(container, SHIM_LOST_REASON, message);
        if let Err(e) = killed.await {
            tracing::warn!(container_id = %container.id, error = %e, "persisting a lost container");
        }
    }

    /// No exit will be pushed (the shim is gone) or the process will not die: the cgroup
    /// takes everything with it, and the exit is recorded here, from the exit file when
    /// the shim wrote one after all, else as a kill by berth with `reason` and `message`.
    pub(super) async fn kill_and_record(
        &self,
        container: &Container,
        reason: &str,
        message: &str,
    ) -> Result<()> {
        let record = container.record();
        let (cgroups, path) = (self.sandboxes.cgroups().clone(), record.cgroup_path.clone());
        let killed = blocking("cgroup task", move || cgroups.kill_all(&path, KILL_GRACE));
        if let Err(e) = killed.await {
            tracing::warn!(container_id = %record.id, error = %e, "killing the container's cgroup");
        }
        if self.apply_exit_file(container).await.state == ContainerState::Exited {
            return Ok(());
        }
        tracing::warn!(container_id = %record.id, sandbox_id = %record.sandbox_id, reason, "{message}");
        let killed = |r: &mut ContainerRecord| {
            r.exit_code = KILLED_EXIT_CODE;
            r.finished_at = now_unix_nanos();
            r.reason = reason.into();
            r.message = message.into();
        };
        let moved = self
            .records
            .transition(container, ContainerState::Exited, killed);
        moved.await.map(|_| ())
    }
}
