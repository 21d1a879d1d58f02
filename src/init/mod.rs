//! `berth init`: sets up one process of a pod from an OCI runtime spec, then execs it.
//!
//! Single-threaded, no tokio. Sequence: cgroup (create, resources, join) → oom_score_adj
//! → namespaces (join, then create; a new mount namespace is made a slave at once) →
//! (fork, when a PID namespace is entered, so the workload is inside it) → hostname →
//! sysctls → rootfs (overlay, the spec's mounts, /dev, devices, pivot_root, masked and
//! read-only paths, read-only root) → cwd, rlimits, user, capabilities, program lookup →
//! report "created" → wait at the start gate → exec (or become the built-in pause).
//! Every failure is sent to the shim over the sync socket (fd 3) with the failing step
//! named, before exiting.
//!
//! Owns nothing that outlives the process. May call `linux` only (and `oci-spec` types):
//! it runs forked from the shim, single-threaded.

mod cgroup_entry;
pub mod console;
mod error;
mod image_volume;
pub mod mounts;
pub mod pause;
pub mod plan;
pub mod rootfs;
pub mod security;
pub mod sync;

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{ForkResult, fork, getpid, pipe2};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::linux::cgroup::Cgroups;
use crate::linux::process::{clamp_oom_score_adj, read_oom_score_adj, sysctl_path};
use cgroup_entry::{enter_cgroup, fork_into, prepare_cgroup};
use error::{InitError, Result, describe_chain, describe_io};
use plan::{NamespacePlan, UserNamespacePlan, is_pause, short_name};
use sync::{InitMessage, SYNC_FD};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The OCI bundle: a directory holding config.json.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Exec mode: run a process in the running container whose (host) pid this is,
    /// instead of creating the container. Needs `--process`.
    #[arg(long, requires = "process")]
    pub exec_pid: Option<i32>,
    /// Exec mode: a file holding the OCI `process` JSON to run.
    #[arg(long, requires = "exec_pid")]
    pub process: Option<PathBuf>,
}

pub fn run(args: InitArgs) -> ExitCode {
    // Until it execs the workload (or becomes the pause), `ps` shows what this process is.
    let _ = nix::sys::prctl::set_name(c"berth-init");
    // SAFETY: the shim hands init its sync socket as fd 3; nothing else in this
    // process owns that number.
    let sync = unsafe { OwnedFd::from_raw_fd(SYNC_FD) };
    if fcntl(&sync, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).is_err() {
        eprintln!("berth init: fd 3 is not the sync socket; init is started by the shim");
        return ExitCode::FAILURE;
    }
    let result = match (args.exec_pid, &args.process) {
        (Some(pid), Some(process)) => setup_exec(&args.bundle, pid, process, &sync),
        _ => setup(&args.bundle, &sync),
    };
    match result {
        Ok(Outcome::Intermediate) => ExitCode::SUCCESS,
        Ok(Outcome::NoStart) => ExitCode::FAILURE,
        Err(err) => {
            send(&sync, &InitMessage::Error(err.to_string()));
            ExitCode::FAILURE
        }
    }
}

enum Outcome {
    /// The parent that forked the workload into its PID namespace; its job is done.
    Intermediate,
    /// The shim closed the gate without starting (deleted before start).
    NoStart,
}

fn send(sync: &OwnedFd, message: &InitMessage) {
    let line = message.to_line();
    let mut rest = line.as_slice();
    while !rest.is_empty() {
        match nix::unistd::write(sync, rest) {
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => continue,
            // The shim is gone; nobody is left to tell.
            Err(_) => return,
        }
    }
}

