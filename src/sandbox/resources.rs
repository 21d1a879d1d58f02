//! Resource limits on live cgroups: UpdatePodSandboxResources writes the pod-level limits
//! to the pod's cgroup (in-place pod resize), or sets them on the pod's slice with the
//! systemd driver; the containers' own cgroups sit below it and keep their limits. The
//! container manager updates those through the same two calls.

use oci_spec::runtime::LinuxResources;

use super::SandboxManager;
use crate::error::{Result, blocking};

impl SandboxManager {
    /// Checks `resources` against what this node offers, then writes them to the pod cgroup.
    /// Unknown pod: NotFound. Nothing is written when the check fails.
    pub async fn update_resources(&self, id: &str, resources: LinuxResources) -> Result<()> {
        let record = self.get(id)?.record();
        self.check_resources(&resources).await?;
        let slice = record.units.as_ref().map(|u| u.slice.as_str());
        self.apply_resources(slice, &record.pod_cgroup, &resources)
            .await?;
        tracing::info!(pod_sandbox_id = %record.id, cgroup = %record.pod_cgroup, "pod resources updated");
        Ok(())
    }

    /// Refuses resources this node cannot apply (CPUs it lacks, unified keys of a missing
    /// controller, swap without swap accounting), naming the CRI field.
    pub async fn check_resources(&self, resources: &LinuxResources) -> Result<()> {
        let (cgroups, checked) = (self.cgroups.clone(), resources.clone());
        blocking("cgroup check task", move || {
            cgroups.check_resources(&checked)
        })
        .await
    }

    /// Writes `resources` to the cgroup `path`: with the systemd driver through the
    /// properties of its `unit`, when berth made it one; else to the cgroup's files.
    pub async fn apply_resources(
        &self,
        unit: Option<&str>,
        path: &str,
        resources: &LinuxResources,
    ) -> Result<()> {
        if let (Some(driver), Some(unit)) = (self.systemd(), unit) {
            return driver.update(unit, path, resources).await;
        }
        let (cgroups, path, resources) =
            (self.cgroups.clone(), path.to_string(), resources.clone());
        blocking("cgroup task", move || {
            cgroups.apply_resources(&path, &resources)
        })
        .await
    }
}
