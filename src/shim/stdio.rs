//! A container process's stdio. Init gets pipes (or a pty slave) as fds 0/1/2; the shim
//! keeps the other ends, non-blocking and close-on-exec (so no later init inherits them),
//! and one task per output reads them into the CRI log.
//!
//! Attach plugs in here: `ProcessIo::stdin` is where its input goes (the stdin pipe's
//! write end, or the pty master), `console` takes window resizes, and the readers copy
//! live output to the attached clients through `ProcessIo::attach`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::log::{LineSplitter, LogFile, MAX_RECORD, Stream, append_record, rfc3339_nano};
use crate::linux::process::now_unix_nanos;

/// One read from a pipe; pipes hold 64 KiB, so a busy writer is drained in a few reads.
/// On the stack of the reading call, not in the task: an idle container costs no buffer.
const READ_CHUNK: usize = 32 * 1024;

/// Window size of a new pty until a client sets one.
const DEFAULT_ROWS: u16 = 24;
const DEFAULT_COLS: u16 = 80;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct IoOptions<'a> {
    pub log_path: Option<&'a Path>,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
}

impl IoOptions<'_> {
    /// Whether the shim owns the process's stdio (a container), rather than handing it
    /// /dev/null (the pause process, or a container nobody can read from).
    pub fn managed(&self) -> bool {
        self.log_path.is_some() || self.tty || self.stdin
    }
}

/// The ends init gets as fds 0, 1 and 2.
pub(super) struct ChildStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// What the shim keeps of a process's stdio, until the process is deleted.
#[derive(Debug, Default)]
pub(super) struct ProcessIo {
    /// Where attach writes: the stdin pipe's write end, or a dup of the pty master. Held
    /// so the process's stdin stays open; dropped when `stdin_once` says so.
    pub stdin: Option<OwnedFd>,
    pub stdin_once: bool,
    /// The pty master, for window resizes, when the process has a terminal.
    pub console: Option<OwnedFd>,
    pub log: Option<Arc<Mutex<LogFile>>>,
    pub attach: Arc<AttachHub>,
    readers: Vec<JoinHandle<()>>,
}

/// Output chunks queued per attached client before it starts losing output: a client
/// that cannot keep up must not stall the log (or the container behind it).
const ATTACH_QUEUE: usize = 64;

/// The clients attached to a process's live output.
#[derive(Debug, Default)]
pub(super) struct AttachHub {
    inner: Mutex<HubState>,
}

#[derive(Debug, Default)]
struct HubState {
    clients: Vec<tokio::sync::mpsc::Sender<(Stream, bytes::Bytes)>>,
    /// Outputs still open; at zero the process's output is over and clients are let go.
    open_outputs: usize,
    ended: bool,
    dropped_chunks: u64,
}

