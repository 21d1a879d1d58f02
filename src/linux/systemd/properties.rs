//! OCI `linux.resources` → the properties of a systemd unit, as data; and what systemd
//! has no property for (hugetlb, `unified` keys, v1 devices), left to be written by file
//! into the delegated cgroup.

use oci_spec::runtime::LinuxResources;

use crate::linux::cgroup::check::parse_list;
use crate::linux::cgroup::resources::{self, ResourcePlanError, ResourceWrite, shares_to_weight};

/// A property value in the D-Bus types systemd's transient-unit API expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    /// `t`
    U64(u64),
    /// `b`
    Bool(bool),
    /// `s`
    Str(String),
    /// `ay`: a CPU or memory node bitmask, bit n of byte n/8 for CPU n.
    Bytes(Vec<u8>),
    /// `au`: process ids.
    U32List(Vec<u32>),
}

pub type Property = (&'static str, PropertyValue);

/// "No limit" in systemd's `t` properties (`infinity`).
pub const INFINITY: u64 = u64::MAX;

/// systemd keeps `CPUQuotaPerSecUSec` in steps of 10 ms per second (it rounds what it is
/// given); asking for a rounded-up value keeps what the unit reports equal to what the
/// cgroup gets.
const QUOTA_GRANULARITY_USEC: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    #[error("resources.{field}: {value:?} is not a list like 0-3,5")]
    BadList { field: &'static str, value: String },
}

/// CFS quota per period → the quota per second systemd takes, rounded up to its 10 ms
/// granularity; a quota of 0 or below means no limit.
pub fn quota_per_sec_usec(quota: i64, period: u64) -> u64 {
    if quota <= 0 || period == 0 {
        return INFINITY;
    }
    let per_sec = (quota as u64).saturating_mul(1_000_000) / period;
    per_sec.div_ceil(QUOTA_GRANULARITY_USEC).max(1) * QUOTA_GRANULARITY_USEC
}

/// A kernel list (`0-3,5`) as the bitmask systemd's `AllowedCPUs`/`AllowedMemoryNodes` take.
pub fn list_to_mask(list: &str) -> Option<Vec<u8>> {
    let members = parse_list(list)?;
    let mut mask = Vec::new();
    for n in members {
        let (byte, bit) = ((n / 8) as usize, n % 8);
        if mask.len() <= byte {
            mask.resize(byte + 1, 0);
        }
        mask[byte] |= 1 << bit;
    }
    Some(mask)
}

/// The unit properties carrying what systemd manages: memory and swap limits, CPU weight,
/// quota and period, cpuset, tasks. Values as in [`resources::plan_v2`] (swap is swap
/// alone, the kubelet's shares become a weight with the kubelet's formula).
pub fn resource_properties(resources: &LinuxResources) -> Result<Vec<Property>, PropertyError> {
    use PropertyValue::*;
    let mut props: Vec<Property> = Vec::new();
    if let Some(cpu) = resources.cpu() {
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            props.push(("CPUWeight", U64(shares_to_weight(shares))));
        }
        let quota = cpu.quota().filter(|q| *q != 0);
        let period = cpu.period().filter(|p| *p != 0);
        if let Some(period) = period {
            props.push(("CPUQuotaPeriodUSec", U64(period)));
        }
        if let Some(quota) = quota {
            props.push((
                "CPUQuotaPerSecUSec",
                U64(quota_per_sec_usec(quota, period.unwrap_or(100_000))),
            ));
        }
        for (field, property, value) in [
            ("cpuset_cpus", "AllowedCPUs", cpu.cpus()),
            ("cpuset_mems", "AllowedMemoryNodes", cpu.mems()),
        ] {
            let Some(value) = value.as_deref().filter(|v| !v.is_empty()) else {
                continue;
            };
            let mask = list_to_mask(value).ok_or_else(|| PropertyError::BadList {
                field,
                value: value.to_string(),
            })?;
            props.push((property, Bytes(mask)));
        }
    }
    if let Some(memory) = resources.memory() {
        let limit = memory.limit().filter(|l| *l != 0);
        if let Some(limit) = limit {
            props.push(("MemoryMax", U64(limit_value(limit))));
        }
        if let Some(swap) = memory.swap().filter(|s| *s != 0) {
            let value = match limit {
                _ if swap < 0 => INFINITY,
                Some(limit) if limit > 0 => (swap - limit).max(0) as u64,
                _ => swap as u64,
            };
            props.push(("MemorySwapMax", U64(value)));
        }
    }
    if let Some(pids) = resources.pids() {
        let limit = pids.limit();
        props.push((
            "TasksMax",
            U64(if limit > 0 { limit as u64 } else { INFINITY }),
        ));
    }
    Ok(props)
}

/// The controllers whose files [`resource_properties`] covers.
const BY_PROPERTY: &[&str] = &["cpu", "cpuset", "memory", "pids"];

