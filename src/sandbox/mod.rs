//! Pod sandbox lifecycle: a pinned network namespace set up by CNI, the pod cgroup, and the
//! pod's shim, which runs the pause process holding the pod's IPC/UTS (and PID) namespaces.
//!
//! ```text
//!            run ok                 stop                  remove
//! Creating ─────────▶ Ready ────────────────▶ NotReady ─────────────▶ (gone)
//!    │ any step fails                 ▲ pause died / shim lost
//!    └──────────▶ rolled back (gone)  └── (noticed on status, list, recovery)
//! ```
//! Records are written as Creating before any resource is taken, so recovery can roll back
//! what a crash interrupted; every step of a run pushes its undo.
//!
//! Owns pod records, pod files, netns pins, CNI use and the pod's shim process. May call
//! `cni`, `linux`, `shim` (client, command line), `persist` and `events` (through the
//! publisher handle the composition root gives it); never `container` or `cri`.

pub mod podfiles;
mod shim_events;
mod shim_watch;
pub mod spec;
pub mod sysctl;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cni::{Attachment, CniManager, CniResult, NetworkConfigList};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{EventKind, SandboxPublisher};
use crate::linux::cgroup::Cgroups;
use crate::linux::netns;
use crate::persist;
use crate::shim::{PauseSpec, ShimClient, SpawnOptions};
use crate::store::lock;
pub use shim_events::ContainerExitSink;
pub use spec::{NamespaceMode, NamespaceOptions, PodMetadata, PodSpec, PortMapping, Protocol};

const RECORD_VERSION: u32 = 1;
const RECORD_FILE: &str = "sandbox.json";
/// How long to wait for a killed cgroup to empty.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Creating,
    Ready,
    NotReady,
}

/// What CNI was asked and answered, kept so that DEL uses the very same config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub config: NetworkConfigList,
    pub result: Option<CniResult>,
    pub torn_down: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub version: u32,
    pub id: String,
    pub spec: PodSpec,
    pub state: SandboxState,
    /// The hostname the pod got (the request's, else the node's).
    #[serde(default)]
    pub hostname: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub netns: Option<PathBuf>,
    pub network: Option<NetworkRecord>,
    /// The pod-level cgroup (the kubelet's `cgroup_parent`, or one berth made).
    pub pod_cgroup: String,
    pub owns_pod_cgroup: bool,
    pub pause_cgroup: String,
    pub shim_socket: PathBuf,
    pub shim_pid: Option<u32>,
    pub pause_pid: Option<u32>,
    /// Start time of the pause process (clock ticks since boot), to tell it from a reused pid.
    pub pause_start_time: Option<u64>,
}

impl SandboxRecord {
    pub fn ips(&self) -> Vec<IpAddr> {
        self.network
            .as_ref()
            .and_then(|n| n.result.as_ref())
            .map(|r| r.ips.clone())
            .unwrap_or_default()
    }

    pub fn metadata(&self) -> Option<&PodMetadata> {
        self.spec.metadata.as_ref()
    }
}

pub struct Sandbox {
    pub id: String,
    record: Mutex<SandboxRecord>,
    /// Serializes stop/remove (and later container changes) of this sandbox.
    op: tokio::sync::Mutex<()>,
    shim: Mutex<Option<ShimClient>>,
}

impl Sandbox {
    fn new(record: SandboxRecord, shim: Option<ShimClient>) -> Arc<Sandbox> {
        Arc::new(Sandbox {
            id: record.id.clone(),
            record: Mutex::new(record),
            op: tokio::sync::Mutex::new(()),
            shim: Mutex::new(shim),
        })
    }

    pub fn record(&self) -> SandboxRecord {
        lock(&self.record).clone()
    }

    fn update(&self, f: impl FnOnce(&mut SandboxRecord)) -> SandboxRecord {
        let mut guard = lock(&self.record);
        f(&mut guard);
        guard.clone()
    }

    fn shim_client(&self) -> Option<ShimClient> {
        lock(&self.shim).clone()
    }
}

#[derive(Clone)]
enum NameEntry {
    Pending(watch::Receiver<Option<std::result::Result<String, (ErrorKind, String)>>>),
    Bound(String),
}

