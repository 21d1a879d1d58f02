//! CheckpointContainer with CRIU, laid out as CRI-O lays out its checkpoint archives: a tar
//! at the kubelet's `location` holding `checkpoint/` (CRIU's images), `spec.dump` (the OCI
//! spec), `config.dump` (berth's container record), `rootfs-diff.tar` (what the container
//! wrote to its writable layer) and `dump.log` (CRIU's log). The container keeps running
//! (`--leave-running`), as the kubelet's forensic checkpoints expect.
//!
//! CRIU is an external program: where it is not installed the call is refused with
//! FailedPrecondition saying so, before anything is written.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::container::manager::{ContainerManager, ContainerState};
use crate::error::{Error, ErrorKind, Result};

/// What CheckpointContainer asks for, in domain terms.
#[derive(Debug, Clone)]
pub struct CheckpointRequest {
    pub container_id: String,
    /// The archive to write (absolute).
    pub location: PathBuf,
    /// The most the dump may take; None for no limit.
    pub timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "checkpointing needs CRIU, and {0:?} was not found (install the criu package, or set checkpoint.criu_path)"
    )]
    NoCriu(String),
    #[error("criu dump of pid {pid} failed ({status}); the end of its log: {log}")]
    Dump {
        pid: u32,
        status: String,
        log: String,
    },
    /// CRIU is there but cannot work on this kernel (CRIU 3.17 on Linux 6.13 and later
    /// fails its vDSO probe, fixed in CRIU 4.1): the node cannot checkpoint.
    #[error("CRIU cannot run on this kernel ({kernel}); its log ends: {log}")]
    Unsupported { kernel: String, log: String },
    #[error("criu dump did not finish within {0:?}")]
    Timeout(Duration),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl From<CheckpointError> for Error {
    fn from(e: CheckpointError) -> Error {
        let kind = match e {
            CheckpointError::NoCriu(_) | CheckpointError::Unsupported { .. } => {
                ErrorKind::FailedPrecondition
            }
            CheckpointError::Timeout(_) => ErrorKind::DeadlineExceeded,
            CheckpointError::Dump { .. } | CheckpointError::Io { .. } => ErrorKind::Internal,
        };
        Error::with_source(kind, "checkpoint", e)
    }
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> CheckpointError {
    let what = what.into();
    move |source| CheckpointError::Io { what, source }
}

/// `criu` as configured: a path, or a name looked up in PATH. None when it is not there.
pub fn find_criu(configured: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if configured.components().count() > 1 || configured.is_absolute() {
        return runnable(configured).then(|| configured.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(configured))
        .find(|p| runnable(p))
}

/// Checks the request against the container and the node, then dumps and archives it.
pub async fn checkpoint(
    containers: &ContainerManager,
    criu: &Path,
    request: CheckpointRequest,
) -> Result<()> {
    if !request.location.is_absolute() {
        return Err(Error::invalid_argument(format!(
            "location: {:?} is not an absolute path",
            request.location
        )));
    }
    let record = containers.status(&request.container_id)?;
    if record.state != ContainerState::Running || record.pid == 0 {
        return Err(Error::failed_precondition(format!(
            "container {} is not running ({:?}): only a running container can be checkpointed",
            record.id, record.state
        )));
    }
    let criu =
        find_criu(criu).ok_or_else(|| CheckpointError::NoCriu(criu.display().to_string()))?;
    let location = request.location.clone();
    match tokio::fs::symlink_metadata(&location).await {
        Ok(_) => {
            return Err(Error::already_exists(format!(
                "location: {} already exists",
                location.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::internal(
                format!("location {}", location.display()),
                e,
            ));
        }
    }
    let parent = location.parent().unwrap_or(Path::new("/")).to_path_buf();
    let work = parent.join(format!(".berth-checkpoint-{:016x}", rand::random::<u64>()));
    let result = dump_and_archive(
        &criu,
        &record,
        containers.writable_dir(&record.id),
        &work,
        &location,
        request.timeout,
    )
    .await;
    let _ = tokio::fs::remove_dir_all(&work).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&location).await;
    }
    result?;
    tracing::info!(container_id = %record.id, location = %location.display(), "container checkpointed");
    Ok(())
}

async fn dump_and_archive(
    criu: &Path,
    record: &crate::container::manager::ContainerRecord,
    upper: PathBuf,
    work: &Path,
    location: &Path,
    timeout: Option<Duration>,
) -> std::result::Result<(), CheckpointError> {
    let images = work.join("checkpoint");
    tokio::fs::create_dir_all(&images)
        .await
        .map_err(io_error(format!("create {}", images.display())))?;
    let spec_path = record.bundle.join("config.json");
    let spec_text = tokio::fs::read(&spec_path)
        .await
        .map_err(io_error(format!("read {}", spec_path.display())))?;
    let spec: oci_spec::runtime::Spec = serde_json::from_slice(&spec_text)
        .map_err(|e| io_error(format!("parse {}", spec_path.display()))(io::Error::other(e)))?;
    let args = dump_args(record.pid, &images, &spec, &pod_namespaces(record.pid));
    let mut command = tokio::process::Command::new(criu);
    command
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(io_error(format!("run {}", criu.display())))?;
    let waited = child.wait_with_output();
    let output = match timeout {
        Some(limit) => tokio::time::timeout(limit, waited)
            .await
            .map_err(|_| CheckpointError::Timeout(limit))?,
        None => waited.await,
    }
    .map_err(io_error("wait for criu"))?;
    let log_path = images.join("dump.log");
    if !output.status.success() {
        // What it said before its log file was open, then the log.
        let mut log = String::from_utf8_lossy(&output.stderr).into_owned();
        log.push_str(
            &tokio::fs::read_to_string(&log_path)
                .await
                .unwrap_or_default(),
        );
        let tail = log_excerpt(&log);
        // Where its own start-up probe of the kernel fails, no dump can ever work here.
        if log.contains("Could not initialize kernel features detection") {
            return Err(CheckpointError::Unsupported {
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .map(|r| format!("Linux {}", r.trim()))
                    .unwrap_or_else(|_| "unknown".into()),
                log: tail,
            });
        }
        return Err(CheckpointError::Dump {
            pid: record.pid,
            status: output.status.to_string(),
            log: tail,
        });
    }
    let config = serde_json::to_vec_pretty(record)
        .map_err(|e| io_error("encode the container record")(io::Error::other(e)))?;
    let (work, location) = (work.to_path_buf(), location.to_path_buf());
    tokio::task::spawn_blocking(move || {
        write_archive(&work, &location, &spec_text, &config, &upper)
    })
    .await
    .map_err(|e| io_error("archive task")(io::Error::other(e)))?
}

/// What an operator needs from CRIU's log: its first errors (the cause; the last lines are
/// only the unwinding that follows) and then its last lines.
fn log_excerpt(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let mut picked: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("Error (") || l.contains("Error:"))
        .take(3)
        .copied()
        .collect();
    for line in &lines[lines.len().saturating_sub(4)..] {
        if !picked.contains(line) {
            picked.push(line);
        }
    }
    picked.join(" | ")
}

/// The pod's namespaces the container joined, by inode, which CRIU must leave alone
/// (declared external): the pause process holds them.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PodNamespaces {
    /// The pod network, when it is not the daemon's own (a host-network pod has none).
    pub net: Option<u64>,
    /// The pod's PID namespace, when the container shares it: its process is not that
    /// namespace's init, and CRIU cannot dump a PID namespace without its init.
    pub pid: Option<u64>,
}

