//! Checks a container's resources against what this node can apply, before anything is
//! created: a request the kernel would refuse halfway through init (or worse, accept
//! without effect) is refused up front with the CRI field it came from.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use oci_spec::runtime::LinuxResources;

use super::{Cgroups, Mode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceCheckError {
    #[error("resources.{field}: {value:?} is not a list like 0-3,5")]
    BadList { field: &'static str, value: String },
    #[error("resources.{field}: {value:?} names {kind} this node does not have (it has {online})")]
    NotOnNode {
        field: &'static str,
        kind: &'static str,
        value: String,
        online: String,
    },
    #[error(
        "resources.unified[{key:?}]: the {controller} controller is not available on this node (it has: {available})"
    )]
    UnavailableController {
        key: String,
        controller: String,
        available: String,
    },
    #[error(
        "resources.memory_swap_limit_in_bytes: this node has no swap accounting (boot with swapaccount=1 or a kernel with it), so a swap allowance cannot be enforced"
    )]
    NoSwapAccounting,
    #[error("resources.unified: {key:?} needs cgroup v2; this node runs cgroup v1")]
    UnifiedOnV1 { key: String },
    #[error(
        "resources.hugepage_limits[{page_size:?}]: this node has no hugepages of that size (it has: {have})"
    )]
    UnknownPageSize { page_size: String, have: String },
    #[error(
        "resources.hugepage_limits[{page_size:?}]: this node has no hugetlb cgroup controller, so the limit of {limit} bytes cannot be enforced on its {pool}-byte pool of {page_size} pages"
    )]
    NoHugetlbController {
        page_size: String,
        limit: i64,
        pool: u64,
    },
}

impl From<ResourceCheckError> for crate::Error {
    fn from(err: ResourceCheckError) -> Self {
        let kind = match err {
            ResourceCheckError::NoSwapAccounting
            | ResourceCheckError::UnifiedOnV1 { .. }
            | ResourceCheckError::NoHugetlbController { .. } => {
                crate::ErrorKind::FailedPrecondition
            }
            _ => crate::ErrorKind::InvalidArgument,
        };
        crate::Error::new(kind, err.to_string())
    }
}

/// Parses a kernel list (`0-3,5`, empty for none) into its members.
pub fn parse_list(text: &str) -> Option<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to): (u32, u32) = (from.trim().parse().ok()?, to.trim().parse().ok()?);
                if from > to || to - from > 65_536 {
                    return None;
                }
                out.extend(from..=to);
            }
            None => {
                out.insert(part.trim().parse().ok()?);
            }
        }
    }
    Some(out)
}

/// What the node offers, read once per check (a few small sysfs files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOffer {
    pub cpus: String,
    pub mems: String,
    /// Whether the node runs the unified hierarchy (where `unified` keys apply).
    pub v2: bool,
    /// v2: the root's `cgroup.controllers`.
    pub controllers: BTreeSet<String>,
    pub swap_accounting: bool,
    /// Whether a hugetlb controller exists (v1: a hierarchy; v2: in the root's controllers).
    pub hugetlb: bool,
    /// Each hugepage size the kernel offers, named as the hugetlb files and the CRI name it
    /// (`2MB`, `1GB`), with the most bytes of it a process could ever get (persistent pages
    /// plus the overcommit allowance).
    pub hugepage_pools: BTreeMap<String, u64>,
}

impl NodeOffer {
    pub fn read(cgroups: &Cgroups) -> NodeOffer {
        let read = |p: &str| fs::read_to_string(p).map(|s| s.trim().to_string());
        NodeOffer {
            cpus: read("/sys/devices/system/cpu/online").unwrap_or_else(|_| "0".into()),
            // No node directory: a kernel without NUMA, memory node 0 only.
            mems: read("/sys/devices/system/node/online").unwrap_or_else(|_| "0".into()),
            v2: v2_root(cgroups).is_some(),
            controllers: v2_root(cgroups)
                .and_then(|root| fs::read_to_string(root.join("cgroup.controllers")).ok())
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            swap_accounting: swap_accounting(cgroups),
            hugetlb: cgroups.has_controller("hugetlb"),
            hugepage_pools: hugepage_pools(Path::new("/sys/kernel/mm/hugepages")),
        }
    }
}