fn setup(bundle: &Path, sync: &OwnedFd) -> Result<Outcome> {
    let config = bundle.join("config.json");
    let spec = Spec::load(&config)
        .map_err(|e| InitError::new(format!("load {}", config.display()), describe_chain(&e)))?;
    let linux = spec.linux().clone().unwrap_or_default();
    let plan = NamespacePlan::from_spec(&spec);

    // Where the host allows it (v2) a forked workload is born in its cgroup rather than
    // joining it; init itself then never joins it. Not from inside a new user namespace,
    // whose root may not write the host's cgroup files.
    let born_into = match linux.cgroups_path() {
        Some(cgroup) => prepare_cgroup(
            &cgroup.to_string_lossy(),
            linux.resources().as_ref(),
            plan.needs_fork() && plan.user == UserNamespacePlan::Host,
        )?,
        None => None,
    };
    // A new cgroup namespace is rooted at its creator's cgroup: a workload born in its
    // cgroup creates its own there.
    let deferred_cgroupns = born_into.is_some() && plan.creates(LinuxNamespaceType::Cgroup);
    if let Some(requested) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
        set_oom_score_adj(requested)?;
    }
    // A volume with bidirectional propagation needs the host's shared mounts to stay peers
    // of ours (runc's rootfsPropagation); otherwise all of them become slaves.
    let keep_shared = linux
        .rootfs_propagation()
        .as_deref()
        .is_some_and(|p| p == "rshared" || p == "shared");
    let user_ns = enter_namespaces(&plan, keep_shared, &linux, deferred_cgroupns)?;

    // From here on this is the workload process. When it was forked, the intermediate
    // reports "created" with its pid once the ready pipe says setup finished.
    let ready_pipe = if plan.needs_fork() {
        match fork_into_pid_namespace(sync, born_into.as_ref())? {
            Forked::Intermediate(outcome) => return Ok(outcome),
            Forked::Workload(ready) => Some(ready),
        }
    } else {
        None
    };
    if deferred_cgroupns {
        unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|e| InitError::errno("create cgroupns", e))?;
    }

    if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        // A container joins its pod's UTS namespace: the pause process set the name.
        if plan.creates(LinuxNamespaceType::Uts) {
            nix::unistd::sethostname(hostname)
                .map_err(|e| InitError::errno(format!("set hostname {hostname}"), e))?;
        }
    }
    // With a new user namespace the network ones were set before it was created.
    let done_before_userns = plan.user == UserNamespacePlan::Create;
    set_sysctls(&linux, |key| !(done_before_userns && is_net_sysctl(key)))?;
    if let Some(root) = spec
        .root()
        .as_ref()
        .filter(|r| !r.path().as_os_str().is_empty())
    {
        if !plan.creates(LinuxNamespaceType::Mount) {
            return Err(InitError::new(
                format!("set up rootfs {}", root.path().display()),
                "needs a new mount namespace",
            ));
        }
        let root_path = if root.path().is_absolute() {
            root.path().clone()
        } else {
            bundle.join(root.path())
        };
        setup_rootfs(
            bundle,
            &spec,
            &root_path,
            root.readonly().unwrap_or(false),
            user_ns.as_ref(),
        )?;
    }
    if !is_pause(&spec) && spec.process().as_ref().is_some_and(wants_terminal) {
        let in_user_ns = plan.user != UserNamespacePlan::Host;
        console::hand_over(terminal_owner(spec.process().as_ref(), in_user_ns))?;
    }
    let exec = if is_pause(&spec) {
        None
    } else {
        Some(prepare_process(
            &spec,
            user_ns,
            read_seccomp_program(bundle)?,
        )?)
    };

    match ready_pipe {
        Some(ready) => File::from(ready)
            .write_all(b"1")
            .map_err(|e| InitError::io("report ready to the intermediate", &e))?,
        None => send(
            sync,
            &InitMessage::Created {
                pid: getpid().as_raw(),
            },
        ),
    }

    if !wait_for_start(sync)? {
        return Ok(Outcome::NoStart);
    }
    match exec {
        None => exec_pause(),
        Some(exec) => exec_process(exec),
    }
}

