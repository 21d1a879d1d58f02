//! Daemon start: every sandbox record loaded, live shims reconnected, runs a crash
//! interrupted rolled back.

use std::path::Path;

use super::record::{SandboxExt, SandboxRecord};
use super::{SandboxManager, SandboxState};
use crate::error::Result;
use crate::lifecycle::Rollback;
use crate::shim::ShimClient;

impl SandboxManager {
    /// Loads every record; rolls back runs a crash interrupted; reconnects live shims.
    pub async fn recover(&self) -> Result<()> {
        let interrupted = |r: &SandboxRecord| r.state == SandboxState::Creating;
        let undo = |r: &SandboxRecord, undo: &mut Rollback| self.undo_run(r, undo);
        for record in self.records.recover(interrupted, undo).await? {
            self.recover_one(record).await;
        }
        Ok(())
    }

    async fn recover_one(&self, record: SandboxRecord) {
        let id = record.id.clone();
        let shim = match record.state {
            SandboxState::NotReady => None,
            _ => reachable_shim(&record.shim_socket, &id).await,
        };
        let unreachable = record.state == SandboxState::Ready && shim.is_none();
        let sandbox = self
            .records
            .recovered(record, SandboxExt { shim: shim.into() });
        if unreachable {
            tracing::warn!(sandbox_id = %id, "shim unreachable after restart; pod is not ready");
            self.records
                .observed(&sandbox, SandboxState::NotReady, |_| {})
                .await;
        }
        tracing::info!(sandbox_id = %id, state = ?sandbox.state(), "pod sandbox recovered");
    }
}

/// The shim listening on `socket`, when it answers as the shim of pod `id`.
pub(super) async fn reachable_shim(socket: &Path, id: &str) -> Option<ShimClient> {
    let shim = crate::shim::connect(socket).await.ok()?;
    match shim.clone().info().await {
        Ok((sandbox_id, _)) if sandbox_id == id => Some(shim),
        _ => None,
    }
}
