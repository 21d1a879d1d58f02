//! One Events subscription per live shim: every process exit the shim pushes is routed to
//! its owner, the pause process's to the sandbox manager, a container's to whoever
//! registered with [`SandboxManager::on_container_exit`] (the container manager, wired by
//! the daemon). The subscription starts with the pod (or with recovery, after a daemon
//! restart) and reconnects until the pod's shim is gone; each new subscription first
//! replays the exits the shim still holds, so none falls in a gap.

use std::sync::Arc;
use std::time::Duration;

use super::SandboxManager;
use crate::shim::client::ProcessExit;

/// What the pod's shims say about containers, told to [`ContainerExitSink`].
pub enum ShimNews {
    /// A container's process exited (a pause process's is not told).
    Exit(ProcessExit),
    /// The pod's shim died unexpectedly (see shim_watch.rs): the pod is NotReady and its
    /// processes were killed with its cgroup.
    Lost(String),
}

/// Receives what the shims say about containers.
pub type ContainerExitSink = Arc<dyn Fn(ShimNews) + Send + Sync>;

/// First and longest pause before subscribing again after the stream broke.
const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(1);

impl SandboxManager {
    /// Where container news goes; set once, before recovery starts the subscriptions.
    pub fn on_container_exit(&self, sink: ContainerExitSink) {
        if self.exit_sink.set(sink).is_err() {
            tracing::warn!("a second container exit sink was ignored");
        }
    }

    /// Follows the Events stream of the pod's shim for as long as the daemon holds a
    /// connection to it (StopPodSandbox and a shim death drop it).
    pub(super) fn follow_exits(self: &Arc<Self>, id: &str) {
        let this = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let mut retry = RETRY_FIRST;
            loop {
                let Some(mut shim) = this
                    .get(&id)
                    .ok()
                    .and_then(|sb| crate::store::lock(&sb.ext.shim).clone())
                else {
                    return;
                };
                match shim.events().await {
                    Ok(mut exits) => loop {
                        match exits.next().await {
                            Ok(Some(exit)) => {
                                retry = RETRY_FIRST;
                                this.process_exited(&id, exit);
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(sandbox_id = %id, error = %e, "the shim's event stream broke");
                                break;
                            }
                        }
                    },
                    Err(e) => {
                        tracing::debug!(sandbox_id = %id, error = %e, "subscribing to the shim's events");
                    }
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        });
    }

    fn process_exited(&self, sandbox_id: &str, exit: ProcessExit) {
        if exit.id == sandbox_id {
            // The pod's state follows the pause process itself (see `SandboxRecord::reads_as`).
            if !exit.replayed {
                tracing::info!(
                    sandbox_id,
                    pid = exit.pid,
                    exit_code = exit.exit_code,
                    "the pod's pause process exited"
                );
            }
            return;
        }
        self.tell(sandbox_id, ShimNews::Exit(exit));
    }

    pub(super) fn tell(&self, sandbox_id: &str, news: ShimNews) {
        match self.exit_sink.get() {
            Some(sink) => sink(news),
            None => tracing::debug!(sandbox_id, "container news with nobody to tell"),
        }
    }
}
