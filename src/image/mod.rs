//! Images: references, registry pulls (with `hosts.toml` mirrors), the content store and
//! unpacked layers. The CRI adapter is `crate::cri::image`; this module speaks domain types.
//!
//! Owns the content store, unpacked layers and image records. May call `metrics` (pull
//! timings), `persist` and `config`; nothing of the pod or container lifecycle.

mod error;
pub mod hosts;
mod inner;
mod pull;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::Error;
pub use error::ImageError;
pub use inner::ImageUsers;
use inner::Inner;
pub use reference::{Reference, ReferenceError};
pub use registry::RegistryAuth;
use store::{ImageRecord, Store};

/// An image as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The config digest, `sha256:<hex>`.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
    /// The config's user when it is numeric (`1002`, `1002:50`).
    pub uid: Option<i64>,
    /// The config's user when it is a name (`www-data`, `www-data:50`).
    pub username: String,
    pub pinned: bool,
    /// Chain IDs of the layers, bottom to top.
    pub chain_ids: Vec<String>,
}

impl Image {
    fn from_record(record: &ImageRecord) -> Image {
        let (uid, username) = split_user(&record.user);
        Image {
            id: record.id.clone(),
            repo_tags: record.repo_tags.clone(),
            repo_digests: record.repo_digests.clone(),
            size: record.size,
            uid,
            username,
            pinned: record.pinned,
            chain_ids: record.chain_ids.clone(),
        }
    }
}

/// `1002` → uid; `www-data` → name; the group part after ':' is not the user.
fn split_user(user: &str) -> (Option<i64>, String) {
    let user = user.split(':').next().unwrap_or("");
    match user.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

/// What the image store uses on its filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    /// The directory holding the images (on the filesystem whose usage this is).
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
    /// Unix nanoseconds of the measurement.
    pub timestamp: i64,
}

