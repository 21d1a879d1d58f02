//! Daemon side: spawn a pod's shim, (re)connect to it, and typed calls.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tonic::codegen::http::Uri;

use super::connection::{ConnectError, ShimConnection};

use crate::shim_api::shim_client::ShimClient as RawClient;
use crate::shim_api::*;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("spawn {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shim for {sandbox_id} did not become ready: {reason}")]
    NotReady { sandbox_id: String, reason: String },
    #[error("connect to shim at {socket}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: ConnectError,
    },
    /// The shim's own words (init's error, say), without the status wrapping around them.
    // Not named `source`: thiserror would chain the status's own Display after it.
    #[error("shim {method}: {}", status.message())]
    Rpc {
        method: &'static str,
        status: tonic::Status,
    },
}

impl From<ClientError> for crate::Error {
    fn from(err: ClientError) -> Self {
        use crate::ErrorKind;
        let kind = match &err {
            ClientError::Spawn { .. } | ClientError::NotReady { .. } => ErrorKind::Internal,
            ClientError::Connect { .. } => ErrorKind::Unavailable,
            ClientError::Rpc { status, .. } => kind_of(status.code()),
        };
        crate::Error::with_source(kind, "shim", err)
    }
}

/// The one mapping of the shim's status codes back to error kinds: the code the shim
/// chose (see shim/error.rs) is kept, and the message travels in `ClientError::Rpc`.
pub fn kind_of(code: tonic::Code) -> crate::ErrorKind {
    use crate::ErrorKind;
    use tonic::Code;
    match code {
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::Unimplemented => ErrorKind::Unimplemented,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        Code::Cancelled => ErrorKind::Cancelled,
        Code::Unknown => ErrorKind::Unknown,
        // Codes the shim never picks (see shim/error.rs); the message still says why.
        Code::Ok
        | Code::Aborted
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::DataLoss
        | Code::Internal => ErrorKind::Internal,
    }
}

/// Largest shim answer accepted: two full ExecSync streams and room to spare.
const MAX_RESPONSE: usize = 40 * 1024 * 1024;

type Result<T, E = ClientError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// The berth binary; `/proc/self/exe` for the daemon itself.
    pub binary: PathBuf,
    pub sandbox_id: String,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub log: Option<PathBuf>,
    pub log_level: Option<String>,
    pub ready_timeout: Duration,
}

impl SpawnOptions {
    pub fn new(sandbox_id: &str, socket: &Path, state_dir: &Path) -> Self {
        SpawnOptions {
            binary: PathBuf::from("/proc/self/exe"),
            sandbox_id: sandbox_id.to_string(),
            socket: socket.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            log: None,
            log_level: None,
            ready_timeout: Duration::from_secs(10),
        }
    }
}

/// The shim socket for a sandbox: `<state>/s/<first 16 hex of id>.sock` (short, because
/// sockaddr_un holds 107 bytes).
pub fn socket_path(state_root: &Path, sandbox_id: &str) -> PathBuf {
    let short: String = sandbox_id.chars().take(16).collect();
    state_root.join("s").join(format!("{short}.sock"))
}

/// Starts a shim and connects to it once it said `ready <pid>`.
pub async fn spawn(opts: SpawnOptions) -> Result<ShimClient> {
    let mut command = tokio::process::Command::new(&opts.binary);
    command
        .arg("shim")
        .arg("--sandbox-id")
        .arg(&opts.sandbox_id)
        .arg("--socket")
        .arg(&opts.socket)
        .arg("--state-dir")
        .arg(&opts.state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(log) = &opts.log {
        command.arg("--log").arg(log);
    }
    if let Some(level) = &opts.log_level {
        command.arg("--log-level").arg(level);
    }
    let mut child = command.spawn().map_err(|source| ClientError::Spawn {
        binary: opts.binary.clone(),
        source,
    })?;
    let not_ready = |reason: String| ClientError::NotReady {
        sandbox_id: opts.sandbox_id.clone(),
        reason,
    };
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| not_ready("no stdout pipe".into()))?;
    let mut stderr = child.stderr.take();
    let mut line = String::new();
    let read = tokio::time::timeout(
        opts.ready_timeout,
        BufReader::new(stdout).read_line(&mut line),
    )
    .await;
    // The direct child only forks the shim away and exits; reap it.
    let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
    let ready = match read {
        Ok(Ok(_)) => line
            .trim_end()
            .strip_prefix("ready ")
            .and_then(|pid| pid.parse::<u32>().ok()),
        Ok(Err(_)) | Err(_) => None,
    };
    let Some(pid) = ready else {
        let mut message = String::new();
        if let Some(stderr) = stderr.as_mut() {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), stderr.read_to_string(&mut message))
                    .await;
        }
        let reason = match (read.is_err(), message.trim()) {
            (true, _) => format!("no ready line within {:?}", opts.ready_timeout),
            (false, "") => format!("unexpected output {:?}", line.trim_end()),
            (false, message) => message.to_string(),
        };
        return Err(not_ready(reason));
    };
    let mut client = connect(&opts.socket).await?;
    client.pid = pid;
    Ok(client)
}

