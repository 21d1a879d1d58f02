//! The systemd cgroup driver: each pod in a slice, its pause and each container in a
//! transient scope (`Delegate=yes`, the process moved in by PID), limits carried by unit
//! properties, all over systemd's D-Bus API (`bus.rs`), never by running systemctl.
//!
//! How it meets `berth init`: init makes and joins the cgroup of the scope's path (the
//! slice exists by then, so that is one directory) and writes the limits as with
//! cgroupfs; once the shim reports the process created, the daemon starts the scope with
//! that PID, and systemd adopts the cgroup and owns its limits from then on. What systemd
//! has no property for (hugetlb, `unified` keys) is written by file after each start or
//! update, since systemd rewrites the memory files it manages.
//!
//! A leaf like the rest of `linux/`: it knows units, cgroups and resources, not pods.

pub mod bus;
pub mod names;
pub mod properties;
pub mod sweep;

use oci_spec::runtime::LinuxResources;

use crate::error::{Error, Result};
use crate::linux::cgroup::Cgroups;
pub use bus::{ListedUnit, Systemd, SystemdError, TransientUnit};
pub use names::{
    InvalidUnitName, PodUnits, UnitKind, describe, expand_slice, parse_description, unit_of_path,
};
use properties::{Property, PropertyValue};

impl From<InvalidUnitName> for Error {
    fn from(err: InvalidUnitName) -> Self {
        Error::invalid_argument(err.to_string())
    }
}

impl From<properties::PropertyError> for Error {
    fn from(err: properties::PropertyError) -> Self {
        Error::invalid_argument(err.to_string())
    }
}

/// The driver the managers hold: systemd for the units, cgroupfs for what is left.
pub struct SystemdDriver {
    systemd: Systemd,
    cgroups: Cgroups,
    /// Tells this berth's units from another's on the same node (its state dir).
    instance: String,
}

impl SystemdDriver {
    pub fn new(cgroups: Cgroups, instance: String) -> SystemdDriver {
        SystemdDriver {
            systemd: Systemd::new(),
            cgroups,
            instance,
        }
    }

    pub fn describe(&self, kind: UnitKind, id: &str) -> String {
        describe(&self.instance, kind, id)
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn systemd(&self) -> &Systemd {
        &self.systemd
    }

    /// The pod's slice (and any missing parent), before any process of the pod exists.
    /// Only a slice berth `owns` (it named it) is described as the pod's: one the request
    /// named is the kubelet's to remove, so neither removal nor the sweep ever stops it.
    pub async fn start_pod_slice(
        &self,
        units: &PodUnits,
        sandbox_id: &str,
        owned: bool,
    ) -> Result<()> {
        let parents = format!("berth pods ({})", self.instance);
        let own = if owned {
            self.describe(UnitKind::Pod, sandbox_id)
        } else {
            parents.clone()
        };
        // A slice whose cgroup exists is running: its StartTransientUnit would only
        // answer UnitExists, a round trip per level and pod.
        let (cgroups, path) = (self.cgroups.clone(), units.slice_path.clone());
        let present = crate::error::blocking("cgroup task", move || {
            Ok::<_, Error>(names::slices_present(&path, |p| cgroups.exists(p)))
        })
        .await?;
        self.systemd
            .ensure_slice(&units.slice_path, present, &own, &parents)
            .await
            .map_err(Error::from)
    }

    /// Starts scope `scope` in `slice` around `pid` (already in the scope's cgroup, put
    /// there by init), with `resources` as unit properties, then the leftovers by file.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_scope(
        &self,
        scope: &str,
        slice: &str,
        kind: UnitKind,
        id: &str,
        pid: u32,
        cgroup_path: &str,
        resources: Option<&LinuxResources>,
    ) -> Result<()> {
        let mut properties: Vec<Property> = vec![
            ("Slice", PropertyValue::Str(slice.to_string())),
            ("PIDs", PropertyValue::U32List(vec![pid])),
            ("Delegate", PropertyValue::Bool(true)),
            ("DefaultDependencies", PropertyValue::Bool(false)),
            ("MemoryAccounting", PropertyValue::Bool(true)),
            ("CPUAccounting", PropertyValue::Bool(true)),
            ("IOAccounting", PropertyValue::Bool(true)),
            ("TasksAccounting", PropertyValue::Bool(true)),
        ];
        if let Some(resources) = resources {
            properties.extend(properties::resource_properties(resources)?);
        }
        // Without it systemd's DefaultTasksMax (15% of pid_max) would cap every scope.
        if !properties.iter().any(|(name, _)| *name == "TasksMax") {
            properties.push(("TasksMax", PropertyValue::U64(properties::INFINITY)));
        }
        let description = self.describe(kind, id);
        let unit = TransientUnit {
            name: scope,
            description: &description,
            properties,
        };
        self.systemd.start_transient(&unit).await?;
        if let Some(resources) = resources {
            self.write_leftovers(cgroup_path, resources).await?;
        }
        Ok(())
    }

