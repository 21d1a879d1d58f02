//! `berth shim`: one per pod. Parent (via subreaper) of the pod's pause, container and
//! exec processes; serves berth.shim.v1 on a unix socket; records exits to files so a
//! daemon that was away learns them from disk. It outlives the daemon and never
//! restarts itself.
//!
//! Start-up, all before the (single-threaded) tokio runtime exists: fork away from the
//! daemon (whose child exits at once), setsid, become child subreaper, bind the socket,
//! stdin → /dev/null and stdout/stderr → the log, then `ready <pid>\n` on the original
//! stdout, which is closed.
//!
//! Owns the pod's processes once started, their stdio, CRI logs and exit files; the daemon
//! side (`client`) and the command-line contract (`cmdline`) live here too, so the daemon
//! speaks to shims only through this module. May call `init` (by exec), `linux`, `persist`.
//!
//! One concept per file, arrows one way (server → the parts → shared → state/stdio/oom):
//! `server` (the gRPC trait, serve), `process` (create/start/kill/state/delete/shutdown),
//! `exec_start` (an exec through init), `exec_sync`, `interactive` (Exec/Attach streams),
//! `events` (the exit stream), `reaper` (SIGCHLD), `spawn` (fork+exec of init), `shared`
//! (the table and everything the parts share; exits become final there), `error` (the
//! one API error and its mapping to status codes).

pub mod bundle;
pub mod client;
pub mod cmdline;
pub(crate) mod codec;
mod connection;
pub mod error;
mod events;
mod exec;
mod exec_start;
mod exec_sync;
mod idle;
mod interactive;
pub mod log;
mod oom;
mod process;
mod reaper;
mod server;
mod shared;
mod spawn;
mod state;
mod stdio;
pub mod v2;

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::ExitCode;

use nix::unistd::{ForkResult, fork, setsid};

pub use bundle::{PauseSpec, write_pause_bundle};
pub use client::{CreateOptions, ProcessSession, ShimClient, SpawnOptions, connect, spawn};
pub use cmdline::ShimArgs;
pub use error::ShimError;
use error::{setup_err, shim_sys_err};
pub use exec::{EXEC_SYNC_OUTPUT_LIMIT, ExecOutputTooLarge, check_exec_sync_output};
/// The exit files the shim writes, which the daemon reads when no event can be relied on.
pub use state::{ExitRecord, exit_file};

pub fn run(args: ShimArgs) -> ExitCode {
    // SAFETY: nothing has started a thread yet (main only parsed argv), so the child may
    // run arbitrary code.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => return ExitCode::SUCCESS,
        Ok(ForkResult::Child) => {
            // `ps` shows the shim as what it is (the command line names its pod); the
            // tokio runtime is single-threaded, so this one thread is the process.
            let _ = nix::sys::prctl::set_name(c"berth-shim");
        }
        Err(e) => {
            eprintln!("berth shim: fork: {e}");
            return ExitCode::FAILURE;
        }
    }
    let listener = match detach(&args) {
        Ok(listener) => listener,
        Err(e) => {
            // stderr is still the daemon's pipe when detaching fails.
            eprintln!("berth shim: {}", crate::Error::from(e));
            return ExitCode::FAILURE;
        }
    };
    init_logging(&args.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "build the runtime");
            return ExitCode::FAILURE;
        }
    };
    // The shim lives as long as its pod mostly idle: keep only the code it touches.
    let _ = crate::linux::memory::trim_idle_pages();
    match runtime.block_on(server::serve(args, listener)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "shim failed");
            ExitCode::FAILURE
        }
    }
}

/// Everything between the fork and the runtime; returns the bound listener after
/// `ready <pid>` was written.
fn detach(args: &ShimArgs) -> Result<UnixListener, ShimError> {
    // Whatever the spawner leaked (a jobserver pipe, say) must not reach the pod.
    // SAFETY: no fd above 2 is owned by anything in this process yet.
    if unsafe { libc::close_range(3, u32::MAX, 0) } != 0 {
        return Err(ShimError::Setup {
            what: "close inherited fds".into(),
            source: io::Error::last_os_error(),
        });
    }
    setsid().map_err(shim_sys_err("setsid"))?;
    nix::sys::prctl::set_child_subreaper(true).map_err(shim_sys_err("become child subreaper"))?;
    let exits = args.state_dir.join("exits");
    fs::create_dir_all(&exits).map_err(setup_err(format!("create {}", exits.display())))?;
    let listener = bind(&args.socket)?;

    let log_path = args
        .log
        .clone()
        .unwrap_or_else(|| args.state_dir.join("shim.log"));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(setup_err(format!("open log {}", log_path.display())))?;
    let null = fs::File::open("/dev/null").map_err(setup_err("open /dev/null"))?;
    let ready_pipe = nix::unistd::dup(io::stdout()).map_err(shim_sys_err("dup stdout"))?;
    nix::unistd::dup2_stdin(&null).map_err(shim_sys_err("redirect stdin"))?;
    nix::unistd::dup2_stdout(&log).map_err(shim_sys_err("redirect stdout"))?;
    nix::unistd::dup2_stderr(&log).map_err(shim_sys_err("redirect stderr"))?;
    let mut ready = fs::File::from(ready_pipe);
    // A daemon that gave up waiting closed the pipe; serving anyway lets it reconnect.
    let _ = writeln!(ready, "ready {}", std::process::id());
    Ok(listener)
}

fn bind(socket: &Path) -> Result<UnixListener, ShimError> {
    if socket.exists() && std::os::unix::net::UnixStream::connect(socket).is_err() {
        // A stale socket of a dead shim; a live one would have answered.
        let _ = fs::remove_file(socket);
    }
    if let Some(dir) = socket.parent() {
        fs::create_dir_all(dir).map_err(setup_err(format!("create {}", dir.display())))?;
    }
    let listener =
        UnixListener::bind(socket).map_err(setup_err(format!("bind {}", socket.display())))?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600))
        .map_err(setup_err(format!("chmod {}", socket.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(setup_err("set the listener non-blocking"))?;
    Ok(listener)
}

fn init_logging(level: &str) {
    // A plain level, not an EnvFilter: its directive parsing and regexes cost every pod
    // memory for nothing.
    let level = level
        .parse::<tracing::level_filters::LevelFilter>()
        .unwrap_or(tracing::level_filters::LevelFilter::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(io::stderr)
        .try_init();
}
