//! What every part of a running shim shares: the process table, the start gates, the
//! stdio of its containers, the ExecSync exit waiters, the cgroup hierarchies, and the
//! exit broadcast behind the Events stream. The exit of a process becomes final here.
//!
//! The runtime is single-threaded, so handlers only interleave at `.await`s; the locks are
//! never held across one. Small state files, cgroup counters and container log records
//! are written and read inline: starting tokio's blocking pool would add threads (and
//! memory) to every pod for small, local I/O (the state dir is a tmpfs).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::UnixStream;
use tokio::sync::{Notify, broadcast};

use super::oom::oom_kills;
use super::state::{ShimRecord, Status as ProcStatus, Table, write_exit_file, write_shim_record};
use super::stdio::ProcessIo;
use crate::linux::cgroup::Cgroups;
use crate::shim_api::ProcessEvent;

/// How long a reaped process's exit waits for its output to reach EOF (a grandchild may
/// hold the pipes open for ever).
pub(super) const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// Exits a slow Events subscriber may fall behind by before it is sent the whole
/// exited set again.
const EVENT_BACKLOG: usize = 64;

pub(super) struct Shared {
    pub(super) sandbox_id: String,
    pub(super) state_dir: PathBuf,
    pub(super) socket: PathBuf,
    table: Mutex<Table>,
    /// Sync sockets of created-but-not-started processes, by id.
    gates: Mutex<HashMap<String, BufReader<UnixStream>>>,
    /// Stdio of processes the shim manages (containers), by id.
    ios: Mutex<HashMap<String, ProcessIo>>,
    /// ExecSync processes waiting for their exit code, by pid.
    exec_waiters: Mutex<HashMap<i32, tokio::sync::oneshot::Sender<i32>>>,
    /// The host's cgroup hierarchies, for kill --all, shutdown and OOM counters.
    pub(super) cgroups: Option<Cgroups>,
    /// Final exits, as they happen, for the Events streams.
    exits: broadcast::Sender<ProcessEvent>,
    pub(super) shutdown: Notify,
    /// Set once Shutdown has run: the Events streams end, so the server's graceful
    /// shutdown does not wait on the daemon's subscription.
    pub(super) stopping: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    pub(super) fn new(sandbox_id: String, state_dir: PathBuf, socket: PathBuf) -> Shared {
        Shared {
            sandbox_id,
            state_dir,
            socket,
            table: Mutex::default(),
            gates: Mutex::default(),
            ios: Mutex::default(),
            exec_waiters: Mutex::default(),
            cgroups: Cgroups::detect().ok(),
            exits: broadcast::channel(EVENT_BACKLOG).0,
            shutdown: Notify::new(),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    pub(super) fn table(&self) -> MutexGuard<'_, Table> {
        // A poisoned lock means a panic mid-update; the table is still the best we have.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn gates(&self) -> MutexGuard<'_, HashMap<String, BufReader<UnixStream>>> {
        self.gates.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn ios(&self) -> MutexGuard<'_, HashMap<String, ProcessIo>> {
        self.ios.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn exec_waiters(
        &self,
    ) -> MutexGuard<'_, HashMap<i32, tokio::sync::oneshot::Sender<i32>>> {
        self.exec_waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cgroup's OOM kill counter, if the host has one for it.
    pub(super) fn oom_kills(&self, cgroup: Option<&str>) -> Option<u64> {
        oom_kills(self.cgroups.as_ref()?, cgroup?)
    }

    /// A receiver of every exit from now on.
    pub(super) fn subscribe_exits(&self) -> broadcast::Receiver<ProcessEvent> {
        self.exits.subscribe()
    }

    /// Every exit the table still holds (processes not deleted yet), for a new subscriber.
    pub(super) fn exited(&self) -> Vec<ProcessEvent> {
        self.table()
            .processes
            .iter()
            .filter(|(_, r)| r.status == ProcStatus::Exited)
            .filter_map(|(id, r)| {
                let exit = r.exit.as_ref()?;
                Some(ProcessEvent {
                    id: id.clone(),
                    pid: r.pid.max(0) as u32,
                    exit_code: exit.exit_code,
                    exited_at: exit.exited_at,
                    oom_killed: exit.oom_killed,
                    replayed: true,
                })
            })
            .collect()
    }

    /// `id` (pid `pid`) was reaped: its exit becomes final now, or once its output is
    /// drained, at the latest after DRAIN_WAIT.
    pub(super) fn exit_observed(self: &Arc<Self>, id: &str, pid: i32) {
        let draining = self
            .table()
            .processes
            .get(id)
            .is_some_and(|r| r.open_outputs > 0);
        if !draining {
            self.finish_exit(id, pid);
            return;
        }
        let shared = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(DRAIN_WAIT).await;
            shared.finish_exit(&id, pid);
        });
    }

    /// An output of `id` reached EOF.
    pub(super) fn output_closed(&self, id: &str) {
        let (ready, pid) = {
            let mut table = self.table();
            let ready = table.output_closed(id);
            (ready, table.processes.get(id).map_or(0, |r| r.pid))
        };
        if ready {
            self.finish_exit(id, pid);
        }
    }

    /// Records the exit of `id` (if still pending and still pid `pid`): OOM check, state,
    /// exit file, then tells the Events subscribers. The file comes first, so whoever
    /// hears of the exit can also find it on disk.
    fn finish_exit(&self, id: &str, pid: i32) {
        let mut table = self.table();
        let Some(record) = table.processes.get(id).filter(|r| r.pid == pid) else {
            return;
        };
        // The counter rose while it ran: the kernel OOM-killed something in its cgroup
        // (the process itself, if it died of SIGKILL).
        let rose = |now: Option<u64>, before: Option<u64>| {
            now.is_some_and(|now| now > before.unwrap_or(0))
        };
        let oom_killed = match self.oom_kills(record.cgroup.as_deref()) {
            Some(now) => rose(Some(now), record.oom_kills_before),
            // The cgroup is gone already (systemd removes a scope once it is empty, which
            // can be before this exit is seen): the parent's counter includes its kills.
            None => {
                let parent = record.cgroup.as_deref().and_then(super::oom::parent_cgroup);
                record.parent_oom_kills_before.is_some()
                    && rose(self.oom_kills(parent), record.parent_oom_kills_before)
            }
        };
        let Some(exit) = table.finish_exit(id, oom_killed) else {
            return;
        };
        tracing::info!(id = %id, pid, exit_code = exit.exit_code, oom_killed, "process exited");
        if let Err(e) = write_exit_file(&self.state_dir, id, &exit) {
            tracing::error!(id = %id, error = %e, "write exit file");
        }
        self.save(&table);
        drop(table);
        // No subscriber (no daemon connected) is fine: the next one gets the exited set.
        let _ = self.exits.send(ProcessEvent {
            id: id.to_string(),
            pid: pid.max(0) as u32,
            exit_code: exit.exit_code,
            exited_at: exit.exited_at,
            oom_killed: exit.oom_killed,
            replayed: false,
        });
    }

    pub(super) fn save(&self, table: &Table) {
        let record = ShimRecord {
            version: 1,
            sandbox_id: self.sandbox_id.clone(),
            shim_pid: std::process::id(),
            processes: table.processes.clone(),
        };
        if let Err(e) = write_shim_record(&self.state_dir, &record) {
            tracing::warn!(error = %e, "write shim.json");
        }
    }
}