impl AttachHub {
    fn state(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new client's output queue; None once the output has ended.
    pub fn subscribe(&self) -> Option<tokio::sync::mpsc::Receiver<(Stream, bytes::Bytes)>> {
        let mut state = self.state();
        if state.ended {
            return None;
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(ATTACH_QUEUE);
        state.clients.push(sender);
        Some(receiver)
    }

    fn outputs_opened(&self, count: usize) {
        self.state().open_outputs = count;
    }

    fn publish(&self, stream: Stream, data: &[u8]) {
        let mut state = self.state();
        if state.clients.is_empty() {
            return;
        }
        let chunk = bytes::Bytes::copy_from_slice(data);
        let mut dropped = 0;
        state
            .clients
            .retain(|client| match client.try_send((stream, chunk.clone())) {
                Ok(()) => true,
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    true
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
            });
        if dropped > 0 {
            state.dropped_chunks += dropped;
            tracing::debug!(
                dropped = state.dropped_chunks,
                "attach client too slow: output dropped"
            );
        }
    }

    fn output_ended(&self) {
        let mut state = self.state();
        state.open_outputs = state.open_outputs.saturating_sub(1);
        if state.open_outputs == 0 {
            state.ended = true;
            // Their queues end once drained: the clients see the output is over.
            state.clients.clear();
        }
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        // A deleted process's readers stop (a grandchild may still hold the pipes).
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// The shim's read ends, to be handed to [`start_readers`] once init is spawned.
pub(super) struct Outputs(Vec<(Stream, OwnedFd)>);

impl Outputs {
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Opens the log and makes the pipes or the pty for a managed process.
pub(super) fn prepare(opts: &IoOptions<'_>) -> io::Result<(ChildStdio, Outputs, ProcessIo)> {
    let log = match opts.log_path {
        Some(path) => Some(Arc::new(Mutex::new(LogFile::open(path).map_err(|e| {
            io::Error::new(e.kind(), format!("open log {}: {e}", path.display()))
        })?))),
        None => None,
    };
    let mut io = ProcessIo::default();
    io.stdin_once = opts.stdin_once;
    io.log = log;
    if opts.tty {
        // Init opens the pty inside the container and sends the master back
        // (`receive_console`); until then the process's stdio is /dev/null.
        let child = ChildStdio {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        };
        return Ok((child, Outputs(Vec::new()), io));
    }
    let stdin = if opts.stdin {
        let (read, write) = pipe()?;
        set_nonblocking(&write)?;
        io.stdin = Some(write);
        Stdio::from(read)
    } else {
        Stdio::null()
    };
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    set_nonblocking(&stdout_read)?;
    set_nonblocking(&stderr_read)?;
    let child = ChildStdio {
        stdin,
        stdout: Stdio::from(stdout_write),
        stderr: Stdio::from(stderr_write),
    };
    let outputs = Outputs(vec![
        (Stream::Stdout, stdout_read),
        (Stream::Stderr, stderr_read),
    ]);
    Ok((child, outputs, io))
}

/// The pty master init sent on the console socket (it is there by the time init reported
/// "created").
pub(super) fn receive_console(socket: &std::os::unix::net::UnixStream) -> io::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd};
    socket.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
    let mut mark = [0u8; 1];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut received = Vec::new();
    loop {
        let mut iov = [std::io::IoSliceMut::new(&mut mark)];
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(message) => {
                for cmsg in message.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(fds) = cmsg {
                        // SAFETY: SCM_RIGHTS gave this process new fds that nothing else
                        // owns; wrapping them closes any we do not keep.
                        received.extend(
                            fds.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                break;
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    if mark[0] != crate::init::console::CONSOLE_MARK || received.is_empty() {
        return Err(io::Error::other("init sent no terminal"));
    }
    Ok(received.swap_remove(0))
}

/// Keeps a process's pty master (for stdin when it has one, and resizes) and returns it
/// as the output to read, with the window size a new terminal gets.
pub(super) fn console_outputs(
    io: &mut ProcessIo,
    master: OwnedFd,
    stdin: bool,
) -> io::Result<Outputs> {
    let winsize = libc::winsize {
        ws_row: DEFAULT_ROWS,
        ws_col: DEFAULT_COLS,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    if unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&master),
            libc::TIOCSWINSZ,
            &winsize,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    set_cloexec(&master)?;
    set_nonblocking(&master)?;
    if stdin {
        io.stdin = Some(master.try_clone()?);
    }
    io.console = Some(master.try_clone()?);
    Ok(Outputs(vec![(Stream::Stdout, master)]))
}

/// Starts one reader task per output; `closed` runs when a reader reached EOF and logged
/// the stream's last record.
pub(super) fn start_readers(
    io: &mut ProcessIo,
    outputs: Outputs,
    tty: bool,
    closed: impl Fn() + Clone + Send + 'static,
) {
    io.attach.outputs_opened(outputs.0.len());
    for (stream, fd) in outputs.0 {
        let log = io.log.clone();
        let attach = io.attach.clone();
        let closed = closed.clone();
        io.readers.push(tokio::spawn(async move {
            read_output(fd, stream, tty, log, &attach).await;
            attach.output_ended();
            closed();
        }));
    }
}

async fn read_output(
    fd: OwnedFd,
    stream: Stream,
    tty: bool,
    log: Option<Arc<Mutex<LogFile>>>,
    attach: &AttachHub,
) {
    // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and the same for its
    // whole life.
    let registered = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
    let fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!(error = %e, stream = stream.as_str(), "watch container output");
            return;
        }
    };
    let mut splitter = LineSplitter::new(MAX_RECORD);
    loop {
        let mut guard = match fd.readable().await {
            Ok(guard) => guard,
            Err(e) => {
                tracing::warn!(error = %e, stream = stream.as_str(), "wait for container output");
                break;
            }
        };
        let read = guard.try_io(|fd| {
            let mut buf = [0u8; READ_CHUNK];
            loop {
                match nix::unistd::read(fd.get_ref(), &mut buf) {
                    Ok(0) => return Ok(0),
                    Ok(n) => {
                        log_chunk(&mut splitter, stream, log.as_deref(), &buf[..n]);
                        attach.publish(stream, &buf[..n]);
                        return Ok(n);
                    }
                    Err(Errno::EINTR) => continue,
                    // A pty master reads EIO once every slave fd is closed: its EOF.
                    Err(Errno::EIO) if tty => return Ok(0),
                    Err(e) => return Err(io::Error::from(e)),
                }
            }
        });
        match read {
            Ok(Ok(0)) => break,
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, stream = stream.as_str(), "read container output");
                break;
            }
        }
    }
    let mut records = Vec::new();
    let timestamp = rfc3339_nano(now_unix_nanos());
    splitter
        .finish(&mut |tag, content| append_record(&mut records, &timestamp, stream, tag, content));
    if let (Some(log), false) = (log, records.is_empty()) {
        lock(&log).write_records(&records);
    }
}

/// Turns one read into records and writes them with one `write`.
fn log_chunk(
    splitter: &mut LineSplitter,
    stream: Stream,
    log: Option<&Mutex<LogFile>>,
    data: &[u8],
) {
    let Some(log) = log else {
        // No log path: the output is read (so the process never blocks) and dropped.
        return;
    };
    let timestamp = rfc3339_nano(now_unix_nanos());
    let mut records = Vec::new();
    splitter.feed(data, &mut |tag, content| {
        append_record(&mut records, &timestamp, stream, tag, content)
    });
    if !records.is_empty() {
        lock(log).write_records(&records);
    }
}

pub(super) fn lock(log: &Mutex<LogFile>) -> std::sync::MutexGuard<'_, LogFile> {
    // Poisoned only by a panic mid-write; the file is still the right one.
    log.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

pub(super) fn set_cloexec(fd: &impl AsFd) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

pub(super) fn set_nonblocking(fd: &impl AsFd) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
