//! Container exits, pushed by the pod's shim (its Events stream, followed by the sandbox
//! manager, see sandbox/shim_events.rs) and applied here: the record moves to Exited
//! through the transition table (which writes it and publishes STOPPED), and a waiting
//! StopContainer is woken. Status, List and the metrics only read records; they never
//! write one.
//!
//! The exit files the shim writes stay the source for what happened while nobody
//! listened: recovery, a pod whose shim is gone, and a stop that heard nothing read them.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::{Container, ContainerManager, ContainerRecord, ContainerState};
use crate::persist;
use crate::shim::client::ProcessExit;

/// The record's fields for this exit (the move to Exited is the transition's).
fn exit_fields(record: &mut ContainerRecord, exit: &ProcessExit) {
    record.exit_code = exit.exit_code;
    record.finished_at = exit.exited_at;
    let reason = match (exit.oom_killed, exit.exit_code) {
        (true, _) => "OOMKilled",
        (false, 0) => "Completed",
        _ => "Error",
    };
    record.reason = reason.to_string();
}

impl ContainerManager {
    pub(super) fn exit_file(&self, record: &ContainerRecord) -> PathBuf {
        let shim_state = self.sandboxes.shim_state_dir(&record.sandbox_id);
        crate::shim::exit_file(&shim_state, &record.id)
    }

    /// A shim said process `exit.id` exited. Unknown ids (the pause process, a container
    /// removed meanwhile) and exits already applied are ignored: replays are expected.
    pub async fn process_exited(&self, exit: ProcessExit) {
        if let Some(container) = self.records.get_exact(&exit.id) {
            self.exit_arrived(&container, exit).await;
        }
    }

    /// Holds the exit and applies it, unless a start is publishing STARTED right now (it
    /// applies the exit itself right after, so the events come in order).
    async fn exit_arrived(&self, container: &Container, exit: ProcessExit) {
        *crate::store::lock(&container.ext.exit) = Some(exit);
        if container.ext.starting.load(Ordering::SeqCst) {
            return;
        }
        self.apply_pending_exit(container).await;
    }

    /// Makes a held exit the record's state: once per exit, whoever comes first (the
    /// second finds Exited, which is no move).
    pub(super) async fn apply_pending_exit(&self, container: &Container) -> ContainerRecord {
        let exit = crate::store::lock(&container.ext.exit).clone();
        if let Some(exit) = exit
            && !container.is_removed()
            && container.state().awaits_exit()
        {
            let exited = |r: &mut ContainerRecord| exit_fields(r, &exit);
            let moved = self
                .records
                .observed(container, ContainerState::Exited, exited);
            moved.await;
        }
        container.record()
    }

    /// Reads the shim's exit file and applies it, for when no event can be relied on:
    /// recovery, a lost shim, a stop that heard nothing.
    pub(super) async fn apply_exit_file(&self, container: &Container) -> ContainerRecord {
        let record = container.record();
        if !record.state.awaits_exit() {
            return record;
        }
        let path = self.exit_file(&record);
        let read =
            persist::off_executor(move || persist::read_json::<crate::shim::ExitRecord>(&path))
                .await;
        let Ok(Some(file)) = read else {
            return record;
        };
        let exit = ProcessExit {
            id: record.id.clone(),
            pid: record.pid,
            exit_code: file.exit_code,
            exited_at: file.exited_at,
            oom_killed: file.oom_killed,
            replayed: true,
        };
        self.exit_arrived(container, exit).await;
        container.record()
    }

    /// After StopPodSandbox: the shim's last exits may still be on their way; what its
    /// exit files say is applied now, so the pod's containers read Exited on return.
    pub async fn settle_exits_of(&self, sandbox_id: &str) {
        for container in self.records.of_sandbox(sandbox_id) {
            self.apply_exit_file(&container).await;
        }
    }
}
