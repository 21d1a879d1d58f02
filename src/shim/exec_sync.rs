//! ExecSync: `berth init --exec-pid` runs the command in the container; its output is
//! collected (capped) until it exits and the pipes close, or the deadline passes. At the
//! deadline the command and everything it started are killed and the call returns at
//! once, even when a grandchild keeps the output pipes open.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::error::{ApiError, ApiResult, sys_err};
use super::exec::{CappedOutput, MAX_OUTPUT};
use super::exec_start::{ExecStartError, StartedExec, kill_tree};
use super::process::CREATE_TIMEOUT;
use super::shared::{DRAIN_WAIT, Shared};
use super::stdio::ChildStdio;
use crate::shim_api::{ExecSyncRequest, ExecSyncResponse};

impl Shared {
    pub(super) async fn exec_sync(&self, request: &ExecSyncRequest) -> ApiResult<ExecSyncResponse> {
        let id = request.id.as_str();
        if request.args.is_empty() {
            return Err(ApiError::InvalidArgument("the command is empty".into()));
        }
        let now = tokio::time::Instant::now();
        let deadline = u64::try_from(request.timeout_seconds)
            .ok()
            .filter(|s| *s > 0)
            .map(|s| now + Duration::from_secs(s));
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC);
        let (stdout_read, stdout_write) = pipe().map_err(sys_err("create stdout pipe"))?;
        let (stderr_read, stderr_write) = pipe().map_err(sys_err("create stderr pipe"))?;
        let stdio = ChildStdio {
            stdin: Stdio::null(),
            stdout: Stdio::from(stdout_write),
            stderr: Stdio::from(stderr_write),
        };
        let stdout = Arc::new(Mutex::new(CappedOutput::new(MAX_OUTPUT)));
        let stderr = Arc::new(Mutex::new(CappedOutput::new(MAX_OUTPUT)));
        let mut readers = Readers(vec![
            tokio::spawn(collect_output(stdout_read, stdout.clone())),
            tokio::spawn(collect_output(stderr_read, stderr.clone())),
        ]);
        let report_deadline =
            deadline.map_or(now + CREATE_TIMEOUT, |d| d.min(now + CREATE_TIMEOUT));
        let started = self
            .start_exec(
                id,
                &request.exec_id,
                &request.args,
                false,
                stdio,
                report_deadline,
            )
            .await;
        let StartedExec {
            pid, name, exit, ..
        } = match started {
            Ok(started) => started,
            Err(ExecStartError::TimedOut)
                if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) =>
            {
                return Ok(timed_out());
            }
            Err(ExecStartError::TimedOut) => {
                return Err(ApiError::DeadlineExceeded(format!(
                    "init did not report within {CREATE_TIMEOUT:?}"
                )));
            }
            Err(ExecStartError::Api(err)) => return Err(err),
        };

        let exit_code = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, exit).await {
                Ok(code) => code,
                Err(_) => {
                    // Everything the exec started goes with it; the pipes they held are
                    // not waited for.
                    kill_tree(pid);
                    self.exec_waiters().remove(&pid);
                    tracing::info!(exec = %name, pid, "exec timed out: killed");
                    return Ok(timed_out());
                }
            },
            None => exit.await,
        }
        .map_err(|_| ApiError::Internal(format!("lost the exit of exec {name}")))?;

        // A background child may keep the pipes open: take what came by then.
        let drain_until = tokio::time::Instant::now() + DRAIN_WAIT;
        let drain_until = deadline.map_or(drain_until, |d| d.min(drain_until));
        let _ = tokio::time::timeout_at(drain_until, async {
            for reader in &mut readers.0 {
                let _ = reader.await;
            }
        })
        .await;
        drop(readers);
        let take = |output: &Arc<Mutex<CappedOutput>>| {
            std::mem::take(&mut *output.lock().unwrap_or_else(|p| p.into_inner()))
        };
        let (stdout, stderr) = (take(&stdout), take(&stderr));
        super::exec::check_exec_sync_output(stdout.written, stderr.written).map_err(|e| {
            tracing::info!(exec = %name, error = %e, "exec output refused");
            ApiError::ResourceExhausted(e.to_string())
        })?;
        tracing::debug!(exec = %name, pid, exit_code, "exec done");
        Ok(ExecSyncResponse {
            stdout: stdout.data,
            stderr: stderr.data,
            exit_code,
            timed_out: false,
            stdout_truncated: stdout.truncated,
            stderr_truncated: stderr.truncated,
        })
    }
}

fn timed_out() -> ExecSyncResponse {
    ExecSyncResponse {
        timed_out: true,
        ..Default::default()
    }
}

/// Reads a pipe to EOF into `output`.
async fn collect_output(fd: OwnedFd, output: Arc<Mutex<CappedOutput>>) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => output
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Output readers that stop when the call returns (a grandchild may hold the pipes).
struct Readers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Readers {
    fn drop(&mut self) {
        for reader in &self.0 {
            reader.abort();
        }
    }
}
