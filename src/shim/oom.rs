//! OOM kills seen by a cgroup: the `oom_kill N` counter of v2 `memory.events` or v1
//! `memory.oom_control` (kernel 4.13 and later).

use crate::linux::cgroup::{Cgroups, relative_path};

/// The `oom_kill` value of a `memory.events` or `memory.oom_control` text.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next()) {
            (Some("oom_kill"), Some(value)) => value.parse().ok(),
            _ => None,
        }
    })
}

/// How many processes the kernel OOM-killed in `path` so far; `None` when no hierarchy
/// says (no memory controller, a kernel without the counter, or no such cgroup).
pub fn oom_kills(cgroups: &Cgroups, path: &str) -> Option<u64> {
    let relative = relative_path(path).ok()?;
    cgroups
        .hierarchies()
        .iter()
        .filter_map(|hierarchy| {
            let file = if hierarchy.v2 {
                "memory.events"
            } else if hierarchy.controllers.iter().any(|c| c == "memory") {
                "memory.oom_control"
            } else {
                return None;
            };
            let text =
                std::fs::read_to_string(hierarchy.mount_point.join(&relative).join(file)).ok()?;
            parse_oom_kill(&text)
        })
        .max()
}

/// The parent of a cgroup path (`/a/b` → `/a`); None at the top.
pub fn parent_cgroup(path: &str) -> Option<&str> {
    let (parent, _) = path.trim_end_matches('/').rsplit_once('/')?;
    (!parent.is_empty()).then_some(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_of_cgroup_paths() {
        assert_eq!(parent_cgroup("/a.slice/b.scope"), Some("/a.slice"));
        assert_eq!(parent_cgroup("/a.slice"), None);
        assert_eq!(parent_cgroup("a/b/"), Some("a"));
    }

    #[test]
    fn reads_the_counter_of_v1_and_v2_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 17\noom 3\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(v1), Some(2));
        assert_eq!(parse_oom_kill(v2), Some(1));
        // Before 4.13, v1 had no counter; `oom_kill_disable` is not it.
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n"), None);
    }
}
