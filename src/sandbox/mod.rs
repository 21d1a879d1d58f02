//! Pod sandbox lifecycle: a pinned network namespace set up by CNI, the pod cgroup, and the
//! pod's shim, which runs the pause process holding the pod's IPC/UTS (and PID) namespaces.
//!
//! The records, names, rollback and state moves go through the lifecycle core
//! (`crate::lifecycle`); the state machine is drawn in `state.rs`. This folder keeps what
//! is the pod's own: `run.rs` (creation and its undo steps), `stop.rs` (stop and remove),
//! `recover.rs` (bringing pods back after a restart), `shim_watch.rs` (shim deaths).
//!
//! Owns pod records, pod files, netns pins, CNI use and the pod's shim process. May call
//! `cni`, `linux`, `shim` (client, command line), `persist`, `lifecycle` and `events`
//! (through the publisher handle the composition root gives it); never `container` or `cri`.

pub mod podfiles;
mod record;
mod recover;
mod resources;
mod run;
mod shim_events;
mod shim_watch;
pub mod spec;
mod state;
mod stop;
pub mod sysctl;

use std::path::PathBuf;
use std::sync::Arc;

use crate::cni::CniManager;
use crate::config::{CgroupDriver, Config};
use crate::error::{Error, Result};
use crate::events::{EventKind, SandboxPublisher};
use crate::lifecycle::{Dirs, Filter, Registry};
use crate::linux::cgroup::Cgroups;
use crate::linux::systemd::{PodUnits, SystemdDriver};
use crate::shim::ShimClient;
use crate::store::lock;
pub use record::{NetworkRecord, Sandbox, SandboxExt, SandboxRecord};
pub use shim_events::{ContainerExitSink, ShimNews};
pub use spec::{NamespaceMode, NamespaceOptions, PodMetadata, PodSpec, PortMapping, Protocol};
pub use state::SandboxState;

/// How long to wait for a killed cgroup to empty.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

struct SystemdPods {
    driver: Arc<SystemdDriver>,
    default_slice: String,
}

/// The cgroup of a pod's shim: a scope in the pod's slice with the systemd driver, else
/// `shim-<id>` below the pod cgroup. Never berth's own cgroup (or its service's), so that
/// stopping berth cannot take a pod's shim with it.
pub fn shim_cgroup(record_pod_cgroup: &str, units: Option<&PodUnits>, id: &str) -> String {
    match units {
        Some(units) => units.scope_path(&format!("shim-{id}")),
        None => format!("{}/shim-{id}", record_pod_cgroup.trim_end_matches('/')),
    }
}

/// Filter of ListPodSandbox.
pub type SandboxFilter = Filter<SandboxState>;

pub struct SandboxManager {
    config: Arc<Config>,
    cni: CniManager,
    cgroups: Cgroups,
    /// With the systemd cgroup driver: the units, and the slice of pods without a parent.
    systemd: Option<SystemdPods>,
    records: Registry<SandboxRecord, SandboxExt>,
    /// Where the exits the shims push for containers, and their deaths, go (see
    /// shim_events.rs).
    exit_sink: std::sync::OnceLock<ContainerExitSink>,
}

impl SandboxManager {
    /// `events` is where sandbox transitions are published (the composition root's bus).
    pub fn new(
        config: Arc<Config>,
        driver: CgroupDriver,
        events: Arc<dyn SandboxPublisher<(SandboxRecord, SandboxState)>>,
    ) -> Result<SandboxManager> {
        let cni = CniManager::new(config.cni.conf_dir.clone(), config.cni.bin_dirs.clone());
        let cgroups = Cgroups::detect()?;
        let systemd = match driver {
            CgroupDriver::Cgroupfs => None,
            CgroupDriver::Systemd => Some(SystemdPods {
                driver: Arc::new(SystemdDriver::new(
                    cgroups.clone(),
                    config.state.display().to_string(),
                )),
                default_slice: crate::config::default_pod_slice(&config)?,
            }),
        };
        let dirs = Dirs::new::<SandboxRecord>(&config.root, &config.state);
        // Each event carries the pod's state after it.
        let publish = move |kind: EventKind, record: &SandboxRecord| {
            let state = match kind {
                EventKind::Created | EventKind::Started => SandboxState::Ready,
                EventKind::Stopped | EventKind::Deleted => SandboxState::NotReady,
            };
            events.publish_sandbox(kind, &record.id, &|| (record.clone(), state));
        };
        Ok(SandboxManager {
            config,
            cni,
            cgroups,
            systemd,
            records: Registry::new(dirs, publish),
            exit_sink: std::sync::OnceLock::new(),
        })
    }

