//! `containerd-shim-berth-v2`: berth as containerd's shim v2 runtime
//! (`runtime_type = "io.containerd.berth.v2"`). The same binary, reached under that name.
//!
//! containerd runs `<binary> -namespace NS -address SOCK -publish-binary BIN -id ID start`
//! in the task's bundle; `start` finds the shim of the task's group (a Kubernetes pod:
//! the `io.kubernetes.cri.sandbox-id` annotation) or starts one, and prints its ttrpc
//! address. The shim serving a group is this module's `serve`: the pod shim's process
//! table, reaper and `berth init` (see `crate::shim`) behind containerd's Task API
//! (`task`), with task events forwarded to containerd (`publish`). `delete` cleans up
//! after a shim that died. Bundles are checked and their rootfs mounted in `bundle`,
//! stdio FIFOs opened in `fifo`, execs kept in `exec`, Stats and Update translated in `stats`, the command line
//! parsed in `cmdline`.

pub mod bundle;
pub mod cmdline;
mod exec;
mod fifo;
mod publish;
mod stats;
mod status;
mod task;

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cmdline::{Action, Flags};
use containerd_shim_protos::protobuf::Message;

/// The name containerd derives from `io.containerd.berth.v2`.
pub const BINARY_NAME: &str = "containerd-shim-berth-v2";
/// The annotation containerd's CRI sets on every container of a pod (the pod's id).
const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// The fd the serving shim gets its bound listener on.
const LISTENER_FD: i32 = 3;
/// How long the serving shim lets the Shutdown answer go out before it stops serving.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(100);
/// How long `delete` waits for a dead shim's processes to die with their cgroup.
const DELETE_KILL_WAIT: Duration = Duration::from_secs(5);

/// Whether argv[0] names the shim v2 binary.
pub fn invoked_as_shim(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0
        .and_then(|arg| Path::new(arg).file_name())
        .is_some_and(|name| name == BINARY_NAME)
}

