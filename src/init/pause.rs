//! The built-in pause process: holds the pod's namespaces, reaps orphans when it is PID 1
//! of a shared PID namespace, exits 0 on SIGTERM/SIGINT. Reached through the argv fast
//! path in src/main.rs so it never touches clap, tracing or tokio (small RSS).

use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, waitpid};

pub fn run() -> ExitCode {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGCHLD);
    // Blocked signals stay pending for sigwait; as PID 1 unblocked ones without a handler
    // would be ignored by the kernel.
    if signals.thread_block().is_err() {
        return ExitCode::FAILURE;
    }
    let _ = nix::sys::prctl::set_name(c"berth-pause");
    // Nothing else of the binary is needed from here on: keep the pause's RSS tiny.
    let _ = crate::linux::memory::trim_idle_pages();
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                // Reap every orphan of the PID namespace (only PID 1 gets them).
                while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    if status == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) => return ExitCode::SUCCESS,
            Err(_) => continue,
        }
    }
}
