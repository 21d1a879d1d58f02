//! Lifecycle events as the managers publish them → GetContainerEvents messages.

use crate::cri::api as cri;

use crate::container::manager::ContainerRecord;
use crate::events::EventKind;
use crate::sandbox::{SandboxRecord, SandboxState};

/// A lifecycle event as the managers publish it.
pub type Event = crate::events::Event<ContainerRecord, (SandboxRecord, SandboxState)>;

fn event_type(kind: EventKind) -> i32 {
    match kind {
        EventKind::Created => cri::ContainerEventType::ContainerCreatedEvent as i32,
        EventKind::Started => cri::ContainerEventType::ContainerStartedEvent as i32,
        EventKind::Stopped => cri::ContainerEventType::ContainerStoppedEvent as i32,
        EventKind::Deleted => cri::ContainerEventType::ContainerDeletedEvent as i32,
    }
}

/// The statuses an event carries: the pod's containers now, with the event's own container
/// as it was at the transition (and without it once deleted).
pub fn event_containers(event: &Event, current: Vec<ContainerRecord>) -> Vec<ContainerRecord> {
    let mut out: Vec<ContainerRecord> = current.into_iter().filter(|c| c.id != event.id).collect();
    if let Some(own) = &event.container
        && event.kind != EventKind::Deleted
    {
        out.push(own.clone());
    }
    out.sort_by_key(|c| c.created_at);
    out
}

pub fn event(event: &Event, containers: &[ContainerRecord]) -> cri::ContainerEventResponse {
    cri::ContainerEventResponse {
        container_id: event.id.clone(),
        container_event_type: event_type(event.kind),
        created_at: event.created_at,
        pod_sandbox_status: event
            .sandbox
            .as_ref()
            .map(|(record, state)| super::pod_convert::sandbox_status(record, *state)),
        containers_statuses: containers.iter().map(super::container::status).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::manager::ContainerState;
    use crate::cri::stats::tests::{record, sandbox};

    fn container_event(
        kind: EventKind,
        record: &ContainerRecord,
        sandbox: Option<(SandboxRecord, SandboxState)>,
    ) -> Event {
        Event {
            kind,
            id: record.id.clone(),
            sandbox_id: record.sandbox_id.clone(),
            created_at: 1,
            sandbox,
            container: Some(record.clone()),
        }
    }

    #[test]
    fn an_event_lists_its_container_as_it_was_and_drops_it_once_deleted() {
        let then = record("a", ContainerState::Running, 2);
        let now = vec![
            record("b", ContainerState::Running, 1),
            record("a", ContainerState::Exited, 2),
        ];
        let started = container_event(
            EventKind::Started,
            &then,
            Some((sandbox(), SandboxState::Ready)),
        );
        let listed = event_containers(&started, now.clone());
        let ids: Vec<_> = listed.iter().map(|c| (c.id.as_str(), c.state)).collect();
        assert_eq!(
            ids,
            [
                ("b", ContainerState::Running),
                ("a", ContainerState::Running)
            ],
            "the event's own container is the snapshot, the others are current"
        );
        let message = event(&started, &listed);
        assert_eq!(message.container_id, "a");
        assert_eq!(
            message.container_event_type,
            cri::ContainerEventType::ContainerStartedEvent as i32
        );
        let status = message.pod_sandbox_status.unwrap();
        assert_eq!(status.metadata.unwrap().name, "web");
        assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);

        let deleted = container_event(EventKind::Deleted, &then, None);
        let listed = event_containers(&deleted, now);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, "b");
        assert!(event(&deleted, &listed).pod_sandbox_status.is_none());
    }
}
