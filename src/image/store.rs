//! The on-disk image store under `<root>/images`:
//!
//! ```text
//! blobs/sha256/<hex>        verified content (manifests, configs, compressed layers)
//! ingest/<random>           blobs being downloaded; renamed into blobs/ only when the digest matches
//! layers/<chain-hex>/       one unpacked layer: fs/ (the tree) and layer.json (diff_id, size, inodes)
//! layers/.tmp-<chain>-<r>/  a layer being unpacked; renamed to layers/<chain-hex> when complete
//! records/<id-hex>.json     one image; written last, so an image is visible only when complete
//! ```
//!
//! Blobs and layers are renamed into place without an fsync of their own: a pull makes all
//! of them durable at once with [`Store::write_records_durably`] (one `syncfs` before its
//! record), and [`Store::open`] removes every blob and layer no record references, so after
//! a crash nothing half-written is left that counts as done.
//!
//! Everything here is blocking file work: callers run it on `spawn_blocking`.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub const RECORD_VERSION: u32 = 1;
const TMP_PREFIX: &str = ".tmp-";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image record {path}")]
    BadRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("blob content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("bad digest {0:?}")]
    BadDigest(String),
    #[error("removing a layer directory")]
    RemoveLayer(#[source] super::unpack::UnpackError),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One image, as persisted in `records/<id-hex>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub version: u32,
    /// The config digest, `sha256:<hex>`.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// The platform manifest's digest.
    pub manifest_digest: String,
    /// Chain IDs of the layers, bottom to top.
    pub chain_ids: Vec<String>,
    /// Every blob this image keeps: top-level manifest, platform manifest, config, layers.
    pub blobs: Vec<String>,
    /// Config plus compressed layers, in bytes (what the registry serves).
    pub size: u64,
    /// Unix seconds of the pull.
    pub created: u64,
    /// The config's `User`, as written there.
    pub user: String,
    #[serde(default)]
    pub pinned: bool,
}

/// `layers/<chain-hex>/layer.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub version: u32,
    pub chain_id: String,
    pub diff_id: String,
    pub bytes: u64,
    pub inodes: u64,
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:` digest, checked (it becomes a file name).
pub fn digest_hex(digest: &str) -> Result<&str, StoreError> {
    super::reference::validate_digest(digest)
        .map_err(|_| StoreError::BadDigest(digest.to_string()))?;
    Ok(&digest["sha256:".len()..])
}

/// chain_id(L1) = diff_id(L1); chain_id(Ln) = sha256(chain_id(Ln-1) + " " + diff_id(Ln)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// What the image store holds on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

impl Store {
    /// Creates the directories, removes half-written blobs and layers, and loads the records.
    pub fn open(images_root: &Path) -> Result<(Store, Vec<ImageRecord>), StoreError> {
        let store = Store {
            root: images_root.to_path_buf(),
        };
        for dir in [
            store.blobs_dir(),
            store.ingest_dir(),
            store.layers_dir(),
            store.records_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        // Nothing is being written yet: everything in ingest/ and every temp dir is debris.
        let ingest = store.ingest_dir();
        for entry in fs::read_dir(&ingest).map_err(io_err("listing", &ingest))? {
            let path = entry.map_err(io_err("listing", &ingest))?.path();
            remove_any(&path)?;
        }
        let layers = store.layers_dir();
        for entry in fs::read_dir(&layers).map_err(io_err("listing", &layers))? {
            let entry = entry.map_err(io_err("listing", &layers))?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                remove_any(&entry.path())?;
            }
        }
        let records_dir = store.records_dir();
        let mut records = Vec::new();
        for entry in fs::read_dir(&records_dir).map_err(io_err("listing", &records_dir))? {
            let path = entry.map_err(io_err("listing", &records_dir))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.as_deref().is_some_and(|n| n.starts_with(TMP_PREFIX)) {
                remove_any(&path)?;
                continue;
            }
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = fs::read(&path).map_err(io_err("reading", &path))?;
            let record: ImageRecord =
                serde_json::from_slice(&text).map_err(|source| StoreError::BadRecord {
                    path: path.clone(),
                    source,
                })?;
            records.push(record);
        }
        store.collect_garbage(&records)?;
        Ok((store, records))
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }
    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }
    fn records_dir(&self) -> PathBuf {
        self.root.join("records")
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.blobs_dir().join(digest_hex(digest)?))
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(io_err("reading blob", &path))
    }

    /// Stores bytes already in memory (manifests, configs) after checking their digest (not
    /// yet durable: see the module doc).
    pub fn write_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.blob_path(digest)?;
        if path.exists() {
            return Ok(());
        }
        let mut writer = self.ingest()?;
        writer.write_all(bytes).map_err(|source| StoreError::Io {
            what: "writing",
            path: writer.path.clone(),
            source,
        })?;
        writer.commit(digest)
    }

    /// A new ingest file that hashes what is written to it.
    pub fn ingest(&self) -> Result<BlobWriter, StoreError> {
        let path = self.ingest_dir().join(random_name());
        let file = File::create_new(&path).map_err(io_err("creating", &path))?;
        Ok(BlobWriter {
            file,
            path,
            blobs_dir: self.blobs_dir(),
            hasher: Sha256::new(),
            committed: false,
        })
    }

    pub fn layer_dir(&self, chain_id: &str) -> Result<PathBuf, StoreError> {
        Ok(self.layers_dir().join(digest_hex(chain_id)?))
    }

    /// The unpacked tree of a layer (what overlay uses as a lower dir).
    pub fn layer_fs(&self, chain_id: &str) -> Result<PathBuf, StoreError> {
        Ok(self.layer_dir(chain_id)?.join("fs"))
    }

    pub fn has_layer(&self, chain_id: &str) -> Result<bool, StoreError> {
        Ok(self.layer_dir(chain_id)?.join("layer.json").exists())
    }

    /// A fresh temp dir for unpacking one layer, with an empty `fs/` inside.
    pub fn layer_tmp(&self, chain_id: &str) -> Result<PathBuf, StoreError> {
        let dir = self.layers_dir().join(format!(
            "{TMP_PREFIX}{}-{}",
            digest_hex(chain_id)?,
            random_name()
        ));
        fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
        let fs_dir = dir.join("fs");
        fs::create_dir(&fs_dir).map_err(io_err("creating", &fs_dir))?;
        Ok(dir)
    }

    /// Writes layer.json into `tmp` and renames it into place (not yet durable: see the
    /// module doc). When another pull put the same layer there first, ours is dropped.
    pub fn commit_layer(&self, tmp: &Path, info: &LayerInfo) -> Result<(), StoreError> {
        let json = serde_json::to_vec(info).map_err(|source| StoreError::BadRecord {
            path: tmp.to_path_buf(),
            source,
        })?;
        let info_path = tmp.join("layer.json");
        fs::write(&info_path, &json).map_err(io_err("writing", &info_path))?;
        let dest = self.layer_dir(&info.chain_id)?;
        match fs::rename(tmp, &dest) {
            Ok(()) => {}
            Err(e) if dest.join("layer.json").exists() => {
                let _ = e;
                remove_any(tmp)?;
            }
            Err(source) => {
                let _ = remove_any(tmp);
                return Err(StoreError::Io {
                    what: "renaming layer into place",
                    path: dest,
                    source,
                });
            }
        }
        Ok(())
    }

    pub fn write_record(&self, record: &ImageRecord) -> Result<(), StoreError> {
        self.write_records_durably(std::slice::from_ref(record))
    }

    /// Makes everything written to the store so far durable (blobs, layers, and the records'
    /// temp files: one `syncfs`), then renames the records into place and syncs their
    /// directory: a record never reaches the disk before what it references.
    pub fn write_records_durably(&self, records: &[ImageRecord]) -> Result<(), StoreError> {
        let dir = self.records_dir();
        let mut staged = Vec::with_capacity(records.len());
        let result = (|| {
            for record in records {
                let path = dir.join(format!("{}.json", digest_hex(&record.id)?));
                let json =
                    serde_json::to_vec_pretty(record).map_err(|source| StoreError::BadRecord {
                        path: path.clone(),
                        source,
                    })?;
                let tmp = dir.join(format!("{TMP_PREFIX}{}", random_name()));
                staged.push((tmp, path));
                let (tmp, _) = &staged[staged.len() - 1];
                let mut file = File::create_new(tmp).map_err(io_err("creating", tmp))?;
                file.write_all(&json).map_err(io_err("writing", tmp))?;
            }
            let root = File::open(&self.root).map_err(io_err("opening", &self.root))?;
            rustix::fs::syncfs(&root).map_err(|e| StoreError::Io {
                what: "syncfs",
                path: self.root.clone(),
                source: e.into(),
            })?;
            for (tmp, path) in &staged {
                fs::rename(tmp, path).map_err(io_err("renaming into place", path))?;
            }
            Ok(())
        })();
        if result.is_err() {
            for (tmp, _) in &staged {
                let _ = fs::remove_file(tmp);
            }
        }
        result?;
        sync_dir(&dir)
    }

    pub fn delete_record(&self, id: &str) -> Result<(), StoreError> {
        let path = self.records_dir().join(format!("{}.json", digest_hex(id)?));
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.records_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io {
                what: "removing",
                path,
                source,
            }),
        }
    }

    /// Removes every blob and layer no record references. Callers make sure no pull is
    /// running (a pull's layers are referenced only once its record is written).
    pub fn collect_garbage(&self, records: &[ImageRecord]) -> Result<(), StoreError> {
        let live_blobs: HashSet<&str> = records
            .iter()
            .flat_map(|r| r.blobs.iter())
            .filter_map(|d| digest_hex(d).ok())
            .collect();
        let live_layers: HashSet<&str> = records
            .iter()
            .flat_map(|r| r.chain_ids.iter())
            .filter_map(|d| digest_hex(d).ok())
            .collect();
        for (dir, live) in [
            (self.blobs_dir(), &live_blobs),
            (self.layers_dir(), &live_layers),
        ] {
            for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
                let entry = entry.map_err(io_err("listing", &dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(TMP_PREFIX) || live.contains(name.as_str()) {
                    continue;
                }
                tracing::debug!(path = %entry.path().display(), "removing unused image content");
                remove_any(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Bytes and inodes held by blobs and unpacked layers.
    pub fn usage(&self) -> Result<Usage, StoreError> {
        let mut usage = Usage::default();
        let blobs = self.blobs_dir();
        for entry in fs::read_dir(&blobs).map_err(io_err("listing", &blobs))? {
            let entry = entry.map_err(io_err("listing", &blobs))?;
            if let Ok(meta) = entry.metadata() {
                usage.bytes += meta.len();
                usage.inodes += 1;
            }
        }
        let layers = self.layers_dir();
        for entry in fs::read_dir(&layers).map_err(io_err("listing", &layers))? {
            let entry = entry.map_err(io_err("listing", &layers))?;
            let Ok(text) = fs::read(entry.path().join("layer.json")) else {
                continue;
            };
            if let Ok(info) = serde_json::from_slice::<LayerInfo>(&text) {
                usage.bytes += info.bytes;
                usage.inodes += info.inodes;
            }
        }
        Ok(usage)
    }
}

/// An ingest file being written, hashing as it goes.
pub struct BlobWriter {
    file: File,
    path: PathBuf,
    blobs_dir: PathBuf,
    hasher: Sha256,
    committed: bool,
}

impl BlobWriter {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BlobWriter {
    /// A writer dropped before its commit (an error, a cancelled pull) leaves nothing behind.
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Checks the digest and renames into `blobs/` (not yet durable: see the module doc); on
    /// a mismatch the file is removed and nothing is stored.
    pub fn commit(mut self, expected: &str) -> Result<(), StoreError> {
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize_reset()));
        if actual != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.to_string(),
                actual,
            });
        }
        let dest = self.blobs_dir.join(digest_hex(expected)?);
        fs::rename(&self.path, &dest).map_err(io_err("storing blob", &dest))?;
        self.committed = true;
        Ok(())
    }
}

fn random_name() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

fn remove_any(path: &Path) -> Result<(), StoreError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return super::unpack::remove_layer_dir(path).map_err(StoreError::RemoveLayer);
        }
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            what: "removing",
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let d1 = sha256_digest(b"layer one");
        let d2 = sha256_digest(b"layer two");
        let d3 = sha256_digest(b"layer three");
        let ids = chain_ids(&[d1.clone(), d2.clone(), d3.clone()]);
        assert_eq!(ids[0], d1);
        assert_eq!(ids[1], sha256_digest(format!("{d1} {d2}").as_bytes()));
        assert_eq!(ids[2], sha256_digest(format!("{} {d3}", ids[1]).as_bytes()));
        assert!(chain_ids(&[]).is_empty());
        // A known vector: two layers of busybox-like diff_ids.
        let a = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
        let b = "sha256:0000000000000000000000000000000000000000000000000000000000000002";
        let ids = chain_ids(&[a.to_string(), b.to_string()]);
        assert_eq!(
            ids[1],
            "sha256:".to_string() + &hex::encode(Sha256::digest(format!("{a} {b}")))
        );
    }

    #[test]
    fn a_blob_is_stored_only_when_its_digest_matches() {
        let dir = tempfile::tempdir().unwrap();
        let (store, records) = Store::open(dir.path()).unwrap();
        assert!(records.is_empty());
        let good = sha256_digest(b"hello");
        store.write_blob(&good, b"hello").unwrap();
        assert_eq!(store.read_blob(&good).unwrap(), b"hello");
        let err = store
            .write_blob(&sha256_digest(b"other"), b"hello")
            .unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(!store.blob_path(&sha256_digest(b"other")).unwrap().exists());
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
        assert!(store.blob_path("sha256:../../etc").is_err());
    }

    #[test]
    fn open_cleans_debris_and_unreferenced_content() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let kept = sha256_digest(b"kept");
        let dropped = sha256_digest(b"dropped");
        store.write_blob(&kept, b"kept").unwrap();
        store.write_blob(&dropped, b"dropped").unwrap();
        let layer = sha256_digest(b"diff");
        let tmp = store.layer_tmp(&layer).unwrap();
        store
            .commit_layer(
                &tmp,
                &LayerInfo {
                    version: RECORD_VERSION,
                    chain_id: layer.clone(),
                    diff_id: layer.clone(),
                    bytes: 10,
                    inodes: 2,
                },
            )
            .unwrap();
        let half_layer = store.layer_tmp(&sha256_digest(b"x")).unwrap();
        let mut half_blob = store.ingest().unwrap();
        half_blob.write_all(b"partial").unwrap();
        let record = ImageRecord {
            version: RECORD_VERSION,
            id: kept.clone(),
            repo_tags: vec!["a/b:c".into()],
            repo_digests: vec![],
            manifest_digest: kept.clone(),
            chain_ids: vec![layer.clone()],
            blobs: vec![kept.clone()],
            size: 4,
            created: 1,
            user: String::new(),
            pinned: false,
        };
        store.write_record(&record).unwrap();
        drop(half_blob);

        let (store, records) = Store::open(dir.path()).unwrap();
        assert_eq!(records, vec![record]);
        assert!(store.blob_path(&kept).unwrap().exists());
        assert!(!store.blob_path(&dropped).unwrap().exists());
        assert!(store.has_layer(&layer).unwrap());
        assert!(!half_layer.exists());
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
        assert_eq!(
            store.usage().unwrap(),
            Usage {
                bytes: 4 + 10,
                inodes: 1 + 2
            }
        );
        store.delete_record(&kept).unwrap();
        store.collect_garbage(&[]).unwrap();
        assert!(!store.has_layer(&layer).unwrap());
        assert!(!store.blob_path(&kept).unwrap().exists());
    }
}
