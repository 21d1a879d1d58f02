//! Exec and Attach with live streams: the process's output goes to the daemon as it comes,
//! the daemon's stdin and window sizes come back.
//!
//! Output is read only as fast as the daemon takes it (a bounded queue in front of the
//! gRPC stream, whose HTTP/2 flow control reaches back to the daemon's client), so a client
//! that never reads stops the exec's writer instead of growing the shim.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use nix::errno::Errno;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};

use super::error::{ApiError, ApiResult, io_err};
use super::exec_start::{ExecStartError, StartedExec};
use super::log::Stream as OutputKind;
use super::shared::{DRAIN_WAIT, Shared};
use super::stdio::{ChildStdio, pipe, set_nonblocking};
use crate::shim_api::process_input::Input;
use crate::shim_api::process_output::Output;
use crate::shim_api::{OpenIo, ProcessInput, ProcessOutput, WindowSize};

/// One read from the process; pipes hold 64 KiB, so this drains a full one in two reads.
const READ_CHUNK: usize = 32 * 1024;
/// Messages queued toward the daemon before the readers wait.
const OUTPUT_QUEUE: usize = 8;
/// How long init may take to start an exec.
const EXEC_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) type OutputStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ProcessOutput, Status>> + Send + 'static>>;

fn output(kind: Output) -> Result<ProcessOutput, Status> {
    Ok(ProcessOutput { output: Some(kind) })
}

/// The first message of a stream: what to open.
async fn read_open(inputs: &mut Streaming<ProcessInput>) -> ApiResult<OpenIo> {
    let first = inputs.message().await.map_err(|status| {
        ApiError::InvalidArgument(format!("read the first message: {}", status.message()))
    })?;
    match first {
        Some(ProcessInput {
            input: Some(Input::Open(open)),
        }) => Ok(open),
        _ => Err(ApiError::InvalidArgument(
            "the first message must say what to open".into(),
        )),
    }
}

/// A non-blocking fd driven by tokio.
struct AsyncPipe(AsyncFd<OwnedFd>);

impl AsyncPipe {
    fn new(fd: OwnedFd) -> io::Result<AsyncPipe> {
        set_nonblocking(&fd)?;
        // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and the same for its
        // whole life.
        Ok(AsyncPipe(unsafe { AsyncFd::register(fd)? }))
    }

    /// One read; 0 at EOF (a pty master's EIO, once the last slave closed, is its EOF).
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| {
                loop {
                    match nix::unistd::read(fd.get_ref(), buf) {
                        Ok(n) => return Ok(n),
                        Err(Errno::EINTR) => continue,
                        Err(Errno::EIO) => return Ok(0),
                        Err(e) => return Err(io::Error::from(e)),
                    }
                }
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|fd| {
                loop {
                    match nix::unistd::write(fd.get_ref(), data) {
                        Ok(n) => return Ok(n),
                        Err(Errno::EINTR) => continue,
                        Err(e) => return Err(io::Error::from(e)),
                    }
                }
            }) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }
}

fn set_window_size(console: &OwnedFd, size: &WindowSize) {
    let winsize = libc::winsize {
        ws_row: u16::try_from(size.height).unwrap_or(u16::MAX),
        ws_col: u16::try_from(size.width).unwrap_or(u16::MAX),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSWINSZ, &winsize) };
    if rc < 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "set window size");
    }
}

/// Copies one of the process's outputs to the daemon until EOF or until the daemon is gone.
async fn pump(
    fd: AsyncPipe,
    kind: OutputKind,
    sender: mpsc::Sender<Result<ProcessOutput, Status>>,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match fd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let data = Bytes::copy_from_slice(&buf[..n]);
        let message = match kind {
            OutputKind::Stdout => Output::Stdout(data),
            OutputKind::Stderr => Output::Stderr(data),
        };
        if sender.send(output(message)).await.is_err() {
            return;
        }
    }
}