/// Exec mode: a new process in the running container `target` (a host pid). It joins the
/// container's cgroup and namespaces (the mount namespace last: from then on paths are
/// the container's), forks into its PID namespace, becomes the leader of its own session
/// (so the shim can kill the exec and everything it started as one process group), sets
/// up the process like a container start, reports "created" and execs at once: there
/// is no start gate.
fn setup_exec(bundle: &Path, target: i32, process_file: &Path, sync: &OwnedFd) -> Result<Outcome> {
    let config = bundle.join("config.json");
    let spec = Spec::load(&config)
        .map_err(|e| InitError::new(format!("load {}", config.display()), describe_chain(&e)))?;
    let step = format!("load {}", process_file.display());
    let text = fs::read(process_file).map_err(|e| InitError::io(&step, &e))?;
    let process: Process =
        serde_json::from_slice(&text).map_err(|e| InitError::new(&step, e.to_string()))?;

    if let Some(cgroup) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) {
        // The container made it; the exec only joins (resources are the container's). By
        // a write, before it joins the container's cgroup namespace: from inside that, a
        // clone into the cgroup is refused (the exec's own cgroup is out of its sight).
        let path = cgroup.to_string_lossy();
        let cgroups = Cgroups::detect()
            .map_err(|e| InitError::new(format!("join cgroup {path}"), describe_chain(&e)))?;
        enter_cgroup(&cgroups, &path, false)?;
    }
    if let Some(requested) = process.oom_score_adj() {
        set_oom_score_adj(requested)?;
    }
    // A pod with its own user namespace: the exec joins it too.
    let own_user_ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    let join_user = own_user_ns(&target.to_string()) != own_user_ns("self");
    let user_ns = enter_namespaces(
        &NamespacePlan::exec_into(target, join_user),
        false,
        &Default::default(),
        false,
    )?;
    let ready = match fork_into_pid_namespace(sync, None)? {
        Forked::Intermediate(outcome) => return Ok(outcome),
        Forked::Workload(ready) => ready,
    };
    nix::unistd::setsid().map_err(|e| InitError::errno("setsid", e))?;
    if wants_terminal(&process) {
        console::hand_over(terminal_owner(Some(&process), join_user))?;
    }
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let exec = prepare_process_of(
        &process,
        seccomp.as_ref(),
        user_ns,
        read_seccomp_program(bundle)?,
    )?;
    File::from(ready)
        .write_all(b"1")
        .map_err(|e| InitError::io("report ready to the intermediate", &e))?;
    exec_process(exec)
}

/// Everything of the container's filesystem, done below `root` and then made its root.
/// `user_ns`: the user namespace the container will join, whose mapping the rootfs and
/// the bind mounts get.
fn setup_rootfs(
    bundle: &Path,
    spec: &Spec,
    root: &Path,
    readonly: bool,
    user_ns: Option<&OwnedFd>,
) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let host_root = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.iter()
            .flatten()
            .find(|m| m.container_id() == 0)
            .map(|m| m.host_id())
    };
    let idmap = match user_ns {
        Some(userns) => Some(rootfs::IdMap {
            userns,
            root_uid: host_root(linux.uid_mappings())
                .ok_or_else(|| InitError::new("id-map the rootfs", "uid 0 is not mapped"))?,
            root_gid: host_root(linux.gid_mappings())
                .ok_or_else(|| InitError::new("id-map the rootfs", "gid 0 is not mapped"))?,
        }),
        None => None,
    };
    let idmap = idmap.as_ref();
    let keep_shared = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
        .is_some_and(|p| p == "rshared" || p == "shared");
    if keep_shared && idmap.is_some() {
        // The id-mapped layer binds cover host paths: with a tree shared with the host
        // they would reach it. (Bidirectional volumes need a privileged container, which
        // a pod with its own user namespace cannot have.)
        return Err(InitError::new(
            "set up rootfs",
            "shared mount propagation is not possible in a user namespace",
        ));
    }
    if keep_shared {
        // Our mounts must not reach the host through a shared parent: only the volumes
        // that ask for it share.
        rootfs::make_parent_mount_private(root)?;
    }
    rootfs::mount_rootfs(bundle, root, idmap)?;
    // Before the spec's mounts, which bind them into the container in their order.
    image_volume::mount_image_volumes(bundle, idmap)?;
    let root_fd = rootfs::open_root(root)?;
    let cgroup_v2 = Cgroups::detect().is_ok_and(|c| c.mode() == crate::linux::cgroup::Mode::V2);
    let image_volumes = bundle.join(mounts::IMAGE_VOLUMES_DIR);
    for step in mounts::plan_mounts(spec) {
        // An image volume's layers are id-mapped under its overlay already; a second
        // mapping on the bind would map its owners twice.
        let image_volume = matches!(&step.kind, mounts::MountKind::Bind { source, .. } if source.starts_with(&image_volumes));
        let step_idmap = if image_volume { None } else { idmap };
        rootfs::apply_mount(&root_fd, &step, cgroup_v2, step_idmap)?;
    }
    rootfs::setup_dev(&root_fd)?;
    for device in linux.devices().iter().flatten() {
        rootfs::create_device(&root_fd, device)?;
    }
    drop(root_fd);
    rootfs::pivot_root(root)?;
    for path in linux.masked_paths().iter().flatten() {
        rootfs::mask_path(Path::new(path))?;
    }
    for path in linux.readonly_paths().iter().flatten() {
        rootfs::readonly_path(Path::new(path))?;
    }
    if readonly {
        rootfs::readonly_root()?;
    }
    Ok(())
}