/// The kernel's hugepage pools (`hugepages-2048kB/nr_hugepages`, ...) by the size name the
/// hugetlb controller uses. No directory: a kernel without hugepages, no pools.
pub fn hugepage_pools(dir: &Path) -> BTreeMap<String, u64> {
    let mut pools = BTreeMap::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return pools;
    };
    let number = |path: &Path| -> u64 {
        fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(kib) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hugepages-")?.strip_suffix("kB"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let pages = number(&entry.path().join("nr_hugepages"))
            + number(&entry.path().join("nr_overcommit_hugepages"));
        pools.insert(page_size_name(kib), pages.saturating_mul(kib * 1024));
    }
    pools
}

/// 2048 kB → `2MB`, 1048576 kB → `1GB`, 64 kB → `64KB`: the kernel's hugetlb file names.
pub fn page_size_name(kib: u64) -> String {
    const MIB: u64 = 1024;
    const GIB: u64 = 1024 * 1024;
    match kib {
        k if k >= GIB && k % GIB == 0 => format!("{}GB", k / GIB),
        k if k >= MIB && k % MIB == 0 => format!("{}MB", k / MIB),
        k => format!("{k}KB"),
    }
}

fn v2_root(cgroups: &Cgroups) -> Option<&Path> {
    (cgroups.mode() == Mode::V2)
        .then(|| cgroups.hierarchies().iter().find(|h| h.v2))
        .flatten()
        .map(|h| h.mount_point.as_path())
}

/// v1: the memory root has `memory.memsw.*`; v2: a child cgroup with memory files has
/// `memory.swap.max` (the root itself has neither).
fn swap_accounting(cgroups: &Cgroups) -> bool {
    if let Some(root) = v2_root(cgroups) {
        let Ok(entries) = fs::read_dir(root) else {
            return true;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            if dir.join("memory.max").exists() {
                return dir.join("memory.swap.max").exists();
            }
        }
        // No child with the memory controller yet: nothing says it is missing.
        return true;
    }
    cgroups
        .hierarchies()
        .iter()
        .find(|h| !h.v2 && h.controllers.iter().any(|c| c == "memory"))
        .is_none_or(|h| h.mount_point.join("memory.memsw.limit_in_bytes").exists())
}

