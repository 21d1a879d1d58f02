//! Container CPU and memory usage read from the container's cgroup, v1 and v2.
//!
//! The parsers are pure (file contents in, numbers out); `read` finds the files. Each call
//! reads the files afresh: the cached collector and rates of the stats issue come later.

use std::collections::HashMap;
use std::path::Path;

use crate::linux::cgroup::{Cgroups, Mode};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    /// Usage minus inactive file pages, as the kubelet defines the working set.
    pub memory_working_set_bytes: Option<u64>,
    pub memory_rss_bytes: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    /// Limit minus working set, when there is a limit.
    pub memory_available_bytes: Option<u64>,
}

/// `key value` lines (memory.stat, cpu.stat).
pub fn parse_flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

/// A single number, or `max` (none).
pub fn parse_single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The kubelet's working set: usage minus inactive file pages, never below zero.
pub fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

/// cgroup v1 limits of "unlimited" are huge page-aligned numbers.
fn real_limit(limit: u64) -> Option<u64> {
    (limit < (1 << 62)).then_some(limit)
}

pub fn usage_v1(cpuacct_usage: &str, memory_usage: &str, memory_stat: &str, limit: &str) -> Usage {
    let stat = parse_flat_keyed(memory_stat);
    let usage = parse_single(memory_usage);
    let working =
        usage.map(|u| working_set(u, stat.get("total_inactive_file").copied().unwrap_or(0)));
    Usage {
        cpu_usage_ns: parse_single(cpuacct_usage),
        memory_usage_bytes: usage,
        memory_working_set_bytes: working,
        memory_rss_bytes: stat.get("total_rss").copied(),
        page_faults: stat.get("total_pgfault").copied(),
        major_page_faults: stat.get("total_pgmajfault").copied(),
        memory_available_bytes: parse_single(limit)
            .and_then(real_limit)
            .zip(working)
            .map(|(l, w)| l.saturating_sub(w)),
    }
}

