//! The container state machine.

use serde::{Deserialize, Serialize};

use crate::events::EventKind;
use crate::lifecycle::Lifecycle;

/// ```text
///            create ok           start              exit           remove
/// Creating ────────────▶ Created ──────▶ Running ─────────▶ Exited ────────▶ (removed)
///    │ any step fails       │ start failed / killed          ▲ ▲
///    └─▶ rolled back        └────────────────────────────────┘ │
///                 Unknown (an old record) ──────────────────────┘
/// ```
/// Exits are pushed by the shim (exits.rs; its exit files cover what happened while the
/// daemon was down), or come from a stop that had to kill the cgroup, or a lost shim. Removal is not a state: the entry
/// is marked removed and leaves the registry, and a call still holding it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    #[default]
    Creating,
    Created,
    Running,
    Exited,
    Unknown,
}

impl ContainerState {
    /// Its process was made and has not been seen to exit: the shim's exit applies.
    pub fn awaits_exit(self) -> bool {
        matches!(self, ContainerState::Created | ContainerState::Running)
    }

    /// A process may still run (for an Unknown one, nobody knows): a lost shim kills it.
    pub fn is_live(self) -> bool {
        self.awaits_exit() || self == ContainerState::Unknown
    }
}

impl Lifecycle for ContainerState {
    const CREATING: ContainerState = ContainerState::Creating;
    fn can_move(self, to: ContainerState) -> bool {
        use ContainerState::*;
        matches!(
            (self, to),
            (Creating, Created)
                | (Created, Running)
                | (Created, Exited)
                | (Running, Exited)
                | (Unknown, Exited)
        )
    }

    fn events(self, to: ContainerState) -> &'static [EventKind] {
        match to {
            ContainerState::Created => &[EventKind::Created],
            ContainerState::Running => &[EventKind::Started],
            _ => &[EventKind::Stopped],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ContainerState::Creating => "being created",
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
            ContainerState::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ContainerState::*;
    use super::*;

    #[test]
    fn every_move_of_the_table() {
        let all = [Creating, Created, Running, Exited, Unknown];
        let legal = [
            (Creating, Created),
            (Created, Running),
            (Created, Exited),
            (Running, Exited),
            (Unknown, Exited),
        ];
        for from in all {
            for to in all {
                if from == to {
                    continue;
                }
                assert_eq!(
                    from.can_move(to),
                    legal.contains(&(from, to)),
                    "{from:?} → {to:?}"
                );
            }
        }
        assert_eq!(Creating.events(Created), [EventKind::Created]);
        assert_eq!(Created.events(Running), [EventKind::Started]);
        assert_eq!(Running.events(Exited), [EventKind::Stopped]);
        assert_eq!(Created.events(Exited), [EventKind::Stopped]);
    }

    #[test]
    fn refusals_say_the_current_state() {
        let entry =
            crate::lifecycle::Entry::new(crate::cri::stats::tests::record("c1", Creating, 0), ());
        // Stop (→ Exited) of a container being created.
        let err = entry.check(Exited).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::FailedPrecondition);
        assert_eq!(
            err.to_string(),
            "container c1 is being created; it cannot become exited"
        );
    }
}
