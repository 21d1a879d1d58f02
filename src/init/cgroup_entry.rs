//! How a container's process enters its cgroup: created with its resources, then joined
//! by a write, or (on cgroup v2) the workload born in it by clone3's CLONE_INTO_CGROUP.

use std::fs;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::unistd::{ForkResult, fork, getpid};

use super::error::{InitError, Result, describe_chain};
use crate::linux::cgroup::Cgroups;

/// Creates the container's cgroup with its resources, then enters it (see enter_cgroup).
pub(super) fn prepare_cgroup(
    path: &str,
    resources: Option<&oci_spec::runtime::LinuxResources>,
    forks: bool,
) -> Result<Option<OwnedFd>> {
    let step = format!("join cgroup {path}");
    let cgroups = Cgroups::detect().map_err(|e| InitError::new(&step, describe_chain(&e)))?;
    cgroups
        .create(path)
        .map_err(|e| InitError::new(&step, describe_chain(&e)))?;
    if let Some(resources) = resources {
        cgroups.apply_resources(path, resources).map_err(|e| {
            InitError::new(
                format!("set cgroup resources of {path}"),
                describe_chain(&e),
            )
        })?;
    }
    enter_cgroup(&cgroups, path, forks)
}

/// A workload that init forks is born in `path` where the host allows it (its directory
/// is returned for the fork); otherwise init joins `path` now and its children inherit it.
pub(super) fn enter_cgroup(cgroups: &Cgroups, path: &str, forks: bool) -> Result<Option<OwnedFd>> {
    let step = format!("join cgroup {path}");
    if forks
        && let Some(dir) = cgroups
            .open_for_clone(path)
            .map_err(|e| InitError::new(&step, describe_chain(&e)))?
    {
        return Ok(Some(dir));
    }
    cgroups
        .add_process(path, getpid().as_raw())
        .map_err(|e| InitError::new(&step, describe_chain(&e)))?;
    Ok(None)
}

/// clone3's flag that starts the child in the cgroup `clone_args.cgroup` names (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// fork(), the child born in the cgroup `into` when given. A kernel without clone3's
/// CLONE_INTO_CGROUP (before 5.7) gets the old way: init joins the cgroup by a write and
/// the child inherits it.
pub(super) fn fork_into(into: Option<&OwnedFd>) -> Result<ForkResult> {
    use std::os::fd::AsRawFd as _;
    let fork_err = |e| InitError::errno("fork into the pid namespace", e);
    let Some(cgroup) = into else {
        // SAFETY: init is single-threaded, so the child may run arbitrary code.
        return unsafe { fork() }.map_err(fork_err);
    };
    // SAFETY: clone_args is plain integers; all zero is "no option".
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = CLONE_INTO_CGROUP;
    args.exit_signal = libc::SIGCHLD as u64;
    args.cgroup = cgroup.as_raw_fd() as u64;
    // SAFETY: init is single-threaded; without CLONE_VM and with no stack given the child
    // runs on a copy of this one, as after fork().
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    match rc {
        0 => Ok(ForkResult::Child),
        pid if pid > 0 => Ok(ForkResult::Parent {
            child: nix::unistd::Pid::from_raw(pid as i32),
        }),
        _ => match Errno::last() {
            Errno::ENOSYS | Errno::E2BIG => {
                let procs = format!("/proc/self/fd/{}/cgroup.procs", cgroup.as_raw_fd());
                fs::write(&procs, getpid().as_raw().to_string())
                    .map_err(|e| InitError::io("join the cgroup (no CLONE_INTO_CGROUP)", &e))?;
                // SAFETY: as above.
                unsafe { fork() }.map_err(fork_err)
            }
            e => Err(fork_err(e)),
        },
    }
}