/// What exec needs, resolved before "created" is reported so that a bad cwd or a
/// missing program fails the create.
struct ExecPlan {
    path: CString,
    display: String,
    args: Vec<CString>,
    env: Vec<CString>,
    terminal: bool,
    /// Loaded just before execve (the process has no_new_privs, so it needs no
    /// capability then).
    seccomp_at_exec: Option<crate::linux::seccomp::Filter>,
}

/// The daemon's compiled seccomp program in the bundle, if it wrote one.
fn read_seccomp_program(bundle: &Path) -> Result<Option<Vec<u8>>> {
    let path = bundle.join(crate::linux::seccomp::BPF_FILE);
    match fs::read(&path) {
        Ok(program) => Ok(Some(program)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(InitError::io(format!("read {}", path.display()), &e)),
    }
}

fn prepare_process(
    spec: &Spec,
    user_ns: Option<OwnedFd>,
    seccomp_program: Option<Vec<u8>>,
) -> Result<ExecPlan> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| InitError::new("exec", "the spec has no process"))?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    prepare_process_of(process, seccomp.as_ref(), user_ns, seccomp_program)
}

/// `seccomp` is the container's profile (exec'd processes get it too), `seccomp_program`
/// the daemon's compiled program of it; `user_ns` the user namespace to join before the
/// user change.
fn prepare_process_of(
    process: &Process,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
    user_ns: Option<OwnedFd>,
    seccomp_program: Option<Vec<u8>>,
) -> Result<ExecPlan> {
    let args = process.args().clone().unwrap_or_default();
    let program = args
        .first()
        .ok_or_else(|| InitError::new("exec", "process.args is empty"))?;
    let env = process.env().clone().unwrap_or_default();
    let cwd = process.cwd();
    #[allow(clippy::disallowed_methods)] // init is single-threaded: chdir is its to do
    std::env::set_current_dir(cwd)
        .map_err(|e| InitError::io(format!("chdir {}", cwd.display()), &e))?;
    let filter = seccomp
        .map(|profile| crate::linux::seccomp::Filter::prepare(profile, seccomp_program))
        .transpose()
        .map_err(|e| InitError::new("compile the seccomp profile", describe_chain(&e)))?;
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while init
    // still has it, before the user and capability change. With it, load it last.
    let (seccomp_now, seccomp_at_exec) = if process.no_new_privileges() == Some(true) {
        (None, filter)
    } else {
        (filter, None)
    };
    security::apply_apparmor(process)?;
    security::apply_process_identity(process, seccomp_now.as_ref(), user_ns)?;
    let path = resolve_program(program, &env)?;
    let to_c =
        |s: &[u8]| CString::new(s).map_err(|_| InitError::new("exec", "argument contains NUL"));
    Ok(ExecPlan {
        path: to_c(path.as_os_str().as_bytes())?,
        display: path.display().to_string(),
        args: args
            .iter()
            .map(|a| to_c(a.as_bytes()))
            .collect::<Result<Vec<_>>>()?,
        env: env
            .iter()
            .map(|e| to_c(e.as_bytes()))
            .collect::<Result<Vec<_>>>()?,
        terminal: process.terminal().unwrap_or(false),
        seccomp_at_exec,
    })
}

enum Forked {
    Intermediate(Outcome),
    /// The workload, holding the write end of the ready pipe.
    Workload(OwnedFd),
}

