//! The reaper: the shim is the child subreaper of its pod, so every exited process of the
//! pod (its own children and the orphans it inherits) is reaped here on SIGCHLD, and each
//! exit goes to whoever waits for it: a workload's becomes final in `Shared`, an
//! ExecSync's goes to its waiter, init's and orphans' are only logged.

use std::sync::Arc;

use super::shared::Shared;
use super::state::{ExitRecord, Reaped};
use crate::linux::process::{exit_of, now_unix_nanos};

/// Reaps on every SIGCHLD for as long as the runtime runs.
pub(super) fn spawn(shared: Arc<Shared>) -> std::io::Result<()> {
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            shared.reap();
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}

impl Shared {
    /// Reaps every exited child (`waitpid(-1, WNOHANG)` until none is left).
    pub(super) fn reap(self: &Arc<Self>) {
        loop {
            let status =
                match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                    Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => return,
                    Ok(status) => status,
                };
            let Some((pid, exit_code)) = exit_of(status) else {
                continue;
            };
            let exit = ExitRecord {
                exit_code,
                exited_at: now_unix_nanos(),
                oom_killed: false,
            };
            let reaped = self.table().reaped(pid, exit);
            match reaped {
                Reaped::Workload(id) => {
                    tracing::debug!(id = %id, pid, exit_code, "process reaped");
                    self.exit_observed(&id, pid);
                }
                Reaped::Exec(name) => {
                    tracing::debug!(exec = %name, pid, exit_code, "exec reaped");
                    if let Some(waiter) = self.exec_waiters().remove(&pid) {
                        let _ = waiter.send(exit_code);
                    }
                }
                Reaped::Init(id) => tracing::debug!(id = %id, pid, exit_code, "init exited"),
                Reaped::Orphan => tracing::debug!(pid, exit_code, "reaped"),
            }
        }
    }
}

/// The shim's children (including inherited orphans), from /proc/self/task/*/children.
pub(super) fn own_children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}
