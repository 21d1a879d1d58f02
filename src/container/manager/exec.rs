//! Calls on a live container: ExecSync, ReopenContainerLog, UpdateContainerResources.

use std::sync::Arc;
use std::time::Duration;

use super::{Container, ContainerManager, ContainerRecord, ContainerState};
use crate::container::config::ContainerResources;
use crate::error::{Error, ErrorKind, Result};

impl ContainerManager {
    /// UpdateContainerResources: written to the live cgroup (through the scope's unit
    /// properties with the systemd driver), and kept in the record. Runs
    /// in its own task; an identical update in flight is joined.
    pub async fn update_resources(
        self: &Arc<Self>,
        id: &str,
        resources: ContainerResources,
    ) -> Result<()> {
        let call = format!("update {}", crate::lifecycle::fingerprint(&resources));
        let this = self.clone();
        let work = move |c: Arc<Container>| async move {
            this.update_resources_locked(&c, resources).await
        };
        self.records.run(&call, self.get(id)?, work).await
    }

    async fn update_resources_locked(
        &self,
        container: &Container,
        resources: ContainerResources,
    ) -> Result<()> {
        let live = |s| s != ContainerState::Exited;
        let record = container.require(live, "its resources cannot change")?;
        self.check_resources(&resources).await?;
        let linux = crate::container::spec::linux_resources(&resources).map_err(Error::from)?;
        let scope = crate::linux::systemd::unit_of_path(&record.cgroup_path);
        let applied = self
            .sandboxes
            .apply_resources(scope, &record.cgroup_path, &linux);
        applied.await?;
        self.records
            .save(container, |r| r.config.resources = resources)
            .await
            .map(|_| ())
    }

    /// The record of a running container (FailedPrecondition saying its state else).
    pub fn running(&self, id: &str) -> Result<ContainerRecord> {
        let running = |s| s == ContainerState::Running;
        self.get(id)?.require(running, "it must be running")
    }

    /// ReopenContainerLog: the shim reopens the log file the kubelet rotated.
    pub async fn reopen_log(&self, id: &str) -> Result<()> {
        let record = self.running(id)?;
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
        let record = self.running(id)?;
        let mut shim = self.sandboxes.shim(&record.sandbox_id).await?;
        let exec_id = hex::encode(rand::random::<[u8; 8]>());
        let output = shim
            .exec_sync(&record.id, &exec_id, cmd, timeout)
            .await
            .map_err(|e| Error::from(e).context("exec in the container"))?;
        if output.timed_out {
            let (secs, id) = (timeout.as_secs(), &record.id);
            let message = format!("command timed out after {secs}s in container {id}");
            return Err(Error::deadline_exceeded(message));
        }
        check_exec_output(&output)?;
        Ok(output)
    }

    /// Refuses resources this node cannot apply, naming the CRI field (see the pod's).
    pub(super) async fn check_resources(&self, resources: &ContainerResources) -> Result<()> {
        let linux = crate::container::spec::linux_resources(resources).map_err(Error::from)?;
        self.sandboxes.check_resources(&linux).await
    }
}

/// ExecSync output that would not fit the CRI answer is refused, never cut. The shim
/// refuses it itself; this covers a shim from before that, which cut streams at 16 MiB.
fn check_exec_output(output: &crate::shim::client::ExecSyncOutput) -> Result<()> {
    if output.stdout_truncated || output.stderr_truncated {
        return Err(Error::resource_exhausted(format!(
            "the command wrote more than {} bytes of output, more than an ExecSync answer can \
             carry (the CRI's 16 MiB message limit); a streaming exec has no limit",
            crate::shim::EXEC_SYNC_OUTPUT_LIMIT
        )));
    }
    crate::shim::check_exec_sync_output(output.stdout.len() as u64, output.stderr.len() as u64)
        .map_err(|e| Error::with_source(ErrorKind::ResourceExhausted, "exec output", e))
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
    fn exec_output_over_the_limit_is_refused_not_cut() {
        let limit = crate::shim::EXEC_SYNC_OUTPUT_LIMIT;
        assert!(check_exec_output(&output(15 << 20, 0)).is_ok());
        assert!(check_exec_output(&output(limit - 4, 4)).is_ok());
        let both = check_exec_output(&output(limit, 1)).unwrap_err();
        assert_eq!(both.kind(), ErrorKind::ResourceExhausted);
        assert!(
            both.to_string()
                .contains(&format!("wrote {} bytes", limit + 1)),
            "{both}"
        );
        // A shim that cut a stream: refused even though what came fits.
        let mut cut = output(10, 0);
        cut.stdout_truncated = true;
        let err = check_exec_output(&cut).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
        assert!(err.to_string().contains("more than"), "{err}");
    }
}