    /// UpdateContainerResources / UpdatePodSandboxResources: the unit's properties at
    /// runtime, then the leftovers by file.
    pub async fn update(
        &self,
        unit: &str,
        cgroup_path: &str,
        resources: &LinuxResources,
    ) -> Result<()> {
        let properties = properties::resource_properties(resources)?;
        self.systemd.set_properties(unit, &properties).await?;
        self.write_leftovers(cgroup_path, resources).await
    }

    /// Stops and resets berth's unit (never one berth did not make; a gone one is fine).
    pub async fn release(&self, unit: &str, kind: UnitKind, id: &str) -> Result<()> {
        self.systemd
            .release(unit, &self.describe(kind, id))
            .await
            .map_err(Error::from)
    }

    async fn write_leftovers(&self, cgroup_path: &str, resources: &LinuxResources) -> Result<()> {
        let cgroups = self.cgroups.clone();
        let v2 = cgroups.mode() == crate::linux::cgroup::Mode::V2;
        let writes = properties::leftover_writes(resources, v2)
            .map_err(crate::linux::cgroup::CgroupError::from)?;
        if writes.is_empty() {
            return Ok(());
        }
        let path = cgroup_path.to_string();
        crate::error::blocking("cgroup task", move || cgroups.apply_writes(&path, &writes)).await
    }
}

impl SystemdDriver {
    /// The sweep at start (see `sweep.rs`): berth's units without a record are killed,
    /// stopped and reset, failed ones reset. Logs each; a failure is logged, not fatal.
    pub async fn sweep(
        &self,
        known_sandboxes: &std::collections::HashSet<String>,
        known_containers: &std::collections::HashSet<String>,
    ) -> Vec<sweep::UnitLeftover> {
        let units = match self.systemd.list_units(&["*.scope", "*.slice"]).await {
            Ok(units) => units,
            Err(e) => {
                tracing::error!(error = %e, "sweep: listing systemd units failed");
                return Vec::new();
            }
        };
        let leftovers = sweep::plan(&self.instance, &units, known_sandboxes, known_containers);
        for leftover in &leftovers {
            if leftover.unknown {
                // A stop alone would wait out processes that ignore SIGTERM.
                let _ = self.systemd.kill_unit(&leftover.unit, libc::SIGKILL).await;
            }
            match self
                .release(&leftover.unit, leftover.kind, &leftover.id)
                .await
            {
                Ok(()) if leftover.unknown => {
                    tracing::warn!(unit = %leftover.unit, "sweep: stopped a systemd unit no record points to");
                    if leftover.kind == UnitKind::Pod {
                        self.remove_slice_cgroups(&leftover.unit).await;
                    }
                }
                Ok(()) => {
                    tracing::warn!(unit = %leftover.unit, "sweep: reset a failed systemd unit")
                }
                Err(e) => {
                    tracing::error!(unit = %leftover.unit, error = %e, "sweep: could not stop a systemd unit")
                }
            }
        }
        leftovers
    }
}

impl SystemdDriver {
    /// What systemd leaves of a stopped pod slice of berth's: on cgroup v1 its directories
    /// (and its scopes') in the hierarchies of controllers systemd does not manage
    /// (net_cls, perf_event, ...), which berth's init made. Nothing is left on v2.
    async fn remove_slice_cgroups(&self, slice: &str) {
        let Ok(path) = expand_slice("sweep", slice) else {
            return;
        };
        let cgroups = self.cgroups.clone();
        let removed = crate::error::blocking("cgroup task", move || cgroups.remove(&path)).await;
        if let Err(e) = removed {
            tracing::error!(unit = %slice, error = %e, "sweep: could not remove a pod slice's cgroups");
        }
    }
}
