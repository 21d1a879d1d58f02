//! Emptying a cgroup: SIGKILL to every process in it (and below), until none is left.
//!
//! A process can fork between the moment its cgroup's `cgroup.procs` is read and the
//! moment it is killed, so a plain sweep may chase a forking workload. Where the kernel
//! can do it atomically (`cgroup.kill`, cgroup v2 on Linux 5.14+, which also covers the
//! unified tree of a hybrid host) that is used; on v1 the freezer stops the cgroup first
//! so the sweep sees a set that cannot grow (runc's freeze, kill, thaw). The sweep is
//! repeated until `cgroup.procs` is empty everywhere, so the caller learns the cgroup is
//! really empty, or which processes would not die.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{CgroupError, Cgroups, Result, cgroup_gone, collect_procs, io_err, relative_path};

/// How long a v1 freeze may take to settle before the sweep kills anyway (a task in
/// uninterruptible sleep can hold a cgroup in FREEZING).
const FREEZE_SETTLE: Duration = Duration::from_millis(100);
/// Pause between two sweeps while killed processes exit.
const SWEEP_INTERVAL: Duration = Duration::from_millis(5);

impl Cgroups {
    /// `kill_all`, then the cgroup removed.
    pub fn destroy(&self, path: &str, wait: Duration) -> Result<()> {
        self.kill_all(path, wait)?;
        self.remove(path)
    }

    /// SIGKILLs every process in `path` or below until none is left, for at most `wait`;
    /// then [`CgroupError::NotEmpty`] names each survivor. A missing cgroup is empty.
    /// The caller must reap its own children meanwhile if they could be left as zombies in
    /// the cgroup.
    pub fn kill_all(&self, path: &str, wait: Duration) -> Result<()> {
        let relative = relative_path(path)?;
        let by_kernel = self.write_cgroup_kill(&relative);
        let freezer = (!by_kernel).then(|| self.freezer_dir(&relative)).flatten();
        let start = Instant::now();
        loop {
            let pids = self.procs(path)?;
            if pids.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= wait {
                return Err(CgroupError::NotEmpty {
                    path: path.to_string(),
                    waited: wait,
                    remaining: describe(&pids),
                });
            }
            match &freezer {
                Some(dir) => freeze_kill_thaw(dir)?,
                // With cgroup.kill the kernel has done it; a sweep still covers a process
                // that is in a v1 hierarchy only (it joined before the unified tree had
                // the cgroup).
                None => kill_each(&pids),
            }
            std::thread::sleep(SWEEP_INTERVAL);
        }
    }

    /// Writes `cgroup.kill` in every v2 hierarchy that has the cgroup; true if one took it.
    fn write_cgroup_kill(&self, relative: &Path) -> bool {
        let mut done = false;
        for hierarchy in self.hierarchies.iter().filter(|h| h.v2) {
            let kill_file = hierarchy.mount_point.join(relative).join("cgroup.kill");
            // Absent on older kernels and on a missing cgroup: the sweep covers both.
            done |= fs::write(kill_file, "1").is_ok();
        }
        done
    }

    /// The cgroup's directory in the v1 freezer hierarchy, if there is one.
    fn freezer_dir(&self, relative: &Path) -> Option<PathBuf> {
        let hierarchy = self
            .hierarchies
            .iter()
            .find(|h| !h.v2 && h.has("freezer"))?;
        let dir = hierarchy.mount_point.join(relative);
        dir.join("freezer.state").exists().then_some(dir)
    }
}

fn kill_each(pids: &[i32]) {
    for pid in pids {
        // ESRCH: gone meanwhile, which is the goal.
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}

/// Freezes the v1 cgroup `dir` (and its descendants), SIGKILLs every process in it, then
/// thaws it so the kills take effect. The thaw happens however this returns.
fn freeze_kill_thaw(dir: &Path) -> Result<()> {
    let state = dir.join("freezer.state");
    match fs::write(&state, "FROZEN") {
        Ok(()) => {}
        // Removed meanwhile: its processes are gone with it.
        Err(e) if cgroup_gone(&e) => return Ok(()),
        Err(e) => return Err(io_err("write", &state)(e)),
    }
    let _thaw = Thaw(&state);
    let settle_until = Instant::now() + FREEZE_SETTLE;
    while fs::read_to_string(&state).is_ok_and(|s| s.trim() != "FROZEN")
        && Instant::now() < settle_until
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut pids = std::collections::BTreeSet::new();
    collect_procs(dir, &mut pids)?;
    kill_each(&pids.into_iter().collect::<Vec<_>>());
    Ok(())
}

/// Thaws a v1 freezer cgroup when dropped: a frozen cgroup must never be left behind.
struct Thaw<'a>(&'a Path);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        let _ = fs::write(self.0, "THAWED");
    }
}

/// `pid (command, state X)` for each pid still present, from /proc.
fn describe(pids: &[i32]) -> String {
    pids.iter()
        .map(
            |pid| match fs::read_to_string(format!("/proc/{pid}/stat")) {
                Ok(stat) => {
                    let command = stat
                        .split_once('(')
                        .and_then(|(_, rest)| rest.rsplit_once(')'))
                        .map(|(comm, _)| comm)
                        .unwrap_or("?");
                    let state = stat
                        .rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().next())
                        .unwrap_or("?");
                    format!("{pid} ({command}, state {state})")
                }
                Err(_) => format!("{pid} (gone)"),
            },
        )
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survivors_are_named_with_their_command_and_state() {
        let me = std::process::id() as i32;
        let text = describe(&[me, i32::MAX]);
        let comm = fs::read_to_string(format!("/proc/{me}/comm")).unwrap();
        assert!(
            text.starts_with(&format!("{me} ({}, state ", comm.trim())),
            "{text}"
        );
        assert!(text.ends_with(&format!("{} (gone)", i32::MAX)), "{text}");
    }
}
