//! Calls on a live container: ExecSync, ReopenContainerLog, UpdateContainerResources.

use std::sync::Arc;
use std::time::Duration;

use super::{Container, ContainerManager, ContainerState};
use crate::container::config::ContainerResources;
use crate::error::{Error, Result};

impl ContainerManager {
    /// UpdateContainerResources: written to the live cgroup, and kept in the record. Runs
    /// in its own task; an identical update in flight is joined.
    pub async fn update_resources(
        self: &Arc<Self>,
        id: &str,
        resources: ContainerResources,
    ) -> Result<()> {
        let container = self.get(id)?;
        let this = self.clone();
        let key = format!(
            "update {} {}",
            container.id,
            crate::lifecycle::fingerprint(&resources)
        );
        self.calls
            .run(key, async move {
                let _op = container.op.lock().await;
                this.update_resources_locked(&container, resources).await
            })
            .await
    }

    async fn update_resources_locked(
        &self,
        container: &Container,
        resources: ContainerResources,
    ) -> Result<()> {
        let record = self.refresh(container);
        if container.is_removed() || record.state == ContainerState::Exited {
            let state = if container.is_removed() {
                "removed"
            } else {
                "exited"
            };
            return Err(Error::failed_precondition(format!(
                "container {} is {state}; its resources cannot change",
                record.id
            )));
        }
        let linux = crate::container::spec::linux_resources(&resources).map_err(Error::from)?;
        let cgroups = self.sandboxes.cgroups().clone();
        let path = record.cgroup_path.clone();
        tokio::task::spawn_blocking(move || cgroups.apply_resources(&path, &linux))
            .await
            .map_err(|e| Error::internal("cgroup task", e))?
            .map_err(Error::from)?;
        self.records
            .save(container, |r| r.config.resources = resources)
            .map(|_| ())
    }

    /// ReopenContainerLog: the shim reopens the log file the kubelet rotated.
    pub async fn reopen_log(&self, id: &str) -> Result<()> {
        let record = self.status(id)?;
        if record.state != ContainerState::Running {
            return Err(Error::failed_precondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        let mut shim = self.sandboxes.shim(&record.sandbox_id).await?;
        shim.reopen_log(&record.id).await.map_err(Error::from)
    }

    /// ExecSync: runs `cmd` in the running container and returns its output and exit
    /// code; at `timeout` (zero: none) the command is killed and DeadlineExceeded returned.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<crate::shim::client::ExecSyncOutput> {
        if cmd.is_empty() {
            return Err(Error::invalid_argument("cmd is required"));
        }
        let record = self.status(id)?;
        if record.state != ContainerState::Running {
            return Err(Error::failed_precondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        let mut shim = self.sandboxes.shim(&record.sandbox_id).await?;
        let exec_id = hex::encode(rand::random::<[u8; 8]>());
        let output = shim
            .exec_sync(&record.id, &exec_id, cmd, timeout)
            .await
            .map_err(|e| Error::from(e).context("exec in the container"))?;
        if output.timed_out {
            return Err(Error::new(
                crate::ErrorKind::DeadlineExceeded,
                format!(
                    "command timed out after {}s in container {}",
                    timeout.as_secs(),
                    record.id
                ),
            ));
        }
        let mut output = output;
        fit_exec_output(&mut output, EXEC_OUTPUT_BUDGET);
        if output.stdout_truncated || output.stderr_truncated {
            tracing::info!(
                container_id = %record.id,
                exec_id,
                stdout_truncated = output.stdout_truncated,
                stderr_truncated = output.stderr_truncated,
                "exec output over 16 MiB was dropped"
            );
        }
        Ok(output)
    }
}

/// The CRI server (like the kubelet's client) takes messages up to 16 MiB: the ExecSync
/// answer's two streams share that, less room for the framing.
const EXEC_OUTPUT_BUDGET: usize = 16 * 1024 * 1024 - 4096;

/// Trims stdout, then stderr, so both fit in `budget` bytes; trimmed streams are flagged.
fn fit_exec_output(output: &mut crate::shim::client::ExecSyncOutput, budget: usize) {
    let stderr_room = budget.saturating_sub(output.stdout.len().min(budget / 2));
    if output.stderr.len() > stderr_room {
        output.stderr.truncate(stderr_room);
        output.stderr_truncated = true;
    }
    let stdout_room = budget - output.stderr.len();
    if output.stdout.len() > stdout_room {
        output.stdout.truncate(stdout_room);
        output.stdout_truncated = true;
    }
}

#[cfg(test)]
mod exec_output_tests {
    use super::*;
    use crate::shim::client::ExecSyncOutput;

    fn output(stdout: usize, stderr: usize) -> ExecSyncOutput {
        ExecSyncOutput {
            stdout: vec![b'o'; stdout],
            stderr: vec![b'e'; stderr],
            ..Default::default()
        }
    }

    #[test]
    fn exec_output_fits_the_message_budget() {
        let mut small = output(3, 4);
        fit_exec_output(&mut small, 10);
        assert_eq!((small.stdout.len(), small.stderr.len()), (3, 4));
        assert!(!small.stdout_truncated && !small.stderr_truncated);
        // Only stdout is big: it gets all the room stderr leaves.
        let mut big_out = output(20, 2);
        fit_exec_output(&mut big_out, 10);
        assert_eq!((big_out.stdout.len(), big_out.stderr.len()), (8, 2));
        assert!(big_out.stdout_truncated && !big_out.stderr_truncated);
        // Only stderr is big: it gets what stdout leaves.
        let mut big_err = output(3, 20);
        fit_exec_output(&mut big_err, 10);
        assert_eq!((big_err.stdout.len(), big_err.stderr.len()), (3, 7));
        assert!(!big_err.stdout_truncated && big_err.stderr_truncated);
        // Both big: half each.
        let mut both = output(20, 20);
        fit_exec_output(&mut both, 10);
        assert_eq!((both.stdout.len(), both.stderr.len()), (5, 5));
        assert!(both.stdout_truncated && both.stderr_truncated);
    }
}
