//! OCI `linux.resources` → the cgroup files to write, as data (v1 and v2).

use oci_spec::runtime::LinuxResources;

/// One file write: `controller` names the v1 hierarchy holding the file (ignored on v2,
/// where every file lives in the one tree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceWrite {
    pub controller: &'static str,
    pub file: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourcePlanError {
    #[error("the `unified` resources need cgroup v2; this host uses v1")]
    UnifiedOnV1,
    #[error("invalid unified key {0:?}")]
    InvalidUnifiedKey(String),
}

fn write(controller: &'static str, file: impl Into<String>, value: impl ToString) -> ResourceWrite {
    ResourceWrite {
        controller,
        file: file.into(),
        value: value.to_string(),
    }
}

/// CPU shares (v1, 2..262144) to a v2 weight (1..10000), the kubelet's formula.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The writes for cgroup v1, in a safe order (cpuset before tasks run, memory before
/// memsw: the kernel refuses memsw below the memory limit).
pub fn plan_v1(resources: &LinuxResources) -> Result<Vec<ResourceWrite>, ResourcePlanError> {
    if resources.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(ResourcePlanError::UnifiedOnV1);
    }
    let mut writes = Vec::new();
    if let Some(cpu) = resources.cpu() {
        if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            writes.push(write("cpuset", "cpuset.cpus", cpus));
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            writes.push(write("cpuset", "cpuset.mems", mems));
        }
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            writes.push(write("cpu", "cpu.shares", shares));
        }
        // Period first: a quota is checked against the current period.
        if let Some(period) = cpu.period().filter(|p| *p != 0) {
            writes.push(write("cpu", "cpu.cfs_period_us", period));
        }
        if let Some(quota) = cpu.quota().filter(|q| *q != 0) {
            writes.push(write("cpu", "cpu.cfs_quota_us", quota));
        }
    }
    if let Some(memory) = resources.memory() {
        if let Some(limit) = memory.limit().filter(|l| *l != 0) {
            writes.push(write("memory", "memory.limit_in_bytes", limit));
        }
        if let Some(swap) = memory.swap().filter(|s| *s != 0) {
            writes.push(write("memory", "memory.memsw.limit_in_bytes", swap));
        }
    }
    for limit in resources.hugepage_limits().iter().flatten() {
        writes.push(write(
            "hugetlb",
            format!("hugetlb.{}.limit_in_bytes", limit.page_size()),
            limit.limit(),
        ));
    }
    if let Some(pids) = resources.pids() {
        writes.push(write("pids", "pids.max", pids_value(pids.limit())));
    }
    if let Some(devices) = resources.devices().as_ref().filter(|d| !d.is_empty()) {
        // Start from nothing, then allow (or deny) the listed devices in order.
        writes.push(write("devices", "devices.deny", "a"));
        for rule in devices {
            let typ = rule.typ().map(|t| t.as_str().to_string());
            let number = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
            let line = format!(
                "{} {}:{} {}",
                typ.as_deref().unwrap_or("a"),
                number(rule.major()),
                number(rule.minor()),
                rule.access().as_deref().unwrap_or("rwm")
            );
            let file = if rule.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            writes.push(write("devices", file, line));
        }
    }
    Ok(writes)
}

/// The writes for cgroup v2. Device rules are skipped: v2 device control needs an eBPF
/// program attached to the cgroup, which berth does not load (yet).
pub fn plan_v2(resources: &LinuxResources) -> Result<Vec<ResourceWrite>, ResourcePlanError> {
    let mut writes = Vec::new();
    if let Some(cpu) = resources.cpu() {
        if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            writes.push(write("cpuset", "cpuset.cpus", cpus));
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            writes.push(write("cpuset", "cpuset.mems", mems));
        }
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            writes.push(write("cpu", "cpu.weight", shares_to_weight(shares)));
        }
        let quota = cpu.quota().filter(|q| *q != 0);
        let period = cpu.period().filter(|p| *p != 0);
        if quota.is_some() || period.is_some() {
            let quota = match quota {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            writes.push(write(
                "cpu",
                "cpu.max",
                format!("{quota} {}", period.unwrap_or(100_000)),
            ));
        }
    }
    if let Some(memory) = resources.memory() {
        let limit = memory.limit().filter(|l| *l != 0);
        if let Some(limit) = limit {
            writes.push(write("memory", "memory.max", v2_limit(limit)));
        }
        // OCI swap is memory+swap (v1 memsw); v2's swap.max is swap alone.
        if let Some(swap) = memory.swap().filter(|s| *s != 0) {
            let value = match limit {
                _ if swap < 0 => "max".to_string(),
                Some(limit) if limit > 0 => (swap - limit).max(0).to_string(),
                _ => swap.to_string(),
            };
            writes.push(write("memory", "memory.swap.max", value));
        }
    }
    for limit in resources.hugepage_limits().iter().flatten() {
        writes.push(write(
            "hugetlb",
            format!("hugetlb.{}.max", limit.page_size()),
            v2_limit(limit.limit()),
        ));
    }
    if let Some(pids) = resources.pids() {
        writes.push(write("pids", "pids.max", pids_value(pids.limit())));
    }
    if let Some(unified) = resources.unified() {
        let mut keys: Vec<_> = unified.iter().collect();
        keys.sort();
        for (key, value) in keys {
            if key.is_empty() || key.contains('/') || key.starts_with('.') {
                return Err(ResourcePlanError::InvalidUnifiedKey(key.clone()));
            }
            writes.push(write("unified", key.clone(), value));
        }
    }
    Ok(writes)
}