fn pod_namespaces(pid: u32) -> PodNamespaces {
    use std::os::unix::fs::MetadataExt as _;
    let inode = |who: &str, ns: &str| {
        std::fs::metadata(format!("/proc/{who}/ns/{ns}"))
            .ok()
            .map(|m| m.ino())
    };
    let theirs = inode(&pid.to_string(), "net");
    let net = theirs.filter(|ino| Some(*ino) != inode("self", "net"));
    // NSpid's last field is the pid inside the innermost namespace: 1 for its init.
    let inner_pid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|ids| ids.split_whitespace().last().map(str::to_owned))
        });
    let shares_pid_ns = inner_pid.is_some_and(|p| p != "1");
    PodNamespaces {
        net,
        pid: inode(&pid.to_string(), "pid").filter(|_| shares_pid_ns),
    }
}

/// criu's arguments. Every bind mount of the spec (volumes, pod files, device nodes) is
/// the host's, so it is declared external by its destination: the archive records where
/// it was, not its content.
pub fn dump_args(
    pid: u32,
    images: &Path,
    spec: &oci_spec::runtime::Spec,
    pod: &PodNamespaces,
) -> Vec<String> {
    let (pid, images) = (pid.to_string(), images.display().to_string());
    let mut args: Vec<String> = [
        "dump",
        "--tree",
        pid.as_str(),
        "--images-dir",
        images.as_str(),
        "--log-file",
        "dump.log",
        "-v4",
        "--leave-running",
        "--tcp-established",
        "--file-locks",
        "--manage-cgroups=ignore",
        "--ext-mount-map",
        "auto",
        "--enable-external-masters",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut external: Vec<String> = Vec::new();
    for mount in spec.mounts().iter().flatten() {
        let bind = mount.typ().as_deref() == Some("bind")
            || mount
                .options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        if bind {
            external.push(mount.destination().display().to_string());
        }
    }
    // init binds these from the host's /dev (init/mounts.rs DEFAULT_DEVICES).
    for device in crate::init::mounts::DEFAULT_DEVICES {
        external.push(format!("/dev/{device}"));
    }
    // Masked files are /dev/null bound over them.
    if let Some(linux) = spec.linux() {
        for path in linux.masked_paths().iter().flatten() {
            external.push(path.clone());
        }
    }
    external.sort();
    external.dedup();
    for dest in external {
        args.push("--external".into());
        args.push(format!("mnt[{dest}]:{dest}"));
    }
    if let Some(inode) = pod.net {
        args.push("--external".into());
        args.push(format!("net[{inode}]:berth-pod-netns"));
    }
    if let Some(inode) = pod.pid {
        args.push("--external".into());
        args.push(format!("pid[{inode}]:berth-pod-pidns"));
    }
    args
}

/// The archive, CRI-O's layout (see the module comment).
fn write_archive(
    work: &Path,
    location: &Path,
    spec: &[u8],
    config: &[u8],
    upper: &Path,
) -> std::result::Result<(), CheckpointError> {
    let diff_path = work.join("rootfs-diff.tar");
    {
        let file = std::fs::File::create(&diff_path)
            .map_err(io_error(format!("create {}", diff_path.display())))?;
        let mut diff = tar::Builder::new(file);
        diff.follow_symlinks(false);
        diff.append_dir_all(".", upper)
            .map_err(io_error(format!("archive {}", upper.display())))?;
        diff.into_inner()
            .map_err(io_error("finish rootfs-diff.tar"))?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(location)
        .map_err(io_error(format!("create {}", location.display())))?;
    let mut archive = tar::Builder::new(file);
    archive.follow_symlinks(false);
    let add_bytes = |archive: &mut tar::Builder<std::fs::File>, name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        archive
            .append_data(&mut header, name, bytes)
            .map_err(io_error(format!("add {name}")))
    };
    add_bytes(&mut archive, "spec.dump", spec)?;
    add_bytes(&mut archive, "config.dump", config)?;
    archive
        .append_dir_all("checkpoint", work.join("checkpoint"))
        .map_err(io_error("add checkpoint/"))?;
    archive
        .append_path_with_name(&diff_path, "rootfs-diff.tar")
        .map_err(io_error("add rootfs-diff.tar"))?;
    archive
        .append_path_with_name(work.join("checkpoint").join("dump.log"), "dump.log")
        .map_err(io_error("add dump.log"))?;
    let file = archive
        .into_inner()
        .map_err(io_error(format!("finish {}", location.display())))?;
    file.sync_all()
        .map_err(io_error(format!("sync {}", location.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_log_excerpt_keeps_the_first_errors_then_the_last_lines() {
        let log = "(00.1) start\n(00.2) Error (criu/mount.c:10): cause\n(00.3) a\n(00.4) b\n\
                   (00.5) c\n(00.6) Error (criu/cr-dump.c:2053): Dumping FAILED.";
        assert_eq!(
            log_excerpt(log),
            "(00.2) Error (criu/mount.c:10): cause | (00.6) Error (criu/cr-dump.c:2053): Dumping FAILED. \
             | (00.3) a | (00.4) b | (00.5) c"
        );
    }

    #[test]
    fn criu_is_found_by_path_or_in_path_and_missing_is_none() {
        assert_eq!(find_criu(Path::new("/nonexistent/criu")), None);
        assert_eq!(find_criu(Path::new("no-such-criu-binary")), None);
        // A file that is not executable is not a criu.
        assert_eq!(find_criu(Path::new("/etc/passwd")), None);
        assert_eq!(
            find_criu(Path::new("/bin/sh")),
            Some(PathBuf::from("/bin/sh"))
        );
    }

    #[test]
    fn dump_arguments_declare_host_binds_and_the_pod_netns_external() {
        let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.2.0",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/x/hosts",
                 "options": ["rbind", "rprivate", "rw"]},
                {"destination": "/data", "source": "/srv", "options": ["rbind"]}
            ],
            "linux": {"maskedPaths": ["/proc/kcore"]}
        }))
        .unwrap();
        let pod = PodNamespaces {
            net: Some(4026532000),
            pid: Some(4026532001),
        };
        let args = dump_args(42, Path::new("/w/checkpoint"), &spec, &pod);
        let text = args.join(" ");
        assert!(
            text.starts_with("dump --tree 42 --images-dir /w/checkpoint "),
            "{text}"
        );
        assert!(text.contains("--leave-running"), "{text}");
        for external in [
            "mnt[/etc/hosts]:/etc/hosts",
            "mnt[/data]:/data",
            "mnt[/dev/null]:/dev/null",
            "mnt[/proc/kcore]:/proc/kcore",
            "net[4026532000]:berth-pod-netns",
            "pid[4026532001]:berth-pod-pidns",
        ] {
            assert!(args.iter().any(|a| a == external), "{external} in {text}");
        }
        assert!(!text.contains("mnt[/proc]"), "{text}");
        let own = dump_args(
            42,
            Path::new("/w/checkpoint"),
            &spec,
            &PodNamespaces::default(),
        );
        assert!(
            !own.iter()
                .any(|a| a.starts_with("pid[") || a.starts_with("net["))
        );
    }

    #[test]
    fn a_process_that_is_not_its_pid_namespaces_init_has_it_declared_external() {
        use std::os::unix::fs::MetadataExt as _;
        // This test's own process: not the init of its PID namespace, and in the daemon's
        // (its own) network namespace.
        let pid_ns = std::fs::metadata("/proc/self/ns/pid").unwrap().ino();
        assert_eq!(
            pod_namespaces(std::process::id()),
            PodNamespaces {
                net: None,
                pid: Some(pid_ns)
            }
        );
    }
}
