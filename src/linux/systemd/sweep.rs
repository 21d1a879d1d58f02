//! The startup sweep's half for systemd units: among the units this berth made (told by
//! their description, see [`super::describe`]), those whose pod or container no record
//! points to are killed, stopped and reset; failed ones of known objects (their processes
//! died while berth was away) are reset so that the names can be used again. Units of
//! anyone else, another berth included, are never touched.

use std::collections::HashSet;

use super::bus::ListedUnit;
use super::names::{UnitKind, parse_description};

/// One unit to clean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitLeftover {
    pub unit: String,
    pub kind: UnitKind,
    pub id: String,
    /// No record points to it (else: a known object's failed unit, only reset).
    pub unknown: bool,
}

/// The units to clean among `units`, scopes before the slices holding them.
pub fn plan(
    instance: &str,
    units: &[ListedUnit],
    known_sandboxes: &HashSet<String>,
    known_containers: &HashSet<String>,
) -> Vec<UnitLeftover> {
    let mut out: Vec<UnitLeftover> = units
        .iter()
        .filter_map(|u| {
            let (kind, id) = parse_description(instance, &u.description)?;
            let known = match kind {
                UnitKind::Pod | UnitKind::Pause | UnitKind::Shim => known_sandboxes.contains(id),
                UnitKind::Container => known_containers.contains(id),
            };
            (!known || u.active_state == "failed").then(|| UnitLeftover {
                unit: u.name.clone(),
                kind,
                id: id.to_string(),
                unknown: !known,
            })
        })
        .collect();
    out.sort_by_key(|l| (l.kind == UnitKind::Pod, l.unit.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, description: &str, state: &str) -> ListedUnit {
        ListedUnit {
            name: name.into(),
            description: description.into(),
            active_state: state.into(),
        }
    }

    #[test]
    fn only_this_berths_units_without_a_record_or_failed_are_cleaned() {
        let me = "/run/berth";
        let units = vec![
            unit("berth-pod1.slice", "berth pod p1 (/run/berth)", "active"),
            unit("berth-p1.scope", "berth pause p1 (/run/berth)", "active"),
            unit(
                "berth-c1.scope",
                "berth container c1 (/run/berth)",
                "active",
            ),
            unit("berth-pod2.slice", "berth pod p2 (/run/berth)", "active"),
            unit("berth-p2.scope", "berth pause p2 (/run/berth)", "active"),
            unit(
                "berth-c2.scope",
                "berth container c2 (/run/berth)",
                "failed",
            ),
            unit(
                "berth-c3.scope",
                "berth container c3 (/run/berth)",
                "active",
            ),
            unit("berth-x.scope", "berth container x (/run/other)", "active"),
            unit("session-1.scope", "Session 1 of User root", "active"),
            unit("berth.slice", "berth pods (/run/berth)", "active"),
        ];
        let pods: HashSet<String> = ["p2".to_string()].into();
        let containers: HashSet<String> = ["c2".to_string(), "c3".to_string()].into();
        let found: Vec<(String, bool)> = plan(me, &units, &pods, &containers)
            .into_iter()
            .map(|l| (l.unit, l.unknown))
            .collect();
        assert_eq!(
            found,
            vec![
                ("berth-c1.scope".to_string(), true),
                ("berth-c2.scope".to_string(), false),
                ("berth-p1.scope".to_string(), true),
                ("berth-pod1.slice".to_string(), true),
            ]
        );
    }
}
