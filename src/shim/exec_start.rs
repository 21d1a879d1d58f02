//! Starting an exec (for ExecSync and the interactive Exec alike): `berth init
//! --exec-pid` joins the running container and execs the command; its exit comes from
//! the reaper.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::error::{ApiError, io_err};
use super::shared::Shared;
use super::state::Status as ProcStatus;
use super::stdio::ChildStdio;
use crate::init::sync::InitMessage;

/// An exec whose command runs.
pub(super) struct StartedExec {
    pub pid: i32,
    /// "container/exec id", for the log.
    pub name: String,
    /// Its exit code, from the reaper.
    pub exit: tokio::sync::oneshot::Receiver<i32>,
    /// The pty master, when it runs with a terminal.
    pub console: Option<OwnedFd>,
}

pub(super) enum ExecStartError {
    /// The report deadline passed before the command was exec'd (it was killed).
    TimedOut,
    Api(ApiError),
}

impl From<ApiError> for ExecStartError {
    fn from(err: ApiError) -> Self {
        ExecStartError::Api(err)
    }
}

impl Shared {
    /// Starts an exec in running container `id`: `berth init --exec-pid` joins the
    /// container and execs `args` with `stdio`. Returns once the command was exec'd (or
    /// failed to be), at the latest at `report_deadline`.
    pub(super) async fn start_exec(
        &self,
        id: &str,
        exec_id: &str,
        args: &[String],
        tty: bool,
        stdio: ChildStdio,
        report_deadline: tokio::time::Instant,
    ) -> Result<StartedExec, ExecStartError> {
        if args.is_empty() {
            return Err(ApiError::InvalidArgument("the command is empty".into()).into());
        }
        let process = |config: &serde_json::Value| super::exec::exec_process(config, args, tty);
        self.start_exec_with(id, exec_id, process, tty, stdio, report_deadline)
            .await
    }

    /// Starts an exec in running container `id` whose OCI process `make_process` derives
    /// from the container's config.json (berth's ExecSync: the container's process with
    /// other args; containerd's Exec: the process it sent).
    pub(super) async fn start_exec_with(
        &self,
        id: &str,
        exec_id: &str,
        make_process: impl FnOnce(&serde_json::Value) -> Result<serde_json::Value, String>,
        tty: bool,
        stdio: ChildStdio,
        report_deadline: tokio::time::Instant,
    ) -> Result<StartedExec, ExecStartError> {
        let (target, bundle) = {
            let table = self.table();
            let record = table
                .processes
                .get(id)
                .ok_or_else(|| ApiError::NotFound(id.to_string()))?;
            if record.status != ProcStatus::Running || record.exit.is_some() {
                return Err(
                    ApiError::FailedPrecondition(format!("container {id} is not running")).into(),
                );
            }
            let bundle = record.bundle.clone().ok_or_else(|| {
                ApiError::FailedPrecondition(format!("process {id} has no bundle"))
            })?;
            (record.pid, bundle)
        };
        let name = format!("{id}/{exec_id}");
        let config_path = bundle.join("config.json");
        let text = std::fs::read(&config_path)
            .map_err(io_err(format!("read {}", config_path.display())))?;
        let config: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
            ApiError::FailedPrecondition(format!("parse {}: {e}", config_path.display()))
        })?;
        let process = make_process(&config).map_err(ApiError::FailedPrecondition)?;
        let process_file = RemoveOnDrop(
            self.state_dir
                .join(format!("exec-{:016x}.json", rand::random::<u64>())),
        );
        let text = serde_json::to_vec(&process)
            .map_err(|e| ApiError::Internal(format!("encode the exec process: {e}")))?;
        std::fs::write(&process_file.0, text)
            .map_err(io_err(format!("write {}", process_file.0.display())))?;

        let target_arg = target.to_string();
        let extra: [&std::ffi::OsStr; 4] = [
            "--exec-pid".as_ref(),
            target_arg.as_ref(),
            "--process".as_ref(),
            process_file.0.as_os_str(),
        ];
        let spawned = super::spawn::spawn_init(&bundle, Some(stdio), &extra, tty)
            .map_err(io_err("spawn berth init"))?;
        let (init_pid, console) = (spawned.pid, spawned.console);
        // No await since the spawn: the reaper cannot have seen this pid yet.
        self.table().inits.insert(init_pid, name.clone());

        // init's report ("created" or its error), then EOF once the command was exec'd.
        let mut reader = BufReader::new(spawned.sync);
        let mut line = String::new();
        let read = tokio::time::timeout_at(report_deadline, reader.read_line(&mut line)).await;
        let message = match read {
            Ok(Ok(n)) if n > 0 => InitMessage::parse(&line)
                .unwrap_or_else(|_| InitMessage::Error(format!("init sent {:?}", line.trim_end()))),
            Ok(Ok(_)) => InitMessage::Error("init exited without reporting".into()),
            Ok(Err(e)) => InitMessage::Error(format!("read from init: {e}")),
            Err(_) => {
                kill_tree(init_pid);
                tracing::info!(exec = %name, "exec did not start in time");
                return Err(ExecStartError::TimedOut);
            }
        };
        let pid = match message {
            InitMessage::Created { pid } => pid,
            InitMessage::Error(message) => {
                kill_tree(init_pid);
                tracing::info!(exec = %name, error = %message, "exec failed");
                return Err(ApiError::ExecFailed(message).into());
            }
        };
        let console = match console {
            Some(socket) => match super::stdio::receive_console(&socket) {
                Ok(master) => Some(master),
                Err(e) => {
                    kill_tree(pid);
                    return Err(io_err("receive the terminal from init")(e).into());
                }
            },
            None => None,
        };
        let (exit_sender, exit) = tokio::sync::oneshot::channel();
        let early_exit = self.table().claim_exec(pid, &name);
        match early_exit {
            Some(record) => {
                let _ = exit_sender.send(record.exit_code);
            }
            None => {
                self.exec_waiters().insert(pid, exit_sender);
            }
        }
        drop(process_file);
        let mut rest = String::new();
        let read = tokio::time::timeout_at(report_deadline, reader.read_to_string(&mut rest)).await;
        match read {
            Ok(Ok(_)) if rest.trim().is_empty() => {}
            Ok(Ok(_)) => {
                kill_tree(pid);
                self.exec_waiters().remove(&pid);
                let message = match InitMessage::parse(rest.lines().next().unwrap_or_default()) {
                    Ok(InitMessage::Error(message)) => message,
                    _ => format!("init sent {:?}", rest.trim_end()),
                };
                tracing::info!(exec = %name, error = %message, "exec failed");
                return Err(ApiError::ExecFailed(message).into());
            }
            // The command runs; whatever went wrong with the socket, its exit tells.
            Ok(Err(_)) | Err(_) => {}
        }
        Ok(StartedExec {
            pid,
            name,
            exit,
            console,
        })
    }
}

/// Kills `pid`, its process group (an exec leads its own session) and every descendant
/// still attached to it (found first: once `pid` dies they are reparented out of reach).
pub(super) fn kill_tree(pid: i32) {
    let descendants = super::exec::descendants(pid);
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    for child in descendants {
        let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
    }
}

/// The exec's process file, removed however the call ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
