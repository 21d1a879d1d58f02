//! StopPodSandbox and RemovePodSandbox. Both are idempotent (an unknown id is success),
//! run in their own task (a client that gives up does not cut them short) and hold the
//! sandbox's op lock.

use std::sync::Arc;

use super::record::{Sandbox, SandboxRecord};
use super::run::unpin;
use super::{SandboxManager, SandboxState};
use crate::error::{Error, Result, io_err};
use crate::lifecycle::Rollback;
use crate::metrics::{step, timed};
use crate::persist;
use crate::store::lock;

impl SandboxManager {
    /// StopPodSandbox: every process of the pod killed, the network torn down. An empty
    /// or unknown id is success (the CRI contract: a client cleaning up after a failed run
    /// sends an empty id).
    pub async fn stop(self: &Arc<Self>, id: &str) -> Result<()> {
        if id.is_empty() {
            return Ok(());
        }
        let this = self.clone();
        let work = |sb: Arc<Sandbox>| async move { this.stop_locked(&sb).await };
        self.records.run_found("stop", id, work).await
    }

    async fn stop_locked(&self, sb: &Sandbox) -> Result<()> {
        let record = sb.check(SandboxState::NotReady)?;
        // Killing the processes and tearing down the network do not depend on each other.
        let (processes, network) = tokio::join!(
            self.stop_processes(sb, &record),
            self.teardown_network(sb, &record)
        );
        processes?;
        network?;
        // Once per pod: a repeated StopPodSandbox is no move and publishes nothing.
        let stopped = self.records.transition(sb, SandboxState::NotReady, |_| {});
        timed("StopPodSandbox", "record", stopped).await?;
        tracing::info!(sandbox_id = %record.id, "pod sandbox stopped");
        Ok(())
    }

    /// CNI DEL with the config and result recorded at ADD (once), then the netns unpinned.
    async fn teardown_network(&self, sb: &Sandbox, record: &SandboxRecord) -> Result<()> {
        if let (Some(network), Some(attachment)) = (&record.network, record.attachment())
            && !network.torn_down
        {
            let _step = step("StopPodSandbox", "network");
            let prev = network.result.as_ref().map(|r| r.raw.clone());
            self.cni
                .del(&network.config, &attachment, prev.as_ref())
                .await
                .map_err(|e| Error::from(e).context("tearing down the pod network"))?;
            crate::fault::point("sandbox.stop.after_cni_del");
            let torn_down =
                |r: &mut SandboxRecord| r.network.iter_mut().for_each(|n| n.torn_down = true);
            self.records.save(sb, torn_down).await?;
        }
        if let Some(path) = &record.netns {
            timed("StopPodSandbox", "netns", unpin(path.clone())).await?;
        }
        Ok(())
    }

    async fn stop_processes(&self, sb: &Sandbox, record: &SandboxRecord) -> Result<()> {
        // Connected again if need be (after a daemon restart); a dead shim is no error.
        if let Ok(shim) = self.shim(&record.id).await
            && let Err(e) = timed("StopPodSandbox", "shim_shutdown", shim.clone().shutdown()).await
        {
            tracing::warn!(sandbox_id = %record.id, error = %e, "shim shutdown failed; killing the pod cgroup");
        }
        *lock(&sb.ext.shim) = None;
        // Whatever the shim could not reach (or if it is gone) dies with the cgroup.
        timed("StopPodSandbox", "kill", self.kill_pod_processes(record)).await?;
        // The shim itself, while it runs (a reused pid is left alone).
        let cmdline = |pid| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if let Some(pid) = record.shim_pid
            && crate::shim::cmdline::is_shim_of(&cmdline(pid), &record.id)
        {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        crate::fault::point("sandbox.stop.after_processes_killed");
        Ok(())
    }

    /// RemovePodSandbox: stops it if needed, then removes every trace (an empty or
    /// unknown id is success, as for stop).
    pub async fn remove(self: &Arc<Self>, id: &str) -> Result<()> {
        if id.is_empty() {
            return Ok(());
        }
        let this = self.clone();
        let work = |sb: Arc<Sandbox>| async move { this.remove_locked(&sb).await };
        self.records.run_found("remove", id, work).await
    }

    async fn remove_locked(&self, sb: &Sandbox) -> Result<()> {
        self.stop_locked(sb).await?;
        let record = sb.record();
        // The cgroups and units the run took, given back as its undo would: the processes
        // are gone, so stopping the units only forgets them (and resets a failed one, so
        // that the names can be used again).
        let mut taken = Rollback::new(format!("pod sandbox {}", record.id));
        self.undo_cgroups(&record, &mut taken);
        timed("RemovePodSandbox", "cgroups", taken.finish()).await?;
        let _files = step("RemovePodSandbox", "files");
        crate::fault::point("sandbox.remove.after_cgroups_removed");
        persist::remove_file_if_exists(&record.shim_socket)
            .map_err(io_err("removing the shim socket"))?;
        self.records.remove(sb)?;
        tracing::info!(sandbox_id = %record.id, "pod sandbox removed");
        Ok(())
    }
}