/// The cgroup writes systemd has no property for, to be made into the delegated cgroup
/// once the unit exists (and again after each SetUnitProperties).
pub fn leftover_writes(
    resources: &LinuxResources,
    v2: bool,
) -> Result<Vec<ResourceWrite>, ResourcePlanError> {
    let plan = if v2 {
        resources::plan_v2(resources)?
    } else {
        resources::plan_v1(resources)?
    };
    Ok(plan
        .into_iter()
        .filter(|w| !BY_PROPERTY.contains(&w.controller))
        .collect())
}

fn limit_value(limit: i64) -> u64 {
    if limit < 0 { INFINITY } else { limit as u64 }
}

#[cfg(test)]
mod tests {
    use super::PropertyValue::*;
    use super::*;

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn cri_resources_become_unit_properties() {
        let props = resource_properties(&resources(
            r#"{"cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1,9", "mems": "0"},
                "memory": {"limit": 104857600, "swap": 209715200},
                "pids": {"limit": 100}}"#,
        ))
        .unwrap();
        assert_eq!(
            props,
            vec![
                ("CPUWeight", U64(20)),
                ("CPUQuotaPeriodUSec", U64(100_000)),
                ("CPUQuotaPerSecUSec", U64(500_000)),
                ("AllowedCPUs", Bytes(vec![0b0000_0011, 0b0000_0010])),
                ("AllowedMemoryNodes", Bytes(vec![1])),
                ("MemoryMax", U64(104_857_600)),
                ("MemorySwapMax", U64(104_857_600)),
                ("TasksMax", U64(100)),
            ]
        );
    }

    #[test]
    fn shares_become_a_weight_as_the_kubelet_converts() {
        let weight = |shares: u64| {
            resource_properties(&resources(&format!(r#"{{"cpu": {{"shares": {shares}}}}}"#)))
                .unwrap()
        };
        assert_eq!(weight(2), vec![("CPUWeight", U64(1))]);
        assert_eq!(weight(1024), vec![("CPUWeight", U64(39))]);
        assert_eq!(weight(262_144), vec![("CPUWeight", U64(10_000))]);
    }

    #[test]
    fn quota_is_rounded_up_to_systemds_10ms_granularity() {
        // 12.345 ms per 100 ms = 123.45 ms per second → 130 ms.
        assert_eq!(quota_per_sec_usec(12_345, 100_000), 130_000);
        assert_eq!(quota_per_sec_usec(50_000, 100_000), 500_000);
        // The smallest quota the kubelet sets (1 ms per 100 ms) is 10 ms per second.
        assert_eq!(quota_per_sec_usec(1_000, 100_000), 10_000);
        assert_eq!(quota_per_sec_usec(1, 1_000_000), 10_000);
        assert_eq!(quota_per_sec_usec(-1, 100_000), INFINITY);
        assert_eq!(quota_per_sec_usec(200_000, 50_000), 4_000_000);
    }

    #[test]
    fn unlimited_values_are_infinity() {
        let props = resource_properties(&resources(
            r#"{"cpu": {"quota": -1, "period": 50000},
                "memory": {"limit": -1, "swap": -1},
                "pids": {"limit": 0}}"#,
        ))
        .unwrap();
        assert_eq!(
            props,
            vec![
                ("CPUQuotaPeriodUSec", U64(50_000)),
                ("CPUQuotaPerSecUSec", U64(INFINITY)),
                ("MemoryMax", U64(INFINITY)),
                ("MemorySwapMax", U64(INFINITY)),
                ("TasksMax", U64(INFINITY)),
            ]
        );
        assert!(resource_properties(&resources("{}")).unwrap().is_empty());
    }

    #[test]
    fn a_bad_cpuset_names_the_field() {
        let err = resource_properties(&resources(r#"{"cpu": {"cpus": "1-x"}}"#)).unwrap_err();
        assert!(
            err.to_string().starts_with("resources.cpuset_cpus:"),
            "{err}"
        );
    }

    #[test]
    fn hugetlb_and_unified_keys_are_left_for_files() {
        let r = resources(
            r#"{"cpu": {"shares": 512}, "memory": {"limit": 1048576},
                "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
                "unified": {"memory.high": "900000"}}"#,
        );
        let files: Vec<(String, String)> = leftover_writes(&r, true)
            .unwrap()
            .into_iter()
            .map(|w| (w.file, w.value))
            .collect();
        assert_eq!(
            files,
            vec![
                ("hugetlb.2MB.max".to_string(), "4194304".to_string()),
                ("memory.high".to_string(), "900000".to_string()),
            ]
        );
        let v1 = resources(
            r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}], "memory": {"limit": 1048576}}"#,
        );
        let files: Vec<String> = leftover_writes(&v1, false)
            .unwrap()
            .into_iter()
            .map(|w| w.file)
            .collect();
        assert_eq!(files, vec!["hugetlb.2MB.limit_in_bytes"]);
    }
}
