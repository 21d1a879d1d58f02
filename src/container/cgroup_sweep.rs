//! A stopped container leaves nothing running: after its main process is gone, whatever
//! else is still in its cgroup is SIGKILLed, and the stop waits until the cgroup is empty.
//!
//! Why this is needed: in a pod that shares its PID namespace (pid mode POD, or TARGET into
//! another container's), the main process is not PID 1 of a namespace of its own, so the
//! kernel does not take its descendants with it. They are reparented to the pod's pause
//! process (or the target's PID 1) and keep running in the container's cgroup.
//!
//! The choice: the stop signal goes to the main process only (as containerd and runc do;
//! a workload's own children are its business while it shuts down). Once the main process
//! has exited, whether on the stop signal before the timeout or on SIGKILL after it, the
//! container is stopped in the CRI's sense, so everything left in its cgroup is SIGKILLed at
//! once, without waiting out the rest of the timeout: those processes never got the stop
//! signal and nothing would send them one. This is what a container with its own PID
//! namespace gets from the kernel when its PID 1 exits, and what containerd's runc shim does
//! when a shared-namespace container's init exits (it kills all of the container's
//! processes). The exit code stays the main process's.
//!
//! The sweep runs as soon as the stop sees the main process gone, not only once its exit is
//! recorded: the shim records an exit after the output pipes close (so the log is complete),
//! and the processes left behind hold those pipes, which would hold the stop until the
//! timeout.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::linux::cgroup::Cgroups;

/// How long processes left in a stopped container's cgroup may take to die after SIGKILL
/// before StopContainer fails naming them.
const LEFTOVER_WAIT: Duration = Duration::from_secs(2);

/// SIGKILLs every process left in the cgroup of container `id` and returns once it is
/// empty; an error naming the survivors after [`LEFTOVER_WAIT`].
pub(crate) async fn kill_leftovers(cgroups: &Cgroups, id: &str, cgroup_path: &str) -> Result<()> {
    let cgroups = cgroups.clone();
    let (id, path) = (id.to_string(), cgroup_path.to_string());
    tokio::task::spawn_blocking(move || {
        // The common case (own PID namespace, or no children) is one read of cgroup.procs.
        let left = cgroups.procs(&path).unwrap_or_default();
        if left.is_empty() {
            return Ok(());
        }
        tracing::info!(container_id = %id, processes = left.len(), "killing what the container's main process left running");
        cgroups
            .kill_all(&path, LEFTOVER_WAIT)
            .map_err(|e| Error::from(e).context(format!("stopping container {id}")))
    })
    .await
    .map_err(|e| Error::internal("cgroup task", e))?
}

/// Once the main process (host pid `pid`) is gone, kills what it left in the cgroup of
/// container `id` (see the module comment), so the shim can record the exit without the
/// stop waiting out its timeout. Never resolves: the caller races it against the exit.
pub(crate) async fn sweep_once_main_is_gone(
    pid: u32,
    cgroups: &Cgroups,
    id: &str,
    cgroup_path: &str,
) -> std::convert::Infallible {
    let mut pause = Duration::from_micros(500);
    loop {
        if pid > 0 && !running(pid) {
            // A failure is reported by the sweep that follows the recorded exit.
            let _ = kill_leftovers(cgroups, id, cgroup_path).await;
            return std::future::pending().await;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Whether `pid` exists and is not a zombie. A reused pid reads as running: the stop then
/// waits as it would have anyway.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}
