//! The stdio containerd hands a task: paths of FIFOs it opened (or empty for none).
//! Without a terminal the output FIFOs themselves become the process's fds 1/2, so output
//! goes to containerd with no copy in the shim. Stdin is copied by the shim from
//! containerd's FIFO into a pipe (or, with a terminal, into init's pty master, which is
//! also copied to the stdout FIFO): containerd keeps its end of the FIFO open for later
//! attaches, so the process could never see EOF there; CloseIO ends the copy instead.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

use containerd_shim_protos::api::StateResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe::{Receiver, Sender};
use tokio::sync::oneshot;

use crate::shim::stdio::ChildStdio;

/// The FIFO paths of one process, as containerd sent them.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

impl StdioPaths {
    /// The paths as the State answer reports them.
    pub fn fill_state(&self, response: &mut StateResponse) {
        response.stdin = self.stdin.clone();
        response.stdout = self.stdout.clone();
        response.stderr = self.stderr.clone();
        response.terminal = self.terminal;
    }
}

/// A plain path, or `file://` one; other schemes (containerd's logging binaries) are not
/// supported.
fn fifo_path(uri: &str) -> io::Result<Option<&str>> {
    if uri.is_empty() {
        return Ok(None);
    }
    if let Some(path) = uri.strip_prefix("file://") {
        return Ok(Some(path));
    }
    if uri.contains("://") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("stdio {uri}: only FIFO or file paths are supported"),
        ));
    }
    Ok(Some(uri))
}

/// Opens `path` (a FIFO) for reading or writing without waiting for the other end: a
/// read-write open never blocks, and the one-way reopen through /proc then finds that
/// end present.
fn open_one_way(path: &str, write: bool) -> io::Result<File> {
    let both = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {path}: {e}")))?;
    let proc_path = format!("/proc/self/fd/{}", both.as_raw_fd());
    let one_way = OpenOptions::new()
        .read(!write)
        .write(write)
        .open(&proc_path)
        .map_err(|e| io::Error::new(e.kind(), format!("reopen {path}: {e}")))?;
    drop(both);
    Ok(one_way)
}

/// Ends a process's stdin on CloseIO: what containerd already wrote to the FIFO still
/// goes through, then the shim's end of the process's stdin closes. Dropping it (the
/// process deleted, or never created) does the same.
#[derive(Debug, Default)]
pub struct StdinCloser(Option<oneshot::Sender<()>>);

impl StdinCloser {
    pub fn close(&mut self) {
        if let Some(close) = self.0.take() {
            let _ = close.send(());
        }
    }
}

/// The terminal's end-of-file character (VEOF, ^D): what a closed stdin looks like to a
/// process reading a pty in canonical mode.
const TERMINAL_EOF: &[u8] = &[0x04];

/// The fds 0/1/2 init gets: the output FIFOs and a pipe fed from the stdin FIFO without
/// a terminal, /dev/null with one (init opens the pty).
pub fn child_stdio(paths: &StdioPaths) -> io::Result<(ChildStdio, StdinCloser)> {
    if paths.terminal {
        let child = ChildStdio {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        };
        return Ok((child, StdinCloser::default()));
    }
    let open = |uri: &str| -> io::Result<Stdio> {
        match fifo_path(uri)? {
            Some(path) => Ok(Stdio::from(open_one_way(path, true)?)),
            None => Ok(Stdio::null()),
        }
    };
    let (stdin, closer) = match fifo_path(&paths.stdin)? {
        Some(path) => {
            let input = open_one_way(path, false)?;
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            let closer = copy_stdin(input, Sender::from_owned_fd(write)?, &[])?;
            (Stdio::from(read), closer)
        }
        None => (Stdio::null(), StdinCloser::default()),
    };
    let child = ChildStdio {
        stdin,
        stdout: open(&paths.stdout)?,
        stderr: open(&paths.stderr)?,
    };
    Ok((child, closer))
}

/// Copies the pty master to the stdout FIFO and the stdin FIFO to the master, until
/// either side ends. Returns the master for resizes, and what ends stdin.
pub fn copy_console(master: OwnedFd, paths: &StdioPaths) -> io::Result<(OwnedFd, StdinCloser)> {
    let keep = master.try_clone()?;
    crate::shim::stdio::set_nonblocking(&master)?;
    if let Some(path) = fifo_path(&paths.stdout)? {
        let out = open_one_way(path, true)?;
        let mut from = Receiver::from_owned_fd_unchecked(master.try_clone()?)?;
        let mut to = Sender::from_file(out)?;
        tokio::spawn(async move {
            let _ = copy(&mut from, &mut to).await;
        });
    }
    let closer = match fifo_path(&paths.stdin)? {
        Some(path) => {
            let input = open_one_way(path, false)?;
            let to = Sender::from_owned_fd_unchecked(master.try_clone()?)?;
            copy_stdin(input, to, TERMINAL_EOF)?
        }
        None => StdinCloser::default(),
    };
    Ok((keep, closer))
}

/// Copies containerd's stdin FIFO into `to` until EOF, an error, or the closer fires;
/// then what the FIFO already holds, then `eof`, and `to` is dropped.
fn copy_stdin(input: File, mut to: Sender, eof: &'static [u8]) -> io::Result<StdinCloser> {
    let mut from = Receiver::from_file(input)?;
    let (close, mut closed) = oneshot::channel();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::select! {
                read = from.read(&mut buffer) => read.unwrap_or(0),
                _ = &mut closed => {
                    let _ = drain(&from, &mut to, &mut buffer).await;
                    if !eof.is_empty() {
                        let _ = to.write_all(eof).await;
                    }
                    return;
                }
            };
            if n == 0 || to.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    });
    Ok(StdinCloser(Some(close)))
}

/// Passes on what the FIFO holds now, without waiting for more.
async fn drain(from: &Receiver, to: &mut Sender, buffer: &mut [u8]) -> io::Result<()> {
    loop {
        match from.try_read(buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buffer[..n]).await?,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Copies until EOF or an error (a pty master reads EIO once the terminal is gone).
async fn copy(from: &mut Receiver, to: &mut Sender) -> io::Result<()> {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buffer[..n]).await?;
    }
}

/// Sets a pty's window size.
pub fn resize(console: &OwnedFd, width: u32, height: u32) -> io::Result<()> {
    let winsize = libc::winsize {
        ws_row: u16::try_from(height).unwrap_or(u16::MAX),
        ws_col: u16::try_from(width).unwrap_or(u16::MAX),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    if unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSWINSZ, &winsize) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_file_uris_and_other_schemes() {
        assert_eq!(fifo_path("").unwrap(), None);
        assert_eq!(fifo_path("/run/x/stdout").unwrap(), Some("/run/x/stdout"));
        assert_eq!(fifo_path("file:///var/log/x").unwrap(), Some("/var/log/x"));
        assert!(fifo_path("binary:///bin/logger?x=1").is_err());
    }

    #[test]
    fn a_fifo_opens_for_writing_with_no_reader_yet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let path = path.to_string_lossy().into_owned();
        // Blocking opens would hang here: nobody holds the other end.
        let writer = open_one_way(&path, true).unwrap();
        let reader = open_one_way(&path, false).unwrap();
        drop((writer, reader));
    }
}