/// Connects to a running shim (after a daemon restart, for instance).
pub async fn connect(socket: &Path) -> Result<ShimClient> {
    let connection =
        ShimConnection::connect(socket)
            .await
            .map_err(|source| ClientError::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
    // The origin only fills the :authority and :scheme a request needs; the socket is the route.
    let raw = RawClient::with_origin(connection, Uri::from_static("http://shim"))
        // ExecSync answers carry up to 16 MiB per stream.
        .max_decoding_message_size(MAX_RESPONSE);
    Ok(ShimClient { raw, pid: 0 })
}

/// A connection to one pod's shim. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShimClient {
    raw: RawClient<ShimConnection>,
    /// The shim's pid as reported by `ready` (0 when connected later; see `info`).
    pid: u32,
}

/// A process as the shim reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessState {
    pub id: String,
    pub pid: u32,
    pub status: ProcessStatus,
    pub exit_code: i32,
    pub started_at: i64,
    pub exited_at: i64,
    /// The process's cgroup saw an OOM kill while it ran (meaningful once Exited).
    pub oom_killed: bool,
}

/// How `create` sets a process up. The default is the pause process's: not started,
/// stdio to /dev/null, cgroup from the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Open the start gate right away.
    pub start: bool,
    /// CRI log file for stdout and stderr (created with its directory).
    pub log_path: Option<PathBuf>,
    /// A pty as stdin/stdout/stderr; the output is logged as stdout.
    pub tty: bool,
    /// Keep stdin open for attach; without it stdin is /dev/null.
    pub stdin: bool,
    /// Close stdin after the first attach client detaches.
    pub stdin_once: bool,
    /// The cgroup (relative to each hierarchy root) for kill --all and OOM detection;
    /// `None`: the spec's `linux.cgroupsPath`.
    pub cgroup_path: Option<String>,
}

/// A process exit the shim pushed (see `ShimClient::events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessExit {
    /// The container id, or the sandbox id for the pause process.
    pub id: String,
    pub pid: u32,
    pub exit_code: i32,
    /// Unix nanoseconds.
    pub exited_at: i64,
    pub oom_killed: bool,
    /// Sent from the shim's table when the stream opened (or after a lag), so it may have
    /// been seen before.
    pub replayed: bool,
}

/// The shim's exits, as they happen, after those it already held.
#[derive(Debug)]
pub struct ExitStream(tonic::Streaming<ProcessEvent>);

impl ExitStream {
    /// The next exit; `None` when the shim ended the stream (it shut down).
    pub async fn next(&mut self) -> Result<Option<ProcessExit>> {
        let event = self.0.message().await.map_err(rpc("events"))?;
        Ok(event.map(|e| ProcessExit {
            id: e.id,
            pid: e.pid,
            exit_code: e.exit_code,
            exited_at: e.exited_at,
            oom_killed: e.oom_killed,
            replayed: e.replayed,
        }))
    }
}

/// What an ExecSync returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSyncOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    /// The deadline passed; the command and what it started were killed.
    pub timed_out: bool,
    /// More than 16 MiB came on that stream; the rest was dropped.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// Input messages queued toward the shim before the sender waits.
const SESSION_INPUT_QUEUE: usize = 8;

