//! What a pod adds to its containers' figures: network counters read from the pod's
//! network namespace, and its process count.

use std::collections::BTreeSet;
use std::path::Path;

use crate::linux::cgroup::Cgroups;

/// Counters of one network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// The interface the kubelet reports as the pod's: CNI names it eth0.
pub const DEFAULT_INTERFACE: &str = "eth0";

/// Parses /proc/<pid>/net/dev: two header lines, then `name: 8 receive and 8 transmit
/// counters`. Loopback is left out: its traffic never leaves the pod.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let fields: Vec<u64> = counters
                .split_whitespace()
                .map(|f| f.parse().ok())
                .collect::<Option<_>>()?;
            if fields.len() < 16 {
                return None;
            }
            Some(InterfaceStats {
                name: name.to_string(),
                rx_bytes: fields[0],
                rx_errors: fields[2],
                tx_bytes: fields[8],
                tx_errors: fields[10],
            })
        })
        .collect()
}

/// The interfaces of the network namespace `pid` is in, read without entering it
/// (procfs answers for the reader's view of that process's netns). Empty if it is gone.
pub fn read_net_dev(pid: u32) -> Vec<InterfaceStats> {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|text| parse_net_dev(&text))
        .unwrap_or_default()
}

/// Processes in the cgroup `path` and below, when the pids controller does not say.
pub fn count_processes(cgroups: &Cgroups, path: &str) -> Option<u64> {
    let relative = path.trim_start_matches('/');
    // Any one hierarchy holds every process of the subtree; the first is enough.
    let root = cgroups.hierarchies().first()?.mount_point.join(relative);
    if !root.is_dir() {
        return None;
    }
    let mut pids = BTreeSet::new();
    collect(&root, &mut pids);
    Some(pids.len() as u64)
}

fn collect(dir: &Path, pids: &mut BTreeSet<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect(&entry.path(), pids);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // /proc/<pid>/net/dev as the kernel writes it (two header lines, then one line per interface).
    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     336       4    0    0    0     0          0         0      336       4    0    0    0     0       0          0
  eth0:    2876      32    1    0    0     0          0         0     1706      19    2    0    0     0       0          0
";

    #[test]
    fn net_dev_gives_bytes_and_errors_per_interface_without_loopback() {
        let interfaces = parse_net_dev(NET_DEV);
        assert_eq!(
            interfaces,
            vec![InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 2876,
                rx_errors: 1,
                tx_bytes: 1706,
                tx_errors: 2,
            }]
        );
    }

    #[test]
    fn garbled_net_dev_lines_are_skipped() {
        let text =
            "h1\nh2\n  eth0: 1 2 3\n  eth1: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\nnonsense\n";
        let interfaces = parse_net_dev(text);
        assert_eq!(interfaces.len(), 1);
        assert_eq!(interfaces[0].name, "eth1");
        assert_eq!(interfaces[0].tx_bytes, 9);
        assert!(parse_net_dev("").is_empty());
    }

    #[test]
    fn own_netns_is_readable() {
        // The test's own process has at least loopback (left out) and reads fine.
        let text = std::fs::read_to_string(format!("/proc/{}/net/dev", std::process::id()))
            .expect("procfs net/dev");
        assert!(text.contains("lo:"));
        assert_eq!(
            read_net_dev(u32::MAX / 2),
            Vec::new(),
            "a gone pid gives none"
        );
    }
}
