//! Container CPU and memory usage read from the container's cgroup, v1 and v2.
//!
//! The parsers are pure (file contents in, numbers out); `read_usage` finds the files. The
//! periodic collector (`crate::stats`) calls it once per period and keeps the samples.

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
    pub swap_usage_bytes: Option<u64>,
    /// Swap limit minus swap usage, when there is a swap limit.
    pub swap_available_bytes: Option<u64>,
    /// Processes (tasks) in the cgroup and below.
    pub pids: Option<u64>,
    /// v2 `io.stat`, summed over devices.
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    /// v2 pressure stall totals (PSI): `cpu.pressure`, `memory.pressure`, `io.pressure`.
    pub cpu_pressure: Option<Pressure>,
    pub memory_pressure: Option<Pressure>,
    pub io_pressure: Option<Pressure>,
}

/// The cumulative stall times of one PSI file, microseconds: `some` (at least one task
/// waited) and `full` (all non-idle tasks waited; absent for the cgroup's cpu on older
/// kernels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub some_us: u64,
    pub full_us: Option<u64>,
    /// The 10, 60 and 300 s averages (percent) in hundredths: the file has two decimals,
    /// so they stay exact and `Usage` stays `Eq`.
    pub some_avgs: [u32; 3],
    pub full_avgs: Option<[u32; 3]>,
}

/// Parses a PSI file (`some avg10=0.00 avg60=0.00 avg300=0.00 total=123` and a `full` line).
pub fn parse_pressure(text: &str) -> Option<Pressure> {
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))?
            .split_whitespace()
            .find_map(|f| f.strip_prefix("total="))?
            .parse::<u64>()
            .ok()
    };
    let avgs = |kind: &str| {
        let line = text.lines().find(|l| l.starts_with(kind))?;
        let mut out = [0u32; 3];
        for (slot, key) in out.iter_mut().zip(["avg10=", "avg60=", "avg300="]) {
            let value = line.split_whitespace().find_map(|f| f.strip_prefix(key))?;
            *slot = hundredths(value)?;
        }
        Some(out)
    };
    Some(Pressure {
        some_us: total("some ")?,
        full_us: total("full "),
        some_avgs: avgs("some ")?,
        full_avgs: avgs("full "),
    })
}

/// `1.50` → 150.
fn hundredths(value: &str) -> Option<u32> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, "0"));
    let fraction = format!("{fraction:0<2}");
    Some(whole.parse::<u32>().ok()? * 100 + fraction.get(..2)?.parse::<u32>().ok()?)
}

/// Sums `rbytes` and `wbytes` of a v2 `io.stat` over its devices; none for an empty file
/// (no I/O yet, or no io controller).
pub fn parse_io_stat(text: &str) -> (Option<u64>, Option<u64>) {
    let mut read = None;
    let mut write = None;
    for field in text.split_whitespace() {
        if let Some(v) = field
            .strip_prefix("rbytes=")
            .and_then(|v| v.parse::<u64>().ok())
        {
            *read.get_or_insert(0) += v;
        } else if let Some(v) = field
            .strip_prefix("wbytes=")
            .and_then(|v| v.parse::<u64>().ok())
        {
            *write.get_or_insert(0) += v;
        }
    }
    (read, write)
}

