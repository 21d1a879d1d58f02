//! States change only here. Each object kind has a table ([`Lifecycle::can_move`], drawn
//! beside its state enum) and names the events each move publishes; a transition checks
//! the table, applies the move and its field changes under the record's lock, then
//! persists the record and publishes the events through the kind's [`Publish`].

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::store::lock;

/// A state enum with its transition table.
pub trait Lifecycle: Copy + Eq + Debug + Send + Sync + 'static {
    /// The state of an object under creation: it is not listed yet.
    const CREATING: Self;
    /// Whether `self → to` is a legal move (staying put is handled before this is asked).
    fn can_move(self, to: Self) -> bool;
    /// The events a legal move publishes, in order.
    fn events(self, to: Self) -> &'static [EventKind];
    /// How the state reads in a message ("created", "not ready").
    fn describe(self) -> &'static str;
}

/// A persisted record of an object with a lifecycle.
pub trait Record: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    type State: Lifecycle;
    /// "container", "pod sandbox".
    const KIND: &'static str;
    /// The request field that carries the id ("container_id").
    const ID_FIELD: &'static str;
    /// The kind's folder under the daemon's roots, and its record's file name there.
    const DIR: &'static str;
    const FILE: &'static str;
    fn id(&self) -> &str;
    fn state(&self) -> Self::State;
    fn set_state(&mut self, state: Self::State);
    /// Unix nanoseconds; lists are ordered by it.
    fn created_at(&self) -> i64;
    fn labels(&self) -> &BTreeMap<String, String>;
    /// The pod the object belongs to (containers only).
    fn sandbox_id(&self) -> Option<&str> {
        None
    }
    /// The state the object reads as in Status and List calls (a pod whose pause died
    /// reads NotReady while its record still says Ready).
    fn reads_as(&self) -> Self::State {
        self.state()
    }
    /// The reserved name (metadata and attempt), when it has one.
    fn name_key(&self) -> Option<String>;
    /// What a retry must repeat to count as the same request (see `fingerprint`).
    fn fingerprint(&self) -> String;
}

/// The accessors of the fields every record has (`id`, `state`, `created_at`), for
/// inside an `impl Record`.
macro_rules! record_fields {
    ($state:ty) => {
        fn id(&self) -> &str {
            &self.id
        }
        fn state(&self) -> $state {
            self.state
        }
        fn set_state(&mut self, state: $state) {
            self.state = state;
        }
        fn created_at(&self) -> i64 {
            self.created_at
        }
    };
}
pub(crate) use record_fields;

/// What is specific to a kind in its events: where they go and what they carry.
pub type Publish<R> = Box<dyn Fn(EventKind, &R) + Send + Sync>;

struct Slot<R> {
    record: R,
    /// Removed: its files are gone and it leaves the registry; nothing may move it again.
    removed: bool,
}

/// One object in memory: its record, the lock that serializes its mutations, and what
/// the kind keeps beside it (a shim connection, a start flag).
pub struct Entry<R: Record, X = ()> {
    pub id: String,
    slot: Mutex<Slot<R>>,
    /// Held by every mutating call of this object for its whole run.
    pub op: tokio::sync::Mutex<()>,
    /// The state the last finished transition left, for whoever waits for a move (a stop
    /// waiting for the exit).
    moves: tokio::sync::watch::Sender<R::State>,
    pub ext: X,
}

/// The outcome of a transition.
#[derive(Debug, Clone)]
pub struct Moved<R> {
    pub record: R,
    /// False when the object already was in the target state (a retry): nothing was
    /// written or published.
    pub changed: bool,
}

impl<R: Record, X> Entry<R, X> {
    pub fn new(record: R, ext: X) -> Entry<R, X> {
        Entry {
            id: record.id().to_string(),
            moves: tokio::sync::watch::Sender::new(record.state()),
            slot: Mutex::new(Slot {
                record,
                removed: false,
            }),
            op: tokio::sync::Mutex::new(()),
            ext,
        }
    }

    pub fn record(&self) -> R {
        lock(&self.slot).record.clone()
    }

    pub fn state(&self) -> R::State {
        lock(&self.slot).record.state()
    }

    pub fn is_removed(&self) -> bool {
        lock(&self.slot).removed
    }

    /// Changes fields other than the state, in memory only (callers persist through the
    /// registry's `save` or the next transition).
    pub fn update(&self, f: impl FnOnce(&mut R)) -> R {
        let mut slot = lock(&self.slot);
        let state = slot.record.state();
        f(&mut slot.record);
        debug_assert_eq!(
            slot.record.state(),
            state,
            "states change by transition only"
        );
        slot.record.set_state(state);
        slot.record.clone()
    }

    /// The record, unless the object is removed or reads as a state `allowed` refuses:
    /// FailedPrecondition saying the state and what the call `needs`.
    pub fn require(&self, allowed: impl FnOnce(R::State) -> bool, needs: &str) -> Result<R> {
        let (record, removed) = {
            let slot = lock(&self.slot);
            (slot.record.clone(), slot.removed)
        };
        let state = record.reads_as();
        if !removed && allowed(state) {
            return Ok(record);
        }
        let state = if removed { "removed" } else { state.describe() };
        let (kind, id) = (R::KIND, &self.id);
        Err(Error::failed_precondition(format!(
            "{kind} {id} is {state}; {needs}"
        )))
    }

    /// FailedPrecondition unless `to` can be reached from the current state (or is it).
    pub fn check(&self, to: R::State) -> Result<R> {
        let slot = lock(&self.slot);
        refuse(&slot, &self.id, to)?;
        Ok(slot.record.clone())
    }