fn set_oom_score_adj(requested: i32) -> Result<()> {
    let step = format!("set oom_score_adj {requested}");
    let current = read_oom_score_adj("self").map_err(|e| InitError::io(&step, &e))?;
    let (value, clamped) = clamp_oom_score_adj(requested, current);
    if clamped {
        // Lowering it needs CAP_SYS_RESOURCE; containerd does the same clamp.
        eprintln!("berth init: debug: oom_score_adj {requested} clamped to {current}");
    }
    if value != current {
        fs::write("/proc/self/oom_score_adj", value.to_string())
            .map_err(|e| InitError::io(&step, &e))?;
    }
    Ok(())
}

/// Joins and creates the plan's namespaces; returns the user namespace to join later
/// (`UserNamespacePlan::Join`), opened now, while its path still resolves.
fn enter_namespaces(
    plan: &NamespacePlan,
    keep_shared: bool,
    linux: &oci_spec::runtime::Linux,
    deferred_cgroupns: bool,
) -> Result<Option<OwnedFd>> {
    // Open every path first: joining a mount namespace changes what later paths name.
    let mut opened = Vec::new();
    for join in &plan.join {
        let step = format!("join {} {}", short_name(join.kind), join.path.display());
        let fd = File::open(&join.path).map_err(|e| InitError::io(&step, &e))?;
        opened.push((step, OwnedFd::from(fd), join.kind));
    }
    let user_ns = match &plan.user {
        UserNamespacePlan::Join(path) => {
            Some(OwnedFd::from(File::open(path).map_err(|e| {
                InitError::io(format!("join userns {}", path.display()), &e)
            })?))
        }
        _ => None,
    };
    for (step, fd, kind) in opened {
        setns(fd, plan::clone_flag(kind)).map_err(|e| InitError::errno(step, e))?;
    }
    if plan.user == UserNamespacePlan::Create {
        // The pod netns belongs to the host's user namespace: its sysctls can only be
        // written from there.
        set_sysctls(linux, is_net_sysctl)?;
        // After the joins and before the other new namespaces, which the new user
        // namespace then owns.
        create_user_namespace(linux)?;
    }
    let mut flags = plan.unshare_flags();
    if deferred_cgroupns {
        flags.remove(CloneFlags::CLONE_NEWCGROUP);
    }
    if !flags.is_empty() {
        let names: Vec<&str> = plan.create.iter().map(|k| short_name(*k)).collect();
        let step = format!("create {}", names.join(","));
        unshare(flags).map_err(|e| InitError::errno(step, e))?;
    }
    if flags.contains(CloneFlags::CLONE_NEWNS) && !keep_shared {
        // Keep mount events from leaking back to the host.
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .map_err(|e| InitError::errno("make / a slave mount", e))?;
    }
    Ok(user_ns)
}

/// The spec's sysctls that `select` picks, in key order.
fn set_sysctls(linux: &oci_spec::runtime::Linux, select: impl Fn(&str) -> bool) -> Result<()> {
    let Some(sysctls) = linux.sysctl() else {
        return Ok(());
    };
    let mut keys: Vec<_> = sysctls.iter().filter(|(k, _)| select(k)).collect();
    keys.sort();
    for (key, value) in keys {
        let step = format!("set sysctl {key}={value}");
        let path = sysctl_path(key).ok_or_else(|| InitError::new(&step, "invalid key"))?;
        fs::write(&path, value).map_err(|e| InitError::io(&step, &e))?;
    }
    Ok(())
}

/// Sysctls of the network namespace (`net.*`, also written `net/...`).
fn is_net_sysctl(key: &str) -> bool {
    key.starts_with("net.") || key.starts_with("net/")
}

