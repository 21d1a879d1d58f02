//! Container lifecycle: records, the bundle, the pod's shim, and exit files.
//!
//! ```text
//!            create ok           start            exit (exit file)        remove
//! Creating ────────────▶ Created ──────▶ Running ───────────────▶ Exited ────────▶ (gone)
//!    │ any step fails                │ stop: signal, timeout, SIGKILL, cgroup kill ▲
//!    └──────▶ rolled back (gone)     └──────────────────────────────────────────────┘
//! ```
//! A container's exit is pushed by its shim (see manager/exits.rs); the exit file the shim
//! also writes covers what happened while the daemon was down.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::ContainerConfig;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::events::EventKind;
use crate::image::ImageService;
use crate::persist;
use crate::sandbox::{SandboxManager, SandboxState, now_nanos};
use crate::store::lock;

mod exits;
mod lost;
mod publish;
pub use lost::SHIM_LOST_REASON;

const RECORD_VERSION: u32 = 1;
const RECORD_FILE: &str = "container.json";
/// How long a killed container may take to disappear before its cgroup is killed.
const KILL_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Creating,
    Created,
    Running,
    Exited,
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub version: u32,
    pub id: String,
    pub sandbox_id: String,
    pub config: ContainerConfig,
    /// The image as the kubelet named it, and the image ID it resolved to.
    pub image_ref: String,
    pub image_id: String,
    /// A repo digest or tag of that image, for ContainerStatus.image_ref.
    pub image_name: String,
    pub state: ContainerState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub pid: u32,
    /// Absolute log path (the pod's log_directory joined with the container's log_path).
    pub log_path: Option<PathBuf>,
    pub bundle: PathBuf,
    pub cgroup_path: String,
    pub stop_signal: i32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

pub struct Container {
    record: Mutex<ContainerRecord>,
    op: tokio::sync::Mutex<()>,
    /// Set while StartContainer opens the gate until it has published STARTED: an exit
    /// pushed meanwhile is held and applied after that, so the events come in order.
    starting: std::sync::atomic::AtomicBool,
    /// The exit the shim reported, until applied (see exits.rs).
    exit: Mutex<Option<crate::shim::client::ProcessExit>>,
    /// True once the record says Exited: StopContainer waits on it.
    exited: tokio::sync::watch::Sender<bool>,
}

/// Clears `Container::starting` however the start ends (also when its future is dropped).
struct StartingFlag<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StartingFlag<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl Container {
    fn new(record: ContainerRecord) -> Arc<Container> {
        let exited = record.state == ContainerState::Exited;
        Arc::new(Container {
            record: Mutex::new(record),
            op: tokio::sync::Mutex::new(()),
            starting: Default::default(),
            exit: Mutex::new(None),
            exited: tokio::sync::watch::Sender::new(exited),
        })
    }

    pub fn record(&self) -> ContainerRecord {
        lock(&self.record).clone()
    }

    fn update(&self, f: impl FnOnce(&mut ContainerRecord)) -> ContainerRecord {
        let mut guard = lock(&self.record);
        f(&mut guard);
        guard.clone()
    }
}

#[derive(Debug, Default, Clone)]
pub struct ContainerFilter {
    pub id: Option<String>,
    pub sandbox_id: Option<String>,
    pub state: Option<ContainerState>,
    pub labels: HashMap<String, String>,
}

pub struct ContainerManager {
    config: Arc<Config>,
    sandboxes: Arc<SandboxManager>,
    images: ImageService,
    containers: RwLock<HashMap<String, Arc<Container>>>,
    /// (sandbox id, name, attempt) → container id.
    names: Mutex<HashMap<(String, String, u32), String>>,
    /// Where container transitions are published (the composition root's event bus).
    events: Arc<LifecycleEvents>,
}

/// The bus of container and sandbox transitions, with the snapshots each event carries.
pub type LifecycleEvents =
    crate::events::EventBus<ContainerRecord, (crate::sandbox::SandboxRecord, SandboxState)>;

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::internal(what, e)
}

