//! The shim's process table and its on-disk forms: `shim.json` (id → pid, status) and
//! `exits/<id>` (`{"exit_code":N,"exited_at":ns,"oom_killed":bool}`), both replaced
//! atomically (temp file, rename) but not synced: they live under the runtime dir, which
//! a reboot wipes together with the processes they describe, and an fsync there would
//! sit between a process's exit and the event that reports it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::persist::write_replace;

/// ```text
///  Creating ──created──► Created ──start──► Running ──exit──► Exited
///     │                     └───────────exit──────────────────►┘
///     └──error──► (removed)
/// ```
/// "exit" is two steps: the reaped exit is held in `exit` (status unchanged) until the
/// process's output is drained (or a deadline passes), then `finish_exit` makes it
/// Exited, so the last lines are in the log before anyone sees the exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub exited_at: i64,
    /// The process's cgroup saw an OOM kill while it ran.
    #[serde(default)]
    pub oom_killed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: i32,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitRecord>,
    #[serde(default)]
    pub started_at: i64,
    /// The process's cgroup (Create's cgroup_path, else the spec's cgroupsPath), for
    /// `kill --all`, shutdown and OOM detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The OCI bundle it was created from (ExecSync takes the process from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<PathBuf>,
    /// Output readers still running; the exit waits for them.
    #[serde(skip)]
    pub open_outputs: usize,
    /// The cgroup's OOM kill counter when the process was created.
    #[serde(skip)]
    pub oom_kills_before: Option<u64>,
    /// The same counter of the parent cgroup (v2 counts the kills below it too), for when
    /// the process's own cgroup is gone by its exit (systemd removes an emptied scope).
    #[serde(skip)]
    pub parent_oom_kills_before: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ShimRecord {
    pub version: u32,
    pub sandbox_id: String,
    pub shim_pid: u32,
    pub processes: BTreeMap<String, ProcessRecord>,
}

/// Pids reaped before anyone claimed them; bounded so orphans cannot grow it forever.
const MAX_UNCLAIMED: usize = 1024;

#[derive(Debug, Default)]
pub struct Table {
    pub processes: BTreeMap<String, ProcessRecord>,
    /// Workload pid → id.
    by_pid: HashMap<i32, String>,
    /// `berth init` pids still running (their exit is not a workload exit).
    pub inits: HashMap<i32, String>,
    /// ExecSync processes: pid → "container/exec id". Never a container's main process.
    execs: HashMap<i32, String>,
    unclaimed: HashMap<i32, ExitRecord>,
}

/// What a reaped pid was.
#[derive(Debug, PartialEq, Eq)]
pub enum Reaped {
    Workload(String),
    Init(String),
    /// An ExecSync process ("container/exec id").
    Exec(String),
    Orphan,
}

impl Table {
    /// Records the workload pid of `id`; returns its exit if it was already reaped.
    pub fn claim(&mut self, id: &str, pid: i32) -> Option<ExitRecord> {
        self.by_pid.insert(pid, id.to_string());
        self.unclaimed.remove(&pid)
    }

    /// Records the pid of an ExecSync process; returns its exit if it was already reaped.
    pub fn claim_exec(&mut self, pid: i32, name: &str) -> Option<ExitRecord> {
        match self.unclaimed.remove(&pid) {
            Some(exit) => Some(exit),
            None => {
                self.execs.insert(pid, name.to_string());
                None
            }
        }
    }

    pub fn forget(&mut self, id: &str) -> Option<ProcessRecord> {
        let record = self.processes.remove(id)?;
        if self
            .by_pid
            .get(&record.pid)
            .is_some_and(|owner| owner == id)
        {
            self.by_pid.remove(&record.pid);
        }
        Some(record)
    }

    /// A reaped pid: a workload's exit is held until `finish_exit`.
    pub fn reaped(&mut self, pid: i32, exit: ExitRecord) -> Reaped {
        if let Some(id) = self.by_pid.remove(&pid) {
            if let Some(record) = self.processes.get_mut(&id) {
                record.exit = Some(exit);
            }
            self.inits.remove(&pid);
            return Reaped::Workload(id);
        }
        if let Some(name) = self.execs.remove(&pid) {
            self.inits.remove(&pid);
            return Reaped::Exec(name);
        }
        if let Some(id) = self.inits.remove(&pid) {
            return Reaped::Init(id);
        }
        if self.unclaimed.len() >= MAX_UNCLAIMED {
            self.unclaimed.clear();
        }
        self.unclaimed.insert(pid, exit);
        Reaped::Orphan
    }

    /// An output reader of `id` reached EOF; true when that was the last one and the
    /// exit waits only for it.
    pub fn output_closed(&mut self, id: &str) -> bool {
        let Some(record) = self.processes.get_mut(id) else {
            return false;
        };
        record.open_outputs = record.open_outputs.saturating_sub(1);
        record.open_outputs == 0 && self.exit_pending(id)
    }

    /// Reaped but not yet Exited.
    pub fn exit_pending(&self, id: &str) -> bool {
        self.processes
            .get(id)
            .is_some_and(|r| r.status != Status::Exited && r.exit.is_some())
    }

    /// Makes a pending exit final; returns it (None when there is none, or it was
    /// already final).
    pub fn finish_exit(&mut self, id: &str, oom_killed: bool) -> Option<ExitRecord> {
        if !self.exit_pending(id) {
            return None;
        }
        let record = self.processes.get_mut(id)?;
        let exit = record.exit.as_mut()?;
        exit.oom_killed = oom_killed;
        record.status = Status::Exited;
        Some(exit.clone())
    }