impl Usage {
    /// Nothing could be read: the cgroup is gone.
    pub fn is_empty(&self) -> bool {
        self.cpu_usage_ns.is_none() && self.memory_usage_bytes.is_none()
    }
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

/// The files of one cgroup v1 container, as read (empty when missing).
#[derive(Debug, Default)]
pub struct V1Files {
    pub cpuacct_usage: String,
    pub memory_usage: String,
    pub memory_stat: String,
    pub memory_limit: String,
    /// memory.memsw.*: memory plus swap (absent without swap accounting).
    pub memsw_usage: String,
    pub memsw_limit: String,
    pub pids_current: String,
}

pub fn usage_v1(files: &V1Files) -> Usage {
    let stat = parse_flat_keyed(&files.memory_stat);
    let usage = parse_single(&files.memory_usage);
    let limit = parse_single(&files.memory_limit).and_then(real_limit);
    let swap = parse_single(&files.memsw_usage)
        .zip(usage)
        .map(|(memsw, mem)| memsw.saturating_sub(mem));
    let swap_limit = parse_single(&files.memsw_limit)
        .and_then(real_limit)
        .zip(limit)
        .map(|(memsw, mem)| memsw.saturating_sub(mem));
    let working =
        usage.map(|u| working_set(u, stat.get("total_inactive_file").copied().unwrap_or(0)));
    Usage {
        cpu_usage_ns: parse_single(&files.cpuacct_usage),
        memory_usage_bytes: usage,
        memory_working_set_bytes: working,
        memory_rss_bytes: stat.get("total_rss").copied(),
        page_faults: stat.get("total_pgfault").copied(),
        major_page_faults: stat.get("total_pgmajfault").copied(),
        memory_available_bytes: limit.zip(working).map(|(l, w)| l.saturating_sub(w)),
        swap_usage_bytes: swap,
        swap_available_bytes: swap_limit.zip(swap).map(|(l, u)| l.saturating_sub(u)),
        pids: parse_single(&files.pids_current),
        ..Default::default()
    }
}

/// The files of one cgroup v2 container, as read (empty when missing).
#[derive(Debug, Default)]
pub struct V2Files {
    pub cpu_stat: String,
    pub memory_current: String,
    pub memory_stat: String,
    pub memory_max: String,
    pub swap_current: String,
    pub swap_max: String,
    pub pids_current: String,
    pub io_stat: String,
    pub cpu_pressure: String,
    pub memory_pressure: String,
    pub io_pressure: String,
}

pub fn usage_v2(files: &V2Files) -> Usage {
    let cpu = parse_flat_keyed(&files.cpu_stat);
    let stat = parse_flat_keyed(&files.memory_stat);
    let usage = parse_single(&files.memory_current);
    let swap = parse_single(&files.swap_current);
    let working = usage.map(|u| working_set(u, stat.get("inactive_file").copied().unwrap_or(0)));
    let (io_read_bytes, io_write_bytes) = parse_io_stat(&files.io_stat);
    Usage {
        cpu_usage_ns: cpu.get("usage_usec").map(|us| us * 1000),
        memory_usage_bytes: usage,
        memory_working_set_bytes: working,
        memory_rss_bytes: stat.get("anon").copied(),
        page_faults: stat.get("pgfault").copied(),
        major_page_faults: stat.get("pgmajfault").copied(),
        memory_available_bytes: parse_single(&files.memory_max)
            .zip(working)
            .map(|(l, w)| l.saturating_sub(w)),
        swap_usage_bytes: swap,
        swap_available_bytes: parse_single(&files.swap_max)
            .zip(swap)
            .map(|(l, u)| l.saturating_sub(u)),
        pids: parse_single(&files.pids_current),
        io_read_bytes,
        io_write_bytes,
        cpu_pressure: parse_pressure(&files.cpu_pressure),
        memory_pressure: parse_pressure(&files.memory_pressure),
        io_pressure: parse_pressure(&files.io_pressure),
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
        return usage_v2(&V2Files {
            cpu_stat: read(&dir, "cpu.stat"),
            memory_current: read(&dir, "memory.current"),
            memory_stat: read(&dir, "memory.stat"),
            memory_max: read(&dir, "memory.max"),
            swap_current: read(&dir, "memory.swap.current"),
            swap_max: read(&dir, "memory.swap.max"),
            pids_current: read(&dir, "pids.current"),
            io_stat: read(&dir, "io.stat"),
            cpu_pressure: read(&dir, "cpu.pressure"),
            memory_pressure: read(&dir, "memory.pressure"),
            io_pressure: read(&dir, "io.pressure"),
        });
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
    usage_v1(&V1Files {
        cpuacct_usage: read(&cpu, "cpuacct.usage"),
        memory_usage: read(&memory, "memory.usage_in_bytes"),
        memory_stat: read(&memory, "memory.stat"),
        memory_limit: read(&memory, "memory.limit_in_bytes"),
        memsw_usage: read(&memory, "memory.memsw.usage_in_bytes"),
        memsw_limit: read(&memory, "memory.memsw.limit_in_bytes"),
        pids_current: dir_of("pids")
            .map(|d| read(&d, "pids.current"))
            .unwrap_or_default(),
    })
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

    fn v1(cpu: &str, usage: &str, stat: &str, limit: &str) -> V1Files {
        V1Files {
            cpuacct_usage: cpu.into(),
            memory_usage: usage.into(),
            memory_stat: stat.into(),
            memory_limit: limit.into(),
            ..Default::default()
        }
    }

    fn v2(cpu: &str, current: &str, stat: &str, max: &str) -> V2Files {
        V2Files {
            cpu_stat: cpu.into(),
            memory_current: current.into(),
            memory_stat: stat.into(),
            memory_max: max.into(),
            ..Default::default()
        }
    }

    #[test]
    fn v1_files_give_cpu_and_the_kubelets_working_set() {
        let u = usage_v1(&v1(
            "123456789\n",
            "1662976\n",
            V1_MEMORY_STAT,
            "67108864\n",
        ));
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
        assert_eq!(u.swap_usage_bytes, None, "no memsw files, no swap figure");
    }

    #[test]
    fn v1_unlimited_memory_has_no_available_figure() {
        let u = usage_v1(&v1("1\n", "4096\n", "", "9223372036854771712\n"));
        assert_eq!(u.memory_available_bytes, None);
        assert_eq!(u.memory_working_set_bytes, Some(4096));
    }

    #[test]
    fn v1_swap_is_memsw_minus_memory() {
        // memory.memsw.* (present when the kernel accounts swap, as here): memory + swap.
        let mut files = v1("1\n", "1662976\n", V1_MEMORY_STAT, "67108864\n");
        files.memsw_usage = "1798144\n".into();
        files.memsw_limit = "134217728\n".into();
        files.pids_current = "3\n".into();
        let u = usage_v1(&files);
        assert_eq!(u.swap_usage_bytes, Some(1_798_144 - 1_662_976));
        assert_eq!(
            u.swap_available_bytes,
            Some((134_217_728 - 67_108_864) - (1_798_144 - 1_662_976))
        );
        assert_eq!(u.pids, Some(3));
        files.memsw_limit = "9223372036854771712\n".into();
        assert_eq!(usage_v1(&files).swap_available_bytes, None);
    }

    #[test]
    fn v2_files_give_cpu_in_nanoseconds_and_the_working_set() {
        let u = usage_v2(&v2(V2_CPU_STAT, "7458816\n", V2_MEMORY_STAT, "max\n"));
        assert_eq!(u.cpu_usage_ns, Some(84_512_000));
        assert_eq!(u.memory_working_set_bytes, Some(7_458_816 - 1_806_336));
        assert_eq!(u.memory_rss_bytes, Some(1_884_160));
        assert_eq!(u.major_page_faults, Some(17));
        assert_eq!(u.memory_available_bytes, None, "max means no limit");
        let limited = usage_v2(&v2(V2_CPU_STAT, "7458816\n", V2_MEMORY_STAT, "16777216\n"));
        assert_eq!(
            limited.memory_available_bytes,
            Some(16_777_216 - (7_458_816 - 1_806_336))
        );
    }

    #[test]
    fn v2_swap_and_pids() {
        let mut files = v2(V2_CPU_STAT, "7458816\n", V2_MEMORY_STAT, "max\n");
        files.swap_current = "65536\n".into();
        files.swap_max = "max\n".into();
        files.pids_current = "4\n".into();
        let u = usage_v2(&files);
        assert_eq!(u.swap_usage_bytes, Some(65_536));
        assert_eq!(u.swap_available_bytes, None);
        assert_eq!(u.pids, Some(4));
        files.swap_max = "1048576\n".into();
        assert_eq!(
            usage_v2(&files).swap_available_bytes,
            Some(1_048_576 - 65_536)
        );
    }

    #[test]
    fn v2_io_stat_and_pressure_files() {
        let mut files = v2(V2_CPU_STAT, "8192\n", V2_MEMORY_STAT, "max\n");
        files.io_stat = "254:0 rbytes=4096 wbytes=1000 rios=1 wios=2 dbytes=0 dios=0\n\
                         8:0 rbytes=100 wbytes=24 rios=1 wios=1 dbytes=0 dios=0\n"
            .into();
        files.cpu_pressure = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500\n\
                              full avg10=0.00 avg60=0.00 avg300=0.00 total=700\n"
            .into();
        files.memory_pressure = "some avg10=1.50 avg60=0.20 avg300=0.00 total=42\n".into();
        let usage = usage_v2(&files);
        assert_eq!(usage.io_read_bytes, Some(4196));
        assert_eq!(usage.io_write_bytes, Some(1024));
        assert_eq!(
            usage.cpu_pressure,
            Some(Pressure {
                some_us: 1500,
                full_us: Some(700),
                some_avgs: [0, 0, 0],
                full_avgs: Some([0, 0, 0]),
            })
        );
        assert_eq!(
            usage.memory_pressure,
            Some(Pressure {
                some_us: 42,
                full_us: None,
                some_avgs: [150, 20, 0],
                full_avgs: None,
            })
        );
        assert_eq!(usage.io_pressure, None, "no file, no figure");
        assert_eq!(parse_io_stat(""), (None, None));
    }

    #[test]
    fn a_vanished_cgroup_gives_empty_figures() {
        assert_eq!(usage_v1(&V1Files::default()), Usage::default());
        assert_eq!(usage_v2(&V2Files::default()), Usage::default());
        assert!(Usage::default().is_empty());
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