impl ContainerManager {
    pub fn new(
        config: Arc<Config>,
        sandboxes: Arc<SandboxManager>,
        images: ImageService,
        events: Arc<LifecycleEvents>,
    ) -> ContainerManager {
        ContainerManager {
            config,
            sandboxes,
            images,
            containers: RwLock::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            events,
        }
    }

    fn record_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("containers").join(id)
    }

    fn state_dir(&self, id: &str) -> PathBuf {
        self.config.state.join("containers").join(id)
    }

    async fn persist(&self, record: &ContainerRecord) -> Result<()> {
        let path = self.record_dir(&record.id).join(RECORD_FILE);
        persist::save_json(&path, record)
            .await
            .map_err(io_err(format!("writing {}", path.display())))
    }

    /// Finds a container by full id or unique prefix.
    pub fn get(&self, id: &str) -> Result<Arc<Container>> {
        crate::store::lookup(&self.containers, id, "container", "container_id")
    }

    /// By full id only (exits name containers exactly).
    fn get_exact(&self, id: &str) -> Option<Arc<Container>> {
        self.containers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn all(&self) -> Vec<Arc<Container>> {
        crate::store::values(&self.containers)
    }

    /// The record as it is: exits are applied when the shim pushes them, so reading
    /// never writes.
    pub fn status(&self, id: &str) -> Result<ContainerRecord> {
        Ok(self.get(id)?.record())
    }

    pub fn list(&self, filter: &ContainerFilter) -> Vec<ContainerRecord> {
        let mut out: Vec<_> = self
            .all()
            .into_iter()
            .map(|c| c.record())
            .filter(|r| r.state != ContainerState::Creating)
            .filter(|r| filter.id.as_ref().is_none_or(|id| r.id.starts_with(id)))
            .filter(|r| {
                filter
                    .sandbox_id
                    .as_ref()
                    .is_none_or(|id| r.sandbox_id.starts_with(id))
            })
            .filter(|r| filter.state.is_none_or(|s| s == r.state))
            .filter(|r| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| r.config.labels.get(k) == Some(v))
            })
            .collect();
        out.sort_by_key(|r| r.created_at);
        out
    }

    pub fn containers_of(&self, sandbox_id: &str) -> Vec<ContainerRecord> {
        self.list(&ContainerFilter {
            sandbox_id: Some(sandbox_id.to_string()),
            ..Default::default()
        })
    }
}

/// ExecSync output that would not fit the CRI answer is refused, never cut. The shim
/// refuses it itself; this covers a shim from before that, which cut streams at 16 MiB.
fn check_exec_output(output: &crate::shim::client::ExecSyncOutput) -> Result<()> {
    if output.stdout_truncated || output.stderr_truncated {
        return Err(Error::resource_exhausted(format!(
            "the command wrote more than {} bytes of output, more than an ExecSync answer can \
             carry (the CRI's 16 MiB message limit); a streaming exec has no limit",
            crate::shim::EXEC_SYNC_OUTPUT_LIMIT
        )));
    }
    crate::shim::check_exec_sync_output(output.stdout.len() as u64, output.stderr.len() as u64)
        .map_err(|e| Error::with_source(ErrorKind::ResourceExhausted, "exec output", e))
}

/// The pod's log directory joined with the container's log path (absolute), if any.
pub fn log_path(log_directory: &str, log_path: &str) -> Option<PathBuf> {
    if log_directory.is_empty() || log_path.is_empty() {
        return None;
    }
    Some(Path::new(log_directory).join(log_path))
}

/// Undo steps of a half-done CreateContainer, run in reverse on failure.
enum Undo {
    RemoveDir(PathBuf),
    Forget(String),
    DeleteProcess(String),
    RemoveCgroup(String),
}

/// The options of CreateContainer that are not in the config.
pub struct CreateRequest {
    pub sandbox_id: String,
    pub config: ContainerConfig,
}

