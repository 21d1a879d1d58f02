//! The berth.shim.v1 service: creates processes through `berth init`, opens their start
//! gates, signals, reports and forgets them, and shuts the pod down.
//!
//! The runtime is single-threaded, so handlers only interleave at `.await`s; the table
//! lock is never held across one. Small state files, cgroup counters and container log
//! records are written and read inline: starting tokio's blocking pool would add
//! threads (and memory) to every pod for small, local I/O.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::ShimArgs;
use super::exec::{CappedOutput, MAX_OUTPUT};
use super::oom::oom_kills;
use super::state::{
    ExitRecord, ProcessRecord, Reaped, ShimRecord, Status as ProcStatus, Table, write_exit_file,
    write_shim_record,
};
use super::stdio::{ChildStdio, IoOptions, ProcessIo};
use crate::init::sync::{InitMessage, START, SYNC_FD};
use crate::linux::cgroup::Cgroups;
use crate::linux::process::{exit_of, now_unix_nanos};
use crate::shim_api::shim_server::{Shim, ShimServer};
use crate::shim_api::*;

/// How long init may take to report "created", and the exec after `start`.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Shutdown keeps killing and reaping before it gives up on stragglers.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// How long a reaped process's exit waits for its output to reach EOF (a grandchild may
/// hold the pipes open for ever).
pub(super) const DRAIN_WAIT: Duration = Duration::from_secs(2);

pub(super) struct Shared {
    sandbox_id: String,
    state_dir: PathBuf,
    socket: PathBuf,
    table: Mutex<Table>,
    /// Sync sockets of created-but-not-started processes, by id.
    gates: Mutex<std::collections::HashMap<String, BufReader<UnixStream>>>,
    /// Stdio of processes the shim manages (containers), by id.
    ios: Mutex<std::collections::HashMap<String, ProcessIo>>,
    /// ExecSync processes waiting for their exit code, by pid.
    exec_waiters: Mutex<std::collections::HashMap<i32, tokio::sync::oneshot::Sender<i32>>>,
    /// The host's cgroup hierarchies, for kill --all, shutdown and OOM counters.
    cgroups: Option<Cgroups>,
    shutdown: Notify,
}

impl Shared {
    pub(super) fn table(&self) -> MutexGuard<'_, Table> {
        // A poisoned lock means a panic mid-update; the table is still the best we have.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gates(&self) -> MutexGuard<'_, std::collections::HashMap<String, BufReader<UnixStream>>> {
        self.gates.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn ios(&self) -> MutexGuard<'_, std::collections::HashMap<String, ProcessIo>> {
        self.ios.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn exec_waiters(
        &self,
    ) -> MutexGuard<'_, std::collections::HashMap<i32, tokio::sync::oneshot::Sender<i32>>> {
        self.exec_waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cgroup's OOM kill counter, if the host has one for it.
    fn oom_kills(&self, cgroup: Option<&str>) -> Option<u64> {
        oom_kills(self.cgroups.as_ref()?, cgroup?)
    }

