//! The terminal of a process with `process.terminal`: a pty opened in the container's own
//! devpts (so `tty`, `ttyname` and programs reopening `/dev/pts/N` see it), its slave made
//! fds 0, 1 and 2, its master handed to the shim over the console socket.
//!
//! The shim cannot open it itself: a pty from the host's devpts has no name inside the
//! container's `/dev/pts`.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use super::error::{InitError, Result};

/// The fd init finds the console socket at, when the process has a terminal.
pub const CONSOLE_FD: RawFd = 4;

/// The byte that carries the master fd.
pub const CONSOLE_MARK: u8 = b'c';

/// Opens the pty (the mount namespace must be the container's), makes the slave this
/// process's stdio, owned by `uid`, and sends the master to the shim.
pub fn hand_over(uid: Option<u32>) -> Result<()> {
    let master = nix::fcntl::open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| InitError::errno("open /dev/ptmx", e))?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer, which outlives the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(InitError::errno("unlock the pty", Errno::last()));
    }
    // The slave by the master, not by path: no race with another opener of /dev/pts/N.
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd (or -1).
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(InitError::errno("open the pty slave", Errno::last()));
    }
    // SAFETY: the ioctl returned a new fd that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    if let Some(uid) = uid {
        nix::unistd::fchown(&slave, Some(nix::unistd::Uid::from_raw(uid)), None)
            .map_err(|e| InitError::errno("chown the pty slave", e))?;
    }
    for target in 0..=2 {
        // SAFETY: dup2 onto the stdio numbers; the old ones are replaced on purpose.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(InitError::errno("make the pty slave stdio", Errno::last()));
        }
    }
    // SAFETY: CONSOLE_FD is open when the shim gives a process a terminal; borrowed only
    // for this call.
    let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(CONSOLE_FD) };
    let fds = [master.as_raw_fd()];
    let mark = [CONSOLE_MARK];
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(&mark)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(InitError::errno("send the pty to the shim", e)),
        }
    }
}