impl ContainerManager {
    /// CreateContainer: the bundle, the shim's init waiting at the start gate, a record.
    pub async fn create(self: &Arc<Self>, request: CreateRequest) -> Result<String> {
        let CreateRequest { sandbox_id, config } = request;
        let sandbox = self.sandboxes.get(&sandbox_id)?;
        let (sandbox_record, sandbox_state) = self.sandboxes.status(&sandbox.id)?;
        if sandbox_state != SandboxState::Ready {
            return Err(Error::failed_precondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            )));
        }
        let key = (
            sandbox.id.clone(),
            config.metadata.name.clone(),
            config.metadata.attempt,
        );
        let id = hex::encode(rand::random::<[u8; 32]>());
        {
            let mut names = lock(&self.names);
            if let Some(existing) = names.get(&key) {
                return Err(Error::already_exists(format!(
                    "container name {:?} (attempt {}) in pod {} is already used by container {existing}",
                    key.1, key.2, key.0
                )));
            }
            names.insert(key.clone(), id.clone());
        }
        let mut undo = vec![Undo::Forget(id.clone())];
        let result = self
            .create_steps(&id, &sandbox_record, config, &mut undo)
            .await;
        match result {
            Ok(()) => Ok(id),
            Err(err) => {
                tracing::warn!(container_id = %id, error = %err, "create container failed; rolling back");
                self.rollback(&sandbox.id, undo).await;
                lock(&self.names).remove(&key);
                Err(err)
            }
        }
    }

    async fn create_steps(
        &self,
        id: &str,
        sandbox: &crate::sandbox::SandboxRecord,
        config: ContainerConfig,
        undo: &mut Vec<Undo>,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        if config.image.is_empty() {
            return Err(Error::invalid_argument("config.image.image is required"));
        }
        // What the node cannot apply is refused before anything exists.
        self.check_resources(&config.resources).await?;
        let (image, layers, image_config) = self
            .images
            .resolve_for_container(&config.image)
            .await
            .map_err(|e| e.context(format!("image {}", config.image)))?;
        let phase = |name: &str| tracing::debug!(container_id = %id, phase = name, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "create phase");
        phase("image");
        let layers_top_first: Vec<PathBuf> = layers.iter().rev().cloned().collect();
        let record_dir = self.record_dir(id);
        let state_dir = self.state_dir(id);
        let bundle = state_dir.join("bundle");
        let (upper, work, rootfs) = (
            record_dir.join("upper"),
            record_dir.join("work"),
            bundle.join("rootfs"),
        );
        undo.push(Undo::RemoveDir(record_dir.clone()));
        undo.push(Undo::RemoveDir(state_dir.clone()));
        for dir in [&upper, &work, &rootfs] {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let target_pid = match (
            config.security.namespaces.pid,
            config.security.namespaces.target_id.as_str(),
        ) {
            (crate::sandbox::NamespaceMode::Target, target) => {
                let target = self.status(target)?;
                if target.state != ContainerState::Running {
                    return Err(Error::failed_precondition(format!(
                        "target container {} is not running",
                        target.id
                    )));
                }
                Some(target.pid)
            }
            _ => None,
        };
        let spec_config = config.clone();
        let sandbox_info = super::spec::SandboxInfo {
            id: sandbox.id.clone(),
            hostname: sandbox.hostname.clone(),
            pause_pid: sandbox.pause_pid.unwrap_or_default(),
            netns_path: sandbox.netns.clone(),
            host_ipc: sandbox.spec.namespaces.host_ipc(),
            pod_files_dir: self.sandboxes.record_dir(&sandbox.id),
            pod_cgroup: sandbox.pod_cgroup.clone(),
            shm_path: None,
            runtime_handler: sandbox.spec.runtime_handler.clone(),
            userns: sandbox.spec.userns.clone(),
        };
        let bundle_dir = bundle.clone();
        let container_id = id.to_string();
        let lower = layers_top_first.clone();
        // Reading the image's user database and the host devices is file I/O.
        let spec = tokio::task::spawn_blocking(move || {
            let passwd = super::users::read_image_file(&lower, "/etc/passwd")
                .map_err(io_err("reading the image's /etc/passwd"))?;
            let group = super::users::read_image_file(&lower, "/etc/group")
                .map_err(io_err("reading the image's /etc/group"))?;
            let seccomp_localhost =
                super::seccomp::read_localhost(spec_config.security.seccomp.as_ref())?;
            // The kubelet expects a missing host path to be made as a directory.
            for mount in &spec_config.mounts {
                let source = Path::new(&mount.host_path);
                if !source.exists() {
                    std::fs::create_dir_all(source).map_err(|e| {
                        Error::with_source(
                            ErrorKind::InvalidArgument,
                            format!("creating the mount source {}", mount.host_path),
                            e,
                        )
                    })?;
                }
            }
            let mut host_devices = BTreeMap::new();
            for device in &spec_config.devices {
                let found =
                    super::host::host_device(Path::new(&device.host_path)).map_err(|e| {
                        Error::with_source(
                            ErrorKind::InvalidArgument,
                            format!("device {}", device.host_path),
                            e,
                        )
                    })?;
                host_devices.insert(device.host_path.clone(), found);
            }
            if spec_config.security.privileged {
                let all = super::host::all_host_devices()
                    .map_err(io_err("listing the host's devices"))?;
                for (path, device) in all {
                    host_devices.entry(path).or_insert(device);
                }
            }
            // Without CAP_SYS_RESOURCE neither can go past what the daemon itself has.
            let nofile_hard =
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                    .map(|(_, hard)| hard)
                    .unwrap_or(1_048_576);
            let defaults = super::spec::RuntimeDefaults {
                min_oom_score_adj: crate::linux::process::read_oom_score_adj("self").unwrap_or(0),
                nofile: nofile_hard.min(super::spec::RuntimeDefaults::default().nofile),
                apparmor: super::host::host_has_apparmor(),
            };
            let spec = super::spec::build_spec(&super::spec::SpecInput {
                container_id: &container_id,
                config: &spec_config,
                image: &image_config,
                sandbox: &sandbox_info,
                bundle_dir: &bundle_dir,
                passwd: passwd.as_deref(),
                group: group.as_deref(),
                target_pid,
                host_devices: &host_devices,
                defaults: &defaults,
                seccomp_localhost: seccomp_localhost.as_deref(),
            })?;
            let stop_signal = super::spec::stop_signal(&image_config, None);
            // Compiled here, once per profile, so that init only loads it.
            let seccomp_program = spec
                .linux()
                .as_ref()
                .and_then(|l| l.seccomp().as_ref())
                .map(crate::linux::seccomp::compiled)
                .transpose()
                .map_err(|e| {
                    Error::with_source(ErrorKind::InvalidArgument, "seccomp profile", e)
                })?;
            Ok::<_, Error>((spec, stop_signal as i32, seccomp_program))
        })
        .await
        .map_err(|e| Error::internal("spec task", e))??;
        let (spec, stop_signal, seccomp_program) = spec;
        phase("spec");
        let cgroup_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default();
        let user = spec.process().as_ref().map(|p| p.user().clone());
        let rootfs_json = serde_json::json!({
            "lower": layers_top_first,
            "upper": upper,
            "work": work,
        });
        let spec_json =
            serde_json::to_vec(&spec).map_err(|e| Error::internal("encoding the spec", e))?;
        let bundle_dir = bundle.clone();
        persist::off_executor(move || {
            persist::write_atomic(&bundle_dir.join("config.json"), &spec_json)?;
            persist::write_atomic(
                &bundle_dir.join("rootfs.json"),
                rootfs_json.to_string().as_bytes(),
            )?;
            if let Some(program) = seccomp_program {
                persist::write_atomic(&bundle_dir.join(crate::linux::seccomp::BPF_FILE), &program)?;
            }
            Ok(())
        })
        .await
        .map_err(io_err("writing the bundle"))?;

        let log_path = log_path(&sandbox.spec.log_directory, &config.log_path);
        let record = ContainerRecord {
            version: RECORD_VERSION,
            id: id.to_string(),
            sandbox_id: sandbox.id.clone(),
            image_ref: config.image.clone(),
            image_id: image.id.clone(),
            image_name: image
                .repo_digests
                .first()
                .or(image.repo_tags.first())
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            config: config.clone(),
            state: ContainerState::Creating,
            created_at: now_nanos(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid: 0,
            log_path: log_path.clone(),
            bundle: bundle.clone(),
            cgroup_path: cgroup_path.clone(),
            stop_signal,
            uid: user.as_ref().map(|u| u.uid()).unwrap_or(0),
            gid: user.as_ref().map(|u| u.gid()).unwrap_or(0),
            groups: user
                .as_ref()
                .and_then(|u| u.additional_gids().clone())
                .unwrap_or_default(),
        };
        // Written before the shim is asked, so recovery can roll back a daemon crash
        // mid-create; not synced: after a power cut the processes are gone too, and
        // recovery removes container dirs that have no record.
        let path = self.record_dir(id).join(RECORD_FILE);
        persist::save_json_unsynced(&path, &record)
            .await
            .map_err(io_err(format!("writing {}", path.display())))?;
        crate::fault::point("container.create.after_record");
        let container = Container::new(record);
        self.containers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), container.clone());

        phase("record");
        undo.push(Undo::RemoveCgroup(cgroup_path.clone()));
        let mut shim = self.sandboxes.shim(&sandbox.id).await?;
        let pid = shim
            .create(
                id,
                &bundle,
                crate::shim::CreateOptions {
                    start: false,
                    log_path: log_path.clone(),
                    tty: config.tty,
                    stdin: config.stdin,
                    stdin_once: config.stdin_once,
                    cgroup_path: Some(cgroup_path),
                },
            )
            .await
            .map_err(|e| Error::from(e).context("creating the container"))?;
        undo.push(Undo::DeleteProcess(id.to_string()));
        crate::fault::point("container.create.after_shim_create");
        let record = container.update(|r| {
            r.state = ContainerState::Created;
            r.pid = pid;
        });
        self.persist(&record).await?;
        self.publish(EventKind::Created, &record);
        tracing::info!(
            container_id = %id,
            sandbox_id = %sandbox.id,
            name = %config.metadata.name,
            pid,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "container created"
        );
        Ok(())
    }

    async fn rollback(&self, sandbox_id: &str, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            match step {
                Undo::RemoveDir(dir) => {
                    if let Err(e) = persist::remove_dir_all_if_exists(&dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "rollback: removing dir");
                    }
                }
                Undo::Forget(id) => {
                    self.containers
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                }
                Undo::DeleteProcess(id) => {
                    if let Ok(mut shim) = self.sandboxes.shim(sandbox_id).await {
                        let _ = shim.kill(&id, libc::SIGKILL, true).await;
                        let _ = shim.delete(&id).await;
                    }
                }
                Undo::RemoveCgroup(path) => {
                    let cgroups = self.sandboxes.cgroups().clone();
                    let r = tokio::task::spawn_blocking(move || {
                        cgroups.kill_all(&path, KILL_GRACE)?;
                        cgroups.remove(&path)
                    })
                    .await;
                    if !matches!(r, Ok(Ok(()))) {
                        tracing::warn!("rollback: removing the container cgroup failed");
                    }
                }
            }
        }
    }

    /// StartContainer: opens the start gate; init execs the workload.
    pub async fn start(&self, id: &str) -> Result<()> {
        let container = self.get(id)?;
        let _op = container.op.lock().await;
        let record = container.record();
        if record.state == ContainerState::Running {
            // A retry of a start that took effect (say, before a crash cut the answer off).
            tracing::info!(container_id = %record.id, "container already running");
            return Ok(());
        }
        if record.state != ContainerState::Created {
            return Err(Error::failed_precondition(format!(
                "container {} is {:?}, not created",
                record.id, record.state
            )));
        }
        let mut shim = self.sandboxes.shim(&record.sandbox_id).await?;
        // Taken before the gate opens: a workload that exits at once must not be seen
        // finishing before it started.
        let started_at = now_nanos();
        container
            .starting
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let starting = StartingFlag(&container.starting);
        let started = shim.start(&record.id).await;
        crate::fault::point("container.start.after_gate_open");
        let result = self.started(&container, started, started_at).await;
        drop(starting);
        // An exit pushed while STARTED was on its way was held: it goes now.
        self.apply_pending_exit(&container).await;
        result
    }

    async fn started(
        &self,
        container: &Container,
        started: std::result::Result<u32, crate::shim::client::ClientError>,
        started_at: i64,
    ) -> Result<()> {
        match started {
            Ok(pid) => {
                let record = container.update(|r| {
                    // The exit may already be in (a fast workload): keep it.
                    if r.state != ContainerState::Exited {
                        r.state = ContainerState::Running;
                    }
                    r.pid = pid;
                    r.started_at = started_at;
                });
                self.persist(&record).await?;
                self.publish(EventKind::Started, &record);
                tracing::info!(container_id = %record.id, pid, "container started");
                Ok(())
            }
            Err(e) => {
                let err = Error::from(e).context("starting the container");
                let message = err.to_string();
                let record = container.update(|r| {
                    r.state = ContainerState::Exited;
                    r.exit_code = 128;
                    r.finished_at = now_nanos();
                    r.reason = "StartError".into();
                    r.message = message;
                });
                container.exited.send_replace(true);
                self.persist(&record).await?;
                self.publish(EventKind::Stopped, &record);
                Err(err)
            }
        }
    }

    /// StopContainer: the stop signal, `timeout` seconds, SIGKILL, then the whole cgroup.
    /// It always returns; an unknown id is success.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        let container = match self.get(id) {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = container.op.lock().await;
        self.stop_locked(&container, timeout).await?;
        let record = container.record();
        if record.state != ContainerState::Exited {
            return Ok(());
        }
        // Its children may outlive the main process in a shared PID namespace.
        super::cgroup_sweep::kill_leftovers(
            self.sandboxes.cgroups(),
            &record.id,
            &record.cgroup_path,
        )
        .await
    }

    /// Returns as soon as the shim pushes the exit (see exits.rs), not at a poll.
    async fn stop_locked(&self, container: &Container, timeout: Duration) -> Result<()> {
        let record = container.record();
        match record.state {
            ContainerState::Exited | ContainerState::Creating => return Ok(()),
            ContainerState::Created | ContainerState::Running | ContainerState::Unknown => {}
        }
        if let Ok(mut shim) = self.sandboxes.shim(&record.sandbox_id).await {
            let signal = if record.state == ContainerState::Created {
                libc::SIGKILL
            } else {
                record.stop_signal
            };
            if !timeout.is_zero() || signal == libc::SIGKILL {
                let _ = shim.kill(&record.id, signal, false).await;
                crate::fault::point("container.stop.after_signal");
                let timeout = timeout.max(Duration::from_millis(1));
                // Children left by the main process in a shared PID namespace hold the
                // output pipes, so the shim's exit waits on them: they are killed as soon
                // as the main process is gone (cgroup_sweep.rs), raced against the push.
                let sweep = super::cgroup_sweep::sweep_once_main_is_gone(
                    record.pid,
                    self.sandboxes.cgroups(),
                    &record.id,
                    &record.cgroup_path,
                );
                let exited = tokio::select! {
                    biased;
                    exited = self.wait_exited(container, timeout) => exited,
                    never = sweep => match never {},
                };
                if exited {
                    return Ok(());
                }
            }
            let _ = shim.kill(&record.id, libc::SIGKILL, true).await;
            if self.wait_exited(container, KILL_GRACE).await {
                return Ok(());
            }
        }
        // The shim is gone (no exit will be pushed) or the process will not die: the
        // cgroup takes everything with it, and the exit is recorded here (from the exit
        // file when the shim wrote one after all).
        let cgroups = self.sandboxes.cgroups().clone();
        let path = record.cgroup_path.clone();
        let _ = tokio::task::spawn_blocking(move || cgroups.kill_all(&path, KILL_GRACE)).await;
        if self.apply_exit_file(container).await.state == ContainerState::Exited {
            return Ok(());
        }
        let updated = container.update(|r| {
            r.state = ContainerState::Exited;
            r.exit_code = 137;
            r.finished_at = now_nanos();
            r.reason = "Error".into();
            r.message = "killed by berth: the pod's shim was not reachable".into();
        });
        container.exited.send_replace(true);
        self.persist(&updated).await?;
        self.publish(EventKind::Stopped, &updated);
        Ok(())
    }

    /// RemoveContainer: kills it if running, then removes every trace. Unknown id is success.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let container = match self.get(id) {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = container.op.lock().await;
        self.stop_locked(&container, Duration::ZERO).await?;
        let record = container.record();
        if let Ok(mut shim) = self.sandboxes.shim(&record.sandbox_id).await {
            let _ = shim.delete(&record.id).await;
        }
        crate::fault::point("container.remove.after_shim_delete");
        let cgroups = self.sandboxes.cgroups().clone();
        let path = record.cgroup_path.clone();
        tokio::task::spawn_blocking(move || {
            cgroups.kill_all(&path, KILL_GRACE)?;
            cgroups.remove(&path)
        })
        .await
        .map_err(|e| Error::internal("cgroup task", e))?
        .map_err(Error::from)?;
        persist::remove_file_if_exists(&self.exit_file(&record))
            .map_err(io_err("removing the exit file"))?;
        persist::remove_dir_all_if_exists(&self.state_dir(&record.id))
            .map_err(io_err("removing the container state dir"))?;
        persist::remove_dir_all_if_exists(&self.record_dir(&record.id))
            .map_err(io_err("removing the container record"))?;
        self.containers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&record.id);
        let key = (
            record.sandbox_id.clone(),
            record.config.metadata.name.clone(),
            record.config.metadata.attempt,
        );
        let mut names = lock(&self.names);
        if names.get(&key) == Some(&record.id) {
            names.remove(&key);
        }
        drop(names);
        self.publish(EventKind::Deleted, &record);
        tracing::info!(container_id = %record.id, "container removed");
        Ok(())
    }

    /// Refuses resources this node cannot apply (CPUs it lacks, unified keys of a missing
    /// controller, swap without swap accounting), naming the CRI field.
    async fn check_resources(&self, resources: &super::config::ContainerResources) -> Result<()> {
        let linux = super::spec::linux_resources(resources).map_err(Error::from)?;
        let cgroups = self.sandboxes.cgroups().clone();
        tokio::task::spawn_blocking(move || cgroups.check_resources(&linux))
            .await
            .map_err(|e| Error::internal("cgroup check task", e))?
            .map_err(Error::from)
    }

    /// UpdateContainerResources: written to the live cgroup, and kept in the record.
    pub async fn update_resources(
        &self,
        id: &str,
        resources: super::config::ContainerResources,
    ) -> Result<()> {
        let container = self.get(id)?;
        let _op = container.op.lock().await;
        let record = container.record();
        if record.state == ContainerState::Exited {
            return Err(Error::failed_precondition(format!(
                "container {} has exited",
                record.id
            )));
        }
        self.check_resources(&resources).await?;
        let linux = super::spec::linux_resources(&resources).map_err(Error::from)?;
        let cgroups = self.sandboxes.cgroups().clone();
        let path = record.cgroup_path.clone();
        tokio::task::spawn_blocking(move || cgroups.apply_resources(&path, &linux))
            .await
            .map_err(|e| Error::internal("cgroup task", e))?
            .map_err(Error::from)?;
        let record = container.update(|r| r.config.resources = resources);
        self.persist(&record).await
    }

    /// ReopenContainerLog: the shim reopens the log file the kubelet rotated.
    pub async fn reopen_log(&self, id: &str) -> Result<()> {
        let record = self.status(id)?;
        if record.state != ContainerState::Running {
            return Err(Error::failed_precondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        let mut shim = self.sandboxes.shim(&record.sandbox_id).await?;
        shim.reopen_log(&record.id).await.map_err(Error::from)
    }

    /// ExecSync: runs `cmd` in the running container and returns its output and exit
    /// code; at `timeout` (zero: none) the command is killed and DeadlineExceeded returned.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<crate::shim::client::ExecSyncOutput> {
        if cmd.is_empty() {
            return Err(Error::invalid_argument("cmd is required"));
        }
        let record = self.status(id)?;
        if record.state != ContainerState::Running {
            return Err(Error::failed_precondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        let mut shim = self.sandboxes.shim(&record.sandbox_id).await?;
        let exec_id = hex::encode(rand::random::<[u8; 8]>());
        let output = shim
            .exec_sync(&record.id, &exec_id, cmd, timeout)
            .await
            .map_err(|e| Error::from(e).context("exec in the container"))?;
        if output.timed_out {
            return Err(Error::new(
                crate::ErrorKind::DeadlineExceeded,
                format!(
                    "command timed out after {}s in container {}",
                    timeout.as_secs(),
                    record.id
                ),
            ));
        }
        check_exec_output(&output)?;
        Ok(output)
    }

    /// Every container of a pod stopped at once, as StopContainer with no grace period
    /// would (StopPodSandbox): each one's exit is recorded and nothing of it runs after.
    /// A container that will not die does not keep the others running: the first error
    /// is returned after all were tried.
    pub async fn stop_all_of(&self, sandbox_id: &str) -> Result<()> {
        let mut first_error = None;
        for record in self.containers_of(sandbox_id) {
            if let Err(e) = self.stop(&record.id, Duration::ZERO).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Every container of a pod removed (RemovePodSandbox).
    pub async fn remove_all_of(&self, sandbox_id: &str) -> Result<()> {
        for record in self.containers_of(sandbox_id) {
            self.remove(&record.id).await?;
        }
        Ok(())
    }

    /// Loads every record; rolls back creations a crash interrupted.
    pub async fn recover(&self) -> Result<()> {
        let dir = self.config.root.join("containers");
        let records: Vec<ContainerRecord> =
            persist::load_records(&dir, RECORD_FILE, "container")
                .map_err(|e| Error::internal(format!("reading {}", dir.display()), e))?;
        for record in records {
            if record.state == ContainerState::Creating
                || self.sandboxes.get(&record.sandbox_id).is_err()
            {
                tracing::warn!(container_id = %record.id, "removing a container whose creation was interrupted or whose pod is gone");
                let undo = vec![
                    Undo::RemoveDir(self.record_dir(&record.id)),
                    Undo::RemoveDir(self.state_dir(&record.id)),
                    Undo::RemoveCgroup(record.cgroup_path.clone()),
                    Undo::DeleteProcess(record.id.clone()),
                ];
                self.rollback(&record.sandbox_id, undo).await;
                continue;
            }
            lock(&self.names).insert(
                (
                    record.sandbox_id.clone(),
                    record.config.metadata.name.clone(),
                    record.config.metadata.attempt,
                ),
                record.id.clone(),
            );
            let container = Container::new(record);
            self.reconcile_recovered(&container).await;
            let record = container.record();
            tracing::info!(container_id = %record.id, state = ?record.state, "container recovered");
            self.containers
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(record.id.clone(), container);
        }
        Ok(())
    }
}

impl ContainerManager {
    /// The container's writable layer (overlay upper dir), for its disk usage.
    pub fn writable_dir(&self, id: &str) -> PathBuf {
        self.record_dir(id).join("upper")
    }
}

#[cfg(test)]
mod exec_output_tests {
    use super::*;
    use crate::shim::client::ExecSyncOutput;

    fn output(stdout: usize, stderr: usize) -> ExecSyncOutput {
        ExecSyncOutput {
            stdout: vec![b'o'; stdout],
            stderr: vec![b'e'; stderr],
            ..Default::default()
        }
    }

    #[test]
    fn exec_output_over_the_limit_is_refused_not_cut() {
        let limit = crate::shim::EXEC_SYNC_OUTPUT_LIMIT;
        assert!(check_exec_output(&output(15 << 20, 0)).is_ok());
        assert!(check_exec_output(&output(limit - 4, 4)).is_ok());
        let both = check_exec_output(&output(limit, 1)).unwrap_err();
        assert_eq!(both.kind(), ErrorKind::ResourceExhausted);
        assert!(
            both.to_string()
                .contains(&format!("wrote {} bytes", limit + 1)),
            "{both}"
        );
        // A shim that cut a stream: refused even though what came fits.
        let mut cut = output(10, 0);
        cut.stdout_truncated = true;
        let err = check_exec_output(&cut).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
        assert!(err.to_string().contains("more than"), "{err}");
    }
}
