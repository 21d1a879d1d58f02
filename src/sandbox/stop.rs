//! StopPodSandbox and RemovePodSandbox. Both are idempotent (an unknown id is success),
//! run in their own task (a client that gives up does not cut them short) and hold the
//! sandbox's op lock.

use std::sync::Arc;

use super::record::{Sandbox, SandboxRecord, shim_client};
use super::{SandboxManager, SandboxState, attachment, kill_if_same};
use crate::error::{Error, Result, blocking, io_err};
use crate::linux::netns;
use crate::metrics::{step, timed};
use crate::persist;
use crate::store::lock;

impl SandboxManager {
    /// The sandbox `id` names, or None for an empty or unknown id (success for stop and
    /// remove, the CRI contract: a client cleaning up after a failed run sends an empty id).
    fn target(&self, id: &str) -> Result<Option<Arc<Sandbox>>> {
        if id.is_empty() {
            Ok(None)
        } else {
            self.records.find(id)
        }
    }

    /// StopPodSandbox: every process of the pod killed, the network torn down.
    pub async fn stop(self: &Arc<Self>, id: &str) -> Result<()> {
        let Some(sb) = self.target(id)? else {
            return Ok(());
        };
        let this = self.clone();
        let work = |sb: Arc<Sandbox>| async move { this.stop_locked(&sb).await };
        self.records.run("stop", sb, work).await
    }

    async fn stop_locked(&self, sb: &Sandbox) -> Result<()> {
        if sb.is_removed() {
            return Ok(());
        }
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
        if let (Some(network), Some(path), Some(metadata)) =
            (&record.network, &record.netns, record.metadata())
            && !network.torn_down
        {
            let _step = step("StopPodSandbox", "network");
            let attachment = attachment(&record.id, path, metadata, &record.spec.port_mappings);
            let prev = network.result.as_ref().map(|r| r.raw.clone());
            self.cni
                .del(&network.config, &attachment, prev.as_ref())
                .await
                .map_err(|e| Error::from(e).context("tearing down the pod network"))?;
            crate::fault::point("sandbox.stop.after_cni_del");
            self.records
                .save(sb, |r| {
                    if let Some(n) = r.network.as_mut() {
                        n.torn_down = true
                    }
                })
                .await?;
        }
        if let Some(path) = &record.netns {
            let (p, what) = (path.clone(), format!("unpinning {}", path.display()));
            let unpin = blocking("netns task", move || {
                netns::unpin_netns(&p).map_err(io_err(what))
            });
            timed("StopPodSandbox", "netns", unpin).await?;
        }
        Ok(())
    }

    async fn stop_processes(&self, sb: &Sandbox, record: &SandboxRecord) -> Result<()> {
        let shim = match shim_client(sb) {
            Some(s) => Some(s),
            None if record.shim_socket.exists() => {
                crate::shim::connect(&record.shim_socket).await.ok()
            }
            None => None,
        };
        if let Some(shim) = shim
            && let Err(e) = timed("StopPodSandbox", "shim_shutdown", shim.clone().shutdown()).await
        {
            tracing::warn!(sandbox_id = %record.id, error = %e, "shim shutdown failed; killing the pod cgroup");
        }
        *lock(&sb.ext.shim) = None;
        // Whatever the shim could not reach (or if it is gone) dies with the cgroup.
        timed("StopPodSandbox", "kill", self.kill_pod_processes(record)).await?;
        if let Some(pid) = record.shim_pid {
            kill_if_same(pid, None);
        }
        crate::fault::point("sandbox.stop.after_processes_killed");
        Ok(())
    }

    /// RemovePodSandbox: stops it if needed, then removes every trace.
    pub async fn remove(self: &Arc<Self>, id: &str) -> Result<()> {
        let Some(sb) = self.target(id)? else {
            return Ok(());
        };
        let this = self.clone();
        let work = |sb: Arc<Sandbox>| async move { this.remove_locked(&sb).await };
        self.records.run("remove", sb, work).await
    }

    async fn remove_locked(&self, sb: &Sandbox) -> Result<()> {
        if sb.is_removed() {
            return Ok(());
        }
        self.stop_locked(sb).await?;
        let record = sb.record();
        let cgroups = self.cgroups.clone();
        let pause_cg = record.pause_cgroup.clone();
        let pod_cg = record.owns_pod_cgroup.then(|| record.pod_cgroup.clone());
        let remove_cgroups = blocking("cgroup task", move || {
            cgroups.remove(&pause_cg)?;
            pod_cg.map_or(Ok(()), |cg| cgroups.remove(&cg))
        });
        timed("RemovePodSandbox", "cgroups", remove_cgroups).await?;
        let _files = step("RemovePodSandbox", "files");
        crate::fault::point("sandbox.remove.after_cgroups_removed");
        persist::remove_dir_all_if_exists(&self.state_dir(&record.id))
            .map_err(io_err("removing the sandbox state dir"))?;
        persist::remove_file_if_exists(&record.shim_socket)
            .map_err(io_err("removing the shim socket"))?;
        persist::remove_dir_all_if_exists(&self.record_dir(&record.id))
            .map_err(io_err("removing the sandbox record"))?;
        self.records.remove(sb);
        tracing::info!(sandbox_id = %record.id, "pod sandbox removed");
        Ok(())
    }
}