/// `/proc/<pid>/uid_map` lines of OCI id mappings.
fn id_map_lines(mappings: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>) -> String {
    mappings
        .into_iter()
        .flatten()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Moves init into a new user namespace with the spec's mappings and makes it root
/// there. A process cannot map ids for itself beyond its own, so a helper child, still
/// in the parent namespace with init's rights, writes the maps once init has unshared.
fn create_user_namespace(linux: &oci_spec::runtime::Linux) -> Result<()> {
    const STEP: &str = "create userns";
    let uid_map = id_map_lines(linux.uid_mappings().as_ref());
    let gid_map = id_map_lines(linux.gid_mappings().as_ref());
    if uid_map.is_empty() || gid_map.is_empty() {
        return Err(InitError::new(STEP, "the spec has no uid or gid mappings"));
    }
    let (go_read, go_write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| InitError::errno(STEP, e))?;
    let (err_read, err_write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| InitError::errno(STEP, e))?;
    let parent = getpid();
    // SAFETY: init is single-threaded, so the child may run arbitrary code.
    match unsafe { fork() }.map_err(|e| InitError::errno(STEP, e))? {
        ForkResult::Child => {
            drop(go_write);
            drop(err_read);
            let mut byte = [0u8; 1];
            let result = match File::from(go_read).read(&mut byte) {
                Ok(1) => write_id_maps(parent.as_raw(), &uid_map, &gid_map),
                _ => Err("init did not create the namespace".to_string()),
            };
            let code = match result {
                Ok(()) => 0,
                Err(message) => {
                    let _ = File::from(err_write).write_all(message.as_bytes());
                    1
                }
            };
            // SAFETY: ends the helper without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(go_read);
            drop(err_write);
            let unshared = unshare(CloneFlags::CLONE_NEWUSER);
            let mut go = File::from(go_write);
            if unshared.is_ok() {
                let _ = go.write_all(b"1");
            }
            drop(go);
            let mut message = String::new();
            let _ = File::from(err_read).read_to_string(&mut message);
            let status = nix::sys::wait::waitpid(child, None);
            unshared.map_err(|e| InitError::errno(STEP, e))?;
            if !message.is_empty() {
                return Err(InitError::new(STEP, message));
            }
            if !matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))) {
                return Err(InitError::new(STEP, "the id map helper failed"));
            }
        }
    }
    // Host root is not mapped in the new namespace: become its root (the capabilities
    // init has there stay).
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .map_err(|e| InitError::errno("become root of the userns", e))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
        .map_err(|e| InitError::errno("become root of the userns", e))?;
    nix::unistd::setgroups(&[]).map_err(|e| InitError::errno("become root of the userns", e))
}

fn write_id_maps(pid: i32, uid_map: &str, gid_map: &str) -> std::result::Result<(), String> {
    for (file, map) in [("uid_map", uid_map), ("gid_map", gid_map)] {
        fs::write(format!("/proc/{pid}/{file}"), map)
            .map_err(|e| format!("write {file} {:?}: {}", map.trim(), describe_io(&e)))?;
    }
    Ok(())
}

/// Forks the workload into the PID namespace. The intermediate waits until the workload
/// is set up and reports its pid (the workload reports its own errors); the workload
/// gets the ready pipe. The workload is reparented to the shim, the pod's subreaper.
fn fork_into_pid_namespace(sync: &OwnedFd, cgroup: Option<&OwnedFd>) -> Result<Forked> {
    let (read_end, write_end) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| InitError::errno("create ready pipe", e))?;
    match fork_into(cgroup)? {
        ForkResult::Child => {
            drop(read_end);
            Ok(Forked::Workload(write_end))
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut byte = [0u8; 1];
            let ready = matches!(File::from(read_end).read(&mut byte), Ok(1));
            if ready {
                send(
                    sync,
                    &InitMessage::Created {
                        pid: child.as_raw(),
                    },
                );
                Ok(Forked::Intermediate(Outcome::Intermediate))
            } else {
                // The ready pipe closes as the workload's setup fails, a moment before the
                // workload sends its error: wait for it to finish saying why (or to die; then
                // the shim sees EOF) instead of killing it mid-sentence.
                let _ = nix::sys::wait::waitpid(child, None);
                Ok(Forked::Intermediate(Outcome::NoStart))
            }
        }
    }
}

/// Blocks until the shim sends `start` (true) or closes the socket (false).
fn wait_for_start(sync: &OwnedFd) -> Result<bool> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(sync.as_fd(), &mut byte) {
            Ok(0) => return Ok(false),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(InitError::errno("wait for start", e)),
        }
    }
    Ok(line == sync::START.strip_suffix(b"\n").unwrap_or(sync::START))
}

