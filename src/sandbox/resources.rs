//! UpdatePodSandboxResources: the pod-level limits written to the pod's cgroup (in-place
//! pod resize). The containers' own cgroups sit below it and keep their limits.

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
        tokio::task::spawn_blocking(move || {
            cgroups.check_resources(&resources)?;
            cgroups.apply_resources(&path, &resources)?;
            Ok::<_, Error>(())
        })
        .await
        .map_err(|e| Error::internal("pod cgroup task", e))??;
        tracing::info!(pod_sandbox_id = %record.id, cgroup = %record.pod_cgroup, "pod resources updated");
        Ok(())
    }
}
