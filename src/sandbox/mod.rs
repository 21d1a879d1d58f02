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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cni::{Attachment, CniManager};
use crate::config::{CgroupDriver, Config};
use crate::error::{Error, Result};
use crate::events::SandboxPublisher;
use crate::lifecycle::Registry;
use crate::linux::cgroup::Cgroups;
use crate::linux::systemd::{PodUnits, SystemdDriver};
use crate::shim::ShimClient;
use crate::store::lock;
pub use record::{NetworkRecord, Sandbox, SandboxExt, SandboxRecord};
pub use shim_events::ContainerExitSink;
pub use spec::{NamespaceMode, NamespaceOptions, PodMetadata, PodSpec, PortMapping, Protocol};
pub use state::SandboxState;

/// How many shim deaths may wait for their subscriber before it has to resynchronize.
const SHIM_LOST_BACKLOG: usize = 256;
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

/// A new pod's cgroup layout (see `SandboxManager::pod_cgroups`).
struct PodCgroups {
    pod: String,
    owned: bool,
    pause: String,
    units: Option<PodUnits>,
}

/// Filter of ListPodSandbox.
#[derive(Debug, Default, Clone)]
pub struct SandboxFilter {
    pub id: Option<String>,
    pub state: Option<SandboxState>,
    pub labels: HashMap<String, String>,
}

pub struct SandboxManager {
    config: Arc<Config>,
    cni: CniManager,
    cgroups: Cgroups,
    /// With the systemd cgroup driver: the units, and the slice of pods without a parent.
    systemd: Option<SystemdPods>,
    records: Registry<SandboxRecord, SandboxExt>,
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
        let hooks = record::SandboxHooks {
            root: config.root.clone(),
            events,
        };
        Ok(SandboxManager {
            config,
            cni,
            cgroups,
            systemd,
            records: Registry::new(hooks),
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

    /// The systemd driver, when it is the one in use.
    pub fn systemd(&self) -> Option<&Arc<SystemdDriver>> {
        self.systemd.as_ref().map(|s| &s.driver)
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
        if let (Some(driver), Some(units)) = (self.systemd(), units) {
            let scope = units.scope(&format!("shim-{id}"));
            let kind = crate::linux::systemd::UnitKind::Shim;
            return driver
                .start_scope(&scope, &units.slice, kind, id, pid, &path, None)
                .await;
        }
        let cgroups = self.cgroups.clone();
        crate::error::blocking("cgroup task", move || {
            cgroups.create(&path)?;
            cgroups.add_process(&path, pid as i32)
        })
        .await
    }

    /// Where a new pod's cgroups go: the pod cgroup, whether berth makes it, the pause
    /// cgroup, and (systemd driver) the units. A `cgroup_parent` the driver cannot take
    /// is InvalidArgument naming the field.
    fn pod_cgroups(&self, id: &str, parent: &str) -> Result<PodCgroups> {
        let Some(systemd) = &self.systemd else {
            if !parent.is_empty() {
                crate::linux::cgroup::relative_path(parent).map_err(|_| {
                    Error::invalid_argument(format!(
                        "linux.cgroup_parent: {parent:?} is not a cgroup path (the cgroupfs driver is in use)"
                    ))
                })?;
            }
            let (pod, owned) = if parent.is_empty() {
                let default = self.config.default_cgroup_parent.trim_end_matches('/');
                (format!("{default}/{id}"), true)
            } else {
                (parent.to_string(), false)
            };
            let pause = format!("{}/{}", pod.trim_end_matches('/'), id);
            return Ok(PodCgroups {
                pod,
                owned,
                pause,
                units: None,
            });
        };
        let (units, owned) = if parent.is_empty() {
            (PodUnits::owned(&systemd.default_slice, id)?, true)
        } else {
            (PodUnits::from_parent("linux.cgroup_parent", parent)?, false)
        };
        Ok(PodCgroups {
            pod: units.slice_path.clone(),
            owned,
            pause: units.scope_path(id),
            units: Some(units),
        })
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
        if let Some(shim) = record::shim_client(&sb) {
            return Ok(shim);
        }
        let socket = sb.record().shim_socket;
        let shim = crate::shim::connect(&socket).await.map_err(|e| {
            Error::from(e).context(format!("the shim of pod sandbox {id} is not reachable"))
        })?;
        *lock(&sb.ext.shim) = Some(shim.clone());
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

    /// Finds a sandbox by full id or unique prefix.
    pub fn get(&self, id: &str) -> Result<Arc<Sandbox>> {
        self.records.get(id)
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
            .records
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
}