    /// `id` (pid `pid`) was reaped: its exit becomes final now, or once its output is
    /// drained, at the latest after DRAIN_WAIT.
    fn exit_observed(self: &Arc<Self>, id: &str, pid: i32) {
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
    fn output_closed(&self, id: &str) {
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
    /// exit file.
    fn finish_exit(&self, id: &str, pid: i32) {
        let mut table = self.table();
        let Some(record) = table.processes.get(id).filter(|r| r.pid == pid) else {
            return;
        };
        // The counter rose while it ran: the kernel OOM-killed something in its cgroup
        // (the process itself, if it died of SIGKILL).
        let oom_killed = self
            .oom_kills(record.cgroup.as_deref())
            .is_some_and(|now| now > record.oom_kills_before.unwrap_or(0));
        let Some(exit) = table.finish_exit(id, oom_killed) else {
            return;
        };
        tracing::info!(id = %id, pid, exit_code = exit.exit_code, oom_killed, "process exited");
        if let Err(e) = write_exit_file(&self.state_dir, id, &exit) {
            tracing::error!(id = %id, error = %e, "write exit file");
        }
        self.save(&table);
    }

    fn save(&self, table: &Table) {
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

pub(super) async fn serve(
    args: ShimArgs,
    listener: StdUnixListener,
) -> Result<(), super::ShimError> {
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(super::setup_err("register the listener"))?;
    let shared = Arc::new(Shared {
        sandbox_id: args.sandbox_id.clone(),
        state_dir: args.state_dir.clone(),
        socket: args.socket.clone(),
        table: Mutex::default(),
        gates: Mutex::default(),
        ios: Mutex::default(),
        exec_waiters: Mutex::default(),
        cgroups: Cgroups::detect().ok(),
        shutdown: Notify::new(),
    });
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        .map_err(super::setup_err("watch SIGCHLD"))?;
    let reaper = {
        let shared = shared.clone();
        async move {
            loop {
                shared.reap();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        }
    };
    tokio::spawn(reaper);
    shared.save(&shared.table());
    tracing::info!(sandbox_id = %args.sandbox_id, pid = std::process::id(), socket = %args.socket.display(), "shim serving");

    let stop = {
        let shared = shared.clone();
        async move { shared.shutdown.notified().await }
    };
    let activity = Arc::new(Activity::default());
    tokio::spawn(trim_when_idle(activity.clone()));
    let server = tonic::transport::Server::builder()
        .add_service(ShimServer::with_interceptor(
            Service {
                shared: shared.clone(),
            },
            move |request| {
                activity
                    .count
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                activity.notify.notify_one();
                Ok(request)
            },
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            stop,
        );
    // Graceful shutdown waits for clients to hang up; don't let one keep the shim alive.
    let deadline = async {
        shared.shutdown.notified().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    tokio::select! {
        result = server => {
            if let Err(e) = result {
                tracing::error!(error = %e, "serve");
            }
        }
        () = deadline => {}
    }
    tracing::info!("shim exiting");
    Ok(())
}

pub(super) struct Service {
    pub(super) shared: Arc<Shared>,
}

/// RPCs seen, so the shim can tell when it has gone quiet.
#[derive(Default)]
struct Activity {
    count: std::sync::atomic::AtomicU64,
    notify: Notify,
}

/// How long without an RPC before the shim gives back the code pages it touched.
const IDLE_TRIM_AFTER: Duration = Duration::from_secs(1);

/// After each burst of RPCs, once quiet, drops the clean file pages the burst mapped: a
/// pod's shim is idle nearly all its life, and this keeps its resident set at what it
/// really holds. No timer runs while nothing happens.
async fn trim_when_idle(activity: Arc<Activity>) {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        activity.notify.notified().await;
        loop {
            let seen = activity.count.load(Relaxed);
            tokio::time::sleep(IDLE_TRIM_AFTER).await;
            if activity.count.load(Relaxed) == seen {
                break;
            }
        }
        let _ = crate::linux::memory::trim_idle_pages();
    }
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!("process {id} not found"))
}

impl Service {
    /// Spawns `berth init` with the sync socket as fd 3 and `stdio` as fds 0/1/2 (without
    /// it: /dev/null, as for the pause process or a container with no log and no stdin,
    /// whose output must not end up in the shim's own log).
    fn spawn_init(
        &self,
        bundle: &Path,
        stdio: Option<ChildStdio>,
        extra_args: &[&std::ffi::OsStr],
        console: bool,
    ) -> std::io::Result<(u32, UnixStream, Option<std::os::unix::net::UnixStream>)> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let theirs = OwnedFd::from(theirs);
        let theirs_raw = theirs.as_raw_fd();
        // With a terminal, init opens the pty inside the container and sends its master
        // back on a second socket (console::CONSOLE_FD).
        let (console_ours, console_theirs) = match console {
            true => {
                let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
                (Some(ours), Some(OwnedFd::from(theirs)))
            }
            false => (None, None),
        };
        let console_raw = console_theirs.as_ref().map(|fd| fd.as_raw_fd());
        let mut command = Command::new("/proc/self/exe");
        command
            .arg("init")
            .arg("--bundle")
            .arg(bundle)
            .args(extra_args);
        match stdio {
            Some(stdio) => command
                .stdin(stdio.stdin)
                .stdout(stdio.stdout)
                .stderr(stdio.stderr),
            None => command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        };
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec. std
        // has already moved the stdio ends to 0/1/2 when this runs. Both ends are first
        // copied above 9, so neither can be overwritten by the other's dup2.
        unsafe {
            command.pre_exec(move || {
                let lift = |fd: i32| {
                    let lifted = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                    if lifted < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(lifted)
                };
                let sync = lift(theirs_raw)?;
                let console = console_raw.map(lift).transpose()?;
                if libc::dup2(sync, SYNC_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(console) = console
                    && libc::dup2(console, crate::init::console::CONSOLE_FD) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // The child is reaped by the SIGCHLD reaper, not through `Child`.
        let child = command.spawn()?;
        // The child's stdio ends close with `command`: EOF then means the process is done.
        drop(command);
        drop(theirs);
        drop(console_theirs);
        ours.set_nonblocking(true)?;
        Ok((child.id(), UnixStream::from_std(ours)?, console_ours))
    }

    /// Starts the output readers of process `id` and keeps its stdio.
    fn start_process_io(
        &self,
        id: &str,
        mut io: super::stdio::ProcessIo,
        outputs: super::stdio::Outputs,
        tty: bool,
    ) {
        if let Some(record) = self.shared.table().processes.get_mut(id) {
            record.open_outputs = outputs.len();
        }
        let shared = self.shared.clone();
        let owner = id.to_string();
        super::stdio::start_readers(&mut io, outputs, tty, move || shared.output_closed(&owner));
        self.shared.ios().insert(id.to_string(), io);
    }

    async fn create_process(&self, request: &CreateRequest) -> Result<i32, Status> {
        let id = request.id.as_str();
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
        {
            let mut table = self.shared.table();
            if table.processes.contains_key(id) {
                return Err(Status::already_exists(format!(
                    "process {id} already exists"
                )));
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
                },
            );
        }
        let fail = |message: String| {
            let mut table = self.shared.table();
            table.forget(id);
            drop(table);
            // Its output readers stop with it.
            self.shared.ios().remove(id);
            Status::failed_precondition(message)
        };
        let (child_stdio, outputs) = if io_options.managed() {
            match super::stdio::prepare(&io_options) {
                Ok((child, outputs, io)) => (Some(child), Some((outputs, io))),
                Err(e) => return Err(fail(format!("set up stdio: {e}"))),
            }
        } else {
            (None, None)
        };
        let (init_pid, stream, console) =
            match self.spawn_init(bundle, child_stdio, &[], io_options.tty) {
                Ok(spawned) => spawned,
                Err(e) => return Err(fail(format!("spawn berth init: {e}"))),
            };
        let init_pid = i32::try_from(init_pid).unwrap_or(0);
        // No await since the spawn: the reaper cannot have seen this pid yet.
        self.shared.table().inits.insert(init_pid, id.to_string());
        // A terminal's output is read once init sent the pty (after "created").
        let mut pending_console_io = None;
        if let Some((outputs, io)) = outputs {
            match console {
                Some(_) => pending_console_io = Some(io),
                None => self.start_process_io(id, io, outputs, false),
            }
        }

        let mut reader = BufReader::new(stream);
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
                return Err(fail(message));
            }
        };
        if let (Some(socket), Some(mut io)) = (console, pending_console_io) {
            let outputs = super::stdio::receive_console(&socket)
                .and_then(|master| super::stdio::console_outputs(&mut io, master, request.stdin));
            match outputs {
                Ok(outputs) => self.start_process_io(id, io, outputs, true),
                Err(e) => {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    return Err(fail(format!("receive the terminal from init: {e}")));
                }
            }
        }
        // Init has joined the cgroup by now; kills counted before are not this process's.
        let oom_kills_before = self.shared.oom_kills(cgroup.as_deref());
        let mut table = self.shared.table();
        let early_exit = table.claim(id, pid);
        let exited = early_exit.is_some();
        if let Some(record) = table.processes.get_mut(id) {
            record.pid = pid;
            record.status = ProcStatus::Created;
            record.oom_kills_before = oom_kills_before;
            record.exit = early_exit;
        }
        self.shared.save(&table);
        drop(table);
        if exited {
            self.shared.exit_observed(id, pid);
        }
        self.shared.gates().insert(id.to_string(), reader);
        tracing::info!(id = %id, pid, "process created");
        Ok(pid)
    }

    async fn start_process(&self, id: &str) -> Result<i32, Status> {
        let pid = {
            let table = self.shared.table();
            let record = table.processes.get(id).ok_or_else(|| not_found(id))?;
            if record.status != ProcStatus::Created {
                return Err(Status::failed_precondition(format!(
                    "process {id} is {:?}, not created",
                    record.status
                )));
            }
            record.pid
        };
        let mut gate =
            self.shared.gates().remove(id).ok_or_else(|| {
                Status::failed_precondition(format!("process {id} is being started"))
            })?;
        gate.get_mut().write_all(START).await.map_err(|e| {
            Status::failed_precondition(format!("open the start gate of {id}: {e}"))
        })?;
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
                return Err(Status::failed_precondition(message));
            }
            Ok(Err(e)) => return Err(Status::internal(format!("read from init: {e}"))),
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "process {id} did not exec within {START_TIMEOUT:?}"
                )));
            }
        }
        let mut table = self.shared.table();
        if let Some(record) = table.processes.get_mut(id) {
            // It may already have exited (and been reaped) meanwhile; keep that.
            if record.status == ProcStatus::Created {
                record.status = ProcStatus::Running;
            }
            record.started_at = started_at;
        }
        self.shared.save(&table);
        tracing::info!(id = %id, pid, "process started");
        Ok(pid)
    }

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
            return Err(Status::invalid_argument("the command is empty").into());
        }
        let (target, bundle) = {
            let table = self.shared.table();
            let record = table.processes.get(id).ok_or_else(|| not_found(id))?;
            if record.status != ProcStatus::Running || record.exit.is_some() {
                return Err(
                    Status::failed_precondition(format!("container {id} is not running")).into(),
                );
            }
            let bundle = record.bundle.clone().ok_or_else(|| {
                Status::failed_precondition(format!("process {id} has no bundle"))
            })?;
            (record.pid, bundle)
        };
        let name = format!("{id}/{exec_id}");
        let config_path = bundle.join("config.json");
        let config: serde_json::Value = std::fs::read(&config_path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_slice(&text).map_err(|e| e.to_string()))
            .map_err(|e| {
                Status::failed_precondition(format!("read {}: {e}", config_path.display()))
            })?;
        let process =
            super::exec::exec_process(&config, args, tty).map_err(Status::failed_precondition)?;
        let process_file = RemoveOnDrop(
            self.shared
                .state_dir
                .join(format!("exec-{:016x}.json", rand::random::<u64>())),
        );
        let text = serde_json::to_vec(&process).map_err(|e| Status::internal(e.to_string()))?;
        std::fs::write(&process_file.0, text)
            .map_err(|e| Status::internal(format!("write {}: {e}", process_file.0.display())))?;

        let target_arg = target.to_string();
        let extra: [&std::ffi::OsStr; 4] = [
            "--exec-pid".as_ref(),
            target_arg.as_ref(),
            "--process".as_ref(),
            process_file.0.as_os_str(),
        ];
        let (init_pid, stream, console) = self
            .spawn_init(&bundle, Some(stdio), &extra, tty)
            .map_err(|e| Status::internal(format!("spawn berth init: {e}")))?;
        let init_pid = i32::try_from(init_pid).unwrap_or(0);
        // No await since the spawn: the reaper cannot have seen this pid yet.
        self.shared.table().inits.insert(init_pid, name.clone());

        // init's report ("created" or its error), then EOF once the command was exec'd.
        let mut reader = BufReader::new(stream);
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
                return Err(Status::unknown(message).into());
            }
        };
        let console = match console {
            Some(socket) => match super::stdio::receive_console(&socket) {
                Ok(master) => Some(master),
                Err(e) => {
                    kill_tree(pid);
                    return Err(
                        Status::internal(format!("receive the terminal from init: {e}")).into(),
                    );
                }
            },
            None => None,
        };
        let (exit_sender, exit) = tokio::sync::oneshot::channel();
        let early_exit = self.shared.table().claim_exec(pid, &name);
        match early_exit {
            Some(record) => {
                let _ = exit_sender.send(record.exit_code);
            }
            None => {
                self.shared.exec_waiters().insert(pid, exit_sender);
            }
        }
        drop(process_file);
        let mut rest = String::new();
        let read = tokio::time::timeout_at(report_deadline, reader.read_to_string(&mut rest)).await;
        match read {
            Ok(Ok(_)) if rest.trim().is_empty() => {}
            Ok(Ok(_)) => {
                kill_tree(pid);
                self.shared.exec_waiters().remove(&pid);
                let message = match InitMessage::parse(rest.lines().next().unwrap_or_default()) {
                    Ok(InitMessage::Error(message)) => message,
                    _ => format!("init sent {:?}", rest.trim_end()),
                };
                tracing::info!(exec = %name, error = %message, "exec failed");
                return Err(Status::unknown(message).into());
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

    /// ExecSync: `berth init --exec-pid` runs the command in the container; its output is
    /// collected (capped) until it exits and the pipes close, or the deadline passes.
    async fn exec_sync(&self, request: &ExecSyncRequest) -> Result<ExecSyncResponse, Status> {
        let id = request.id.as_str();
        if request.args.is_empty() {
            return Err(Status::invalid_argument("the command is empty"));
        }
        let now = tokio::time::Instant::now();
        let deadline = u64::try_from(request.timeout_seconds)
            .ok()
            .filter(|s| *s > 0)
            .map(|s| now + Duration::from_secs(s));
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC);
        let (stdout_read, stdout_write) =
            pipe().map_err(|e| Status::internal(format!("create stdout pipe: {e}")))?;
        let (stderr_read, stderr_write) =
            pipe().map_err(|e| Status::internal(format!("create stderr pipe: {e}")))?;
        let stdio = ChildStdio {
            stdin: Stdio::null(),
            stdout: Stdio::from(stdout_write),
            stderr: Stdio::from(stderr_write),
        };
        let stdout = Arc::new(Mutex::new(CappedOutput::new(MAX_OUTPUT)));
        let stderr = Arc::new(Mutex::new(CappedOutput::new(MAX_OUTPUT)));
        let mut readers = Readers(vec![
            tokio::spawn(collect_output(stdout_read, stdout.clone())),
            tokio::spawn(collect_output(stderr_read, stderr.clone())),
        ]);
        let report_deadline =
            deadline.map_or(now + CREATE_TIMEOUT, |d| d.min(now + CREATE_TIMEOUT));
        let started = self
            .start_exec(
                id,
                &request.exec_id,
                &request.args,
                false,
                stdio,
                report_deadline,
            )
            .await;
        let StartedExec {
            pid, name, exit, ..
        } = match started {
            Ok(started) => started,
            Err(ExecStartError::TimedOut)
                if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) =>
            {
                return Ok(timed_out());
            }
            Err(ExecStartError::TimedOut) => {
                return Err(Status::unknown(format!(
                    "init did not report within {CREATE_TIMEOUT:?}"
                )));
            }
            Err(ExecStartError::Status(status)) => return Err(status),
        };

        let exit_code = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, exit).await {
                Ok(code) => code,
                Err(_) => {
                    // Everything the exec started goes with it; the pipes they held are
                    // not waited for.
                    kill_tree(pid);
                    self.shared.exec_waiters().remove(&pid);
                    tracing::info!(exec = %name, pid, "exec timed out: killed");
                    return Ok(timed_out());
                }
            },
            None => exit.await,
        }
        .map_err(|_| Status::internal(format!("lost the exit of exec {name}")))?;

        // A background child may keep the pipes open: take what came by then.
        let drain_until = tokio::time::Instant::now() + DRAIN_WAIT;
        let drain_until = deadline.map_or(drain_until, |d| d.min(drain_until));
        let _ = tokio::time::timeout_at(drain_until, async {
            for reader in &mut readers.0 {
                let _ = reader.await;
            }
        })
        .await;
        drop(readers);
        let take = |output: &Arc<Mutex<CappedOutput>>| {
            std::mem::take(&mut *output.lock().unwrap_or_else(|p| p.into_inner()))
        };
        let (stdout, stderr) = (take(&stdout), take(&stderr));
        super::exec::check_exec_sync_output(stdout.written, stderr.written).map_err(|e| {
            tracing::info!(exec = %name, error = %e, "exec output refused");
            Status::resource_exhausted(e.to_string())
        })?;
        tracing::debug!(exec = %name, pid, exit_code, "exec done");
        Ok(ExecSyncResponse {
            stdout: stdout.data,
            stderr: stderr.data,
            exit_code,
            timed_out: false,
            stdout_truncated: stdout.truncated,
            stderr_truncated: stderr.truncated,
        })
    }

    async fn shutdown_pod(&self) {
        let cgroups = self.shared.cgroups.as_ref();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        self.shared.gates().clear();
        loop {
            let (mut pids, cgroup_paths) = {
                let table = self.shared.table();
                (table.live_pids(), table.cgroups())
            };
            if let Some(cgroups) = cgroups {
                for path in &cgroup_paths {
                    pids.extend(cgroups.procs(path).unwrap_or_default());
                }
            }
            pids.extend(own_children());
            pids.sort_unstable();
            pids.dedup();
            pids.retain(|pid| *pid > 0 && *pid != std::process::id() as i32);
            self.shared.reap();
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
            self.shared.reap();
        }
        let _ = std::fs::remove_file(&self.shared.socket);
        self.shared.save(&self.shared.table());
    }
}

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
    Status(Status),
}