fn session_inputs(
    open: OpenIo,
    inputs: tokio::sync::mpsc::Receiver<process_input::Input>,
) -> impl tokio_stream::Stream<Item = ProcessInput> + Send + 'static {
    use tokio_stream::StreamExt;
    let first = ProcessInput {
        input: Some(process_input::Input::Open(open)),
    };
    tokio_stream::once(first).chain(
        tokio_stream::wrappers::ReceiverStream::new(inputs)
            .map(|input| ProcessInput { input: Some(input) }),
    )
}

/// A live exec or attach: input goes through `input` (dropping it ends the client's side),
/// output comes from `output` until the process's output ends (an exec's last message is
/// its exit code).
#[derive(Debug)]
pub struct ProcessSession {
    pub input: tokio::sync::mpsc::Sender<process_input::Input>,
    pub output: tonic::Streaming<ProcessOutput>,
}

impl ProcessSession {
    async fn started(
        method: &'static str,
        input: tokio::sync::mpsc::Sender<process_input::Input>,
        mut output: tonic::Streaming<ProcessOutput>,
    ) -> Result<ProcessSession> {
        match output.message().await.map_err(rpc(method))? {
            Some(ProcessOutput {
                output: Some(process_output::Output::Started(_)),
            }) => Ok(ProcessSession { input, output }),
            other => Err(ClientError::Rpc {
                method,
                status: tonic::Status::internal(format!("the shim answered {other:?}")),
            }),
        }
    }
}

fn rpc(method: &'static str) -> impl FnOnce(tonic::Status) -> ClientError {
    move |status| ClientError::Rpc { method, status }
}

impl ShimClient {
    /// The shim's pid from its ready line (0 if this client came from `connect`).
    pub fn spawned_pid(&self) -> u32 {
        self.pid
    }

    /// (sandbox id, shim pid).
    pub async fn info(&mut self) -> Result<(String, u32)> {
        let info = self
            .raw
            .info(InfoRequest {})
            .await
            .map_err(rpc("info"))?
            .into_inner();
        Ok((info.sandbox_id, info.shim_pid))
    }

    /// Creates the process of `bundle`; returns its pid once init reported "created".
    pub async fn create(&mut self, id: &str, bundle: &Path, options: CreateOptions) -> Result<u32> {
        let request = CreateRequest {
            id: id.to_string(),
            bundle: bundle.to_string_lossy().into_owned(),
            start: options.start,
            log_path: options
                .log_path
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            tty: options.tty,
            stdin: options.stdin,
            stdin_once: options.stdin_once,
            cgroup_path: options.cgroup_path.unwrap_or_default(),
        };
        Ok(self
            .raw
            .create(request)
            .await
            .map_err(rpc("create"))?
            .into_inner()
            .pid)
    }

    pub async fn start(&mut self, id: &str) -> Result<u32> {
        let request = StartRequest { id: id.to_string() };
        Ok(self
            .raw
            .start(request)
            .await
            .map_err(rpc("start"))?
            .into_inner()
            .pid)
    }

    pub async fn kill(&mut self, id: &str, signal: i32, all: bool) -> Result<()> {
        let request = KillRequest {
            id: id.to_string(),
            signal: u32::try_from(signal).unwrap_or(0),
            all,
        };
        self.raw.kill(request).await.map_err(rpc("kill"))?;
        Ok(())
    }

    pub async fn state(&mut self, id: &str) -> Result<ProcessState> {
        let request = StateRequest { id: id.to_string() };
        let state = self
            .raw
            .state(request)
            .await
            .map_err(rpc("state"))?
            .into_inner();
        Ok(ProcessState {
            status: state.status(),
            id: state.id,
            pid: state.pid,
            exit_code: state.exit_code,
            started_at: state.started_at,
            exited_at: state.exited_at,
            oom_killed: state.oom_killed,
        })
    }

    /// Reopens the process's log file at its path (after the kubelet renamed it).
    pub async fn reopen_log(&mut self, id: &str) -> Result<()> {
        let request = ReopenLogRequest { id: id.to_string() };
        self.raw
            .reopen_log(request)
            .await
            .map_err(rpc("reopen_log"))?;
        Ok(())
    }

    pub async fn delete(&mut self, id: &str) -> Result<()> {
        let request = DeleteRequest { id: id.to_string() };
        self.raw.delete(request).await.map_err(rpc("delete"))?;
        Ok(())
    }

