//! The execs containerd adds to a task (Exec, then Start with the exec's id): each runs
//! once, through the task's init, with the process spec and stdio containerd sent; its
//! exit is kept (and published) until containerd deletes it.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use containerd_shim_protos::api::{DeleteResponse, StateResponse, Status as TaskStatus};
use containerd_shim_protos::ttrpc;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::{oneshot, watch};

use super::fifo::{self, StdinCloser, StdioPaths};
use super::publish::{self, Publisher};
use super::status::{invalid, status};
use crate::shim::error::ApiError;
use crate::shim::exec_start::ExecStartError;
use crate::shim::idle::Activity;
use crate::shim::process::CREATE_TIMEOUT;
use crate::shim::shared::Shared;

/// (exit status, exited at), once it exited.
type ExitState = Option<(u32, i64)>;

/// An exec containerd added; it runs once started.
pub struct Exec {
    process: serde_json::Value,
    stdio: StdioPaths,
    /// 0 until started.
    pid: i32,
    console: Option<OwnedFd>,
    stdin: StdinCloser,
    exit: watch::Sender<ExitState>,
}

/// A started exec, before its entry records it.
pub struct Started {
    pub pid: i32,
    console: Option<OwnedFd>,
    stdin: StdinCloser,
    exit: oneshot::Receiver<i32>,
}

impl Exec {
    pub fn new(process: serde_json::Value, stdio: StdioPaths) -> Exec {
        Exec {
            process,
            stdio,
            pid: 0,
            console: None,
            stdin: StdinCloser::default(),
            exit: watch::Sender::new(None),
        }
    }

    /// What starting it takes; refused once it was started.
    pub fn to_start(&self, exec_id: &str) -> Result<(serde_json::Value, StdioPaths), ttrpc::Error> {
        if self.pid != 0 {
            return Err(status(ApiError::FailedPrecondition(format!(
                "exec {exec_id} was started already"
            ))));
        }
        Ok((self.process.clone(), self.stdio.clone()))
    }

    /// Records the started process and follows it to its exit: kept here, published as
    /// TaskExit.
    pub fn record_start(&mut self, started: Started, follow: ExitFollower) {
        self.pid = started.pid;
        self.console = started.console;
        self.stdin = started.stdin;
        let exit_sender = self.exit.clone();
        let exit = started.exit;
        let pid = started.pid;
        tokio::spawn(async move {
            let code = exit.await.unwrap_or(255);
            follow.activity.touch();
            let at = crate::linux::process::now_unix_nanos();
            exit_sender.send_replace(Some((code as u32, at)));
            follow.publisher.publish(publish::task_exit(
                &follow.id,
                &follow.exec_id,
                pid as u32,
                code as u32,
                at,
            ));
        });
    }

    pub fn fill_state(&self, exec_id: &str, response: &mut StateResponse) {
        response.exec_id = exec_id.to_string();
        response.pid = self.pid.max(0) as u32;
        self.stdio.fill_state(response);
        let exit = *self.exit.borrow();
        let state = match (self.pid, exit) {
            (_, Some((code, at))) => {
                response.exit_status = code;
                response.exited_at = Some(publish::timestamp(at)).into();
                TaskStatus::STOPPED
            }
            (0, None) => TaskStatus::CREATED,
            _ => TaskStatus::RUNNING,
        };
        response.status = state.into();
    }

    /// Signals the exec while it runs (nothing once it exited or before it started).
    pub fn signal(&self, signal: u32) -> Result<(), ttrpc::Error> {
        if self.pid <= 0 || self.exit.borrow().is_some() {
            return Ok(());
        }
        let signal = i32::try_from(signal)
            .ok()
            .and_then(|s| Signal::try_from(s).ok())
            .ok_or_else(|| invalid(format!("invalid signal {signal}")))?;
        let _ = kill(Pid::from_raw(self.pid), signal);
        Ok(())
    }

    /// Delete's answer; refused while it runs.
    pub fn delete_response(&self, exec_id: &str) -> Result<DeleteResponse, ttrpc::Error> {
        let exit = *self.exit.borrow();
        if self.pid > 0 && exit.is_none() {
            return Err(status(ApiError::FailedPrecondition(format!(
                "exec {exec_id} is running"
            ))));
        }
        let mut response = DeleteResponse::new();
        response.pid = self.pid.max(0) as u32;
        if let Some((code, at)) = exit {
            response.exit_status = code;
            response.exited_at = Some(publish::timestamp(at)).into();
        }
        Ok(response)
    }

    pub fn subscribe_exit(&self) -> watch::Receiver<ExitState> {
        self.exit.subscribe()
    }

    pub fn console(&self) -> Option<&OwnedFd> {
        self.console.as_ref()
    }

    pub fn close_stdin(&mut self) {
        self.stdin.close();
    }
}

/// Where an exec's exit goes once it exits.
pub struct ExitFollower {
    pub id: String,
    pub exec_id: String,
    pub publisher: Publisher,
    pub activity: Arc<Activity>,
}

/// Starts exec `exec_id` of container `id` through the container's init, with
/// containerd's process spec and stdio.
pub async fn start(
    shared: &Shared,
    id: &str,
    exec_id: &str,
    process: serde_json::Value,
    stdio_paths: &StdioPaths,
) -> Result<Started, ttrpc::Error> {
    let (child, stdin) = fifo::child_stdio(stdio_paths).map_err(|e| {
        status(ApiError::Io {
            what: "open stdio".into(),
            source: e,
        })
    })?;
    let deadline = tokio::time::Instant::now() + CREATE_TIMEOUT;
    let started = shared
        .start_exec_with(
            id,
            exec_id,
            |_| Ok(process),
            stdio_paths.terminal,
            child,
            deadline,
        )
        .await;
    let started = match started {
        Ok(started) => started,
        Err(ExecStartError::TimedOut) => {
            return Err(status(ApiError::DeadlineExceeded(format!(
                "exec {exec_id} did not start within {CREATE_TIMEOUT:?}"
            ))));
        }
        Err(ExecStartError::Api(e)) => return Err(status(e)),
    };
    let (console, stdin) = match started.console {
        Some(master) => {
            let (master, stdin) = fifo::copy_console(master, stdio_paths).map_err(|e| {
                status(ApiError::Io {
                    what: "copy the terminal".into(),
                    source: e,
                })
            })?;
            (Some(master), stdin)
        }
        None => (None, stdin),
    };
    Ok(Started {
        pid: started.pid,
        console,
        stdin,
        exit: started.exit,
    })
}