/// Refuses what `offer` cannot apply: CPUs or memory nodes it lacks, `unified` keys of a
/// controller it does not have, a swap allowance without swap accounting, a hugepage size it
/// lacks or a hugepage limit without a hugetlb controller to enforce it.
pub fn check(resources: &LinuxResources, offer: &NodeOffer) -> Result<(), ResourceCheckError> {
    if let Some(cpu) = resources.cpu() {
        for (field, kind, value, online) in [
            ("cpuset_cpus", "CPUs", cpu.cpus(), &offer.cpus),
            ("cpuset_mems", "memory nodes", cpu.mems(), &offer.mems),
        ] {
            let Some(value) = value.as_deref().filter(|v| !v.is_empty()) else {
                continue;
            };
            let wanted = parse_list(value).ok_or_else(|| ResourceCheckError::BadList {
                field,
                value: value.to_string(),
            })?;
            let have = parse_list(online).unwrap_or_default();
            if !wanted.is_subset(&have) {
                return Err(ResourceCheckError::NotOnNode {
                    field,
                    kind,
                    value: value.to_string(),
                    online: online.clone(),
                });
            }
        }
    }
    let mut keys: Vec<&String> = resources
        .unified()
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    if let (false, Some(key)) = (offer.v2, keys.first()) {
        return Err(ResourceCheckError::UnifiedOnV1 {
            key: (*key).clone(),
        });
    }
    {
        for key in keys {
            let controller = key.split('.').next().unwrap_or_default();
            if controller != "cgroup" && !offer.controllers.contains(controller) {
                return Err(ResourceCheckError::UnavailableController {
                    key: key.clone(),
                    controller: controller.to_string(),
                    available: offer
                        .controllers
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" "),
                });
            }
        }
    }
    if let Some(memory) = resources.memory() {
        // swap == limit is how the kubelet says "no swap": nothing to enforce.
        let asks_for_swap = memory
            .swap()
            .is_some_and(|swap| swap > 0 && Some(swap) != memory.limit());
        if asks_for_swap && !offer.swap_accounting {
            return Err(ResourceCheckError::NoSwapAccounting);
        }
    }
    for limit in resources.hugepage_limits().iter().flatten() {
        let page_size = limit.page_size();
        let Some(&pool) = offer.hugepage_pools.get(page_size) else {
            return Err(ResourceCheckError::UnknownPageSize {
                page_size: page_size.clone(),
                have: offer
                    .hugepage_pools
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" "),
            });
        };
        // The kubelet sends a limit for every size the node has (0 when the pod asked for
        // none). Without the controller such a limit still holds when the whole pool fits
        // in it, as on a node that reserved no pages of that size; otherwise it cannot.
        let fits = u64::try_from(limit.limit()).is_ok_and(|l| l >= pool);
        if !offer.hugetlb && !fits {
            return Err(ResourceCheckError::NoHugetlbController {
                page_size: page_size.clone(),
                limit: limit.limit(),
                pool,
            });
        }
    }
    Ok(())
}

