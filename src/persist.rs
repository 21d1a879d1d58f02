//! Atomic files: temp file, fsync, rename, fsync the directory. Every record berth keeps
//! is JSON with a `version` field written this way, so a crash leaves the old file or the
//! new one, never half of either.
//!
//! The daemon writes through the async functions (`save_*`), which run the write on
//! tokio's blocking pool: two fsyncs can take milliseconds on a busy disk, and a worker
//! thread stuck in them stalls every request it carries. The plain functions are for
//! code that may block: the shim (one thread, tmpfs), init, and `spawn_blocking` closures.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Writes `bytes` to `path` atomically with exactly file mode `mode` (the umask does not apply).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "path has no parent directory")
    })?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", rand::random::<u32>()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// Writes a record as pretty JSON (records are meant to be readable with `cat`).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic_mode(path, &bytes, 0o600)
}

/// Replaces a record atomically but without waiting for the disk: for short-lived marker
/// states (a creation under way) whose loss in a power cut recovery copes with anyway.
/// A crash of the daemon alone loses nothing: the page cache keeps the file.
pub fn write_json_replace<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    replace(path, &bytes, 0o600)
}

/// Replaces `path` with `bytes` atomically (temp file, rename) without waiting for the
/// disk: for state under the runtime dir (/run), which a reboot wipes along with every
/// process it describes, so a power cut has nothing to lose there.
pub fn write_replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, 0o600)
}

/// `write_replace` with exactly file mode `mode` (the umask does not apply): for bundles,
/// which init reads, and which a reboot makes useless along with the process they describe.
pub fn write_replace_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode)
}

fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let tmp = dir.join(format!(".record.tmp{}", rand::random::<u32>()));
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            f.set_permissions(fs::Permissions::from_mode(mode))?;
            f.write_all(bytes)
        })
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Runs blocking file work on the blocking pool.
pub async fn off_executor<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

/// `write_atomic` on the blocking pool.
pub async fn save_file(path: &Path, bytes: Vec<u8>) -> io::Result<()> {
    let path = path.to_path_buf();
    off_executor(move || write_atomic(&path, &bytes)).await
}

/// `write_json_atomic` on the blocking pool (the value is encoded here, on the caller's
/// thread, so it need not be `'static`).
pub async fn save_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let path = path.to_path_buf();
    off_executor(move || write_atomic_mode(&path, &bytes, 0o600)).await
}

/// `write_json_replace` on the blocking pool.
pub async fn save_json_unsynced<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let path = path.to_path_buf();
    off_executor(move || replace(&path, &bytes, 0o600)).await
}

/// Reads a JSON record; `Ok(None)` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Loads the record `<dir>/<id>/<file>` of every object dir under `dir` (none when `dir` is
/// missing). A dir without its record is a creation that never got that far: it is removed.
/// An unreadable record is logged and left in place for an operator to look at.
pub fn load_records<T: DeserializeOwned>(dir: &Path, file: &str, what: &str) -> io::Result<Vec<T>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut records = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path().join(file);
        match read_json(&path) {
            Ok(Some(record)) => records.push(record),
            Ok(None) => {
                tracing::warn!(dir = %entry.path().display(), "{what} dir without a record; removing");
                let _ = remove_dir_all_if_exists(&entry.path());
            }
            Err(e) => {
                tracing::error!(record = %path.display(), error = %e, "unreadable {what} record; left in place");
            }
        }
    }
    Ok(records)
}

/// Removes a file, treating "already gone" as success (removal must be idempotent).
pub fn remove_file_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes a directory tree, treating "already gone" as success.
pub fn remove_dir_all_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Record {
        version: u32,
        name: String,
    }

    #[test]
    fn a_replaced_bundle_file_keeps_its_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        write_replace_mode(&path, b"{}", 0o644).unwrap();
        write_replace_mode(&path, b"{\"a\":1}", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{\"a\":1}");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn json_round_trip_and_overwrite_leave_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        assert_eq!(read_json::<Record>(&path).unwrap(), None);
        for name in ["a", "b"] {
            let rec = Record {
                version: 1,
                name: name.into(),
            };
            write_json_atomic(&path, &rec).unwrap();
            assert_eq!(read_json::<Record>(&path).unwrap(), Some(rec));
        }
        let entries: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "only the record itself remains");
    }

    #[test]
    fn replace_without_sync_reads_back_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let rec = Record {
            version: 1,
            name: "creating".into(),
        };
        write_json_replace(&path, &rec).unwrap();
        assert_eq!(read_json::<Record>(&path).unwrap(), Some(rec));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn async_saves_write_on_the_blocking_pool_not_the_executor() {
        // A runtime of its own whose pool threads carry a name no other test uses: once the
        // saves are done, a thread of that name exists only if they ran on the pool.
        const POOL: &str = "persist-pool-t";
        let runtime = tokio::runtime::Builder::new_current_thread()
            .thread_name(POOL)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let rec = Record {
            version: 1,
            name: "a".into(),
        };
        runtime.block_on(async {
            save_json(&dir.path().join("a.json"), &rec).await.unwrap();
            save_json_unsynced(&dir.path().join("b.json"), &rec)
                .await
                .unwrap();
            save_file(&dir.path().join("c"), b"c".to_vec())
                .await
                .unwrap();
        });
        let pool_threads = fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter_map(|t| fs::read_to_string(t.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == POOL)
            .count();
        assert!(pool_threads > 0, "no blocking pool thread ran the writes");
        assert_eq!(
            read_json::<Record>(&dir.path().join("a.json")).unwrap(),
            Some(rec)
        );
        assert!(dir.path().join("b.json").exists() && dir.path().join("c").exists());
    }

    #[test]
    fn corrupt_record_is_invalid_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        fs::write(&path, b"{not json").unwrap();
        let err = read_json::<Record>(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn load_records_skips_and_removes_record_less_dirs_and_keeps_unreadable_ones() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            load_records::<Record>(&dir.path().join("none"), "r.json", "thing")
                .unwrap()
                .is_empty()
        );
        for (name, content) in [
            ("good", Some("{\"version\":1,\"name\":\"a\"}")),
            ("half", None),
            ("bad", Some("{")),
        ] {
            fs::create_dir(dir.path().join(name)).unwrap();
            if let Some(content) = content {
                fs::write(dir.path().join(name).join("r.json"), content).unwrap();
            }
        }
        let records: Vec<Record> = load_records(dir.path(), "r.json", "thing").unwrap();
        assert_eq!(
            records,
            vec![Record {
                version: 1,
                name: "a".into()
            }]
        );
        assert!(
            !dir.path().join("half").exists(),
            "a dir without a record is removed"
        );
        assert!(
            dir.path().join("bad/r.json").exists(),
            "an unreadable record is left for an operator"
        );
    }

    #[test]
    fn removal_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        remove_file_if_exists(&dir.path().join("nope")).unwrap();
        remove_dir_all_if_exists(&dir.path().join("nope")).unwrap();
    }
}