/// v1 refuses a memory limit above the memory+swap limit at every step, so a memsw limit
/// above the current one (an update that raises both) is written before the memory limit;
/// one below it, after (plan_v1's order). `current_memsw` as read from the cgroup.
pub fn order_memsw_write(writes: &mut [ResourceWrite], current_memsw: Option<u64>) {
    let position = |file: &str| writes.iter().position(|w| w.file == file);
    let (Some(memory), Some(memsw)) = (
        position("memory.limit_in_bytes"),
        position("memory.memsw.limit_in_bytes"),
    ) else {
        return;
    };
    let wanted = match writes[memsw].value.parse::<i64>() {
        Ok(v) if v >= 0 => v as u64,
        _ => u64::MAX,
    };
    if current_memsw.is_some_and(|current| wanted > current) && memsw > memory {
        writes.swap(memory, memsw);
    }
}

fn v2_limit(limit: i64) -> String {
    if limit < 0 {
        "max".to_string()
    } else {
        limit.to_string()
    }
}

fn pids_value(limit: i64) -> String {
    if limit <= 0 {
        "max".to_string()
    } else {
        limit.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    fn files(writes: &[ResourceWrite]) -> Vec<(&str, &str, &str)> {
        writes
            .iter()
            .map(|w| (w.controller, w.file.as_str(), w.value.as_str()))
            .collect()
    }

    const FULL: &str = r#"{
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
        "memory": {"limit": 104857600, "swap": 209715200},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
        "pids": {"limit": 100},
        "devices": [{"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                    {"allow": true, "type": "c", "major": 136, "access": "rwm"}]
    }"#;

    #[test]
    fn v1_files_and_values() {
        let writes = plan_v1(&resources(FULL)).unwrap();
        assert_eq!(
            files(&writes),
            vec![
                ("cpuset", "cpuset.cpus", "0-1"),
                ("cpuset", "cpuset.mems", "0"),
                ("cpu", "cpu.shares", "512"),
                ("cpu", "cpu.cfs_period_us", "100000"),
                ("cpu", "cpu.cfs_quota_us", "50000"),
                ("memory", "memory.limit_in_bytes", "104857600"),
                ("memory", "memory.memsw.limit_in_bytes", "209715200"),
                ("hugetlb", "hugetlb.2MB.limit_in_bytes", "4194304"),
                ("pids", "pids.max", "100"),
                ("devices", "devices.deny", "a"),
                ("devices", "devices.deny", "a *:* rwm"),
                ("devices", "devices.allow", "c 1:3 rw"),
                ("devices", "devices.allow", "c 136:* rwm"),
            ]
        );
    }

    #[test]
    fn v2_files_and_values() {
        let writes = plan_v2(&resources(FULL)).unwrap();
        assert_eq!(
            files(&writes),
            vec![
                ("cpuset", "cpuset.cpus", "0-1"),
                ("cpuset", "cpuset.mems", "0"),
                ("cpu", "cpu.weight", "20"),
                ("cpu", "cpu.max", "50000 100000"),
                ("memory", "memory.max", "104857600"),
                ("memory", "memory.swap.max", "104857600"),
                ("hugetlb", "hugetlb.2MB.max", "4194304"),
                ("pids", "pids.max", "100"),
            ]
        );
    }

    #[test]
    fn v2_unlimited_values_and_unified_keys() {
        let writes = plan_v2(&resources(
            r#"{"cpu": {"quota": -1, "period": 50000},
                "memory": {"limit": 1048576, "swap": -1},
                "pids": {"limit": 0},
                "unified": {"memory.high": "900000", "io.weight": "50"}}"#,
        ))
        .unwrap();
        assert_eq!(
            files(&writes),
            vec![
                ("cpu", "cpu.max", "max 50000"),
                ("memory", "memory.max", "1048576"),
                ("memory", "memory.swap.max", "max"),
                ("pids", "pids.max", "max"),
                ("unified", "io.weight", "50"),
                ("unified", "memory.high", "900000"),
            ]
        );
        assert_eq!(
            plan_v2(&resources(r#"{"unified": {"../x": "1"}}"#)),
            Err(ResourcePlanError::InvalidUnifiedKey("../x".into()))
        );
    }

    #[test]
    fn unified_is_refused_on_v1() {
        assert_eq!(
            plan_v1(&resources(r#"{"unified": {"memory.high": "1"}}"#)),
            Err(ResourcePlanError::UnifiedOnV1)
        );
        assert!(
            plan_v1(&resources(r#"{"unified": {}}"#))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn shares_convert_with_the_kubelet_formula() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 0);
    }

    #[test]
    fn raising_memory_and_swap_on_v1_writes_memsw_first() {
        let plan = |limit: i64| {
            plan_v1(&resources(&format!(
                r#"{{"memory":{{"limit":{limit},"swap":{limit}}}}}"#
            )))
            .unwrap()
        };
        let files = |w: &[ResourceWrite]| w.iter().map(|w| w.file.clone()).collect::<Vec<_>>();
        let mut raise = plan(96 << 20);
        order_memsw_write(&mut raise, Some(64 << 20));
        assert_eq!(
            files(&raise),
            ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
        );
        let mut lower = plan(32 << 20);
        order_memsw_write(&mut lower, Some(64 << 20));
        assert_eq!(
            files(&lower),
            ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
        );
    }
}