/// Filter of ListPodSandbox.
#[derive(Debug, Default, Clone)]
pub struct SandboxFilter {
    pub id: Option<String>,
    pub state: Option<SandboxState>,
    pub labels: HashMap<String, String>,
}

/// How many shim deaths may wait for their subscriber before it has to resynchronize.
const SHIM_LOST_BACKLOG: usize = 256;

pub struct SandboxManager {
    config: Arc<Config>,
    cni: CniManager,
    cgroups: Cgroups,
    sandboxes: RwLock<HashMap<String, Arc<Sandbox>>>,
    names: Mutex<HashMap<String, NameEntry>>,
    /// Where sandbox transitions are published (the composition root's event bus).
    events: Arc<dyn SandboxPublisher<(SandboxRecord, SandboxState)>>,
    /// Pods whose shim died unexpectedly (see shim_watch.rs).
    shim_lost: tokio::sync::broadcast::Sender<String>,
    /// Where the exits the shims push for containers go (see shim_events.rs).
    exit_sink: std::sync::OnceLock<ContainerExitSink>,
}

pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

fn new_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::internal(what, e)
}

/// Undo steps of a half-done RunPodSandbox, run in reverse on failure.
enum Undo {
    RemoveDir(PathBuf),
    UnpinNetns(PathBuf),
    CniDel {
        network: NetworkConfigList,
        attachment: Attachment,
        result: Option<serde_json::Value>,
    },
    RemoveCgroup(String),
    ShutdownShim(ShimClient),
}

impl SandboxManager {
    pub fn new(
        config: Arc<Config>,
        events: Arc<dyn SandboxPublisher<(SandboxRecord, SandboxState)>>,
    ) -> Result<SandboxManager> {
        let cni = CniManager::new(config.cni.conf_dir.clone(), config.cni.bin_dirs.clone());
        let cgroups = Cgroups::detect()?;
        Ok(SandboxManager {
            config,
            cni,
            cgroups,
            sandboxes: RwLock::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            events,
            shim_lost: tokio::sync::broadcast::channel(SHIM_LOST_BACKLOG).0,
            exit_sink: std::sync::OnceLock::new(),
        })
    }

