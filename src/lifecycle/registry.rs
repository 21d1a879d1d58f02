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
use super::files::{Dirs, Durability};
use super::filter::Filter;
use super::rollback::Rollback;
use super::transition::{Entry, Lifecycle, Moved, Publish, Record};
use crate::error::{Error, Result};
use crate::events::EventKind;
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

impl Claim {
    /// The object's id once its creation finished (or its error).
    pub async fn wait(self) -> Result<String> {
        match self {
            Claim::Running(running) => running.await.map_err(Error::from),
            Claim::Done(id) => Ok(id),
        }
    }
}

type Entries<R, X> = Arc<RwLock<HashMap<String, Arc<Entry<R, X>>>>>;

pub struct Registry<R: Record, X = ()> {
    entries: Entries<R, X>,
    names: Names,
    dirs: Dirs,
    publish: Publish<R>,
    /// Mutating calls on existing objects in flight (see [`Registry::run`]).
    calls: Calls<()>,
}

impl<R: Record, X> Registry<R, X> {
    pub fn new(
        dirs: Dirs,
        publish: impl Fn(EventKind, &R) + Send + Sync + 'static,
    ) -> Registry<R, X> {
        Registry {
            entries: Entries::default(),
            names: Names::default(),
            dirs,
            publish: Box::new(publish),
            calls: Calls::default(),
        }
    }

