//! UpdatePodSandboxResources: the pod-level limits written to the pod's cgroup (in-place
//! pod resize), or set on the pod's slice with the systemd driver. The containers' own cgroups sit below it and keep their limits.

use oci_spec::runtime::LinuxResources;

use super::SandboxManager;
use crate::error::{Error, Result};

impl SandboxManager {
    /// Checks `resources` against what this node offers, then writes them to the pod cgroup.
    /// Unknown pod: NotFound. Nothing is written when the check fails.
    pub async fn update_resources(&self, id: &str, resources: LinuxResources) -> Result<()> {
        let record = self.get(id)?.record();
        let cgroups = self.cgroups.clone();
        let path = record.pod_cgroup.clone();
        let checked = resources.clone();
        let by_file = self.systemd().is_none() || record.units.is_none();
        crate::error::blocking("pod cgroup task", move || {
            cgroups.check_resources(&checked)?;
            if by_file {
                cgroups.apply_resources(&path, &checked)?;
            }
            Ok::<_, Error>(())
        })
        .await?;
        if let (Some(driver), Some(units)) = (self.systemd(), &record.units) {
            driver
                .update(&units.slice, &record.pod_cgroup, &resources)
                .await?;
        }
        tracing::info!(pod_sandbox_id = %record.id, cgroup = %record.pod_cgroup, "pod resources updated");
        Ok(())
    }
}
