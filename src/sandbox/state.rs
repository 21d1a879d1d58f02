//! The pod sandbox state machine.

use serde::{Deserialize, Serialize};

use crate::events::EventKind;
use crate::lifecycle::Lifecycle;

/// ```text
///            run ok                 stop                  remove
/// Creating ─────────▶ Ready ────────────────▶ NotReady ─────────────▶ (removed)
///    │ any step fails    │ shim died / unreachable at recovery ▲
///    └─▶ rolled back     └───────────────────────────────────────┘
/// ```
/// Creating is written before any resource is taken, so recovery rolls back what a crash
/// interrupted. A Ready pod whose pause died reads NotReady (`SandboxRecord::reads_as`) without a
/// move: the record keeps Ready until the pod is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    #[default]
    Creating,
    Ready,
    NotReady,
}

impl Lifecycle for SandboxState {
    const CREATING: SandboxState = SandboxState::Creating;
    fn can_move(self, to: SandboxState) -> bool {
        use SandboxState::*;
        matches!((self, to), (Creating, Ready) | (Ready, NotReady))
    }

    fn events(self, to: SandboxState) -> &'static [EventKind] {
        match (self, to) {
            (_, SandboxState::Ready) => &[EventKind::Created, EventKind::Started],
            _ => &[EventKind::Stopped],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            SandboxState::Creating => "creating",
            SandboxState::Ready => "ready",
            SandboxState::NotReady => "not ready",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SandboxState::*;
    use super::*;

    #[test]
    fn every_move_of_the_table() {
        let all = [Creating, Ready, NotReady];
        let legal = [(Creating, Ready), (Ready, NotReady)];
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
        assert_eq!(
            Creating.events(Ready),
            [EventKind::Created, EventKind::Started]
        );
        assert_eq!(Ready.events(NotReady), [EventKind::Stopped]);
    }
}
