//! The event bus behind GetContainerEvents: lifecycle transitions published by their owners
//! (the sandbox and container managers, each given a handle by the composition root) and
//! fanned out to every subscriber.
//!
//! Publishing never blocks and never fails: each subscriber has its own bounded queue, and
//! an event that does not fit a full queue is dropped for that subscriber only and counted
//! (the kubelet relists when it misses events). Each event carries the pod sandbox and the
//! container as they were at the transition, so a DELETED event still describes what went.
//!
//! A leaf: the bus is generic over the container (`C`) and sandbox (`S`) snapshots, so it
//! names no domain type and calls nobody; the root picks the concrete types.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

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
pub struct Event<C, S> {
    pub kind: EventKind,
    /// The container's id, or the sandbox's for a sandbox event (as the kubelet expects).
    pub id: String,
    pub sandbox_id: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// The pod sandbox at the transition (none when it was already gone).
    pub sandbox: Option<S>,
    /// The container at the transition; none for sandbox events.
    pub container: Option<C>,
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// What the sandbox manager is given: it publishes sandbox snapshots `S` without knowing the
/// container type the bus also carries.
pub trait SandboxPublisher<S>: Send + Sync {
    /// Publishes a sandbox transition; `snapshot` runs only when someone listens.
    fn publish_sandbox(&self, kind: EventKind, sandbox_id: &str, snapshot: &dyn Fn() -> S);
}

/// Counters the metrics endpoint reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EventCounts {
    pub published: u64,
    pub dropped: u64,
    pub oom_kills: u64,
}

pub struct EventBus<C, S> {
    subscribers: Mutex<Vec<mpsc::Sender<Event<C, S>>>>,
    published: AtomicU64,
    dropped: AtomicU64,
    oom_kills: AtomicU64,
}

impl<C, S> Default for EventBus<C, S> {
    fn default() -> Self {
        EventBus {
            subscribers: Mutex::new(Vec::new()),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            oom_kills: AtomicU64::new(0),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<C: Clone, S: Clone> EventBus<C, S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new subscriber sees every event published from now on (unless it falls behind).
    pub fn subscribe(&self) -> mpsc::Receiver<Event<C, S>> {
        self.subscribe_with_queue(SUBSCRIBER_QUEUE)
    }

    pub fn subscribe_with_queue(&self, queue: usize) -> mpsc::Receiver<Event<C, S>> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        lock(&self.subscribers).push(tx);
        rx
    }

    pub fn has_subscribers(&self) -> bool {
        lock(&self.subscribers).iter().any(|s| !s.is_closed())
    }

    /// Counts an event (and an OOM kill) in the metrics.
    fn count(&self, oom_kill: bool) {
        self.published.fetch_add(1, Ordering::Relaxed);
        if oom_kill {
            self.oom_kills.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A container transition. With no subscriber it is only counted: `snapshot` (which
    /// looks up the pod and copies records) runs only when someone listens, since this
    /// happens on every container create, start, stop and remove.
    pub fn publish_container(
        &self,
        kind: EventKind,
        container_id: &str,
        sandbox_id: &str,
        oom_kill: bool,
        snapshot: impl FnOnce() -> (C, Option<S>),
    ) {
        if !self.has_subscribers() {
            self.count(oom_kill);
            return;
        }
        let (container, sandbox) = snapshot();
        let event = Event {
            kind,
            id: container_id.to_string(),
            sandbox_id: sandbox_id.to_string(),
            created_at: now_nanos(),
            sandbox,
            container: Some(container),
        };
        self.publish(event, oom_kill);
    }

    /// Hands `event` to every subscriber without waiting; a full subscriber loses it.
    pub fn publish(&self, event: Event<C, S>, oom_kill: bool) {
        self.count(oom_kill);
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

impl<C: Clone + Send, S: Clone + Send> SandboxPublisher<S> for EventBus<C, S> {
    fn publish_sandbox(&self, kind: EventKind, sandbox_id: &str, snapshot: &dyn Fn() -> S) {
        if !self.has_subscribers() {
            self.count(false);
            return;
        }
        let event = Event {
            kind,
            id: sandbox_id.to_string(),
            sandbox_id: sandbox_id.to_string(),
            created_at: now_nanos(),
            sandbox: Some(snapshot()),
            container: None,
        };
        self.publish(event, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Bus = EventBus<&'static str, ()>;

    fn event(id: &str) -> Event<&'static str, ()> {
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
        let bus = Bus::new();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        for id in ["1", "2", "3"] {
            bus.publish(event(id), false);
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
        let bus = Bus::new();
        let mut slow = bus.subscribe_with_queue(2);
        let mut fast = bus.subscribe_with_queue(16);
        for i in 0..5 {
            bus.publish(event(&i.to_string()), false);
        }
        assert_eq!(bus.counts().dropped, 3);
        let got: Vec<String> = std::iter::from_fn(|| slow.try_recv().ok().map(|e| e.id)).collect();
        assert_eq!(got, ["0", "1"], "the oldest are kept, the newest dropped");
        let got: Vec<String> = std::iter::from_fn(|| fast.try_recv().ok().map(|e| e.id)).collect();
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn oom_kills_are_counted_with_or_without_subscribers() {
        let bus = Bus::new();
        bus.publish_container(EventKind::Stopped, "c", "s", false, || unreachable!());
        bus.publish_container(EventKind::Stopped, "c", "s", true, || unreachable!());
        let _rx = bus.subscribe();
        bus.publish_container(EventKind::Started, "c", "s", false, || ("c", None));
        bus.publish_container(EventKind::Stopped, "c", "s", true, || ("c", None));
        assert_eq!(bus.counts().oom_kills, 2);
        assert_eq!(bus.counts().published, 4);
    }

    #[test]
    fn nobody_listening_means_no_snapshot_is_taken() {
        let bus = Bus::new();
        bus.publish_sandbox(EventKind::Created, "s", &|| unreachable!());
        let mut rx = bus.subscribe();
        bus.publish_sandbox(EventKind::Created, "s", &|| ());
        let event = rx.try_recv().expect("published");
        assert_eq!((event.id.as_str(), event.sandbox_id.as_str()), ("s", "s"));
        assert!(event.container.is_none());
        assert_eq!(bus.counts().published, 2);
    }

    #[test]
    fn a_gone_subscriber_is_forgotten() {
        let bus = Bus::new();
        let rx = bus.subscribe();
        assert!(bus.has_subscribers());
        drop(rx);
        assert!(!bus.has_subscribers());
        bus.publish(event("x"), false);
        assert_eq!(bus.counts().dropped, 0);
        assert!(lock(&bus.subscribers).is_empty());
    }
}
