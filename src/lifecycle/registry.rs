//! The records of one kind in memory, and their names.
//!
//! A name (pod metadata, or pod + container metadata and attempt) is claimed before any
//! work: the claim either starts the creation in its own task holding a [`Reservation`],
//! joins the creation of the same request already running, or finds the object a finished
//! request made. A reservation that is dropped without `commit` (the creation failed or
//! its task was torn down) frees the name.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};

use futures_util::future::BoxFuture;

use super::calls::{Calls, Running, detach};
use super::rollback::Rollback;
use super::transition::{Entry, Hooks, Lifecycle as _, Moved, Record};
use crate::error::{Error, Result};
use crate::store::lock;

/// What a retry must repeat to count as the same request: a hash of the config's JSON
/// (maps serialize with sorted keys, so equal configs hash equal).
pub fn fingerprint(config: &impl serde::Serialize) -> String {
    let json = serde_json::to_value(config)
        .map(|v| v.to_string())
        .unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    json.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[derive(Clone)]
enum Name {
    /// A creation runs in its own task; `running` resolves to the new object's id.
    Pending {
        id: String,
        fingerprint: String,
        running: Option<Running<String>>,
    },
    Bound {
        id: String,
        fingerprint: String,
    },
}

type Names = Arc<Mutex<HashMap<String, Name>>>;

/// Holds a name for a creation under way; freed on drop unless committed.
pub struct Reservation {
    names: Names,
    key: String,
    id: String,
    fingerprint: String,
    committed: bool,
}

impl Reservation {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The creation succeeded: the name stays bound to its object.
    pub fn commit(mut self) {
        self.committed = true;
        lock(&self.names).insert(
            self.key.clone(),
            Name::Bound {
                id: self.id.clone(),
                fingerprint: self.fingerprint.clone(),
            },
        );
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let mut names = lock(&self.names);
        if matches!(names.get(&self.key), Some(Name::Pending { id, .. }) if *id == self.id) {
            names.remove(&self.key);
        }
    }
}

/// What a claim found.
pub enum Claim {
    /// A creation of this request runs (just started, or started by an earlier try).
    Running(Running<String>),
    /// A finished request of the same config made this object.
    Done(String),
}

pub struct Registry<R: Record, X = ()> {
    entries: RwLock<HashMap<String, Arc<Entry<R, X>>>>,
    names: Names,
    hooks: Box<dyn Hooks<R>>,
    /// Mutating calls on existing objects in flight (see [`Registry::run`]).
    calls: Calls<()>,
}

impl<R: Record, X> Registry<R, X> {
    pub fn new(hooks: impl Hooks<R> + 'static) -> Registry<R, X> {
        Registry {
            entries: RwLock::new(HashMap::new()),
            names: Names::default(),
            hooks: Box::new(hooks),
            calls: Calls::default(),
        }
    }

    /// Like `get`, but None for an unknown id (stop and remove of one are success).
    pub fn find(&self, id: &str) -> Result<Option<Arc<Entry<R, X>>>> {
        match self.get(id) {
            Ok(entry) => Ok(Some(entry)),
            Err(e) if e.kind() == crate::error::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs a mutating call on `entry` in its own task holding the entry's op lock, so a
    /// client that gives up cannot cut it short; the identical call in flight (same `call`
    /// words on the same object) is joined instead of run twice.
    pub async fn run<F, Fut>(&self, call: &str, entry: Arc<Entry<R, X>>, work: F) -> Result<()>
    where
        X: Send + Sync + 'static,
        F: FnOnce(Arc<Entry<R, X>>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<()>> + Send,
    {
        let key = format!("{call} {}", entry.id);
        let work = async move {
            let _op = entry.op.lock().await;
            work(entry.clone()).await
        };
        self.calls.run(key, work).await
    }

    /// By full id or unique prefix; InvalidArgument for an empty or ambiguous one.
    pub fn get(&self, id: &str) -> Result<Arc<Entry<R, X>>> {
        crate::store::lookup(&self.entries, id, R::KIND, R::ID_FIELD)
    }

    /// By full id only (for callers that name objects exactly, as shims do).
    pub fn get_exact(&self, id: &str) -> Option<Arc<Entry<R, X>>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Entry<R, X>>> {
        crate::store::values(&self.entries)
    }

    pub fn insert(&self, entry: Arc<Entry<R, X>>) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry.id.clone(), entry);
    }

    /// Drops an entry that never became an object (a creation rolled back).
    pub fn forget(&self, id: &str) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Claims `key` for a request whose config hashes to `fingerprint`. When the name is
    /// free, `start` gets the reservation (with `new_id`) and must start the creation in
    /// its own task; it runs under the names lock, so it only spawns. The same request in
    /// flight is joined; a different one, in flight or done, is AlreadyExists naming it.
    pub fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        new_id: String,
        start: impl FnOnce(Reservation) -> Running<String>,
    ) -> Result<Claim> {
        let mut names = lock(&self.names);
        match names.get(key) {
            Some(Name::Pending {
                id,
                fingerprint: theirs,
                running,
            }) => match running {
                Some(running) if theirs == fingerprint => Ok(Claim::Running(running.clone())),
                _ => Err(Error::already_exists(format!(
                    "{} name {key} is being created by another request (with another config) as {id}",
                    R::KIND
                ))),
            },
            Some(Name::Bound {
                id,
                fingerprint: theirs,
            }) => {
                if theirs == fingerprint {
                    Ok(Claim::Done(id.clone()))
                } else {
                    Err(Error::already_exists(format!(
                        "{} name {key} is already used by {id}",
                        R::KIND
                    )))
                }
            }
            None => {
                names.insert(
                    key.to_string(),
                    Name::Pending {
                        id: new_id.clone(),
                        fingerprint: fingerprint.to_string(),
                        running: None,
                    },
                );
                let reservation = Reservation {
                    names: self.names.clone(),
                    key: key.to_string(),
                    id: new_id.clone(),
                    fingerprint: fingerprint.to_string(),
                    committed: false,
                };
                let running = start(reservation);
                // The task may have finished (and bound or freed the name) already.
                if let Some(Name::Pending {
                    id, running: slot, ..
                }) = names.get_mut(key)
                    && *id == new_id
                {
                    *slot = Some(running.clone());
                }
                Ok(Claim::Running(running))
            }
        }
    }

    /// A creation: claims `key` (see `claim`) and runs `steps` in its own task under a new
    /// id. Success commits the undo steps' resources and binds the name; an error (or an
    /// early return) runs the undo steps before it is returned and frees the name.
    pub fn create<F>(&self, key: &str, fingerprint: &str, steps: F) -> Result<Claim>
    where
        F: for<'a> FnOnce(&'a str, &'a mut Rollback) -> BoxFuture<'a, Result<()>> + Send + 'static,
    {
        let new_id = hex::encode(rand::random::<[u8; 32]>());
        self.claim(key, fingerprint, new_id, move |reservation| {
            detach(async move {
                let id = reservation.id().to_string();
                let mut undo = Rollback::new(format!("{} {id}", R::KIND));
                match steps(&id, &mut undo).await {
                    Ok(()) => {
                        undo.commit();
                        reservation.commit();
                        Ok(id)
                    }
                    Err(err) => {
                        tracing::warn!(kind = R::KIND, %id, error = %err, "creation failed; rolling back");
                        undo.unwind().await;
                        Err(err)
                    }
                }
            })
        })
    }

    /// A recovered object keeps its name.
    pub fn bind(&self, record: &R) {
        if let Some(key) = record.name_key() {
            lock(&self.names).insert(
                key,
                Name::Bound {
                    id: record.id().to_string(),
                    fingerprint: record.fingerprint(),
                },
            );
        }
    }

    /// Moves `entry` to `to` (applying `f` to the record with it), persists the record
    /// and publishes the move's events. Staying put changes, writes and publishes nothing.
    pub async fn transition(
        &self,
        entry: &Entry<R, X>,
        to: R::State,
        f: impl FnOnce(&mut R),
    ) -> Result<Moved<R>> {
        let (from, moved) = entry.apply(to, f)?;
        if moved.changed {
            tracing::debug!(id = %entry.id, kind = R::KIND, ?from, ?to, "transition");
            self.hooks.persist(&moved.record).await?;
            for kind in from.events(to) {
                self.hooks.publish(*kind, &moved.record);
            }
        }
        Ok(moved)
    }

    /// Persists a change of fields other than the state.
    pub async fn save(&self, entry: &Entry<R, X>, f: impl FnOnce(&mut R)) -> Result<R> {
        let record = entry.update(f);
        self.hooks.persist(&record).await?;
        Ok(record)
    }

    pub async fn persist(&self, record: &R) -> Result<()> {
        self.hooks.persist(record).await
    }

    /// The object's files are gone: it leaves the registry, frees its name and publishes
    /// DELETED. A call still holding the entry finds it removed.
    pub fn remove(&self, entry: &Entry<R, X>) {
        let record = entry.mark_removed();
        self.forget(&entry.id);
        if let Some(key) = record.name_key() {
            let mut names = lock(&self.names);
            if matches!(names.get(&key), Some(Name::Bound { id, .. }) if *id == entry.id) {
                names.remove(&key);
            }
        }
        self.hooks
            .publish(crate::events::EventKind::Deleted, &record);
    }

    #[cfg(test)]
    fn name_count(&self) -> usize {
        lock(&self.names).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use crate::lifecycle::detach;
    use crate::lifecycle::transition::tests::{Toy, ToyRecord, toy};
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Journal(Arc<Mutex<Vec<String>>>);

    impl Hooks<ToyRecord> for Journal {
        fn persist<'a>(&'a self, r: &'a ToyRecord) -> crate::lifecycle::Saving<'a> {
            lock(&self.0).push(format!("persist {} {:?}", r.id, r.state));
            Box::pin(async { Ok(()) })
        }
        fn publish(&self, kind: EventKind, r: &ToyRecord) {
            lock(&self.0).push(format!("publish {kind:?} {}", r.id));
        }
    }

    fn registry() -> (Arc<Registry<ToyRecord>>, Journal) {
        let j = Journal::default();
        (Arc::new(Registry::new(j.clone())), j)
    }

    /// Starts a toy creation that takes `delay` and succeeds or fails.
    fn start(
        reg: &Arc<Registry<ToyRecord>>,
        name: &str,
        config: &str,
        id: &str,
        delay: u64,
        ok: bool,
    ) -> Result<Claim> {
        let fp = fingerprint(&config);
        let reg2 = reg.clone();
        let (name, id2) = (name.to_string(), id.to_string());
        reg.claim(&name.clone(), &fp, id.to_string(), move |reservation| {
            detach(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                if !ok {
                    return Err(Error::internal("step failed", std::io::Error::other("x")));
                }
                let mut record = toy(&id2, &name);
                record.state = Toy::On;
                reg2.insert(Arc::new(Entry::new(record, ())));
                let id = reservation.id().to_string();
                reservation.commit();
                Ok(id)
            })
        })
    }

    async fn finish(claim: Claim) -> Result<String> {
        match claim {
            Claim::Running(r) => r.await.map_err(Error::from),
            Claim::Done(id) => Ok(id),
        }
    }

    #[tokio::test]
    async fn the_same_request_in_flight_is_joined_and_after_it_finished_gets_the_same_id() {
        let (reg, _) = registry();
        let first = start(&reg, "n", "c", "id1", 30, true).unwrap();
        let second = start(&reg, "n", "c", "id2", 0, true).unwrap();
        assert!(matches!(second, Claim::Running(_)));
        assert_eq!(finish(second).await.unwrap(), "id1");
        assert_eq!(finish(first).await.unwrap(), "id1");
        let third = start(&reg, "n", "c", "id3", 0, true).unwrap();
        assert!(matches!(&third, Claim::Done(id) if id == "id1"));
    }

    #[tokio::test]
    async fn another_config_for_a_name_in_use_is_already_exists_naming_the_other() {
        let (reg, _) = registry();
        let first = start(&reg, "n", "c", "id1", 30, true).unwrap();
        let err = start(&reg, "n", "other", "id2", 0, true).err().unwrap();
        assert_eq!(err.kind(), crate::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("id1"), "{err}");
        finish(first).await.unwrap();
        let err = start(&reg, "n", "other", "id2", 0, true).err().unwrap();
        assert_eq!(err.kind(), crate::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("already used by id1"), "{err}");
    }

    #[tokio::test]
    async fn a_failed_creation_frees_its_name_and_a_retry_runs_anew() {
        let (reg, _) = registry();
        let failed = start(&reg, "n", "c", "id1", 5, false).unwrap();
        assert!(finish(failed).await.is_err());
        assert_eq!(reg.name_count(), 0);
        let again = start(&reg, "n", "c", "id2", 0, true).unwrap();
        assert_eq!(finish(again).await.unwrap(), "id2");
    }

    #[test]
    fn a_dropped_reservation_frees_the_name_and_a_committed_one_keeps_it() {
        let (reg, _) = registry();
        let mut held = None;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let fp = fingerprint(&"c");
            reg.claim("n", &fp, "id1".into(), |r| {
                held = Some(r);
                detach(std::future::pending())
            })
            .unwrap();
        });
        assert_eq!(reg.name_count(), 1);
        drop(held.take());
        assert_eq!(reg.name_count(), 0, "dropped without commit");
        rt.block_on(async {
            // `start` runs under the names lock: the creation's task commits later.
            reg.claim("n", "f", "id2".into(), |r| {
                held = Some(r);
                detach(std::future::pending())
            })
            .unwrap();
        });
        held.take().unwrap().commit();
        assert_eq!(reg.name_count(), 1, "committed");
    }

    #[tokio::test]
    async fn transitions_persist_and_publish_once_and_remove_frees_the_name() {
        let (reg, j) = registry();
        let record = toy("id1", "n");
        reg.bind(&record);
        let entry = Arc::new(Entry::new(record, ()));
        reg.insert(entry.clone());
        let moved = reg
            .transition(&entry, Toy::On, |r| r.note = "up".into())
            .await
            .unwrap();
        assert!(moved.changed);
        assert_eq!(moved.record.note, "up");
        // A retry of the same move: no write, no event.
        assert!(
            !reg.transition(&entry, Toy::On, |_| {})
                .await
                .unwrap()
                .changed
        );
        let err = reg.transition(&entry, Toy::New, |_| {}).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::FailedPrecondition);
        reg.save(&entry, |r| r.note = "saved".into()).await.unwrap();
        reg.remove(&entry);
        assert!(reg.get("id1").is_err());
        assert_eq!(reg.name_count(), 0);
        assert!(
            entry.check(Toy::Off).is_err(),
            "a removed entry moves no more"
        );
        assert_eq!(
            *lock(&j.0),
            [
                "persist id1 On",
                "publish Created id1",
                "publish Started id1",
                "persist id1 On",
                "publish Deleted id1",
            ]
        );
    }
}