fn exec_pause() -> Result<Outcome> {
    // Re-exec the binary into its small pause fast path (src/main.rs) so the pause
    // process does not keep init's heap and mappings.
    let exe = c"/proc/self/exe";
    let argv = [c"berth-pause", c"pause"];
    let err = nix::unistd::execv(exe, &argv)
        .err()
        .unwrap_or(Errno::EINVAL);
    Err(InitError::errno("exec pause", err))
}

fn wants_terminal(process: &Process) -> bool {
    process.terminal().unwrap_or(false)
}

/// Who gets the pty slave: the process's user, unless ids are mapped (then the devpts of
/// the host's user namespace keeps root's).
fn terminal_owner(process: Option<&Process>, in_user_ns: bool) -> Option<u32> {
    if in_user_ns {
        return None;
    }
    process.map(|p| p.user().uid()).filter(|uid| *uid != 0)
}

fn exec_process(exec: ExecPlan) -> Result<Outcome> {
    // Every workload leads its own session, as runc's do, never the shim's: a session led
    // from outside the container is what CRIU refuses to checkpoint. An exec already leads
    // one.
    let leads_session = nix::unistd::getsid(None).ok() == Some(nix::unistd::getpid());
    if !leads_session {
        nix::unistd::setsid().map_err(|e| InitError::errno("setsid", e))?;
    }
    if exec.terminal {
        // The pty slave is fd 0 (console::hand_over): the controlling terminal of that session.
        rustix::process::ioctl_tiocsctty(unsafe { std::os::fd::BorrowedFd::borrow_raw(0) })
            .map_err(|e| InitError::io("set the controlling terminal", &e.into()))?;
    }
    // Nothing but stdio may reach the workload (fd 3 stays open until the exec, to report
    // its failure).
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32) };
    if rc != 0 {
        return Err(InitError::io(
            "mark fds close-on-exec",
            &io::Error::last_os_error(),
        ));
    }
    if let Some(filter) = &exec.seccomp_at_exec {
        filter
            .load()
            .map_err(|e| InitError::new("load the seccomp profile", describe_chain(&e)))?;
    }
    let err = nix::unistd::execve(&exec.path, &exec.args, &exec.env)
        .err()
        .unwrap_or(Errno::EINVAL);
    Err(InitError::errno(format!("exec {}", exec.display), err))
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds `program` in the workload's own PATH (not init's), like a shell would; errors
/// read like other runtimes'.
fn resolve_program(program: &str, env: &[String]) -> Result<PathBuf> {
    if program.contains('/') {
        return match fs::metadata(program) {
            Ok(_) => Ok(PathBuf::from(program)),
            Err(e) => Err(InitError::new(
                "exec",
                format!("\"{program}\": stat {program}: {}", describe_io(&e)),
            )),
        };
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path_var
        .split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            InitError::new(
                "exec",
                format!("\"{program}\": executable file not found in $PATH"),
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_like_the_brief() {
        let err = InitError::errno("join netns /run/berth/netns/x", Errno::ENOENT);
        assert_eq!(
            err.to_string(),
            "join netns /run/berth/netns/x: no such file or directory"
        );
        let io = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(
            InitError::io("mount /proc", &io).to_string(),
            "mount /proc: permission denied"
        );
    }

    #[test]
    fn programs_are_found_in_the_workload_path() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        let found = resolve_program("sh", &env).unwrap();
        assert!(found.ends_with("sh"));
        assert_eq!(
            resolve_program("/bin/sh", &env).unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert_eq!(
            resolve_program("/x/y", &env).unwrap_err().to_string(),
            "exec: \"/x/y\": stat /x/y: no such file or directory"
        );
        assert_eq!(
            resolve_program("no-such-program-berth", &env)
                .unwrap_err()
                .to_string(),
            "exec: \"no-such-program-berth\": executable file not found in $PATH"
        );
        // The workload's PATH decides, not init's.
        let nothing = vec!["PATH=/nonexistent".to_string()];
        assert!(resolve_program("sh", &nothing).is_err());
    }
}