    /// Runs `args` in the running container `id`; `timeout` zero: no deadline.
    pub async fn exec_sync(
        &mut self,
        id: &str,
        exec_id: &str,
        args: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecSyncOutput> {
        let request = ExecSyncRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            args,
            timeout_seconds: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        };
        let response = self
            .raw
            .exec_sync(request)
            .await
            .map_err(rpc("exec_sync"))?
            .into_inner();
        Ok(ExecSyncOutput {
            stdout: response.stdout,
            stderr: response.stderr,
            exit_code: response.exit_code,
            timed_out: response.timed_out,
            stdout_truncated: response.stdout_truncated,
            stderr_truncated: response.stderr_truncated,
        })
    }

    /// Starts an interactive exec (`open.args` in container `open.id`); returns once the
    /// command runs.
    pub async fn exec(&mut self, open: OpenIo) -> Result<ProcessSession> {
        let (input, inputs) = tokio::sync::mpsc::channel(SESSION_INPUT_QUEUE);
        let stream = session_inputs(open, inputs);
        let output = self
            .raw
            .exec(stream)
            .await
            .map_err(rpc("exec"))?
            .into_inner();
        ProcessSession::started("exec", input, output).await
    }

    /// Attaches to container `open.id`'s main process.
    pub async fn attach(&mut self, open: OpenIo) -> Result<ProcessSession> {
        let (input, inputs) = tokio::sync::mpsc::channel(SESSION_INPUT_QUEUE);
        let stream = session_inputs(open, inputs);
        let output = self
            .raw
            .attach(stream)
            .await
            .map_err(rpc("attach"))?
            .into_inner();
        ProcessSession::started("attach", input, output).await
    }

    /// Subscribes to the shim's process exits: first every exit it still holds, then each
    /// new one as it becomes final.
    pub async fn events(&mut self) -> Result<ExitStream> {
        let stream = self
            .raw
            .events(EventsRequest {})
            .await
            .map_err(rpc("events"))?
            .into_inner();
        Ok(ExitStream(stream))
    }

    /// Kills every process of the pod; the shim exits after answering.
    pub async fn shutdown(&mut self) -> Result<()> {
        self.raw
            .shutdown(ShutdownRequest {})
            .await
            .map_err(rpc("shutdown"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shim_refusal_keeps_its_code_and_words_up_to_the_cri() {
        let status = tonic::Status::resource_exhausted("the command wrote 20971520 bytes");
        let err = crate::Error::from(ClientError::Rpc {
            method: "exec_sync",
            status,
        })
        .context("exec in the container");
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status
                .message()
                .contains("the command wrote 20971520 bytes"),
            "{status:?}"
        );
    }

    #[test]
    fn shim_errors_keep_their_code_and_message_through_the_daemon() {
        use crate::shim::error::ApiError;
        let errors = [
            ApiError::NotFound("c1".into()),
            ApiError::AlreadyExists("c1".into()),
            ApiError::InvalidArgument("invalid signal 99".into()),
            ApiError::FailedPrecondition("container c1 is not running".into()),
            ApiError::InitFailed("mount /proc: permission denied".into()),
            ApiError::ExecFailed("exec \"nope\": no such file or directory".into()),
            ApiError::DeadlineExceeded("process c1 did not exec within 10s".into()),
            crate::shim::error::io_err("spawn berth init")(std::io::Error::from_raw_os_error(
                libc::EMFILE,
            )),
        ];
        for err in errors {
            let status = tonic::Status::from(err);
            let (code, message) = (status.code(), status.message().to_string());
            let daemon = crate::Error::from(ClientError::Rpc {
                method: "create",
                status,
            });
            let back = tonic::Status::from(daemon);
            assert_eq!(back.code(), code, "{message}");
            assert!(
                back.message().contains(&message),
                "{} lost {message}",
                back.message()
            );
        }
    }

    #[test]
    fn socket_paths_are_short() {
        let id = "0123456789abcdef".repeat(4);
        let path = socket_path(Path::new("/run/berth"), &id);
        assert_eq!(path, PathBuf::from("/run/berth/s/0123456789abcdef.sock"));
    }
}
