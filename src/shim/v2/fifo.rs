//! The stdio containerd hands a task: paths of FIFOs it opened (or empty for none).
//! Without a terminal the FIFOs themselves become the process's fds 0/1/2, so output
//! goes to containerd with no copy in the shim. With a terminal, init's pty master is
//! copied to the stdout FIFO and the stdin FIFO into it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::shim::stdio::ChildStdio;

/// The FIFO paths of one process, as containerd sent them.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
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

/// The fds 0/1/2 init gets: the FIFOs without a terminal, /dev/null with one (init opens
/// the pty).
pub fn child_stdio(paths: &StdioPaths) -> io::Result<ChildStdio> {
    if paths.terminal {
        return Ok(ChildStdio {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        });
    }
    let open = |uri: &str, write: bool| -> io::Result<Stdio> {
        match fifo_path(uri)? {
            Some(path) => Ok(Stdio::from(open_one_way(path, write)?)),
            None => Ok(Stdio::null()),
        }
    };
    Ok(ChildStdio {
        stdin: open(&paths.stdin, false)?,
        stdout: open(&paths.stdout, true)?,
        stderr: open(&paths.stderr, true)?,
    })
}

/// Copies the pty master to the stdout FIFO and the stdin FIFO to the master, until
/// either side ends. Returns the master for resizes.
pub fn copy_console(master: OwnedFd, paths: &StdioPaths) -> io::Result<OwnedFd> {
    let keep = master.try_clone()?;
    crate::shim::stdio::set_nonblocking(&master)?;
    if let Some(path) = fifo_path(&paths.stdout)? {
        let out = open_one_way(path, true)?;
        let reader = master.try_clone()?;
        tokio::spawn(async move {
            let Ok(mut from) = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(reader)
            else {
                return;
            };
            let Ok(mut to) = tokio::net::unix::pipe::Sender::from_file_unchecked(out) else {
                return;
            };
            let _ = copy(&mut from, &mut to).await;
        });
    }
    if let Some(path) = fifo_path(&paths.stdin)? {
        let input = open_one_way(path, false)?;
        let writer = master.try_clone()?;
        tokio::spawn(async move {
            let Ok(mut from) = tokio::net::unix::pipe::Receiver::from_file_unchecked(input) else {
                return;
            };
            let Ok(mut to) = tokio::net::unix::pipe::Sender::from_owned_fd_unchecked(writer) else {
                return;
            };
            let _ = copy(&mut from, &mut to).await;
        });
    }
    Ok(keep)
}

/// Copies until EOF or an error (a pty master reads EIO once the terminal is gone).
async fn copy(
    from: &mut tokio::net::unix::pipe::Receiver,
    to: &mut tokio::net::unix::pipe::Sender,
) -> io::Result<()> {
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
