//! Shim death: every pod's shim is watched through a pidfd (which works for processes that
//! are not the daemon's children), so the daemon notices within moments when one dies.
//!
//! A shim that dies while its pod is Ready takes the pod down with it: the pod's processes
//! are killed with its cgroup, the pod becomes NotReady, and [`ShimNews::Lost`] tells the
//! container manager, which marks the containers of the pod exited.
//! A shim that ends because the pod was stopped is expected and changes nothing.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{KILL_WAIT, SandboxManager, SandboxState, ShimNews};
use crate::shim::cmdline::is_shim_of;
use crate::store::lock;

impl SandboxManager {
    /// Whether the daemon holds a connection to the pod's shim (false for a stopped pod
    /// and for one whose shim died).
    pub fn shim_connected(&self, id: &str) -> bool {
        self.get(id).is_ok_and(|sb| lock(&sb.ext.shim).is_some())
    }

    /// Watches the shim of a pod that just became Ready.
    pub(super) fn watch_shim(self: &Arc<Self>, id: &str) {
        let Some(pid) = self.get(id).ok().and_then(|sb| sb.record().shim_pid) else {
            return;
        };
        self.follow_exits(id);
        let id = id.to_string();
        let fd = match open_pidfd(pid, &id) {
            Ok(fd) => fd,
            Err(e) => {
                // Already gone (or not ours any more): handled as a death right away.
                tracing::debug!(sandbox_id = %id, shim_pid = pid, error = %e, "cannot watch the shim");
                let this = self.clone();
                tokio::spawn(async move { this.shim_exited(&id, pid).await });
                return;
            }
        };
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = wait_exit(fd).await {
                tracing::warn!(sandbox_id = %id, shim_pid = pid, error = %e, "watching the shim failed");
                return;
            }
            // Boxed: this task waits for the whole life of the pod, and the handling of a
            // death (a few KiB of future) is only needed once it happens.
            Box::pin(this.shim_exited(&id, pid)).await;
        });
    }

    /// After recovery: watches every shim recovery reconnected, and kills whatever is left
    /// in the cgroup of each pod whose shim is gone (it died while the daemon was down, and
    /// its pause and container processes may have outlived it).
    pub async fn watch_recovered_shims(self: &Arc<Self>) {
        for sb in self.records.all() {
            if lock(&sb.ext.shim).is_some() {
                self.watch_shim(&sb.id);
                continue;
            }
            let record = sb.record();
            if let Err(e) = self.kill_pod_processes(&record).await {
                tracing::warn!(sandbox_id = %record.id, error = %e, "killing the processes of a pod without a shim");
            }
        }
    }

    /// Every process of the pod (the pod cgroup when berth made it, else the pause's).
    pub(super) async fn kill_pod_processes(
        &self,
        record: &super::SandboxRecord,
    ) -> crate::Result<()> {
        let cgroups = self.cgroups.clone();
        let pod = record.owns_pod_cgroup.then_some(&record.pod_cgroup);
        let path = pod.unwrap_or(&record.pause_cgroup).clone();
        crate::error::blocking("cgroup task", move || cgroups.kill_all(&path, KILL_WAIT)).await
    }

    async fn shim_exited(&self, id: &str, pid: u32) {
        let Ok(sb) = self.get(id) else {
            return;
        };
        // A stop under way holds this lock and leaves the pod NotReady: that death was asked for.
        let _op = sb.op.lock().await;
        let record = sb.record();
        if record.state != SandboxState::Ready || record.shim_pid != Some(pid) {
            return;
        }
        // The shim's log goes with the pod's state dir: its last words are kept here.
        let shim_log = self.records.dirs().state_dir(id).join("shim.log");
        let last_words = last_lines(&shim_log, SHIM_LOG_TAIL).await;
        tracing::warn!(sandbox_id = %id, shim_pid = pid, shim_log_tail = %last_words, "the pod's shim died; killing the pod's processes");
        *lock(&sb.ext.shim) = None;
        if let Err(e) = self.kill_pod_processes(&record).await {
            tracing::warn!(sandbox_id = %id, error = %e, "killing the processes of a pod whose shim died");
        }
        self.records
            .observed(&sb, SandboxState::NotReady, |_| {})
            .await;
        self.tell(id, ShimNews::Lost(id.to_string()));
    }
}

/// How much of a dead shim's log its warning carries.
const SHIM_LOG_TAIL: usize = 2048;

/// The end of the file at `path` (at most `max` bytes, from a line start), or why not.
async fn last_lines(path: &std::path::Path, max: usize) -> String {
    match tokio::fs::read(path).await {
        Ok(data) => {
            let tail = &data[data.len().saturating_sub(max)..];
            let text = String::from_utf8_lossy(tail);
            let from_line = if tail.len() < data.len() {
                text.find('\n').map_or(0, |i| i + 1)
            } else {
                0
            };
            text[from_line..].trim_end().to_string()
        }
        Err(e) => format!("(no shim log at {}: {e})", path.display()),
    }
}

/// A pidfd for the shim `pid`, refused when that pid is no longer the shim of `sandbox_id`.
fn open_pidfd(pid: u32, sandbox_id: &str) -> io::Result<OwnedFd> {
    let raw = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad pid"))?;
    let fd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())?;
    // Checked after the pidfd is open: it pins the process, so a reused pid shows here.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    if !is_shim_of(&cmdline, sandbox_id) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the pid is not this pod's shim any more",
        ));
    }
    Ok(fd)
}

/// Resolves when the process behind `fd` has exited (a pidfd polls readable then).
async fn wait_exit(fd: OwnedFd) -> io::Result<()> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and the same for its
    // whole life.
    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(io::Error::from)?;
    let _ready = fd.readable().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_command_lines_are_told_apart() {
        let id = "ab".repeat(32);
        let shim = format!(
            "/usr/bin/berth\0shim\0--sandbox-id\0{id}\0--socket\0/run/berth/s/x.sock\0--state-dir\0/run/berth/sandboxes/{id}/shim\0"
        );
        assert!(is_shim_of(shim.as_bytes(), &id));
        assert!(!is_shim_of(shim.as_bytes(), &"cd".repeat(32)));
        // The id alone (say, in a container's arguments) is not a shim.
        let other = format!("/bin/sleep\0--sandbox-id\0{id}\0");
        assert!(!is_shim_of(other.as_bytes(), &id));
        assert!(!is_shim_of(b"", &id));
    }

    #[tokio::test]
    async fn a_dead_shims_log_is_kept_from_a_line_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("shim.log");
        std::fs::write(&log, "first line\nsecond line\nthird\n").unwrap();
        assert_eq!(
            last_lines(&log, 1000).await,
            "first line\nsecond line\nthird"
        );
        assert_eq!(last_lines(&log, 15).await, "third");
        let missing = last_lines(&dir.path().join("gone"), 10).await;
        assert!(missing.starts_with("(no shim log at "), "{missing}");
    }

    #[tokio::test]
    async fn a_pidfd_reports_the_exit_of_a_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.05")
            .spawn()
            .unwrap();
        let raw = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        let fd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), wait_exit(fd))
            .await
            .expect("the exit was not noticed")
            .unwrap();
        child.wait().unwrap();
    }
}
