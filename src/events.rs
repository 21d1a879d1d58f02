//! The event bus behind GetContainerEvents: container and sandbox lifecycle transitions,
//! fanned out to every subscriber.
//!
//! Publishing never blocks and never fails: each subscriber has its own bounded queue, and
//! an event that does not fit a full queue is dropped for that subscriber only and counted
//! (the kubelet relists when it misses events). Each event carries the pod sandbox and the
//! container as they were at the transition, so a DELETED event still describes what went.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::container::manager::ContainerRecord;
use crate::sandbox::{SandboxRecord, SandboxState, now_nanos};
use crate::store::lock;

/// Events a subscriber may fall behind by before new ones are dropped for it.
pub const SUBSCRIBER_QUEUE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    /// The container's id, or the sandbox's for a sandbox event (as the kubelet expects).
    pub id: String,
    pub sandbox_id: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// The pod sandbox at the transition (none when it was already gone).
    pub sandbox: Option<(SandboxRecord, SandboxState)>,
    /// The container at the transition; none for sandbox events.
    pub container: Option<ContainerRecord>,
}

impl Event {
    pub fn container(
        kind: EventKind,
        record: &ContainerRecord,
        sandbox: Option<(SandboxRecord, SandboxState)>,
    ) -> Event {
        Event {
            kind,
            id: record.id.clone(),
            sandbox_id: record.sandbox_id.clone(),
            created_at: now_nanos(),
            sandbox,
            container: Some(record.clone()),
        }
    }

    pub fn sandbox(kind: EventKind, record: &SandboxRecord, state: SandboxState) -> Event {
        Event {
            kind,
            id: record.id.clone(),
            sandbox_id: record.id.clone(),
            created_at: now_nanos(),
            sandbox: Some((record.clone(), state)),
            container: None,
        }
    }

    fn is_oom_kill(&self) -> bool {
        self.kind == EventKind::Stopped
            && self
                .container
                .as_ref()
                .is_some_and(|c| c.reason == "OOMKilled")
    }
}

/// Publishes a container transition with its pod sandbox as it is now.
pub fn publish_container(
    sandboxes: &crate::sandbox::SandboxManager,
    kind: EventKind,
    record: &ContainerRecord,
) {
    let bus = sandboxes.events();
    if !bus.has_subscribers() {
        // Nobody listens: count it without looking up the pod or copying records (this
        // runs on every container create, start, stop and remove).
        bus.count(kind == EventKind::Stopped && record.reason == "OOMKilled");
        return;
    }
    let sandbox = sandboxes.status(&record.sandbox_id).ok();
    bus.publish(Event::container(kind, record, sandbox));
}

/// Counters the metrics endpoint reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EventCounts {
    pub published: u64,
    pub dropped: u64,
    pub oom_kills: u64,
}

#[derive(Default)]
pub struct EventBus {
    subscribers: Mutex<Vec<mpsc::Sender<Event>>>,
    published: AtomicU64,
    dropped: AtomicU64,
    oom_kills: AtomicU64,
}

impl EventBus {
    pub fn new() -> EventBus {
        EventBus::default()
    }

    /// A new subscriber sees every event published from now on (unless it falls behind).
    pub fn subscribe(&self) -> mpsc::Receiver<Event> {
        self.subscribe_with_queue(SUBSCRIBER_QUEUE)
    }

    pub fn subscribe_with_queue(&self, queue: usize) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        lock(&self.subscribers).push(tx);
        rx
    }

    pub fn has_subscribers(&self) -> bool {
        lock(&self.subscribers).iter().any(|s| !s.is_closed())
    }

    /// Hands `event` to every subscriber without waiting; a full subscriber loses it.
    /// Counts an event (and an OOM kill) in the metrics.
    pub fn count(&self, oom_kill: bool) {
        self.published.fetch_add(1, Ordering::Relaxed);
        if oom_kill {
            self.oom_kills.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn publish(&self, event: Event) {
        self.count(event.is_oom_kill());
        tracing::debug!(id = %event.id, kind = ?event.kind, "event");
        let mut subscribers = lock(&self.subscribers);
        subscribers.retain(|s| !s.is_closed());
        for subscriber in subscribers.iter() {
            match subscriber.try_send(event.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                // Gone since `retain`: nobody to tell.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    pub fn counts(&self) -> EventCounts {
        EventCounts {
            published: self.published.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            oom_kills: self.oom_kills.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::manager::ContainerState;

    fn event(id: &str) -> Event {
        Event {
            kind: EventKind::Created,
            id: id.into(),
            sandbox_id: "s".into(),
            created_at: 1,
            sandbox: None,
            container: None,
        }
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event_in_order() {
        let bus = EventBus::new();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        for id in ["1", "2", "3"] {
            bus.publish(event(id));
        }
        for rx in [&mut a, &mut b] {
            for id in ["1", "2", "3"] {
                assert_eq!(rx.recv().await.unwrap().id, id);
            }
        }
        assert_eq!(bus.counts().published, 3);
        assert_eq!(bus.counts().dropped, 0);
    }

    #[tokio::test]
    async fn a_full_subscriber_loses_events_without_blocking_the_others() {
        let bus = EventBus::new();
        let mut slow = bus.subscribe_with_queue(2);
        let mut fast = bus.subscribe_with_queue(16);
        for i in 0..5 {
            bus.publish(event(&i.to_string()));
        }
        assert_eq!(bus.counts().dropped, 3);
        let got: Vec<String> = std::iter::from_fn(|| slow.try_recv().ok().map(|e| e.id)).collect();
        assert_eq!(got, ["0", "1"], "the oldest are kept, the newest dropped");
        let got: Vec<String> = std::iter::from_fn(|| fast.try_recv().ok().map(|e| e.id)).collect();
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn oom_kills_are_counted_from_stopped_events() {
        let bus = EventBus::new();
        let mut record = crate::cri::stats::tests::record("c", ContainerState::Exited, 1);
        bus.publish(Event::container(EventKind::Stopped, &record, None));
        record.reason = "OOMKilled".into();
        bus.publish(Event::container(EventKind::Started, &record, None));
        bus.publish(Event::container(EventKind::Stopped, &record, None));
        assert_eq!(bus.counts().oom_kills, 1);
        assert_eq!(bus.counts().published, 3);
    }

    #[test]
    fn a_gone_subscriber_is_forgotten() {
        let bus = EventBus::new();
        let rx = bus.subscribe();
        assert!(bus.has_subscribers());
        drop(rx);
        assert!(!bus.has_subscribers());
        bus.publish(event("x"));
        assert_eq!(bus.counts().dropped, 0);
        assert!(lock(&bus.subscribers).is_empty());
    }
}
