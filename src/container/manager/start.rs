//! StartContainer: the shim opens the start gate and init execs the workload.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::record::StartingFlag;
use super::{Container, ContainerManager, ContainerRecord, ContainerState};
use crate::error::{Error, Result};
use crate::linux::process::now_unix_nanos;
use crate::metrics::timed;

impl ContainerManager {
    /// Runs in its own task; a retry of a start that took effect is OK, a start of a
    /// container that is being created, has exited or was removed is FailedPrecondition.
    pub async fn start(self: &Arc<Self>, id: &str) -> Result<()> {
        let this = self.clone();
        let work = |c: Arc<Container>| async move { this.start_locked(&c).await };
        self.records.run("start", self.get(id)?, work).await
    }

    async fn start_locked(&self, container: &Container) -> Result<()> {
        let record = container.check(ContainerState::Running)?;
        if record.state == ContainerState::Running {
            // A retry of a start that took effect (say, before a crash cut the answer off).
            tracing::info!(container_id = %record.id, "container already running");
            return Ok(());
        }
        let mut shim = self.sandboxes.shim(&record.sandbox_id).await?;
        // Taken before the gate opens: a workload that exits at once must not be seen
        // finishing before it started.
        let started_at = now_unix_nanos();
        container.ext.starting.store(true, Ordering::SeqCst);
        let starting = StartingFlag(&container.ext.starting);
        let started = timed("StartContainer", "shim_start", shim.start(&record.id)).await;
        crate::fault::point("container.start.after_gate_open");
        let result = async {
            match started {
                Ok(pid) => {
                    let running =
                        |r: &mut ContainerRecord| (r.pid, r.started_at) = (pid, started_at);
                    let moved =
                        self.records
                            .transition(container, ContainerState::Running, running);
                    timed("StartContainer", "record_running", moved).await?;
                    tracing::info!(container_id = %container.id, pid, "container started");
                    Ok(())
                }
                Err(e) => {
                    let err = Error::from(e).context("starting the container");
                    let message = err.to_string();
                    let failed = |r: &mut ContainerRecord| {
                        r.exit_code = 128;
                        r.finished_at = now_unix_nanos();
                        r.reason = "StartError".into();
                        r.message = message;
                    };
                    let moved = self
                        .records
                        .transition(container, ContainerState::Exited, failed);
                    moved.await?;
                    Err(err)
                }
            }
        }
        .await;
        drop(starting);
        // An exit pushed while STARTED was on its way was held: it goes now.
        self.apply_pending_exit(container).await;
        result
    }
}