/// Held by a container's creation while it uses an image without a record yet.
pub struct ImageLease(#[allow(dead_code)] tokio::sync::OwnedRwLockReadGuard<()>);

#[derive(Clone)]
pub struct ImageService {
    inner: Arc<Inner>,
}

impl ImageService {
    /// Loads the image records and cleans half-written blobs and layers.
    pub async fn open(config: &crate::config::Config) -> crate::Result<ImageService> {
        let images_root = config.root.join("images");
        let root = images_root.clone();
        let (store, records) = tokio::task::spawn_blocking(move || Store::open(&root))
            .await
            .map_err(ImageError::from)?
            .map_err(ImageError::from)?;
        tracing::debug!(images = records.len(), "image store loaded");
        let index = records.into_iter().map(|r| (r.id.clone(), r)).collect();
        Ok(ImageService {
            inner: Arc::new(Inner {
                store,
                images_root,
                index: RwLock::new(index),
                registry: registry::RegistryClient::new(),
                config_dirs: config.registry.config_path.clone(),
                progress_timeout: config.image.pull_progress_timeout,
                max_downloads: config.image.max_concurrent_downloads.max(1),
                unpack_limits: unpack::UnpackLimits {
                    max_unpacked_size: (config.image.max_unpacked_size > 0)
                        .then_some(config.image.max_unpacked_size),
                    min_free_space: (config.image.min_free_space > 0)
                        .then_some(config.image.min_free_space),
                    max_expansion_ratio: (config.image.max_expansion_ratio > 0)
                        .then_some(config.image.max_expansion_ratio),
                },
                pulls: Default::default(),
                layer_locks: Mutex::new(HashMap::new()),
                gc_barrier: Arc::new(tokio::sync::RwLock::new(())),
                gc_pending: AtomicBool::new(false),
                records_lock: tokio::sync::Mutex::new(()),
                http_hosts: Mutex::new(Default::default()),
                use_lock: Arc::new(tokio::sync::RwLock::new(())),
                users: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Pulls `reference` and returns the image ID. The pull runs in its own task (the
    /// lifecycle core's `Calls`): it goes to its end even if the caller goes away, and
    /// pulls of the same reference made meanwhile (a retry of an abandoned one included)
    /// wait for it and share its download and its result.
    pub async fn pull(&self, reference: &str, auth: Option<RegistryAuth>) -> crate::Result<String> {
        let reference = Reference::parse(reference).map_err(ImageError::from)?;
        let key = reference.to_string();
        let inner = self.inner.clone();
        let what = format!("pulling image {key}");
        let work = async move {
            let result = pull::run(&inner, &reference, auth.as_ref()).await;
            if result.is_err() {
                // A failed pull may have stored blobs no image will use.
                inner.gc_pending.store(true, Ordering::Release);
            }
            if inner.gc_pending.load(Ordering::Acquire) {
                // Best effort: a failure is retried at the next removal or start.
                if let Err(e) = inner.collect_garbage().await {
                    tracing::warn!(error = %e, "image garbage collection failed");
                }
            }
            result.map_err(|e| {
                let e = ImageError::from(e);
                Error::with_source(e.kind(), what, e)
            })
        };
        self.inner.pulls.run(key, work).await
    }

    /// All images, or those matching `filter` (a reference or an ID).
    pub fn list(&self, filter: Option<&str>) -> Vec<Image> {
        let filter = filter.filter(|f| !f.is_empty());
        let index = self.inner.index.read().unwrap_or_else(|p| p.into_inner());
        let mut images: Vec<Image> = match filter {
            None => index.values().map(Image::from_record).collect(),
            Some(f) => find(&index, f)
                .ok()
                .flatten()
                .map(Image::from_record)
                .into_iter()
                .collect(),
        };
        images.sort_by(|a, b| a.id.cmp(&b.id));
        images
    }

    /// The image named by an ID, tag or digest reference; `None` when there is none.
    pub fn status(&self, reference: &str) -> crate::Result<Option<Image>> {
        let index = self.inner.index.read().unwrap_or_else(|p| p.into_inner());
        Ok(find(&index, reference)?.map(Image::from_record))
    }

    /// The image config, as stored (for verbose ImageStatus).
    pub async fn config_json(&self, id: &str) -> crate::Result<String> {
        let bytes = self.read_config_blob(id).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn read_config_blob(&self, id: &str) -> Result<Vec<u8>, ImageError> {
        let store = self.inner.store.clone();
        let id = id.to_string();
        Ok(tokio::task::spawn_blocking(move || store.read_blob(&id)).await??)
    }

    /// Tells removals who uses an image; the composition root sets it once.
    pub fn set_users(&self, users: ImageUsers) {
        let _ = self.inner.users.set(users);
    }

    /// Keeps removals waiting until it is dropped (see [`ImageService::remove`]).
    pub async fn lease(&self) -> ImageLease {
        ImageLease(self.inner.use_lock.clone().read_owned().await)
    }

    /// Removes the image with all its tags; its layers and blobs go when nothing else uses
    /// them. An unknown image is success; one a container uses (as its image or as a
    /// volume, in any state) is refused with FailedPrecondition naming the container.
    pub async fn remove(&self, reference: &str) -> crate::Result<()> {
        let _records = self.inner.records_lock.lock().await;
        let found = {
            let index = self.inner.index.read().unwrap_or_else(|p| p.into_inner());
            find(&index, reference)?.cloned()
        };
        let Some(record) = found else {
            return Ok(());
        };
        // Creations that hold a lease are waited for, so they are seen as users.
        let _no_creations = self.inner.use_lock.write().await;
        if let Some(user) = self.inner.users.get().and_then(|users| users(&record.id)) {
            return Err(Error::failed_precondition(format!(
                "image {} is in use: {user}",
                record.id
            )));
        }
        let store = self.inner.store.clone();
        let id = record.id.clone();
        tokio::task::spawn_blocking(move || store.delete_record(&id))
            .await
            .map_err(ImageError::from)?
            .map_err(ImageError::from)?;
        self.inner
            .index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&record.id);
        tracing::info!(image_id = %record.id, tags = ?record.repo_tags, "image removed");
        drop(_no_creations);
        drop(_records);
        self.inner.gc_pending.store(true, Ordering::Release);
        self.inner.collect_garbage().await?;
        Ok(())
    }

    pub async fn fs_info(&self) -> crate::Result<FsUsage> {
        let store = self.inner.store.clone();
        let usage = tokio::task::spawn_blocking(move || store.usage())
            .await
            .map_err(ImageError::from)?
            .map_err(ImageError::from)?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Ok(FsUsage {
            mountpoint: self.inner.images_root.clone(),
            used_bytes: usage.bytes,
            inodes_used: usage.inodes,
            timestamp,
        })
    }

    /// For containers: the image, its layer trees bottom to top, and its config.
    pub async fn resolve_for_container(
        &self,
        reference: &str,
    ) -> crate::Result<(Image, Vec<PathBuf>, oci_spec::image::ImageConfiguration)> {
        let image = self
            .status(reference)?
            .ok_or_else(|| ImageError::NotFound(reference.to_string()))?;
        let layers = image
            .chain_ids
            .iter()
            .map(|c| self.inner.store.layer_fs(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ImageError::from)?;
        let bytes = self.read_config_blob(&image.id).await?;
        let config = serde_json::from_slice(&bytes).map_err(|source| ImageError::BadConfig {
            id: image.id.clone(),
            source,
        })?;
        Ok((image, layers, config))
    }
}

impl Inner {
    /// Removes unreferenced blobs and layers unless a pull is running; then the last pull
    /// to finish does it.
    async fn collect_garbage(&self) -> Result<(), ImageError> {
        let Ok(guard) = self.gc_barrier.clone().try_write_owned() else {
            return Ok(());
        };
        self.gc_pending.store(false, Ordering::Release);
        let records: Vec<ImageRecord> = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            store.collect_garbage(&records)
        })
        .await??;
        Ok(())
    }
}

/// Finds a record by ID (`sha256:<hex>` or bare hex), tag reference or digest reference.
fn find<'a>(
    index: &'a HashMap<String, ImageRecord>,
    text: &str,
) -> Result<Option<&'a ImageRecord>, ImageError> {
    let as_id = if text.len() == 64 {
        format!("sha256:{text}")
    } else {
        text.to_string()
    };
    if let Some(record) = index.get(&as_id) {
        return Ok(Some(record));
    }
    if text.starts_with("sha256:") {
        return Ok(None);
    }
    let reference = Reference::parse(text)?;
    let found = match (reference.digest(), reference.repo_tag()) {
        (Some(digest), _) => {
            let wanted = reference.repo_digest(digest);
            index.values().find(|r| r.repo_digests.contains(&wanted))
        }
        (None, Some(tag)) => index.values().find(|r| r.repo_tags.contains(&tag)),
        (None, None) => None,
    };
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_split_into_uid_or_name() {
        assert_eq!(split_user(""), (None, String::new()));
        assert_eq!(split_user("1002"), (Some(1002), String::new()));
        assert_eq!(split_user("1003:1004"), (Some(1003), String::new()));
        assert_eq!(split_user("www-data"), (None, "www-data".into()));
        assert_eq!(split_user("www-data:1004"), (None, "www-data".into()));
    }

    #[test]
    fn find_by_id_tag_and_digest() {
        let id = format!("sha256:{}", "1".repeat(64));
        let manifest = format!("sha256:{}", "2".repeat(64));
        let record = ImageRecord {
            version: 1,
            id: id.clone(),
            repo_tags: vec!["docker.io/library/busybox:latest".into()],
            repo_digests: vec![format!("docker.io/library/busybox@{manifest}")],
            manifest_digest: manifest.clone(),
            chain_ids: vec![],
            blobs: vec![],
            size: 1,
            created: 0,
            user: String::new(),
            pinned: false,
        };
        let index: HashMap<_, _> = [(id.clone(), record)].into_iter().collect();
        for hit in [
            id.as_str(),
            &id[7..],
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox",
            &format!("busybox@{manifest}"),
        ] {
            assert!(find(&index, hit).unwrap().is_some(), "{hit}");
        }
        for miss in [
            "busybox:1",
            "other",
            &format!("sha256:{}", "3".repeat(64)),
            &format!("other@{manifest}"),
        ] {
            assert!(find(&index, miss).unwrap().is_none(), "{miss}");
        }
        assert!(find(&index, "Bad Ref").is_err());
    }
}