pub fn main() -> ExitCode {
    let flags = match cmdline::parse(std::env::args().skip(1)) {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("{BINARY_NAME}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match flags.action {
        Action::Version => {
            println!("{BINARY_NAME} (berth) {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Action::Start => start(&flags),
        Action::Delete => delete(&flags),
        Action::Serve => serve(&flags),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{BINARY_NAME}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The task's group: its pod's id when containerd's CRI made it, else its own id.
fn group_of(bundle: &Path, id: &str) -> String {
    let annotation = fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
        .and_then(|config| {
            config
                .get("annotations")?
                .get(SANDBOX_ID_ANNOTATION)?
                .as_str()
                .map(str::to_string)
        });
    annotation
        .filter(|group| !group.is_empty())
        .unwrap_or_else(|| id.to_string())
}

/// `start`: prints the address of the group's shim, starting it when none answers.
fn start(flags: &Flags) -> Result<(), String> {
    let bundle = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    let group = group_of(&bundle, &flags.id);
    let socket = cmdline::socket_path(&flags.address, &flags.namespace, &group)?;
    let address = format!("unix://{}", socket.display());
    let state = cmdline::state_dir(&socket);
    if UnixStream::connect(&socket).is_ok() {
        // The pod's shim serves this task too.
        let pid = fs::read_to_string(state.join("shim.pid")).unwrap_or_default();
        write_bundle_files(&bundle, &address, pid.trim())?;
        print!("{address}");
        return Ok(());
    }
    let _ = fs::remove_file(&socket);
    if let Some(dir) = socket.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(&socket).map_err(|e| format!("bind {}: {e}", socket.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("find own binary: {e}"))?;
    let mut command = Command::new(exe);
    command
        .arg0(BINARY_NAME)
        .args(["-namespace", &flags.namespace])
        .args(["-address", &flags.address])
        .args(["-publish-binary", &flags.publish_binary])
        .args(["-id", &group]);
    if flags.debug {
        command.arg("-debug");
    }
    command
        .arg(cmdline::SERVE)
        .current_dir("/")
        // containerd reads start's output to its end: the shim must not hold it.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let listener_fd = listener.as_raw_fd();
    // SAFETY: `start` is single-threaded; only dup2 and setsid run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec: clear it then.
            let moved = match listener_fd == LISTENER_FD {
                true => libc::fcntl(LISTENER_FD, libc::F_SETFD, 0),
                false => libc::dup2(listener_fd, LISTENER_FD),
            };
            if moved < 0 || libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("start the shim: {e}"))?;
    drop(listener);
    write_bundle_files(&bundle, &address, &child.id().to_string())?;
    print!("{address}");
    Ok(())
}

/// `address` and `shim.pid` in the task's bundle: how a restarted containerd finds the
/// shim again.
fn write_bundle_files(bundle: &Path, address: &str, pid: &str) -> Result<(), String> {
    let write = |name: &str, data: &str| {
        crate::persist::write_replace(&bundle.join(name), data.as_bytes())
            .map_err(|e| format!("write {}: {e}", bundle.join(name).display()))
    };
    write("address", address)?;
    if !pid.is_empty() {
        write("shim.pid", pid)?;
    }
    Ok(())
}

/// `delete`: the shim of this task is gone; kill what is left of the task (its cgroup),
/// unmount its rootfs, and print the exit containerd records: the one the shim wrote
/// when the task exited before the shim died, else a kill (this `delete` killed it, or
/// it never ran).
fn delete(flags: &Flags) -> Result<(), String> {
    let bundle = match &flags.bundle {
        Some(bundle) => bundle.clone(),
        None => std::env::current_dir().map_err(|e| format!("current directory: {e}"))?,
    };
    let recorded = recorded_exit(flags, &bundle);
    if let Some(path) = crate::shim::process::read_cgroups_path(&bundle)
        && let Ok(cgroups) = crate::linux::cgroup::Cgroups::detect()
        && let Err(e) = cgroups.destroy(&path, DELETE_KILL_WAIT)
    {
        eprintln!("{BINARY_NAME}: remove cgroup {path}: {e}");
    }
    bundle::unmount_rootfs(&bundle)?;
    let (exit_status, exited_at) = match &recorded {
        Some((exit, _)) => (exit.exit_code as u32, publish::timestamp(exit.exited_at)),
        None => (128 + libc::SIGKILL as u32, publish::now()),
    };
    let mut response = containerd_shim_protos::api::DeleteResponse::new();
    response.exit_status = exit_status;
    response.exited_at = Some(exited_at).into();
    let bytes = response
        .write_to_bytes()
        .map_err(|e| format!("encode the delete response: {e}"))?;
    io::stdout()
        .write_all(&bytes)
        .map_err(|e| format!("write the delete response: {e}"))?;
    // Read once: a later `delete` of a reused id must not find it.
    if let Some((_, file)) = recorded {
        let _ = fs::remove_file(file);
    }
    Ok(())
}

/// The exit the dead shim of this task's group recorded for it (and that record's file),
/// if the task exited while the shim lived.
fn recorded_exit(
    flags: &Flags,
    bundle: &Path,
) -> Option<(crate::shim::state::ExitRecord, PathBuf)> {
    let group = group_of(bundle, &flags.id);
    let socket = cmdline::socket_path(&flags.address, &flags.namespace, &group).ok()?;
    let file = crate::shim::state::exit_file(&cmdline::state_dir(&socket), &flags.id);
    let text = fs::read(&file).ok()?;
    let exit = serde_json::from_slice(&text).ok()?;
    Some((exit, file))
}

/// The daemonised shim of one group: serves the Task API on the listener `start` bound.
fn serve(flags: &Flags) -> Result<(), String> {
    let _ = nix::sys::prctl::set_name(c"berth-shim-v2");
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("become child subreaper: {e}"))?;
    let socket = cmdline::socket_path(&flags.address, &flags.namespace, &flags.id)?;
    let state = cmdline::state_dir(&socket);
    let exits = state.join("exits");
    fs::create_dir_all(&exits).map_err(|e| format!("create {}: {e}", exits.display()))?;
    let log_path = state.join("shim.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| format!("open {}: {e}", log_path.display()))?;
    nix::unistd::dup2_stdout(&log).map_err(|e| format!("redirect stdout: {e}"))?;
    nix::unistd::dup2_stderr(&log).map_err(|e| format!("redirect stderr: {e}"))?;
    crate::persist::write_replace(
        &state.join("shim.pid"),
        std::process::id().to_string().as_bytes(),
    )
    .map_err(|e| format!("write shim.pid: {e}"))?;
    init_logging(flags.debug);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("build the runtime: {e}"))?;
    // The shim lives as long as its pod, mostly idle: keep only the code it touches.
    let _ = crate::linux::memory::trim_idle_pages();
    let result = runtime.block_on(serve_tasks(flags, socket.clone(), state.clone()));
    let _ = fs::remove_file(&socket);
    match &result {
        Ok(()) => {
            let _ = fs::remove_dir_all(&state);
        }
        // The log stays for whoever looks into why.
        Err(e) => tracing::error!(error = %e, "shim v2 failed"),
    }
    result
}

async fn serve_tasks(flags: &Flags, socket: PathBuf, state: PathBuf) -> Result<(), String> {
    use crate::shim::shared::Shared;
    let shared = Arc::new(Shared::new(flags.id.clone(), state, socket.clone()));
    crate::shim::reaper::spawn(shared.clone()).map_err(|e| format!("watch SIGCHLD: {e}"))?;
    let publisher = publish::Publisher::spawn(
        std::env::var("TTRPC_ADDRESS")
            .ok()
            .filter(|a| !a.is_empty()),
        flags.namespace.clone(),
    );
    let service = Arc::new(task::TaskService::new(shared.clone(), publisher));
    service.forward_exits();
    let mut server = containerd_shim_protos::ttrpc::asynchronous::Server::new()
        .set_domain_unix()
        // `start` put the bound listener on this fd for this process alone.
        .add_listener(LISTENER_FD)
        .map_err(|e| format!("listen: {e}"))?
        .register_service(containerd_shim_protos::shim_async::create_task(service));
    server.start().await.map_err(|e| format!("serve: {e}"))?;
    tracing::info!(group = %flags.id, pid = std::process::id(), socket = %socket.display(), "shim v2 serving");
    shared.shutdown.notified().await;
    tokio::time::sleep(SHUTDOWN_GRACE).await;
    shared.shutdown_pod().await;
    let _ = server.shutdown().await;
    tracing::info!("shim v2 exiting");
    Ok(())
}

fn init_logging(debug: bool) {
    let level = match debug {
        true => tracing::level_filters::LevelFilter::DEBUG,
        false => tracing::level_filters::LevelFilter::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(io::stderr)
        .try_init();
}
