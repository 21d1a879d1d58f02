//! Containers whose shim is gone: the pod's shim died (noticed by the sandbox manager's
//! pidfd watch) or was not running when the daemon restarted. Their processes are killed
//! with their cgroup and they become Exited with a reason saying why, so Stop and Remove
//! then only clean up.
//!
//! Recovery also settles a container whose start a crash interrupted: the gate was opened
//! but the record still says Created, so the shim is asked what really happened.

use super::{Container, ContainerManager, ContainerState, KILL_GRACE};
use crate::sandbox::now_nanos;
use crate::shim_api::ProcessStatus;

/// Exit code of a container berth had to kill (128 + SIGKILL), as a kill -9 reports it.
const KILLED_EXIT_CODE: i32 = 128 + libc::SIGKILL;
/// The CRI reason of a container that ended because its shim did.
pub const SHIM_LOST_REASON: &str = "ShimDied";

impl ContainerManager {
    /// Every live container of the pod marked exited after its shim died.
    pub async fn shim_lost(&self, sandbox_id: &str) {
        let all = self.records.all().into_iter();
        for container in all.filter(|c| c.record().sandbox_id == sandbox_id) {
            let _op = container.op.lock().await;
            self.mark_lost(
                &container,
                "the pod's shim died; berth killed the container",
            )
            .await;
        }
    }

    /// After a restart: a container whose pod has no shim any more is lost; a Created one
    /// whose start was under way is brought up to date from the shim.
    pub(super) async fn reconcile_recovered(&self, container: &Container) {
        let record = self.apply_exit_file(container).await;
        if !matches!(
            record.state,
            ContainerState::Created | ContainerState::Running | ContainerState::Unknown
        ) {
            return;
        }
        if !self.sandboxes.shim_connected(&record.sandbox_id) {
            self.mark_lost(
                container,
                "the pod's shim was gone when berth restarted; berth killed the container",
            )
            .await;
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
                let moved = self
                    .records
                    .transition(container, ContainerState::Running, |r| {
                        r.pid = state.pid;
                        r.started_at = state.started_at;
                    })
                    .await;
                match moved {
                    Ok(_) => {
                        tracing::info!(container_id = %record.id, pid = state.pid, "container was started before the restart")
                    }
                    Err(e) => {
                        tracing::warn!(container_id = %record.id, error = %e, "recording a start")
                    }
                }
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
        let record = self.apply_exit_file(container).await;
        if !matches!(
            record.state,
            ContainerState::Created | ContainerState::Running | ContainerState::Unknown
        ) {
            return;
        }
        let (cgroups, path) = (self.sandboxes.cgroups().clone(), record.cgroup_path.clone());
        let killed =
            crate::error::blocking("cgroup task", move || cgroups.kill_all(&path, KILL_GRACE));
        if killed.await.is_err() {
            tracing::warn!(container_id = %record.id, "killing the cgroup of a container whose shim is gone failed");
        }
        // The shim may have recorded the exit before it died.
        if self.apply_exit_file(container).await.state == ContainerState::Exited {
            return;
        }
        tracing::warn!(container_id = %record.id, sandbox_id = %record.sandbox_id, "{message}");
        let moved = self
            .move_to_exited(container, |r| {
                r.exit_code = KILLED_EXIT_CODE;
                r.finished_at = now_nanos();
                r.reason = SHIM_LOST_REASON.into();
                r.message = message.into();
            })
            .await;
        if let Err(e) = moved {
            tracing::warn!(container_id = %record.id, error = %e, "persisting a lost container");
        }
    }
}
