//! The lifecycle of the pod's own processes (pause and containers): create through
//! `berth init`, open the start gate, signal, report, reopen the log, forget, and kill
//! them all at shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::error::{ApiError, ApiResult, io_err};
use super::oom::parent_cgroup;
use super::shared::Shared;
use super::state::{ProcessRecord, Status as ProcStatus};
use super::stdio::IoOptions;
use crate::init::sync::{InitMessage, START};
use crate::linux::process::now_unix_nanos;
use crate::shim_api::{CreateRequest, ProcessStatus, StateResponse};

/// How long init may take to report "created", and the exec after `start`.
pub(super) const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Shutdown keeps killing and reaping before it gives up on stragglers.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Where a new process's stdio comes from.
pub(super) enum StdioSource<'a> {
    /// The shim makes the pipes or pty and writes the CRI log (berth's own daemon).
    Managed(IoOptions<'a>),
    /// Fds the caller opened become fds 0/1/2 (containerd's FIFOs); with `terminal`, init
    /// opens a pty and its master is handed back.
    Given {
        stdio: super::stdio::ChildStdio,
        terminal: bool,
    },
}

/// A created process: its pid, and the pty master when the caller owns its stdio.
pub(super) struct CreatedProcess {
    pub pid: i32,
    pub console: Option<std::os::fd::OwnedFd>,
}

impl Shared {
    /// Starts the output readers of process `id` and keeps its stdio.
    fn start_process_io(
        self: &Arc<Self>,
        id: &str,
        mut io: super::stdio::ProcessIo,
        outputs: super::stdio::Outputs,
        tty: bool,
    ) {
        if let Some(record) = self.table().processes.get_mut(id) {
            record.open_outputs = outputs.len();
        }
        let shared = self.clone();
        let owner = id.to_string();
        super::stdio::start_readers(&mut io, outputs, tty, move || shared.output_closed(&owner));
        self.ios().insert(id.to_string(), io);
    }

    pub(super) async fn create_process(
        self: &Arc<Self>,
        request: &CreateRequest,
    ) -> ApiResult<i32> {
        let bundle = Path::new(&request.bundle);
        let cgroup = Some(request.cgroup_path.clone())
            .filter(|p| !p.is_empty())
            .or_else(|| read_cgroups_path(bundle));
        let io_options = IoOptions {
            log_path: Some(Path::new(&request.log_path)).filter(|p| !p.as_os_str().is_empty()),
            tty: request.tty,
            stdin: request.stdin,
            stdin_once: request.stdin_once,
        };
        self.create_from_bundle(
            &request.id,
            bundle,
            cgroup,
            StdioSource::Managed(io_options),
        )
        .await
        .map(|created| created.pid)
    }