    /// Pids of processes that may still run.
    pub fn live_pids(&self) -> Vec<i32> {
        self.processes
            .values()
            .filter(|r| matches!(r.status, Status::Created | Status::Running) && r.pid > 0)
            .filter(|r| r.exit.is_none())
            .map(|r| r.pid)
            .chain(self.inits.keys().copied())
            .collect()
    }

    pub fn cgroups(&self) -> Vec<String> {
        let mut cgroups: Vec<String> = self
            .processes
            .values()
            .filter_map(|r| r.cgroup.clone())
            .collect();
        cgroups.sort();
        cgroups.dedup();
        cgroups
    }
}

pub fn exit_file(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("exits").join(id)
}

pub fn write_exit_file(state_dir: &Path, id: &str, exit: &ExitRecord) -> std::io::Result<()> {
    let data = serde_json::to_vec(exit).map_err(std::io::Error::other)?;
    write_replace(&exit_file(state_dir, id), &data)
}

pub fn write_shim_record(state_dir: &Path, record: &ShimRecord) -> std::io::Result<()> {
    let data = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    write_replace(&state_dir.join("shim.json"), &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: i32, status: Status) -> ProcessRecord {
        ProcessRecord {
            pid,
            status,
            exit: None,
            started_at: 0,
            cgroup: None,
            bundle: None,
            open_outputs: 0,
            oom_kills_before: None,
            parent_oom_kills_before: None,
        }
    }

    #[test]
    fn reaping_maps_pids_to_ids_inits_and_orphans() {
        let mut table = Table::default();
        table
            .processes
            .insert("pod".into(), record(10, Status::Running));
        assert_eq!(table.claim("pod", 10), None);
        table.inits.insert(9, "pod".into());
        let exit = ExitRecord {
            exit_code: 137,
            exited_at: 5,
            oom_killed: false,
        };
        assert_eq!(table.reaped(9, exit.clone()), Reaped::Init("pod".into()));
        assert_eq!(table.reaped(77, exit.clone()), Reaped::Orphan);
        assert_eq!(
            table.reaped(10, exit.clone()),
            Reaped::Workload("pod".into())
        );
        // Reaped, not yet final: not live, not Exited.
        assert_eq!(table.processes["pod"].status, Status::Running);
        assert!(table.exit_pending("pod"));
        assert!(table.live_pids().is_empty());
        let final_exit = table.finish_exit("pod", true).unwrap();
        assert!(final_exit.oom_killed);
        assert_eq!(table.processes["pod"].status, Status::Exited);
        assert_eq!(table.processes["pod"].exit, Some(final_exit));
        assert_eq!(table.finish_exit("pod", false), None, "finished twice");
    }

    #[test]
    fn the_exit_waits_for_the_last_output_to_close() {
        let mut table = Table::default();
        let mut running = record(30, Status::Running);
        running.open_outputs = 2;
        table.processes.insert("c".into(), running);
        table.claim("c", 30);
        // Output closing before the exit does not finish anything.
        assert!(!table.output_closed("c"));
        let exit = ExitRecord {
            exit_code: 0,
            exited_at: 1,
            oom_killed: false,
        };
        assert_eq!(table.reaped(30, exit), Reaped::Workload("c".into()));
        assert!(
            table.output_closed("c"),
            "last output closed after the exit"
        );
        assert!(!table.output_closed("unknown"));
    }

    #[test]
    fn an_exit_reaped_before_the_claim_is_not_lost() {
        let mut table = Table::default();
        let exit = ExitRecord {
            exit_code: 1,
            exited_at: 3,
            oom_killed: false,
        };
        assert_eq!(table.reaped(20, exit.clone()), Reaped::Orphan);
        assert_eq!(table.claim("c", 20), Some(exit));
    }

    #[test]
    fn exec_exits_are_not_the_container_exit() {
        let mut table = Table::default();
        table
            .processes
            .insert("c".into(), record(30, Status::Running));
        table.claim("c", 30);
        let exit = ExitRecord {
            exit_code: 3,
            exited_at: 1,
            oom_killed: false,
        };
        assert_eq!(table.claim_exec(31, "c/e1"), None);
        table.inits.insert(29, "c/e1".into());
        assert_eq!(table.reaped(29, exit.clone()), Reaped::Init("c/e1".into()));
        assert_eq!(table.reaped(31, exit.clone()), Reaped::Exec("c/e1".into()));
        assert!(!table.exit_pending("c"), "the container still runs");
        // Reaped before it was claimed: the claim returns the exit.
        assert_eq!(table.reaped(40, exit.clone()), Reaped::Orphan);
        assert_eq!(table.claim_exec(40, "c/e2"), Some(exit));
    }

    #[test]
    fn exit_files_have_the_documented_form() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("exits")).unwrap();
        let exit = ExitRecord {
            exit_code: 137,
            exited_at: 1_700_000_000_000_000_000,
            oom_killed: true,
        };
        write_exit_file(dir.path(), "abc", &exit).unwrap();
        let text = std::fs::read_to_string(dir.path().join("exits/abc")).unwrap();
        assert_eq!(
            text,
            r#"{"exit_code":137,"exited_at":1700000000000000000,"oom_killed":true}"#
        );
        // Files written before the field existed still read.
        let old: ExitRecord = serde_json::from_str(r#"{"exit_code":1,"exited_at":2}"#).unwrap();
        assert!(!old.oom_killed);
    }
}
