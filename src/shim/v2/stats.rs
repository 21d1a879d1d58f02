//! Stats and Update of a task: the cgroup's usage as containerd's cgroup v1 `Metrics`
//! (what containerd's CRI reads for ListContainerStats, on either cgroup version), and
//! the OCI `LinuxResources` containerd sends for an update.

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;

use crate::container::usage::Usage;

/// The name containerd resolves the stats of a task by.
const METRICS_TYPE: &str = "io.containerd.cgroups.v1.Metrics";

/// containerd's cgroup v1 metrics from a usage reading: CPU total, memory usage with the
/// figures the CRI's working set and RSS come from, page faults and pids.
pub fn metrics(usage: &Usage) -> Metrics {
    let mut metrics = Metrics::new();
    if let Some(total) = usage.cpu_usage_ns {
        let mut cpu_usage = CPUUsage::new();
        cpu_usage.total = total;
        let mut cpu = CPUStat::new();
        cpu.usage = Some(cpu_usage).into();
        metrics.cpu = Some(cpu).into();
    }
    if let Some(used) = usage.memory_usage_bytes {
        let working_set = usage.memory_working_set_bytes.unwrap_or(used);
        let mut entry = MemoryEntry::new();
        entry.usage = used;
        entry.limit = usage
            .memory_available_bytes
            .map_or(u64::MAX, |available| available.saturating_add(working_set));
        let mut memory = MemoryStat::new();
        memory.usage = Some(entry).into();
        // containerd's working set is usage minus this.
        memory.total_inactive_file = used.saturating_sub(working_set);
        memory.inactive_file = memory.total_inactive_file;
        memory.total_rss = usage.memory_rss_bytes.unwrap_or(0);
        memory.rss = memory.total_rss;
        memory.total_pg_fault = usage.page_faults.unwrap_or(0);
        memory.pg_fault = memory.total_pg_fault;
        memory.total_pg_maj_fault = usage.major_page_faults.unwrap_or(0);
        memory.pg_maj_fault = memory.total_pg_maj_fault;
        metrics.memory = Some(memory).into();
    }
    if let Some(current) = usage.pids {
        let mut pids = PidsStat::new();
        pids.current = current;
        metrics.pids = Some(pids).into();
    }
    metrics
}

pub fn metrics_any(usage: &Usage) -> Result<Any, String> {
    let mut any = Any::new();
    any.type_url = METRICS_TYPE.to_string();
    any.value = metrics(usage)
        .write_to_bytes()
        .map_err(|e| format!("encode metrics: {e}"))?;
    Ok(any)
}

/// The OCI resources of an Update (JSON, as containerd sends them).
pub fn resources(any: &Any) -> Result<oci_spec::runtime::LinuxResources, String> {
    serde_json::from_slice(&any.value).map_err(|e| format!("update: resources: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_becomes_the_figures_containerds_cri_reads() {
        let usage = Usage {
            cpu_usage_ns: Some(5_000),
            memory_usage_bytes: Some(100),
            memory_working_set_bytes: Some(70),
            memory_rss_bytes: Some(40),
            page_faults: Some(9),
            major_page_faults: Some(2),
            memory_available_bytes: Some(30),
            pids: Some(3),
            ..Default::default()
        };
        let m = metrics(&usage);
        assert_eq!(m.cpu.usage.total, 5_000);
        assert_eq!(m.memory.usage.usage, 100);
        assert_eq!(m.memory.usage.limit, 100);
        // usage - total_inactive_file = the working set.
        assert_eq!(m.memory.usage.usage - m.memory.total_inactive_file, 70);
        assert_eq!(
            (
                m.memory.total_rss,
                m.memory.total_pg_fault,
                m.memory.total_pg_maj_fault
            ),
            (40, 9, 2)
        );
        assert_eq!(m.pids.current, 3);
        let any = metrics_any(&usage).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        assert_eq!(Metrics::parse_from_bytes(&any.value).unwrap(), m);
    }

    #[test]
    fn a_gone_cgroup_gives_empty_metrics() {
        let m = metrics(&Usage::default());
        assert!(m.cpu.is_none() && m.memory.is_none() && m.pids.is_none());
    }

    #[test]
    fn update_resources_are_oci_json() {
        let mut any = Any::new();
        any.value = br#"{"memory": {"limit": 1048576}, "cpu": {"shares": 512}}"#.to_vec();
        let r = resources(&any).unwrap();
        assert_eq!(r.memory().as_ref().and_then(|m| m.limit()), Some(1_048_576));
        any.value = b"{not json".to_vec();
        assert!(resources(&any).unwrap_err().contains("update: resources"));
    }
}