    pub fn cni(&self) -> &CniManager {
        &self.cni
    }

    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }

    /// Holds the record and the pod files (hostname, hosts, resolv.conf).
    pub fn record_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("sandboxes").join(id)
    }

    /// The shim's own state (its exit files are in `exits/`).
    pub fn shim_state_dir(&self, id: &str) -> PathBuf {
        self.state_dir(id).join("shim")
    }

    /// The pod's shim, connected (again, after a daemon restart) when needed.
    pub async fn shim(&self, id: &str) -> Result<ShimClient> {
        let sb = self.get(id)?;
        if let Some(shim) = sb.shim_client() {
            return Ok(shim);
        }
        let socket = sb.record().shim_socket;
        let shim = crate::shim::connect(&socket).await.map_err(|e| {
            Error::from(e).context(format!("the shim of pod sandbox {id} is not reachable"))
        })?;
        *lock(&sb.shim) = Some(shim.clone());
        Ok(shim)
    }

    fn state_dir(&self, id: &str) -> PathBuf {
        self.config.state.join("sandboxes").join(id)
    }

    fn netns_path(&self, id: &str) -> PathBuf {
        self.config.state.join("netns").join(id)
    }

    /// Short, so `<state>/s/<16 hex>.sock` stays under the 107-byte socket path limit.
    fn shim_socket(&self, id: &str) -> PathBuf {
        self.config
            .state
            .join("s")
            .join(format!("{}.sock", &id[..16]))
    }

    async fn persist(&self, record: &SandboxRecord) -> Result<()> {
        let path = self.record_dir(&record.id).join(RECORD_FILE);
        persist::save_json(&path, record)
            .await
            .map_err(io_err(format!("writing {}", path.display())))
    }

    /// Finds a sandbox by full id or unique prefix.
    pub fn get(&self, id: &str) -> Result<Arc<Sandbox>> {
        crate::store::lookup(&self.sandboxes, id, "pod sandbox", "pod_sandbox_id")
    }

    fn all(&self) -> Vec<Arc<Sandbox>> {
        crate::store::values(&self.sandboxes)
    }

    /// RunPodSandbox. The work runs in its own task so that a client that gives up does
    /// not cut it short, and its retry with the same metadata gets the same sandbox.
    pub async fn run(self: &Arc<Self>, spec: PodSpec) -> Result<String> {
        let key = spec.validate()?.reservation_key();
        let host_net = spec.namespaces.host_network();
        let host_ipc = spec.namespaces.host_ipc();
        let mut spec = spec;
        spec.sysctls = sysctl::validate_sysctls(&spec.sysctls, host_net, host_ipc)?;
        if !spec.hostname.is_empty() {
            podfiles::validate_hostname(&spec.hostname)?;
        }

        let mut rx = {
            let mut names = lock(&self.names);
            match names.get(&key).cloned() {
                Some(NameEntry::Bound(id)) => {
                    let ready = self
                        .get(&id)
                        .map(|sb| self.effective_state(&sb.record()) == SandboxState::Ready)
                        .unwrap_or(false);
                    return if ready {
                        Ok(id)
                    } else {
                        Err(Error::already_exists(format!(
                            "pod sandbox name {key} is reserved by {id}; remove it first"
                        )))
                    };
                }
                Some(NameEntry::Pending(rx)) => rx,
                None => {
                    let (tx, rx) = watch::channel(None);
                    names.insert(key.clone(), NameEntry::Pending(rx.clone()));
                    let this = self.clone();
                    tokio::spawn(async move {
                        let result = this.create(spec).await;
                        {
                            let mut names = lock(&this.names);
                            match &result {
                                Ok(id) => names.insert(key, NameEntry::Bound(id.clone())),
                                Err(_) => names.remove(&key),
                            };
                        }
                        let _ = tx.send(Some(result.map_err(|e| (e.kind(), e.to_string()))));
                    });
                    rx
                }
            }
        };
        loop {
            if let Some(result) = rx.borrow_and_update().clone() {
                return result.map_err(|(kind, message)| Error::new(kind, message));
            }
            rx.changed()
                .await
                .map_err(|e| Error::internal("run pod sandbox task ended", e))?;
        }
    }

    async fn create(self: &Arc<Self>, spec: PodSpec) -> Result<String> {
        let id = new_id();
        let mut undo = Vec::new();
        match self.create_steps(&id, spec, &mut undo).await {
            Ok(()) => {
                self.watch_shim(&id);
                Ok(id)
            }
            Err(err) => {
                tracing::warn!(sandbox_id = %id, error = %err, "run pod sandbox failed; rolling back");
                self.rollback(undo).await;
                self.sandboxes
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                Err(err)
            }
        }
    }

    async fn create_steps(&self, id: &str, spec: PodSpec, undo: &mut Vec<Undo>) -> Result<()> {
        let started = std::time::Instant::now();
        let record_dir = self.record_dir(id);
        let state_dir = self.state_dir(id);
        for dir in [&record_dir, &state_dir] {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
            undo.push(Undo::RemoveDir(dir.clone()));
        }
        let host_network = spec.namespaces.host_network();
        let metadata = spec.validate()?.clone();
        let (pod_cgroup, owns_pod_cgroup) = if spec.cgroup_parent.is_empty() {
            (
                format!(
                    "{}/{}",
                    self.config.default_cgroup_parent.trim_end_matches('/'),
                    id
                ),
                true,
            )
        } else {
            (spec.cgroup_parent.clone(), false)
        };
        let pause_cgroup = format!("{}/{}", pod_cgroup.trim_end_matches('/'), id);
        // Like containerd: a pod that names no hostname gets the node's.
        let hostname = if spec.hostname.is_empty() {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().to_string())
                .map_err(|e| Error::internal("reading the node's hostname", e))?
        } else {
            spec.hostname.clone()
        };
        let netns = (!host_network).then(|| self.netns_path(id));
        let record = SandboxRecord {
            version: RECORD_VERSION,
            id: id.to_string(),
            spec: spec.clone(),
            state: SandboxState::Creating,
            hostname: hostname.clone(),
            created_at: now_nanos(),
            netns: netns.clone(),
            network: None,
            pod_cgroup: pod_cgroup.clone(),
            owns_pod_cgroup,
            pause_cgroup: pause_cgroup.clone(),
            shim_socket: self.shim_socket(id),
            shim_pid: None,
            pause_pid: None,
            pause_start_time: None,
        };
        // Written before any resource is taken: recovery rolls back a Creating record.
        self.persist(&record).await?;
        crate::fault::point("sandbox.run.after_record");
        let sandbox = Sandbox::new(record, None);
        self.sandboxes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), sandbox.clone());

        let host_files = read_host_files();
        let pod_files = podfiles::PodFiles::render(
            &hostname,
            &[],
            host_network,
            &spec.dns,
            &host_files.hosts,
            &host_files.resolv_conf,
        )?;
        let files_dir = record_dir.clone();
        persist::off_executor(move || pod_files.write_to(&files_dir))
            .await
            .map_err(io_err("writing the pod's files"))?;

        if let Some(path) = &netns {
            let pin_path = path.clone();
            tokio::task::spawn_blocking(move || netns::pin_netns(&pin_path))
                .await
                .map_err(|e| Error::internal("netns task", e))?
                .map_err(io_err(format!(
                    "pinning network namespace {}",
                    path.display()
                )))?;
            undo.push(Undo::UnpinNetns(path.clone()));
            crate::fault::point("sandbox.run.after_netns_pin");
        }

        // The network and the processes only meet at the netns, which exists now.
        let network_setup = async {
            let Some(path) = &netns else {
                return Ok::<_, Error>(None);
            };
            let network = self.cni.load()?;
            sandbox.update(|r| {
                r.network = Some(NetworkRecord {
                    config: network.clone(),
                    result: None,
                    torn_down: false,
                })
            });
            // The config is on disk before ADD, so a crash mid-ADD can replay DEL.
            self.persist(&sandbox.record()).await?;
            let attachment = attachment(id, path, &metadata, &spec.port_mappings);
            let result = self.cni.add(&network, &attachment).await;
            crate::fault::point("sandbox.run.after_cni_add");
            Ok(Some((network, attachment, result)))
        };
        let process_setup = async {
            let cgroups = self.cgroups.clone();
            let cg = pause_cgroup.clone();
            let created = tokio::task::spawn_blocking(move || cgroups.create(&cg))
                .await
                .map_err(|e| Error::internal("cgroup task", e))
                .and_then(|r| r.map_err(Error::from));
            if let Err(e) = created {
                return Err((e, None));
            }
            let mut options =
                SpawnOptions::new(id, &self.shim_socket(id), &self.shim_state_dir(id));
            options.log = Some(state_dir.join("shim.log"));
            options.log_level = Some(self.config.log_level.as_str().to_string());
            let shim = match crate::shim::spawn(options).await {
                Ok(s) => s,
                Err(e) => return Err((Error::from(e), None)),
            };
            crate::fault::point("sandbox.run.after_shim_start");
            let bundle = state_dir.join("pause");
            let sysctls = &spec.sysctls;
            let pause = PauseSpec {
                sandbox_id: id.to_string(),
                netns: netns.clone(),
                hostname: Some(hostname.clone()),
                cgroup_path: Some(pause_cgroup.clone()),
                sysctls: sysctls.clone(),
                // The pause owns a PID namespace unless the pod uses the host's.
                share_pid_ns: !spec.namespaces.host_pid(),
                host_ipc: spec.namespaces.host_ipc(),
                host_uts: false,
                // What the kubelet asks for pause; init clamps it to what it may set.
                oom_score_adj: Some(-998),
            };
            let created = async {
                let (userns, pause_bundle) = (spec.userns.clone(), bundle.clone());
                persist::off_executor(move || match &userns {
                    Some(userns) => userns.write_pause_bundle(&pause_bundle, &pause),
                    None => crate::shim::write_pause_bundle(&pause_bundle, &pause),
                })
                .await
                .map_err(io_err("writing the pause bundle"))?;
                shim.clone()
                    .create(
                        id,
                        &bundle,
                        crate::shim::CreateOptions {
                            start: true,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(Error::from)
            }
            .await;
            match created {
                Ok(pid) => Ok((shim, pid)),
                Err(e) => Err((e, Some(shim))),
            }
        };
        let (network, processes) = tokio::join!(network_setup, process_setup);
        undo.push(Undo::RemoveCgroup(pause_cgroup.clone()));
        if owns_pod_cgroup {
            undo.push(Undo::RemoveCgroup(pod_cgroup.clone()));
        }
        let shim_pid = match processes {
            Ok((shim, pid)) => {
                let shim_pid = shim.spawned_pid();
                undo.push(Undo::ShutdownShim(shim.clone()));
                *lock(&sandbox.shim) = Some(shim);
                Some((shim_pid, pid))
            }
            Err((err, shim)) => {
                if let Some(shim) = shim {
                    undo.push(Undo::ShutdownShim(shim));
                }
                // Still undo a network that may have come up meanwhile.
                if let Ok(Some((network, attachment, Ok(result)))) = network {
                    undo.push(Undo::CniDel {
                        network,
                        attachment,
                        result: Some(result.raw),
                    });
                }
                return Err(err.context("starting the pod's pause process"));
            }
        };
        let ips = match network? {
            Some((network, attachment, result)) => match result {
                Ok(result) => {
                    let ips = result.ips.clone();
                    undo.push(Undo::CniDel {
                        network,
                        attachment,
                        result: Some(result.raw.clone()),
                    });
                    sandbox.update(|r| {
                        if let Some(n) = r.network.as_mut() {
                            n.result = Some(result)
                        }
                    });
                    ips
                }
                Err(err) => {
                    // A failed ADD was already undone by the CNI code (DEL of the whole list).
                    return Err(Error::from(err).context("setting up the pod network"));
                }
            },
            None => Vec::new(),
        };
        if !host_network {
            let hosts = podfiles::render_hosts(&hostname, &ips, false, &host_files.hosts)?;
            persist::save_file(&record_dir.join("hosts"), hosts.into_bytes())
                .await
                .map_err(io_err("writing the pod's hosts file"))?;
        }
        let (shim_pid, pause_pid) = shim_pid.unwrap_or_default();
        crate::fault::point("sandbox.run.after_pause_create");
        let record = sandbox.update(|r| {
            r.shim_pid = Some(shim_pid);
            r.pause_pid = Some(pause_pid);
            r.pause_start_time = process_start_time(pause_pid);
            r.state = SandboxState::Ready;
        });
        self.persist(&record).await?;
        let ready = || (record.clone(), SandboxState::Ready);
        self.events
            .publish_sandbox(EventKind::Created, &record.id, &ready);
        self.events
            .publish_sandbox(EventKind::Started, &record.id, &ready);
        tracing::info!(
            sandbox_id = %id,
            pod = %metadata.name,
            namespace = %metadata.namespace,
            pause_pid,
            ip = ?ips.first(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "pod sandbox ready"
        );
        Ok(())
    }

    async fn rollback(&self, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            match step {
                Undo::RemoveDir(dir) => {
                    if let Err(e) = persist::remove_dir_all_if_exists(&dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "rollback: removing dir");
                    }
                }
                Undo::UnpinNetns(path) => {
                    let p = path.clone();
                    let r = tokio::task::spawn_blocking(move || netns::unpin_netns(&p)).await;
                    if !matches!(r, Ok(Ok(()))) {
                        tracing::warn!(netns = %path.display(), "rollback: unpinning netns failed");
                    }
                }
                Undo::CniDel {
                    network,
                    attachment,
                    result,
                } => {
                    if let Err(e) = self.cni.del(&network, &attachment, result.as_ref()).await {
                        tracing::warn!(error = %e, "rollback: CNI DEL failed");
                    }
                }
                Undo::RemoveCgroup(path) => {
                    let cgroups = self.cgroups.clone();
                    let p = path.clone();
                    let r = tokio::task::spawn_blocking(move || {
                        cgroups.kill_all(&p, KILL_WAIT)?;
                        cgroups.remove(&p)
                    })
                    .await;
                    if !matches!(r, Ok(Ok(()))) {
                        tracing::warn!(cgroup = %path, "rollback: removing cgroup failed");
                    }
                }
                Undo::ShutdownShim(shim) => {
                    if let Err(e) = shim.clone().shutdown().await {
                        tracing::warn!(error = %e, "rollback: shim shutdown failed");
                    }
                }
            }
        }
    }

    /// Ready only while the pause process is the one we started.
    fn effective_state(&self, record: &SandboxRecord) -> SandboxState {
        if record.state == SandboxState::Ready {
            let alive = match (record.pause_pid, record.pause_start_time) {
                (Some(pid), Some(start)) => process_start_time(pid) == Some(start),
                (Some(pid), None) => process_start_time(pid).is_some(),
                _ => false,
            };
            if !alive {
                return SandboxState::NotReady;
            }
        }
        record.state
    }

    pub fn status(&self, id: &str) -> Result<(SandboxRecord, SandboxState)> {
        let sb = self.get(id)?;
        let record = sb.record();
        let state = self.effective_state(&record);
        Ok((record, state))
    }

    pub fn list(&self, filter: &SandboxFilter) -> Vec<(SandboxRecord, SandboxState)> {
        let mut out: Vec<_> = self
            .all()
            .into_iter()
            .map(|sb| sb.record())
            .filter(|r| r.state != SandboxState::Creating)
            .filter(|r| filter.id.as_ref().is_none_or(|id| r.id.starts_with(id)))
            .filter(|r| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| r.spec.labels.get(k) == Some(v))
            })
            .map(|r| {
                let state = self.effective_state(&r);
                (r, state)
            })
            .filter(|(_, s)| filter.state.is_none_or(|want| *s == want))
            .collect();
        out.sort_by_key(|(r, _)| r.created_at);
        out
    }

    /// StopPodSandbox: every process of the pod killed, the network torn down. Idempotent;
    /// an unknown id is success.
    pub async fn stop(&self, id: &str) -> Result<()> {
        if id.is_empty() {
            // Nothing to stop: a client cleaning up after a failed run sends an empty id.
            return Ok(());
        }
        let sb = match self.get(id) {
            Ok(sb) => sb,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = sb.op.lock().await;
        let record = sb.record();
        // Killing the processes and tearing down the network do not depend on each other.
        let (processes, network) = tokio::join!(
            self.stop_processes(&sb, &record),
            self.teardown_network(&sb, &record)
        );
        processes?;
        network?;
        let rec = sb.update(|r| r.state = SandboxState::NotReady);
        self.persist(&rec).await?;
        // Once per pod: a repeated StopPodSandbox is not a transition.
        if record.state == SandboxState::Ready {
            let not_ready = || (rec.clone(), SandboxState::NotReady);
            self.events
                .publish_sandbox(EventKind::Stopped, &rec.id, &not_ready);
        }
        tracing::info!(sandbox_id = %rec.id, "pod sandbox stopped");
        Ok(())
    }

    /// CNI DEL with the config and result recorded at ADD (once), then the netns unpinned.
    async fn teardown_network(&self, sb: &Sandbox, record: &SandboxRecord) -> Result<()> {
        if let (Some(network), Some(path), Some(metadata)) =
            (&record.network, &record.netns, record.metadata())
            && !network.torn_down
        {
            let attachment = attachment(&record.id, path, metadata, &record.spec.port_mappings);
            let prev = network.result.as_ref().map(|r| r.raw.clone());
            self.cni
                .del(&network.config, &attachment, prev.as_ref())
                .await
                .map_err(|e| Error::from(e).context("tearing down the pod network"))?;
            crate::fault::point("sandbox.stop.after_cni_del");
            let rec = sb.update(|r| {
                if let Some(n) = r.network.as_mut() {
                    n.torn_down = true
                }
            });
            self.persist(&rec).await?;
        }
        if let Some(path) = &record.netns {
            let p = path.clone();
            tokio::task::spawn_blocking(move || netns::unpin_netns(&p))
                .await
                .map_err(|e| Error::internal("netns task", e))?
                .map_err(io_err(format!("unpinning {}", path.display())))?;
        }
        Ok(())
    }

    async fn stop_processes(&self, sb: &Sandbox, record: &SandboxRecord) -> Result<()> {
        let shim = match sb.shim_client() {
            Some(s) => Some(s),
            None if record.shim_socket.exists() => {
                crate::shim::connect(&record.shim_socket).await.ok()
            }
            None => None,
        };
        if let Some(shim) = shim
            && let Err(e) = shim.clone().shutdown().await
        {
            tracing::warn!(sandbox_id = %record.id, error = %e, "shim shutdown failed; killing the pod cgroup");
        }
        *lock(&sb.shim) = None;
        // Whatever the shim could not reach (or if it is gone) dies with the cgroup.
        let cgroups = self.cgroups.clone();
        let cg = record.pod_cgroup.clone();
        let pause_cg = record.pause_cgroup.clone();
        let owns = record.owns_pod_cgroup;
        tokio::task::spawn_blocking(move || {
            if owns {
                cgroups.kill_all(&cg, KILL_WAIT)
            } else {
                cgroups.kill_all(&pause_cg, KILL_WAIT)
            }
        })
        .await
        .map_err(|e| Error::internal("cgroup task", e))??;
        if let Some(pid) = record.shim_pid {
            kill_if_same(pid, None);
        }
        crate::fault::point("sandbox.stop.after_processes_killed");
        Ok(())
    }

    /// RemovePodSandbox: stops it if needed, then removes every trace. Unknown id is success.
    pub async fn remove(&self, id: &str) -> Result<()> {
        if id.is_empty() {
            return Ok(());
        }
        let sb = match self.get(id) {
            Ok(sb) => sb,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop(&sb.id).await?;
        let _op = sb.op.lock().await;
        let record = sb.record();
        let cgroups = self.cgroups.clone();
        let pause_cg = record.pause_cgroup.clone();
        let pod_cg = record.owns_pod_cgroup.then(|| record.pod_cgroup.clone());
        tokio::task::spawn_blocking(move || {
            cgroups.remove(&pause_cg)?;
            if let Some(cg) = pod_cg {
                cgroups.remove(&cg)?;
            }
            Ok::<_, Error>(())
        })
        .await
        .map_err(|e| Error::internal("cgroup task", e))??;
        crate::fault::point("sandbox.remove.after_cgroups_removed");
        persist::remove_dir_all_if_exists(&self.state_dir(&record.id))
            .map_err(io_err("removing the sandbox state dir"))?;
        persist::remove_file_if_exists(&record.shim_socket)
            .map_err(io_err("removing the shim socket"))?;
        persist::remove_dir_all_if_exists(&self.record_dir(&record.id))
            .map_err(io_err("removing the sandbox record"))?;
        self.sandboxes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&record.id);
        if let Some(meta) = record.metadata() {
            let key = meta.reservation_key();
            let mut names = lock(&self.names);
            if matches!(names.get(&key), Some(NameEntry::Bound(b)) if *b == record.id) {
                names.remove(&key);
            }
        }
        let gone = || (record.clone(), SandboxState::NotReady);
        self.events
            .publish_sandbox(EventKind::Deleted, &record.id, &gone);
        tracing::info!(sandbox_id = %record.id, "pod sandbox removed");
        Ok(())
    }

    /// Loads every record; reconnects live shims; rolls back runs a crash interrupted.
    pub async fn recover(&self) -> Result<()> {
        let dir = self.config.root.join("sandboxes");
        let records: Vec<SandboxRecord> = persist::load_records(&dir, RECORD_FILE, "sandbox")
            .map_err(|e| Error::internal(format!("reading {}", dir.display()), e))?;
        for record in records {
            self.recover_one(record).await;
        }
        Ok(())
    }

    async fn recover_one(&self, mut record: SandboxRecord) {
        let id = record.id.clone();
        let shim = if record.state == SandboxState::NotReady {
            None
        } else {
            match crate::shim::connect(&record.shim_socket).await {
                Ok(shim) => match shim.clone().info().await {
                    Ok((sandbox_id, _)) if sandbox_id == id => Some(shim),
                    _ => None,
                },
                Err(_) => None,
            }
        };
        if record.state == SandboxState::Creating {
            tracing::warn!(sandbox_id = %id, "rolling back a pod sandbox whose creation was interrupted");
            let mut undo = vec![Undo::RemoveDir(self.record_dir(&id))];
            undo.push(Undo::RemoveDir(self.state_dir(&id)));
            if let Some(path) = &record.netns {
                undo.push(Undo::UnpinNetns(path.clone()));
            }
            if let (Some(network), Some(path), Some(meta)) =
                (&record.network, &record.netns, record.metadata())
            {
                undo.push(Undo::CniDel {
                    network: network.config.clone(),
                    attachment: attachment(&id, path, meta, &record.spec.port_mappings),
                    result: network.result.as_ref().map(|r| r.raw.clone()),
                });
            }
            undo.push(Undo::RemoveCgroup(record.pause_cgroup.clone()));
            if record.owns_pod_cgroup {
                undo.push(Undo::RemoveCgroup(record.pod_cgroup.clone()));
            }
            if let Some(shim) = shim {
                undo.push(Undo::ShutdownShim(shim));
            }
            self.rollback(undo).await;
            let _ = persist::remove_file_if_exists(&record.shim_socket);
            return;
        }
        if record.state == SandboxState::Ready && shim.is_none() {
            tracing::warn!(sandbox_id = %id, "shim unreachable after restart; pod is not ready");
            record.state = SandboxState::NotReady;
            let _ = self.persist(&record).await;
        }
        if let Some(meta) = record.metadata() {
            lock(&self.names).insert(meta.reservation_key(), NameEntry::Bound(id.clone()));
        }
        tracing::info!(sandbox_id = %id, state = ?record.state, "pod sandbox recovered");
        self.sandboxes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Sandbox::new(record, shim));
    }
}

