//! The image service's shared state: the store, the index of records, the registry client,
//! and the locks and in-flight pulls that pulls and garbage collection coordinate through.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::store::{ImageRecord, Store};
use super::{registry, unpack};

/// Names what uses an image ID (a container, as its image or a volume), or None.
pub type ImageUsers = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub(super) struct Inner {
    pub(super) store: Store,
    pub(super) images_root: PathBuf,
    /// Records by image ID. Locked only around map operations.
    pub(super) index: RwLock<HashMap<String, ImageRecord>>,
    pub(super) registry: registry::RegistryClient,
    pub(super) config_dirs: Vec<PathBuf>,
    pub(super) progress_timeout: Duration,
    pub(super) max_downloads: usize,
    pub(super) unpack_limits: unpack::UnpackLimits,
    /// Pulls in flight by normalized reference: identical pulls share one, which runs in
    /// its own task (a client that gives up does not cut it short).
    pub(super) pulls: crate::lifecycle::Calls<String>,
    /// One unpack per chain ID at a time.
    pub(super) layer_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Pulls hold it shared; garbage collection holds it exclusively (a pull's new layers
    /// are referenced by no record until it finishes).
    pub(super) gc_barrier: Arc<tokio::sync::RwLock<()>>,
    pub(super) gc_pending: AtomicBool,
    /// Serializes record changes (a tag moving from one image to another, removals).
    pub(super) records_lock: tokio::sync::Mutex<()>,
    /// Loopback hosts that turned out to speak plain http.
    pub(super) http_hosts: Mutex<std::collections::HashSet<String>>,
    /// Creations hold it shared from resolving their images until their record is
    /// registered; a removal holds it exclusively while it asks `users`.
    pub(super) use_lock: Arc<tokio::sync::RwLock<()>>,
    /// Who uses an image (set once by the composition root): a removal is refused then.
    pub(super) users: std::sync::OnceLock<ImageUsers>,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