    /// Creates process `id` from the OCI bundle through `berth init`: the shim's own
    /// stdio handling (CRI log, attach) or fds the caller opened (containerd's FIFOs).
    /// With a terminal and given stdio, the pty master is returned for the caller to copy.
    pub(super) async fn create_from_bundle(
        self: &Arc<Self>,
        id: &str,
        bundle: &Path,
        cgroup: Option<String>,
        stdio: StdioSource<'_>,
    ) -> ApiResult<CreatedProcess> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(ApiError::InvalidArgument(format!(
                "invalid process id {id:?}"
            )));
        }
        let (io_options, given) = match stdio {
            StdioSource::Managed(options) => (options, None),
            StdioSource::Given { stdio, terminal } => (
                IoOptions {
                    tty: terminal,
                    ..IoOptions::default()
                },
                Some(stdio),
            ),
        };
        let given_stdio = given.is_some();
        {
            let mut table = self.table();
            if table.processes.contains_key(id) {
                return Err(ApiError::AlreadyExists(id.to_string()));
            }
            table.processes.insert(
                id.to_string(),
                ProcessRecord {
                    pid: 0,
                    status: ProcStatus::Creating,
                    exit: None,
                    started_at: 0,
                    cgroup: cgroup.clone(),
                    bundle: Some(bundle.to_path_buf()),
                    open_outputs: 0,
                    oom_kills_before: None,
                    parent_oom_kills_before: None,
                },
            );
        }
        let fail = |err: ApiError| {
            let mut table = self.table();
            table.forget(id);
            drop(table);
            // Its output readers stop with it.
            self.ios().remove(id);
            err
        };
        let (child_stdio, outputs) = if let Some(given) = given {
            (Some(given), None)
        } else if io_options.managed() {
            match super::stdio::prepare(&io_options) {
                Ok((child, outputs, io)) => (Some(child), Some((outputs, io))),
                Err(e) => return Err(fail(io_err("set up stdio")(e))),
            }
        } else {
            (None, None)
        };
        let spawned = match super::spawn::spawn_init(bundle, child_stdio, &[], io_options.tty) {
            Ok(spawned) => spawned,
            Err(e) => return Err(fail(io_err("spawn berth init")(e))),
        };
        let (init_pid, console) = (spawned.pid, spawned.console);
        // No await since the spawn: the reaper cannot have seen this pid yet.
        self.table().inits.insert(init_pid, id.to_string());
        // A terminal's output is read once init sent the pty (after "created").
        let mut pending_console_io = None;
        if let Some((outputs, io)) = outputs {
            match console {
                Some(_) => pending_console_io = Some(io),
                None => self.start_process_io(id, io, outputs, false),
            }
        }

        let mut reader = BufReader::new(spawned.sync);
        let mut line = String::new();
        let read = tokio::time::timeout(CREATE_TIMEOUT, reader.read_line(&mut line)).await;
        let message = match read {
            Ok(Ok(n)) if n > 0 => InitMessage::parse(&line)
                .unwrap_or_else(|_| InitMessage::Error(format!("init sent {:?}", line.trim_end()))),
            Ok(Ok(_)) => InitMessage::Error("init exited without reporting".into()),
            Ok(Err(e)) => InitMessage::Error(format!("read from init: {e}")),
            Err(_) => InitMessage::Error(format!("init did not report within {CREATE_TIMEOUT:?}")),
        };
        let pid = match message {
            InitMessage::Created { pid } => pid,
            InitMessage::Error(message) => {
                // Leave nothing behind: the init (and, via the closed socket, anything it
                // forked that still waits) goes; the reaper collects them.
                let _ = kill(Pid::from_raw(init_pid), Signal::SIGKILL);
                tracing::info!(id = %id, error = %message, "create failed");
                return Err(fail(ApiError::InitFailed(message)));
            }
        };
        let mut given_console = None;
        if let (true, Some(socket)) = (given_stdio, console.as_ref()) {
            match super::stdio::receive_console(socket) {
                Ok(master) => given_console = Some(master),
                Err(e) => {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    return Err(fail(io_err("receive the terminal from init")(e)));
                }
            }
        }
        if let (Some(socket), Some(mut io)) = (console, pending_console_io) {
            let outputs = super::stdio::receive_console(&socket).and_then(|master| {
                super::stdio::console_outputs(&mut io, master, io_options.stdin)
            });
            match outputs {
                Ok(outputs) => self.start_process_io(id, io, outputs, true),
                Err(e) => {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    return Err(fail(io_err("receive the terminal from init")(e)));
                }
            }
        }
        // Init has joined the cgroup by now; kills counted before are not this process's.
        let oom_kills_before = self.oom_kills(cgroup.as_deref());
        let parent_oom_kills_before = self.oom_kills(cgroup.as_deref().and_then(parent_cgroup));
        let mut table = self.table();
        let early_exit = table.claim(id, pid);
        let exited = early_exit.is_some();
        if let Some(record) = table.processes.get_mut(id) {
            record.pid = pid;
            record.status = ProcStatus::Created;
            record.oom_kills_before = oom_kills_before;
            record.parent_oom_kills_before = parent_oom_kills_before;
            record.exit = early_exit;
        }
        self.save(&table);
        drop(table);
        if exited {
            self.exit_observed(id, pid);
        }
        self.gates().insert(id.to_string(), reader);
        tracing::info!(id = %id, pid, "process created");
        Ok(CreatedProcess {
            pid,
            console: given_console,
        })
    }

    pub(super) async fn start_process(&self, id: &str) -> ApiResult<i32> {
        let pid = {
            let table = self.table();
            let record = table
                .processes
                .get(id)
                .ok_or_else(|| ApiError::NotFound(id.to_string()))?;
            if record.status != ProcStatus::Created {
                return Err(ApiError::FailedPrecondition(format!(
                    "process {id} is {:?}, not created",
                    record.status
                )));
            }
            record.pid
        };
        let mut gate = self.gates().remove(id).ok_or_else(|| {
            ApiError::FailedPrecondition(format!("process {id} is being started"))
        })?;
        gate.get_mut()
            .write_all(START)
            .await
            .map_err(io_err(format!("open the start gate of {id}")))?;
        // init's end is close-on-exec: EOF means the exec happened; a line is its error.
        let mut rest = String::new();
        let read = tokio::time::timeout(START_TIMEOUT, gate.read_to_string(&mut rest)).await;
        let started_at = now_unix_nanos();
        match read {
            Ok(Ok(_)) if rest.trim().is_empty() => {}
            Ok(Ok(_)) => {
                let message = match InitMessage::parse(rest.lines().next().unwrap_or_default()) {
                    Ok(InitMessage::Error(message)) => message,
                    _ => format!("init sent {:?}", rest.trim_end()),
                };
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                return Err(ApiError::InitFailed(message));
            }
            Ok(Err(e)) => return Err(io_err("read from init")(e)),
            Err(_) => {
                return Err(ApiError::DeadlineExceeded(format!(
                    "process {id} did not exec within {START_TIMEOUT:?}"
                )));
            }
        }
        let mut table = self.table();
        if let Some(record) = table.processes.get_mut(id) {
            // It may already have exited (and been reaped) meanwhile; keep that.
            if record.status == ProcStatus::Created {
                record.status = ProcStatus::Running;
            }
            record.started_at = started_at;
        }
        self.save(&table);
        tracing::info!(id = %id, pid, "process started");
        Ok(pid)
    }

    /// Signals `id`'s main process (if it still runs) and, with `all`, its whole cgroup.
    pub(super) fn kill_process(&self, id: &str, signal: u32, all: bool) -> ApiResult<()> {
        let signal = i32::try_from(signal)
            .ok()
            .and_then(|s| Signal::try_from(s).ok())
            .ok_or_else(|| ApiError::InvalidArgument(format!("invalid signal {signal}")))?;
        let (pid, alive, cgroup) = {
            let table = self.table();
            let record = table
                .processes
                .get(id)
                .ok_or_else(|| ApiError::NotFound(id.to_string()))?;
            // A reaped pid (exit pending while the output drains) may be reused already.
            let alive = matches!(record.status, ProcStatus::Created | ProcStatus::Running)
                && record.exit.is_none();
            (record.pid, alive, record.cgroup.clone())
        };
        let mut pids = Vec::new();
        if alive {
            pids.push(pid);
        }
        if all && let (Some(path), Some(cgroups)) = (cgroup, self.cgroups.as_ref()) {
            pids.extend(cgroups.procs(&path).unwrap_or_default());
        }
        for target in pids {
            match kill(Pid::from_raw(target), signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    return Err(super::error::sys_err(format!(
                        "kill {target} with {signal}"
                    ))(e));
                }
            }
        }
        tracing::info!(id = %id, pid, %signal, all, "signalled");
        Ok(())
    }

    pub(super) fn process_state(&self, id: &str) -> ApiResult<StateResponse> {
        let table = self.table();
        let record = table
            .processes
            .get(id)
            .ok_or_else(|| ApiError::NotFound(id.to_string()))?;
        let status = match record.status {
            ProcStatus::Creating => ProcessStatus::Unknown,
            ProcStatus::Created => ProcessStatus::Created,
            ProcStatus::Running => ProcessStatus::Running,
            ProcStatus::Exited => ProcessStatus::Exited,
        };
        // A reaped exit is reported once final (its output drained).
        let exit = record
            .exit
            .as_ref()
            .filter(|_| record.status == ProcStatus::Exited);
        Ok(StateResponse {
            id: id.to_string(),
            pid: record.pid.max(0) as u32,
            status: status as i32,
            exit_code: exit.map_or(0, |e| e.exit_code),
            started_at: record.started_at,
            exited_at: exit.map_or(0, |e| e.exited_at),
            oom_killed: exit.is_some_and(|e| e.oom_killed),
        })
    }

    /// Forgets an exited (or never started) process.
    pub(super) fn delete_process(&self, id: &str) -> ApiResult<()> {
        let mut table = self.table();
        let Some(record) = table.processes.get(id) else {
            return Err(ApiError::NotFound(id.to_string()));
        };
        match record.status {
            ProcStatus::Running => {
                return Err(ApiError::FailedPrecondition(format!(
                    "process {id} is running"
                )));
            }
            ProcStatus::Creating => {
                return Err(ApiError::FailedPrecondition(format!(
                    "process {id} is being created"
                )));
            }
            // Never started: it waits at the gate; it goes now and is reaped as an orphan.
            ProcStatus::Created => {
                let _ = kill(Pid::from_raw(record.pid), Signal::SIGKILL);
            }
            ProcStatus::Exited => {}
        }
        table.forget(id);
        self.save(&table);
        drop(table);
        self.gates().remove(id);
        self.ios().remove(id);
        tracing::info!(id = %id, "process deleted");
        Ok(())
    }

    pub(super) fn reopen_log(&self, id: &str) -> ApiResult<()> {
        if !self.table().processes.contains_key(id) {
            return Err(ApiError::NotFound(id.to_string()));
        }
        let log = self
            .ios()
            .get(id)
            .and_then(|io| io.log.clone())
            .ok_or_else(|| ApiError::FailedPrecondition(format!("process {id} has no log")))?;
        let mut log = super::stdio::lock(&log);
        log.reopen()
            .map_err(io_err(format!("reopen log {}", log.path().display())))?;
        tracing::info!(id = %id, path = %log.path().display(), "log reopened");
        Ok(())
    }

    /// Kills and reaps every process of the pod (their cgroups' too), at most SHUTDOWN_WAIT.
    pub(super) async fn shutdown_pod(self: &Arc<Self>) {
        let cgroups = self.cgroups.as_ref();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        self.gates().clear();
        loop {
            let (mut pids, cgroup_paths) = {
                let table = self.table();
                (table.live_pids(), table.cgroups())
            };
            if let Some(cgroups) = cgroups {
                for path in &cgroup_paths {
                    pids.extend(cgroups.procs(path).unwrap_or_default());
                }
            }
            pids.extend(super::reaper::own_children());
            pids.sort_unstable();
            pids.dedup();
            pids.retain(|pid| *pid > 0 && *pid != std::process::id() as i32);
            self.reap();
            if pids.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(?pids, "processes left after shutdown");
                break;
            }
            for pid in &pids {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.reap();
        }
        let _ = std::fs::remove_file(&self.socket);
        self.save(&self.table());
    }
}

/// `linux.cgroupsPath` of the bundle's spec, read without building the whole spec.
pub(super) fn read_cgroups_path(bundle: &Path) -> Option<String> {
    let text = std::fs::read_to_string(bundle.join("config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value
        .get("linux")?
        .get("cgroupsPath")?
        .as_str()
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}
