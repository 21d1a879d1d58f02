//! Checks a container's resources against what this node can apply, before anything is
//! created: a request the kernel would refuse halfway through init (or worse, accept
//! without effect) is refused up front with the CRI field it came from.

use std::collections::BTreeSet;
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
}

impl From<ResourceCheckError> for crate::Error {
    fn from(err: ResourceCheckError) -> Self {
        let kind = match err {
            ResourceCheckError::NoSwapAccounting | ResourceCheckError::UnifiedOnV1 { .. } => {
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
        }
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
/// controller it does not have, a swap allowance without swap accounting.
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
}