    pub fn cni(&self) -> &CniManager {
        &self.cni
    }

    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }

    /// The systemd driver, when it is the one in use.
    pub fn systemd(&self) -> Option<&Arc<SystemdDriver>> {
        self.systemd.as_ref().map(|s| &s.driver)
    }

    /// With the systemd driver, makes process `pid` (in cgroup `path`) the scope of the
    /// pod's pause, shim or container `id` in the pod's slice; nothing with cgroupfs.
    pub async fn start_scope(
        &self,
        units: Option<&PodUnits>,
        kind: crate::linux::systemd::UnitKind,
        id: &str,
        pid: u32,
        path: &str,
        resources: Option<&oci_spec::runtime::LinuxResources>,
    ) -> Result<()> {
        let (Some(driver), Some(units)) = (self.systemd(), units) else {
            return Ok(());
        };
        let shim = kind == crate::linux::systemd::UnitKind::Shim;
        let scope = units.scope(&if shim {
            format!("shim-{id}")
        } else {
            id.to_string()
        });
        let started = driver.start_scope(&scope, &units.slice, kind, id, pid, path, resources);
        started
            .await
            .map_err(|e| e.context(format!("starting {scope}")))
    }

    /// Moves the pod's shim (`pid`) into [`shim_cgroup`], before it starts the pause.
    async fn move_shim(
        &self,
        id: &str,
        pod_cgroup: &str,
        units: Option<&PodUnits>,
        pid: u32,
    ) -> Result<()> {
        let path = shim_cgroup(pod_cgroup, units, id);
        if self.systemd().is_some() && units.is_some() {
            let kind = crate::linux::systemd::UnitKind::Shim;
            return self.start_scope(units, kind, id, pid, &path, None).await;
        }
        let cgroups = self.cgroups.clone();
        crate::error::blocking("cgroup task", move || {
            cgroups.create(&path)?;
            cgroups.add_process(&path, pid as i32)
        })
        .await
    }

    /// Where a new pod's cgroups go, written into its `record`: the pod cgroup, whether
    /// berth makes it, the pause cgroup, and (systemd driver) the units. A `cgroup_parent`
    /// the driver cannot take is InvalidArgument naming the field.
    fn place_cgroups(&self, record: &mut SandboxRecord) -> Result<()> {
        let (id, parent) = (record.id.clone(), record.spec.cgroup_parent.clone());
        record.owns_pod_cgroup = parent.is_empty();
        let Some(systemd) = &self.systemd else {
            if !parent.is_empty() {
                crate::linux::cgroup::relative_path(&parent).map_err(|_| {
                    Error::invalid_argument(format!(
                        "linux.cgroup_parent: {parent:?} is not a cgroup path (the cgroupfs driver is in use)"
                    ))
                })?;
            }
            let default = self.config.default_cgroup_parent.trim_end_matches('/');
            let pod = if parent.is_empty() {
                format!("{default}/{id}")
            } else {
                parent
            };
            record.pause_cgroup = format!("{}/{id}", pod.trim_end_matches('/'));
            record.pod_cgroup = pod;
            return Ok(());
        };
        let units = if parent.is_empty() {
            PodUnits::owned(&systemd.default_slice, &id)?
        } else {
            PodUnits::from_parent("linux.cgroup_parent", &parent)?
        };
        (record.pod_cgroup, record.pause_cgroup) =
            (units.slice_path.clone(), units.scope_path(&id));
        record.units = Some(units);
        Ok(())
    }

    /// Holds the record and the pod files (hostname, hosts, resolv.conf).
    pub fn record_dir(&self, id: &str) -> PathBuf {
        self.records.dirs().record_dir(id)
    }

    /// The shim's own state (its exit files are in `exits/`).
    pub fn shim_state_dir(&self, id: &str) -> PathBuf {
        self.records.dirs().state_dir(id).join("shim")
    }

    /// The pod's shim, connected (again, after a daemon restart) when needed.
    pub async fn shim(&self, id: &str) -> Result<ShimClient> {
        let sb = self.get(id)?;
        if let Some(shim) = lock(&sb.ext.shim).clone() {
            return Ok(shim);
        }
        let socket = sb.record().shim_socket;
        let shim = crate::shim::connect(&socket).await.map_err(|e| {
            Error::from(e).context(format!("the shim of pod sandbox {id} is not reachable"))
        })?;
        *lock(&sb.ext.shim) = Some(shim.clone());
        Ok(shim)
    }

    /// Finds a sandbox by full id or unique prefix.
    pub fn get(&self, id: &str) -> Result<Arc<Sandbox>> {
        self.records.get(id)
    }

    /// The record, and the state it reads as (see `SandboxRecord::reads_as`).
    pub fn status(&self, id: &str) -> Result<(SandboxRecord, SandboxState)> {
        self.records.status(id)
    }

    /// The record of a Ready pod (FailedPrecondition saying its state else).
    pub fn ready(&self, id: &str, needs: &str) -> Result<SandboxRecord> {
        self.get(id)?.require(|s| s == SandboxState::Ready, needs)
    }

    pub fn list(&self, filter: &SandboxFilter) -> Vec<(SandboxRecord, SandboxState)> {
        self.records.list(filter)
    }
}