impl Cgroups {
    /// [`check`] against this node.
    pub fn check_resources(&self, resources: &LinuxResources) -> Result<(), ResourceCheckError> {
        check(resources, &NodeOffer::read(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> NodeOffer {
        NodeOffer {
            v2: true,
            cpus: "0-1".into(),
            mems: "0".into(),
            controllers: ["cpuset", "cpu", "io", "memory", "pids"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            swap_accounting: false,
            hugetlb: true,
            hugepage_pools: BTreeMap::from([("2MB".into(), 0), ("1GB".into(), 0)]),
        }
    }

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn kernel_lists_parse() {
        assert_eq!(
            parse_list("0-3,5").unwrap(),
            BTreeSet::from([0, 1, 2, 3, 5])
        );
        assert_eq!(parse_list("").unwrap(), BTreeSet::new());
        assert_eq!(parse_list("7\n").unwrap(), BTreeSet::from([7]));
        assert!(parse_list("3-1").is_none());
        assert!(parse_list("a").is_none());
    }

    #[test]
    fn a_cpuset_outside_the_node_names_the_field() {
        let err = check(&resources(r#"{"cpu":{"cpus":"0-3"}}"#), &offer()).unwrap_err();
        assert!(
            err.to_string().starts_with("resources.cpuset_cpus:"),
            "{err}"
        );
        assert!(err.to_string().contains("0-1"), "{err}");
        let err = check(&resources(r#"{"cpu":{"mems":"1"}}"#), &offer()).unwrap_err();
        assert!(
            err.to_string().starts_with("resources.cpuset_mems:"),
            "{err}"
        );
        let err = check(&resources(r#"{"cpu":{"cpus":"x"}}"#), &offer()).unwrap_err();
        assert!(matches!(err, ResourceCheckError::BadList { .. }), "{err}");
        assert!(check(&resources(r#"{"cpu":{"cpus":"1","mems":"0"}}"#), &offer()).is_ok());
        assert_eq!(
            crate::Error::from(err).kind(),
            crate::ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn unified_keys_of_a_missing_controller_are_refused() {
        let err = check(
            &resources(r#"{"unified":{"memory.high":"1G","hugetlb.2MB.max":"0"}}"#),
            &offer(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("resources.unified[\"hugetlb.2MB.max\"]: the hugetlb controller"),
            "{err}"
        );
        assert!(
            check(
                &resources(r#"{"unified":{"memory.high":"1G","cgroup.max.depth":"3"}}"#),
                &offer()
            )
            .is_ok()
        );
        let mut v1 = offer();
        v1.v2 = false;
        let err = check(&resources(r#"{"unified":{"memory.high":"1G"}}"#), &v1).unwrap_err();
        assert_eq!(
            crate::Error::from(err).kind(),
            crate::ErrorKind::FailedPrecondition
        );
    }

    #[test]
    fn swap_without_accounting_is_a_failed_precondition_but_no_swap_is_fine() {
        let err = check(
            &resources(r#"{"memory":{"limit":1000,"swap":2000}}"#),
            &offer(),
        )
        .unwrap_err();
        assert_eq!(err, ResourceCheckError::NoSwapAccounting);
        assert_eq!(
            crate::Error::from(err).kind(),
            crate::ErrorKind::FailedPrecondition
        );
        // The kubelet's NoSwap: swap equal to the limit.
        assert!(
            check(
                &resources(r#"{"memory":{"limit":1000,"swap":1000}}"#),
                &offer()
            )
            .is_ok()
        );
        let mut with_swap = offer();
        with_swap.swap_accounting = true;
        assert!(
            check(
                &resources(r#"{"memory":{"limit":1000,"swap":2000}}"#),
                &with_swap
            )
            .is_ok()
        );
    }

    #[test]
    fn kernel_hugepage_directories_name_their_pools() {
        let dir = tempfile::tempdir().unwrap();
        for (name, pages, overcommit) in [("hugepages-2048kB", 3, 1), ("hugepages-1048576kB", 0, 0)]
        {
            let pool = dir.path().join(name);
            fs::create_dir(&pool).unwrap();
            fs::write(pool.join("nr_hugepages"), format!("{pages}\n")).unwrap();
            fs::write(
                pool.join("nr_overcommit_hugepages"),
                format!("{overcommit}\n"),
            )
            .unwrap();
        }
        fs::create_dir(dir.path().join("not-a-pool")).unwrap();
        assert_eq!(
            hugepage_pools(dir.path()),
            BTreeMap::from([("2MB".into(), 4 * 2 * 1024 * 1024), ("1GB".into(), 0)])
        );
        assert!(hugepage_pools(&dir.path().join("missing")).is_empty());
        assert_eq!(page_size_name(64), "64KB");
    }

    #[test]
    fn hugepage_limits_without_a_hugetlb_controller_hold_only_when_the_pool_fits() {
        let mut node = offer();
        node.hugetlb = false;
        node.hugepage_pools.insert("2MB".into(), 8 << 20);
        // What the kubelet sends for a pod that asked for no hugepages.
        let zero =
            r#"{"hugepageLimits":[{"pageSize":"2MB","limit":0},{"pageSize":"1GB","limit":0}]}"#;
        let err = check(&resources(zero), &node).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("resources.hugepage_limits[\"2MB\"]: this node has no hugetlb"),
            "{err}"
        );
        assert_eq!(
            crate::Error::from(err).kind(),
            crate::ErrorKind::FailedPrecondition
        );
        let whole_pool = r#"{"hugepageLimits":[{"pageSize":"2MB","limit":8388608}]}"#;
        assert!(check(&resources(whole_pool), &node).is_ok());
        node.hugepage_pools.insert("2MB".into(), 0);
        assert!(check(&resources(zero), &node).is_ok());
        // With the controller any limit is enforceable.
        node.hugetlb = true;
        node.hugepage_pools.insert("2MB".into(), 8 << 20);
        assert!(check(&resources(zero), &node).is_ok());
    }

    #[test]
    fn a_hugepage_size_the_node_lacks_names_the_field() {
        let err = check(
            &resources(r#"{"hugepageLimits":[{"pageSize":"3MB","limit":0}]}"#),
            &offer(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "resources.hugepage_limits[\"3MB\"]: this node has no hugepages of that size (it has: 1GB 2MB)"
        );
        assert_eq!(
            crate::Error::from(err).kind(),
            crate::ErrorKind::InvalidArgument
        );
    }
}