/// Tasks that end with the call that started them.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Shared {
    /// Exec: starts the command with pipes or a pty, then streams until it exits.
    pub(super) async fn exec_stream(
        &self,
        mut inputs: Streaming<ProcessInput>,
    ) -> ApiResult<OutputStream> {
        let open = read_open(&mut inputs).await?;
        if open.args.is_empty() {
            return Err(ApiError::InvalidArgument("the command is empty".into()));
        }
        let internal = |what: &str, e: io::Error| io_err(what)(e);
        // The shim's ends, and the child's.
        let mut stdin_end = None;
        let mut console = None;
        let mut outputs = Vec::new();
        let stdio = if open.tty {
            // Init opens the pty inside the container and sends the master back.
            ChildStdio {
                stdin: Stdio::null(),
                stdout: Stdio::null(),
                stderr: Stdio::null(),
            }
        } else {
            let stdin = if open.stdin {
                let (read, write) = pipe().map_err(|e| internal("stdin pipe", e))?;
                stdin_end = Some(write);
                Stdio::from(read)
            } else {
                Stdio::null()
            };
            let mut output_pipe = |wanted: bool, kind| -> ApiResult<Stdio> {
                if !wanted {
                    return Ok(Stdio::null());
                }
                let (read, write) = pipe().map_err(|e| internal("output pipe", e))?;
                outputs.push((kind, read));
                Ok(Stdio::from(write))
            };
            let stdout = output_pipe(open.stdout, OutputKind::Stdout)?;
            let stderr = output_pipe(open.stderr, OutputKind::Stderr)?;
            ChildStdio {
                stdin,
                stdout,
                stderr,
            }
        };
        let deadline = tokio::time::Instant::now() + EXEC_START_TIMEOUT;
        let started = self
            .start_exec(
                &open.id,
                &open.exec_id,
                &open.args,
                open.tty,
                stdio,
                deadline,
            )
            .await;
        let StartedExec {
            pid,
            name,
            exit,
            console: master,
        } = match started {
            Ok(started) => started,
            Err(ExecStartError::TimedOut) => {
                return Err(ApiError::DeadlineExceeded(format!(
                    "exec did not start within {EXEC_START_TIMEOUT:?}"
                )));
            }
            Err(ExecStartError::Api(err)) => return Err(err),
        };
        if let Some(master) = master {
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| internal("dup pty", e));
            if open.stdin {
                stdin_end = Some(dup(&master)?);
            }
            console = Some(dup(&master)?);
            outputs.push((OutputKind::Stdout, master));
        }
        let async_pipe = |fd| AsyncPipe::new(fd).map_err(|e| internal("watch pipe", e));
        let stdin_end = stdin_end.map(async_pipe).transpose()?;
        let outputs = outputs
            .into_iter()
            .map(|(kind, fd)| Ok((kind, async_pipe(fd)?)))
            .collect::<ApiResult<Vec<_>>>()?;
        tracing::debug!(exec = %name, pid, tty = open.tty, "interactive exec started");

        let (sender, receiver) = mpsc::channel(OUTPUT_QUEUE);
        let _ = sender
            .send(output(Output::Started(u32::try_from(pid).unwrap_or(0))))
            .await;
        let readers: Vec<_> = outputs
            .into_iter()
            .map(|(kind, fd)| tokio::spawn(pump(fd, kind, sender.clone())))
            .collect();
        let input = tokio::spawn(feed_input(inputs, stdin_end, console, None::<fn()>));
        tokio::spawn(async move {
            let mut readers = Tasks(readers);
            let _input = Tasks(vec![input]);
            let exit_code = match exit.await {
                Ok(code) => code,
                Err(_) => {
                    let _ = sender
                        .send(Err(ApiError::Internal(format!(
                            "lost the exit of exec {name}"
                        ))
                        .into()))
                        .await;
                    return;
                }
            };
            // A background child may keep the output open: send what came by then.
            let _ = tokio::time::timeout(DRAIN_WAIT, async {
                for reader in &mut readers.0 {
                    let _ = reader.await;
                }
            })
            .await;
            drop(readers);
            tracing::debug!(exec = %name, pid, exit_code, "interactive exec done");
            let _ = sender.send(output(Output::ExitCode(exit_code))).await;
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }

    /// Attach: the main process's live output from now on, and its stdin.
    pub(super) async fn attach_stream(
        self: &Arc<Self>,
        mut inputs: Streaming<ProcessInput>,
    ) -> ApiResult<OutputStream> {
        let open = read_open(&mut inputs).await?;
        let id = open.id.as_str();
        let pid = {
            let table = self.table();
            let record = table
                .processes
                .get(id)
                .ok_or_else(|| ApiError::NotFound(id.to_string()))?;
            if record.exit.is_some() || record.status != super::state::Status::Running {
                return Err(ApiError::FailedPrecondition(format!(
                    "container {id} is not running"
                )));
            }
            record.pid
        };
        let (hub, stdin_end, console, stdin_once) = {
            let ios = self.ios();
            let io = ios.get(id).ok_or_else(|| {
                ApiError::FailedPrecondition(format!("container {id} has no stdio to attach to"))
            })?;
            let dup = |fd: &Option<OwnedFd>| -> ApiResult<Option<OwnedFd>> {
                fd.as_ref()
                    .map(|fd| fd.try_clone())
                    .transpose()
                    .map_err(io_err("dup stdio"))
            };
            let stdin_end = if open.stdin { dup(&io.stdin)? } else { None };
            (
                io.attach.clone(),
                stdin_end,
                dup(&io.console)?,
                io.stdin_once,
            )
        };
        if open.stdin && stdin_end.is_none() {
            tracing::debug!(id = %id, "attach asked for stdin; the container has none");
        }
        let stdin_end = stdin_end
            .map(AsyncPipe::new)
            .transpose()
            .map_err(io_err("watch stdin"))?;
        let mut chunks = hub.subscribe().ok_or_else(|| {
            ApiError::FailedPrecondition(format!("container {id} is not running"))
        })?;

        let (sender, receiver) = mpsc::channel(OUTPUT_QUEUE);
        let _ = sender
            .send(output(Output::Started(u32::try_from(pid).unwrap_or(0))))
            .await;
        // A client attached with stdin detaches when its stdin ends (as with containerd):
        // a stdin_once container's stdin closes then, and the session ends once its output
        // does (it usually exits), or right away for other containers.
        let (stdin_ended, mut detached) = tokio::sync::oneshot::channel::<()>();
        let shared = self.clone();
        let owner = id.to_string();
        let with_stdin = open.stdin;
        let detach = move || {
            // Only a client that had stdin detaches anything.
            if stdin_once
                && with_stdin
                && let Some(io) = shared.ios().get_mut(&owner)
            {
                io.stdin = None;
            }
            let _ = stdin_ended.send(());
        };
        let watch_detach = open.stdin;
        let input = tokio::spawn(feed_input(inputs, stdin_end, console, Some(detach)));
        let (want_stdout, want_stderr) = (open.stdout, open.stderr);
        tokio::spawn(async move {
            let _input = Tasks(vec![input]);
            let mut until: Option<tokio::time::Instant> = None;
            loop {
                let chunk = tokio::select! {
                    chunk = chunks.recv() => chunk,
                    Ok(()) = &mut detached, if watch_detach && until.is_none() => {
                        if !stdin_once {
                            return;
                        }
                        until = Some(tokio::time::Instant::now() + DRAIN_WAIT);
                        continue;
                    }
                    () = sleep_until(until) => return,
                };
                let Some((kind, data)) = chunk else { return };
                let message = match kind {
                    OutputKind::Stdout if want_stdout => Output::Stdout(data),
                    OutputKind::Stderr if want_stderr => Output::Stderr(data),
                    _ => continue,
                };
                if sender.send(output(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Feeds the daemon's input to the process: stdin bytes, stdin's end, window sizes.
/// `detach` runs once the client's stdin ended or the client went away.
async fn feed_input(
    mut inputs: Streaming<ProcessInput>,
    mut stdin: Option<AsyncPipe>,
    console: Option<OwnedFd>,
    detach: Option<impl FnOnce()>,
) {
    let mut detach = detach;
    while let Some(Ok(message)) = inputs.next().await {
        match message.input {
            Some(Input::Stdin(data)) => {
                if let Some(pipe) = &stdin
                    && pipe.write_all(&data).await.is_err()
                {
                    stdin = None;
                }
            }
            Some(Input::CloseStdin(_)) => {
                stdin = None;
                if let Some(detach) = detach.take() {
                    detach();
                }
            }
            Some(Input::Resize(size)) => {
                if let Some(console) = &console {
                    set_window_size(console, &size);
                }
            }
            Some(Input::Open(_)) | None => {}
        }
    }
    drop(stdin);
    if let Some(detach) = detach.take() {
        detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn async_pipe_carries_data_and_sees_eof() {
        let (read, write) = pipe().unwrap();
        let (read, write) = (
            AsyncPipe::new(read).unwrap(),
            AsyncPipe::new(write).unwrap(),
        );
        let data = vec![7u8; 200 * 1024];
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                write.write_all(&data).await.unwrap();
            })
        };
        let mut got = Vec::new();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = read.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got, data);
    }
}