pub fn usage_v2(
    cpu_stat: &str,
    memory_current: &str,
    memory_stat: &str,
    memory_max: &str,
) -> Usage {
    let cpu = parse_flat_keyed(cpu_stat);
    let stat = parse_flat_keyed(memory_stat);
    let usage = parse_single(memory_current);
    let working = usage.map(|u| working_set(u, stat.get("inactive_file").copied().unwrap_or(0)));
    Usage {
        cpu_usage_ns: cpu.get("usage_usec").map(|us| us * 1000),
        memory_usage_bytes: usage,
        memory_working_set_bytes: working,
        memory_rss_bytes: stat.get("anon").copied(),
        page_faults: stat.get("pgfault").copied(),
        major_page_faults: stat.get("pgmajfault").copied(),
        memory_available_bytes: parse_single(memory_max)
            .zip(working)
            .map(|(l, w)| l.saturating_sub(w)),
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

/// The usage of the cgroup at `path` (relative to each hierarchy root). Missing files (a
/// cgroup that is gone) give empty fields, never an error.
pub fn read_usage(cgroups: &Cgroups, path: &str) -> Usage {
    let relative = path.trim_start_matches('/');
    if cgroups.mode() == Mode::V2 {
        let Some(h) = cgroups.hierarchies().iter().find(|h| h.v2) else {
            return Usage::default();
        };
        let dir = h.mount_point.join(relative);
        return usage_v2(
            &read(&dir, "cpu.stat"),
            &read(&dir, "memory.current"),
            &read(&dir, "memory.stat"),
            &read(&dir, "memory.max"),
        );
    }
    let dir_of = |controller: &str| {
        cgroups
            .hierarchies()
            .iter()
            .find(|h| !h.v2 && h.controllers.iter().any(|c| c == controller))
            .map(|h| h.mount_point.join(relative))
    };
    let (Some(cpu), Some(memory)) = (dir_of("cpuacct"), dir_of("memory")) else {
        return Usage::default();
    };
    usage_v1(
        &read(&cpu, "cpuacct.usage"),
        &read(&memory, "memory.usage_in_bytes"),
        &read(&memory, "memory.stat"),
        &read(&memory, "memory.limit_in_bytes"),
    )
}

/// Bytes and inodes under `dir` (the writable layer), not following symlinks.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            inodes += 1;
            bytes += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    (bytes, inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real file contents from this machine (v1) and from a cgroup v2 host.
    const V1_MEMORY_STAT: &str = "cache 1232896\nrss 425984\nrss_huge 0\nshmem 0\nmapped_file 0\npgfault 1254\npgmajfault 0\ninactive_file 1216512\nactive_file 16384\ntotal_cache 1232896\ntotal_rss 425984\ntotal_pgfault 1254\ntotal_pgmajfault 3\ntotal_inactive_anon 421888\ntotal_active_anon 0\ntotal_inactive_file 1216512\ntotal_active_file 16384\n";
    const V2_MEMORY_STAT: &str = "anon 1884160\nfile 4587520\nkernel 593920\nkernel_stack 49152\npagetables 86016\nsock 0\nshmem 0\nfile_mapped 3244032\nactive_anon 1880064\ninactive_anon 0\nactive_file 2781184\ninactive_file 1806336\nunevictable 0\npgfault 4122\npgmajfault 17\n";
    const V2_CPU_STAT: &str = "usage_usec 84512\nuser_usec 60218\nsystem_usec 24294\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n";

    #[test]
    fn v1_files_give_cpu_and_the_kubelets_working_set() {
        let u = usage_v1("123456789\n", "1662976\n", V1_MEMORY_STAT, "67108864\n");
        assert_eq!(u.cpu_usage_ns, Some(123_456_789));
        assert_eq!(u.memory_usage_bytes, Some(1_662_976));
        assert_eq!(u.memory_working_set_bytes, Some(1_662_976 - 1_216_512));
        assert_eq!(u.memory_rss_bytes, Some(425_984));
        assert_eq!(u.page_faults, Some(1254));
        assert_eq!(u.major_page_faults, Some(3));
        assert_eq!(
            u.memory_available_bytes,
            Some(67_108_864 - (1_662_976 - 1_216_512))
        );
    }

    #[test]
    fn v1_unlimited_memory_has_no_available_figure() {
        let u = usage_v1("1\n", "4096\n", "", "9223372036854771712\n");
        assert_eq!(u.memory_available_bytes, None);
        assert_eq!(u.memory_working_set_bytes, Some(4096));
    }

    #[test]
    fn v2_files_give_cpu_in_nanoseconds_and_the_working_set() {
        let u = usage_v2(V2_CPU_STAT, "7458816\n", V2_MEMORY_STAT, "max\n");
        assert_eq!(u.cpu_usage_ns, Some(84_512_000));
        assert_eq!(u.memory_working_set_bytes, Some(7_458_816 - 1_806_336));
        assert_eq!(u.memory_rss_bytes, Some(1_884_160));
        assert_eq!(u.major_page_faults, Some(17));
        assert_eq!(u.memory_available_bytes, None, "max means no limit");
        let limited = usage_v2(V2_CPU_STAT, "7458816\n", V2_MEMORY_STAT, "16777216\n");
        assert_eq!(
            limited.memory_available_bytes,
            Some(16_777_216 - (7_458_816 - 1_806_336))
        );
    }

    #[test]
    fn a_vanished_cgroup_gives_empty_figures() {
        assert_eq!(usage_v1("", "", "", ""), Usage::default());
        assert_eq!(usage_v2("", "", "", ""), Usage::default());
        assert_eq!(working_set(10, 20), 0);
    }

    #[test]
    fn disk_usage_counts_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), vec![1u8; 10_000]).unwrap();
        let (bytes, inodes) = disk_usage(dir.path());
        assert_eq!(inodes, 2);
        assert!(bytes >= 10_000, "{bytes}");
    }
}