    pub fn dirs(&self) -> &Dirs {
        &self.dirs
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

    /// `run` on the object `id` names, for stop and remove: an unknown id, or an object
    /// removed by the time the call holds its lock, is success.
    pub async fn run_found<F, Fut>(&self, call: &str, id: &str, work: F) -> Result<()>
    where
        X: Send + Sync + 'static,
        F: FnOnce(Arc<Entry<R, X>>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<()>> + Send,
    {
        let Some(entry) = self.find(id)? else {
            return Ok(());
        };
        let unless_removed = |entry: Arc<Entry<R, X>>| async move {
            if entry.is_removed() {
                Ok(())
            } else {
                work(entry).await
            }
        };
        self.run(call, entry, unless_removed).await
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

    /// The record of the object `id` names (see `get`), with the state it reads as.
    pub fn status(&self, id: &str) -> Result<(R, R::State)> {
        let record = self.get(id)?.record();
        let state = record.reads_as();
        Ok((record, state))
    }

    /// The objects `filter` selects, oldest first, each with the state it reads as;
    /// objects still being created are not listed.
    pub fn list(&self, filter: &Filter<R::State>) -> Vec<(R, R::State)> {
        let mut out: Vec<_> = self
            .all()
            .into_iter()
            .map(|entry| entry.record())
            .filter(|r| r.state() != R::State::CREATING)
            .map(|r| {
                let state = r.reads_as();
                (r, state)
            })
            .filter(|(r, state)| filter.selects(r, state))
            .collect();
        out.sort_by_key(|(r, _)| r.created_at());
        out
    }

    /// The objects of the pod `sandbox_id` (exactly), being created ones included.
    pub fn of_sandbox(&self, sandbox_id: &str) -> Vec<Arc<Entry<R, X>>> {
        let all = self.all().into_iter();
        all.filter(|e| e.record().sandbox_id() == Some(sandbox_id))
            .collect()
    }

    /// Daemon start: every record on disk. One that `doomed` picks (a creation a crash
    /// cut short, an object whose pod is gone) is rolled back: the steps `undo` pushes
    /// for it (in the order a creation takes them), then its directories. The others are
    /// returned, to be held again (`recovered`).
    pub async fn recover(
        &self,
        doomed: impl Fn(&R) -> bool,
        undo: impl Fn(&R, &mut Rollback),
    ) -> Result<Vec<R>> {
        let mut kept = Vec::new();
        for record in self.dirs.load::<R>()? {
            if !doomed(&record) {
                kept.push(record);
                continue;
            }
            let (kind, id) = (R::KIND, record.id());
            tracing::warn!(kind, id, state = ?record.state(), "rolling back an interrupted creation or an orphan");
            let mut rollback = Rollback::new(format!("{kind} {id}"));
            self.dirs.undo(id, &mut rollback);
            undo(&record, &mut rollback);
            rollback.unwind().await;
        }
        Ok(kept)
    }

    /// A creation's record, written before the resources it names are taken (so recovery
    /// can give them back), then held in memory; `undo` forgets it again.
    pub async fn admit(
        &self,
        record: R,
        ext: X,
        durability: Durability,
        undo: &mut Rollback,
    ) -> Result<Arc<Entry<R, X>>>
    where
        X: Send + Sync + 'static,
    {
        self.dirs.save(&record, durability).await?;
        let entry = Arc::new(Entry::new(record, ext));
        self.insert(entry.clone());
        let (entries, id) = (self.entries.clone(), entry.id.clone());
        undo.push("forget the record", async move {
            lock_write(&entries).remove(&id);
        });
        Ok(entry)
    }

    /// A recovered object: it keeps its name and is held in memory again.
    pub fn recovered(&self, record: R, ext: X) -> Arc<Entry<R, X>> {
        self.bind(&record);
        let entry = Arc::new(Entry::new(record, ext));
        self.insert(entry.clone());
        entry
    }

    pub fn insert(&self, entry: Arc<Entry<R, X>>) {
        lock_write(&self.entries).insert(entry.id.clone(), entry);
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
        let dirs = self.dirs.clone();
        self.claim(key, fingerprint, new_id, move |reservation| {
            detach(async move {
                let id = reservation.id().to_string();
                let mut undo = Rollback::new(format!("{} {id}", R::KIND));
                let made = dirs.make(&id, &mut undo);
                match async { made?; steps(&id, &mut undo).await }.await {
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
    fn bind(&self, record: &R) {
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

    /// Moves `entry` to `to` (applying `f` to the record with it), persists the record,
    /// publishes the move's events and wakes whoever waits for it (`Entry::wait_for`). Staying put changes, writes and publishes nothing.
    pub async fn transition(
        &self,
        entry: &Entry<R, X>,
        to: R::State,
        f: impl FnOnce(&mut R),
    ) -> Result<Moved<R>> {
        let (from, moved) = entry.apply(to, f)?;
        if moved.changed {
            tracing::debug!(id = %entry.id, kind = R::KIND, ?from, ?to, "transition");
            let persisted = self.persist(&moved.record).await;
            if persisted.is_ok() {
                for kind in from.events(to) {
                    (self.publish)(*kind, &moved.record);
                }
            }
            // Waiters wake once the write is done (a removal after a stop must not race
            // it), also when it failed: the move stands in memory.
            entry.moved(to);
            persisted?;
        }
        Ok(moved)
    }

    /// A move the daemon makes on its own (a death it noticed, what recovery found): no
    /// call waits for it, so a failed write is logged, and the move stands in memory.
    pub async fn observed(&self, entry: &Entry<R, X>, to: R::State, f: impl FnOnce(&mut R)) {
        if let Err(e) = self.transition(entry, to, f).await {
            tracing::warn!(kind = R::KIND, id = %entry.id, ?to, error = %e, "recording a move");
        }
    }

    /// Persists a change of fields other than the state.
    pub async fn save(&self, entry: &Entry<R, X>, f: impl FnOnce(&mut R)) -> Result<R> {
        let record = entry.update(f);
        self.persist(&record).await?;
        Ok(record)
    }

    async fn persist(&self, record: &R) -> Result<()> {
        self.dirs.save(record, Durability::Synced).await
    }

    /// Removes the object's directories (after the kind removed what else it had): it
    /// leaves the registry, frees its name and publishes DELETED. A call still holding
    /// the entry finds it removed.
    pub fn remove(&self, entry: &Entry<R, X>) -> Result<()> {
        self.dirs.remove(&entry.id)?;
        let record = entry.mark_removed();
        lock_write(&self.entries).remove(&entry.id);
        if let Some(key) = record.name_key() {
            let mut names = lock(&self.names);
            if matches!(names.get(&key), Some(Name::Bound { id, .. }) if *id == entry.id) {
                names.remove(&key);
            }
        }
        (self.publish)(EventKind::Deleted, &record);
        Ok(())
    }

    #[cfg(test)]
    pub(super) fn name_count(&self) -> usize {
        lock(&self.names).len()
    }
}

fn lock_write<T>(map: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    map.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::detach;
    use crate::lifecycle::transition::tests::{Toy, ToyRecord, toy};
    use std::time::Duration;

    /// The events published (and the registry's directories, alive while it is).
    #[derive(Clone)]
    struct Journal(
        Arc<Mutex<Vec<String>>>,
        #[allow(dead_code)] Arc<tempfile::TempDir>,
    );

    fn registry() -> (Arc<Registry<ToyRecord>>, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::new::<ToyRecord>(&dir.path().join("root"), &dir.path().join("state"));
        let j = Journal(Arc::default(), Arc::new(dir));
        let journal = j.clone();
        let publish = move |kind: EventKind, r: &ToyRecord| {
            lock(&journal.0).push(format!("publish {kind:?} {}", r.id));
        };
        (Arc::new(Registry::new(dirs, publish)), j)
    }

    fn on_disk(reg: &Registry<ToyRecord>, id: &str) -> Option<ToyRecord> {
        let path = reg.dirs().record_dir(id).join("toy.json");
        crate::persist::read_json(&path).unwrap()
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
        claim.wait().await
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
        let entry = reg.recovered(toy("id1", "n"), ());
        std::fs::create_dir_all(reg.dirs().record_dir("id1")).unwrap();
        let moved = reg
            .transition(&entry, Toy::On, |r| r.note = "up".into())
            .await
            .unwrap();
        assert!(moved.changed);
        assert_eq!(moved.record.note, "up");
        assert_eq!(on_disk(&reg, "id1"), Some(moved.record));
        // A retry of the same move: no write, no event.
        std::fs::remove_file(reg.dirs().record_dir("id1").join("toy.json")).unwrap();
        assert!(
            !reg.transition(&entry, Toy::On, |_| {})
                .await
                .unwrap()
                .changed
        );
        assert_eq!(on_disk(&reg, "id1"), None, "no move, no write");
        let err = reg.transition(&entry, Toy::New, |_| {}).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::FailedPrecondition);
        reg.save(&entry, |r| r.note = "saved".into()).await.unwrap();
        assert_eq!(on_disk(&reg, "id1").unwrap().note, "saved");
        reg.remove(&entry).unwrap();
        assert!(!reg.dirs().record_dir("id1").exists());
        assert!(reg.get("id1").is_err());
        assert_eq!(reg.name_count(), 0);
        assert!(
            entry.check(Toy::Off).is_err(),
            "a removed entry moves no more"
        );
        assert_eq!(
            *lock(&j.0),
            [
                "publish Created id1",
                "publish Started id1",
                "publish Deleted id1",
            ]
        );
    }

    #[tokio::test]
    async fn a_waiter_is_woken_by_the_move_also_when_its_write_fails() {
        let (reg, _) = registry();
        let entry = reg.recovered(toy("id1", "n"), ());
        assert!(!entry.wait_for(Toy::On, Duration::from_millis(5)).await);
        let e = entry.clone();
        let waiter = tokio::spawn(async move { e.wait_for(Toy::On, Duration::from_secs(5)).await });
        // No record directory: the write fails, and the move stands in memory.
        assert!(reg.transition(&entry, Toy::On, |_| {}).await.is_err());
        assert!(waiter.await.unwrap(), "the waiter saw the move");
        assert!(
            entry.wait_for(Toy::On, Duration::ZERO).await,
            "being there counts"
        );
    }

    #[tokio::test]
    async fn a_list_skips_creations_and_selects_by_id_prefix_state_and_labels_oldest_first() {
        let (reg, _) = registry();
        for (id, state, at, label) in [
            ("b1", Toy::On, 2, "x"),
            ("a1", Toy::Off, 1, "x"),
            ("a2", Toy::On, 3, "y"),
            ("a3", Toy::New, 0, "x"),
        ] {
            let mut record = toy(id, id);
            (record.state, record.created_at) = (state, at);
            record.labels.insert("app".into(), label.into());
            reg.recovered(record, ());
        }
        let ids = |filter: Filter<Toy>| -> Vec<String> {
            let listed = reg.list(&filter);
            listed.into_iter().map(|(r, _)| r.id).collect()
        };
        assert_eq!(ids(Filter::default()), ["a1", "b1", "a2"]);
        let by_id = Filter {
            id: Some("a".into()),
            ..Filter::default()
        };
        assert_eq!(ids(by_id), ["a1", "a2"]);
        let by_state = Filter {
            state: Some(Toy::On),
            ..Filter::default()
        };
        assert_eq!(ids(by_state), ["b1", "a2"]);
        let mut by_label = Filter::default();
        by_label.labels.insert("app".into(), "x".into());
        assert_eq!(ids(by_label), ["a1", "b1"]);
        let by_pod = Filter {
            sandbox_id: Some("a".into()),
            ..Filter::default()
        };
        assert!(ids(by_pod).is_empty(), "a toy belongs to no pod");
        // Filters and answers see the state a record reads as, not the one it stores.
        reg.get("b1").unwrap().update(|r| r.note = "dead".into());
        let off = Filter {
            state: Some(Toy::Off),
            ..Filter::default()
        };
        assert_eq!(ids(off), ["a1", "b1"]);
        assert_eq!(reg.status("b1").unwrap().1, Toy::Off);
    }

    #[tokio::test]
    async fn recovery_rolls_back_the_doomed_records_and_returns_the_others() {
        let (reg, _) = registry();
        let mut made = Rollback::new("setup");
        for (id, state) in [("a", Toy::New), ("b", Toy::On)] {
            reg.dirs().make(id, &mut made).unwrap();
            let mut record = toy(id, id);
            record.state = state;
            reg.admit(record, (), Durability::Synced, &mut made)
                .await
                .unwrap();
        }
        made.commit();
        let undone = Arc::new(Mutex::new(Vec::new()));
        let seen = undone.clone();
        let interrupted = |r: &ToyRecord| r.state == Toy::New;
        let undo = |r: &ToyRecord, undo: &mut Rollback| {
            let (seen, id) = (seen.clone(), r.id.clone());
            undo.push("kind's step", async move { lock(&seen).push(id) });
        };
        let kept = reg.recover(interrupted, undo).await.unwrap();
        assert_eq!(
            kept.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(*lock(&undone), ["a"]);
        assert!(!reg.dirs().record_dir("a").exists());
        assert!(!reg.dirs().state_dir("a").exists());
        assert!(reg.dirs().record_dir("b").exists());
    }

    #[tokio::test]
    async fn stop_and_remove_of_an_unknown_or_removed_object_are_success_and_do_nothing() {
        let (reg, _) = registry();
        let ran = Arc::new(Mutex::new(0));
        let work = |ran: Arc<Mutex<u32>>| {
            move |_: Arc<Entry<ToyRecord>>| async move {
                *lock(&ran) += 1;
                Ok(())
            }
        };
        reg.run_found("stop", "nope", work(ran.clone()))
            .await
            .unwrap();
        let entry = reg.recovered(toy("id1", "n"), ());
        reg.run_found("stop", "id1", work(ran.clone()))
            .await
            .unwrap();
        assert_eq!(*lock(&ran), 1);
        reg.remove(&entry).unwrap();
        reg.run_found("stop", "id1", work(ran.clone()))
            .await
            .unwrap();
        // Still held by a call that looked it up before the removal: not run either.
        reg.insert(entry.clone());
        reg.run_found("remove", "id1", work(ran.clone()))
            .await
            .unwrap();
        assert_eq!(*lock(&ran), 1);
    }

    #[tokio::test]
    async fn an_admitted_record_is_written_and_forgotten_again_by_the_rollback() {
        let (reg, _) = registry();
        let mut undo = Rollback::new("toy a");
        reg.dirs().make("a", &mut undo).unwrap();
        let entry = (reg
            .admit(toy("a", "n"), (), Durability::Cached, &mut undo)
            .await)
            .unwrap();
        assert_eq!(on_disk(&reg, "a"), Some(entry.record()));
        assert!(reg.get("a").is_ok());
        undo.unwind().await;
        assert!(reg.get("a").is_err(), "forgotten");
        assert!(!reg.dirs().record_dir("a").exists());
        assert!(!reg.dirs().state_dir("a").exists());
    }
}