fn attachment(id: &str, netns: &Path, metadata: &PodMetadata, ports: &[PortMapping]) -> Attachment {
    let mut attachment = Attachment::new(
        id,
        Some(netns.to_path_buf()),
        &metadata.namespace,
        &metadata.name,
        &metadata.uid,
    );
    // A mapping without a host port only documents the container port.
    attachment.port_mappings = ports.iter().filter(|p| p.host_port != 0).cloned().collect();
    attachment
}

struct HostFiles {
    hosts: String,
    resolv_conf: String,
}

fn read_host_files() -> HostFiles {
    HostFiles {
        hosts: std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    }
}

/// Field 22 of /proc/<pid>/stat: start time in clock ticks since boot.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let start = rest.split(' ').nth(19)?;
    let state = rest.split(' ').next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    start.parse().ok()
}

/// SIGKILLs `pid` when it still is the process that started at `start_time` (if given).
fn kill_if_same(pid: u32, start_time: Option<u64>) {
    let Some(now) = process_start_time(pid) else {
        return;
    };
    if start_time.is_some_and(|s| s != now) {
        return;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_known_and_stable() {
        let pid = std::process::id();
        let a = process_start_time(pid).unwrap();
        assert_eq!(process_start_time(pid), Some(a));
        assert_eq!(process_start_time(u32::MAX / 2), None);
    }

    #[test]
    fn record_round_trips_through_json() {
        let record = SandboxRecord {
            version: RECORD_VERSION,
            id: "a".repeat(64),
            spec: PodSpec::default(),
            state: SandboxState::Ready,
            hostname: "node".into(),
            created_at: 5,
            netns: Some("/run/berth/netns/x".into()),
            network: None,
            pod_cgroup: "/berth/x".into(),
            owns_pod_cgroup: true,
            pause_cgroup: "/berth/x/x".into(),
            shim_socket: "/run/berth/s/x.sock".into(),
            shim_pid: Some(3),
            pause_pid: Some(4),
            pause_start_time: Some(99),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"state\":\"ready\""));
        let back: SandboxRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.pause_start_time, Some(99));
        assert_eq!(back.state, SandboxState::Ready);
    }
}