impl From<Status> for ExecStartError {
    fn from(status: Status) -> Self {
        ExecStartError::Status(status)
    }
}

fn timed_out() -> ExecSyncResponse {
    ExecSyncResponse {
        timed_out: true,
        ..Default::default()
    }
}

/// Kills `pid`, its process group (an exec leads its own session) and every descendant
/// still attached to it (found first: once `pid` dies they are reparented out of reach).
fn kill_tree(pid: i32) {
    let descendants = super::exec::descendants(pid);
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    for child in descendants {
        let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
    }
}

/// Reads a pipe to EOF into `output`.
async fn collect_output(fd: OwnedFd, output: Arc<Mutex<CappedOutput>>) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => output
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Output readers that stop when the call returns (a grandchild may hold the pipes).
struct Readers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Readers {
    fn drop(&mut self) {
        for reader in &self.0 {
            reader.abort();
        }
    }
}

/// The exec's process file, removed however the call ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The shim's children (including inherited orphans), from /proc/self/task/*/children.
fn own_children() -> Vec<i32> {
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

/// `linux.cgroupsPath` of the bundle's spec, read without building the whole spec.
fn read_cgroups_path(bundle: &Path) -> Option<String> {
    let text = std::fs::read_to_string(bundle.join("config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value
        .get("linux")?
        .get("cgroupsPath")?
        .as_str()
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}

#[tonic::async_trait]
impl Shim for Service {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse {
            sandbox_id: self.shared.sandbox_id.clone(),
            shim_pid: std::process::id(),
        }))
    }

    async fn create(
        &self,
        request: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let request = request.into_inner();
        if request.id.is_empty() || request.id.contains('/') || request.id.starts_with('.') {
            return Err(Status::invalid_argument(format!(
                "invalid process id {:?}",
                request.id
            )));
        }
        let pid = self.create_process(&request).await?;
        if request.start {
            self.start_process(&request.id).await?;
        }
        Ok(Response::new(CreateResponse { pid: pid as u32 }))
    }

    async fn start(
        &self,
        request: Request<StartRequest>,
    ) -> Result<Response<StartResponse>, Status> {
        let pid = self.start_process(&request.into_inner().id).await?;
        Ok(Response::new(StartResponse { pid: pid as u32 }))
    }

    async fn kill(&self, request: Request<KillRequest>) -> Result<Response<KillResponse>, Status> {
        let request = request.into_inner();
        let signal = i32::try_from(request.signal)
            .ok()
            .and_then(|s| Signal::try_from(s).ok())
            .ok_or_else(|| {
                Status::invalid_argument(format!("invalid signal {}", request.signal))
            })?;
        let (pid, alive, cgroup) = {
            let table = self.shared.table();
            let record = table
                .processes
                .get(&request.id)
                .ok_or_else(|| not_found(&request.id))?;
            // A reaped pid (exit pending while the output drains) may be reused already.
            let alive = matches!(record.status, ProcStatus::Created | ProcStatus::Running)
                && record.exit.is_none();
            (record.pid, alive, record.cgroup.clone())
        };
        let mut pids = Vec::new();
        if alive {
            pids.push(pid);
        }
        if request.all
            && let (Some(path), Some(cgroups)) = (cgroup, self.shared.cgroups.as_ref())
        {
            pids.extend(cgroups.procs(&path).unwrap_or_default());
        }
        for target in pids {
            match kill(Pid::from_raw(target), signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    return Err(Status::internal(format!(
                        "kill {target} with {signal}: {e}"
                    )));
                }
            }
        }
        tracing::info!(id = %request.id, pid, %signal, all = request.all, "signalled");
        Ok(Response::new(KillResponse {}))
    }

    async fn state(
        &self,
        request: Request<StateRequest>,
    ) -> Result<Response<StateResponse>, Status> {
        let id = request.into_inner().id;
        let table = self.shared.table();
        let record = table.processes.get(&id).ok_or_else(|| not_found(&id))?;
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
        Ok(Response::new(StateResponse {
            id: id.clone(),
            pid: record.pid.max(0) as u32,
            status: status as i32,
            exit_code: exit.map_or(0, |e| e.exit_code),
            started_at: record.started_at,
            exited_at: exit.map_or(0, |e| e.exited_at),
            oom_killed: exit.is_some_and(|e| e.oom_killed),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let id = request.into_inner().id;
        let mut table = self.shared.table();
        let Some(record) = table.processes.get(&id) else {
            return Err(not_found(&id));
        };
        match record.status {
            ProcStatus::Running => {
                return Err(Status::failed_precondition(format!(
                    "process {id} is running"
                )));
            }
            ProcStatus::Creating => {
                return Err(Status::failed_precondition(format!(
                    "process {id} is being created"
                )));
            }
            // Never started: it waits at the gate; it goes now and is reaped as an orphan.
            ProcStatus::Created => {
                let _ = kill(Pid::from_raw(record.pid), Signal::SIGKILL);
            }
            ProcStatus::Exited => {}
        }
        table.forget(&id);
        self.shared.save(&table);
        drop(table);
        self.shared.gates().remove(&id);
        self.shared.ios().remove(&id);
        tracing::info!(id = %id, "process deleted");
        Ok(Response::new(DeleteResponse {}))
    }

    async fn reopen_log(
        &self,
        request: Request<ReopenLogRequest>,
    ) -> Result<Response<ReopenLogResponse>, Status> {
        let id = request.into_inner().id;
        if !self.shared.table().processes.contains_key(&id) {
            return Err(not_found(&id));
        }
        let log = self
            .shared
            .ios()
            .get(&id)
            .and_then(|io| io.log.clone())
            .ok_or_else(|| Status::failed_precondition(format!("process {id} has no log")))?;
        let mut log = super::stdio::lock(&log);
        log.reopen()
            .map_err(|e| Status::internal(format!("reopen log {}: {e}", log.path().display())))?;
        tracing::info!(id = %id, path = %log.path().display(), "log reopened");
        Ok(Response::new(ReopenLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        self.exec_sync(&request.into_inner())
            .await
            .map(Response::new)
    }

    type ExecStream = super::interactive::OutputStream;

    async fn exec(
        &self,
        request: Request<tonic::Streaming<ProcessInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        self.exec_stream(request.into_inner())
            .await
            .map(Response::new)
    }

    type AttachStream = super::interactive::OutputStream;

    async fn attach(
        &self,
        request: Request<tonic::Streaming<ProcessInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        self.attach_stream(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn shutdown(
        &self,
        _: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        tracing::info!("shutdown requested");
        self.shutdown_pod().await;
        self.shared.shutdown.notify_waiters();
        Ok(Response::new(ShutdownResponse {}))
    }
}