    /// Applies `to` and `f` in memory when the table allows it.
    pub(super) fn apply(
        &self,
        to: R::State,
        f: impl FnOnce(&mut R),
    ) -> Result<(R::State, Moved<R>)> {
        let mut slot = lock(&self.slot);
        refuse(&slot, &self.id, to)?;
        let from = slot.record.state();
        if from == to {
            return Ok((
                from,
                Moved {
                    record: slot.record.clone(),
                    changed: false,
                },
            ));
        }
        f(&mut slot.record);
        slot.record.set_state(to);
        Ok((
            from,
            Moved {
                record: slot.record.clone(),
                changed: true,
            },
        ))
    }

    pub(super) fn moved(&self, to: R::State) {
        self.moves.send_replace(to);
    }

    /// Waits until a transition to `state` is done (already being there counts), at most
    /// `timeout`; whether it got there.
    pub async fn wait_for(&self, state: R::State, timeout: std::time::Duration) -> bool {
        let mut moves = self.moves.subscribe();
        let reached = moves.wait_for(|now| *now == state);
        matches!(tokio::time::timeout(timeout, reached).await, Ok(Ok(_)))
    }

    pub(super) fn mark_removed(&self) -> R {
        let mut slot = lock(&self.slot);
        slot.removed = true;
        slot.record.clone()
    }
}

fn refuse<R: Record>(slot: &Slot<R>, id: &str, to: R::State) -> Result<()> {
    let from = slot.record.state();
    if slot.removed {
        return Err(Error::failed_precondition(format!(
            "{} {id} is removed; it cannot become {}",
            R::KIND,
            to.describe()
        )));
    }
    if from != to && !from.can_move(to) {
        return Err(Error::failed_precondition(format!(
            "{} {id} is {}; it cannot become {}",
            R::KIND,
            from.describe(),
            to.describe()
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    //! A toy kind for the core's own tests.
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub enum Toy {
        New,
        On,
        Off,
    }

    impl Lifecycle for Toy {
        const CREATING: Toy = Toy::New;
        fn can_move(self, to: Toy) -> bool {
            matches!((self, to), (Toy::New, Toy::On) | (Toy::On, Toy::Off))
        }
        fn events(self, to: Toy) -> &'static [EventKind] {
            match (self, to) {
                (Toy::New, Toy::On) => &[EventKind::Created, EventKind::Started],
                _ => &[EventKind::Stopped],
            }
        }
        fn describe(self) -> &'static str {
            match self {
                Toy::New => "new",
                Toy::On => "on",
                Toy::Off => "off",
            }
        }
    }

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct ToyRecord {
        pub id: String,
        pub name: String,
        pub config: String,
        pub state: Toy,
        pub note: String,
        pub created_at: i64,
        pub labels: BTreeMap<String, String>,
    }

    impl Record for ToyRecord {
        type State = Toy;
        const KIND: &'static str = "toy";
        const ID_FIELD: &'static str = "toy_id";
        const DIR: &'static str = "toys";
        const FILE: &'static str = "toy.json";
        record_fields!(Toy);
        fn labels(&self) -> &BTreeMap<String, String> {
            &self.labels
        }
        /// A toy whose note says "dead" reads Off, as a pod whose pause died reads NotReady.
        fn reads_as(&self) -> Toy {
            if self.note == "dead" {
                Toy::Off
            } else {
                self.state
            }
        }
        fn name_key(&self) -> Option<String> {
            Some(self.name.clone())
        }
        fn fingerprint(&self) -> String {
            crate::lifecycle::fingerprint(&self.config)
        }
    }

    pub fn toy(id: &str, name: &str) -> ToyRecord {
        ToyRecord {
            id: id.into(),
            name: name.into(),
            config: "c".into(),
            state: Toy::New,
            note: String::new(),
            created_at: 0,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn update_cannot_change_the_state() {
        let entry = Entry::new(toy("a", "n"), ());
        let r = entry.update(|r| r.note = "x".into());
        assert_eq!(r.note, "x");
        assert_eq!(entry.state(), Toy::New);
    }

    #[test]
    fn an_illegal_move_names_the_current_state() {
        let entry = Entry::new(toy("a", "n"), ());
        let err = entry.check(Toy::Off).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::FailedPrecondition);
        assert_eq!(err.to_string(), "toy a is new; it cannot become off");
        assert!(entry.check(Toy::On).is_ok());
        assert!(entry.check(Toy::New).is_ok(), "staying put is not a move");
        entry.mark_removed();
        let err = entry.check(Toy::On).unwrap_err();
        assert_eq!(err.to_string(), "toy a is removed; it cannot become on");
    }

    #[test]
    fn require_refuses_the_state_it_reads_as_and_a_removed_object() {
        let mut record = toy("a", "n");
        record.state = Toy::On;
        let entry = Entry::new(record, ());
        let on = |s| s == Toy::On;
        assert_eq!(entry.require(on, "it must be on").unwrap().id, "a");
        // Reads Off while its record says On (as a pod whose pause died reads NotReady).
        entry.update(|r| r.note = "dead".into());
        let err = entry.require(on, "it must be on").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::FailedPrecondition);
        assert_eq!(err.to_string(), "toy a is off; it must be on");
        entry.mark_removed();
        let err = entry.require(|_| true, "it must exist").unwrap_err();
        assert_eq!(err.to_string(), "toy a is removed; it must exist");
    }
}
