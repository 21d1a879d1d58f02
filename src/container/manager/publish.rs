//! Container transitions onto the event bus, each with its pod sandbox as it is now.

use super::{ContainerManager, ContainerRecord};
use crate::events::EventKind;

/// The kernel's OOM killer ended it: a STOPPED transition whose reason says so.
fn is_oom_kill(kind: EventKind, record: &ContainerRecord) -> bool {
    kind == EventKind::Stopped && record.reason == "OOMKilled"
}

impl ContainerManager {
    /// Publishes a transition; the pod lookup and record copies run only when someone listens.
    pub(super) fn publish(&self, kind: EventKind, record: &ContainerRecord) {
        let oom_kill = is_oom_kill(kind, record);
        self.events
            .publish_container(kind, &record.id, &record.sandbox_id, oom_kill, || {
                let sandbox = self.sandboxes.status(&record.sandbox_id).ok();
                (record.clone(), sandbox)
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::manager::ContainerState;

    #[test]
    fn oom_kills_are_counted_from_stopped_events() {
        let bus = super::super::LifecycleEvents::new();
        let count = |kind, record: &ContainerRecord| {
            bus.publish_container(kind, &record.id, "s", is_oom_kill(kind, record), || {
                (record.clone(), None)
            })
        };
        let mut record = crate::cri::stats::tests::record("c", ContainerState::Exited, 1);
        count(EventKind::Stopped, &record);
        record.reason = "OOMKilled".into();
        count(EventKind::Started, &record);
        count(EventKind::Stopped, &record);
        assert_eq!(bus.counts().oom_kills, 1);
        assert_eq!(bus.counts().published, 3);
    }
}
