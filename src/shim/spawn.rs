//! Spawning `berth init`: the sync socket as fd 3, the stdio as fds 0/1/2, and (with a
//! terminal) a second socket on which init sends back the pty master it opened inside
//! the container.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use tokio::net::UnixStream;

use super::stdio::ChildStdio;
use crate::init::sync::SYNC_FD;

/// A spawned init: its pid, the shim's end of the sync socket, and of the console socket.
pub(super) struct SpawnedInit {
    pub pid: i32,
    pub sync: UnixStream,
    pub console: Option<std::os::unix::net::UnixStream>,
}

/// Spawns `berth init` for `bundle` with `stdio` as fds 0/1/2 (without it: /dev/null, as
/// for the pause process or a container with no log and no stdin, whose output must not
/// end up in the shim's own log).
pub(super) fn spawn_init(
    bundle: &Path,
    stdio: Option<ChildStdio>,
    extra_args: &[&std::ffi::OsStr],
    console: bool,
) -> std::io::Result<SpawnedInit> {
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
    Ok(SpawnedInit {
        pid: i32::try_from(child.id()).unwrap_or(0),
        sync: UnixStream::from_std(ours)?,
        console: console_ours,
    })
}
