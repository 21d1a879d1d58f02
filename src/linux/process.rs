//! Process helpers shared by the shim and init: exit codes, oom_score_adj, sysctl
//! paths, atomic small-file writes, clocks.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::wait::WaitStatus;

/// The pid and shell-style exit code of a terminated child (128 + signal when killed);
/// `None` for stops and continues.
pub fn exit_of(status: WaitStatus) -> Option<(i32, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code)),
        WaitStatus::Signaled(pid, signal, _) => Some((pid.as_raw(), 128 + signal as i32)),
        _ => None,
    }
}

/// The oom_score_adj to set: the requested one, but never below the current one,
/// because lowering it needs CAP_SYS_RESOURCE (which berth may lack). Returns the
/// value and whether it was clamped.
pub fn clamp_oom_score_adj(requested: i32, current: i32) -> (i32, bool) {
    let requested = requested.clamp(-1000, 1000);
    if requested < current {
        (current, true)
    } else {
        (requested, false)
    }
}

pub fn read_oom_score_adj(pid: &str) -> io::Result<i32> {
    let text = fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))?;
    text.trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `/proc/sys/<key with '.' → '/'>`; rejects keys that could leave /proc/sys.
pub fn sysctl_path(key: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = key.split(['.', '/']).collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == ".." || *p == ".")
    {
        return None;
    }
    let mut path = PathBuf::from("/proc/sys");
    path.extend(parts);
    Some(path)
}

pub fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        let pid = Pid::from_raw(42);
        assert_eq!(exit_of(WaitStatus::Exited(pid, 3)), Some((42, 3)));
        assert_eq!(
            exit_of(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((42, 137))
        );
        assert_eq!(exit_of(WaitStatus::StillAlive), None);
    }

    #[test]
    fn oom_score_adj_never_goes_below_the_current_value() {
        assert_eq!(clamp_oom_score_adj(-998, 0), (0, true));
        assert_eq!(clamp_oom_score_adj(-998, -999), (-998, false));
        assert_eq!(clamp_oom_score_adj(500, 0), (500, false));
        assert_eq!(clamp_oom_score_adj(5000, 0), (1000, false));
    }

    #[test]
    fn sysctl_keys_map_below_proc_sys() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_unprivileged_port_start"),
            Some(PathBuf::from(
                "/proc/sys/net/ipv4/ip_unprivileged_port_start"
            ))
        );
        assert_eq!(
            sysctl_path("kernel/shmmni"),
            Some(PathBuf::from("/proc/sys/kernel/shmmni"))
        );
        assert_eq!(sysctl_path("net...x"), None);
        assert_eq!(sysctl_path("../../etc/passwd"), None);
        assert_eq!(sysctl_path(""), None);
    }
}
