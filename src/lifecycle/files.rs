//! Where the objects of a kind keep their files, and the one way their records are
//! written and read back: `<root>/<kind>/<id>/<record file>` beside what must survive a
//! reboot (a container's writable layer, a pod's hosts file), `<state>/<kind>/<id>` for
//! what a reboot wipes with the processes it describes (bundles, the shim's files).

use std::path::{Path, PathBuf};

use super::rollback::{Rollback, remove_dir};
use super::transition::Record;
use crate::error::{Error, Result, io_err};
use crate::persist;

/// How a record write waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// File and directory synced: survives a power cut.
    Synced,
    /// Renamed into place without a sync: survives a daemon crash, not a power cut. For a
    /// record that marks a creation under way, whose loss recovery copes with.
    Cached,
}

/// The directories of one kind.
#[derive(Debug, Clone)]
pub struct Dirs {
    records: PathBuf,
    state: PathBuf,
    file: &'static str,
}

impl Dirs {
    /// `root` and `state` are the daemon's two roots; the kind's folder is `R::DIR`.
    pub fn new<R: Record>(root: &Path, state: &Path) -> Dirs {
        Dirs {
            records: root.join(R::DIR),
            state: state.join(R::DIR),
            file: R::FILE,
        }
    }

    /// Holds the record and the object's files that outlive a reboot.
    pub fn record_dir(&self, id: &str) -> PathBuf {
        self.records.join(id)
    }

    /// The object's runtime files.
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.state.join(id)
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.record_dir(id).join(self.file)
    }

    /// Writes the record on the blocking pool (see `persist`).
    pub async fn save<R: Record>(&self, record: &R, durability: Durability) -> Result<()> {
        let path = self.record_path(record.id());
        let written = match durability {
            Durability::Synced => persist::save_json(&path, record).await,
            Durability::Cached => persist::save_json_unsynced(&path, record).await,
        };
        written.map_err(|e| Error::internal(format!("writing {}", path.display()), e))
    }

    /// Every record on disk (see `persist::load_records`).
    pub fn load<R: Record>(&self) -> Result<Vec<R>> {
        persist::load_records(&self.records, self.file, R::KIND)
            .map_err(|e| Error::internal(format!("reading {}", self.records.display()), e))
    }

    /// Makes the object's two directories, each removed again by `undo`.
    pub fn make(&self, id: &str, undo: &mut Rollback) -> Result<()> {
        for dir in [self.record_dir(id), self.state_dir(id)] {
            std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
            undo.push(format!("remove {}", dir.display()), remove_dir(dir));
        }
        Ok(())
    }

    /// Pushes the removal of both directories (recovery of a creation a crash cut short).
    pub fn undo(&self, id: &str, undo: &mut Rollback) {
        for dir in [self.record_dir(id), self.state_dir(id)] {
            undo.push(format!("remove {}", dir.display()), remove_dir(dir));
        }
    }

    /// Removes the runtime files, then the record with its directory: a crash in between
    /// leaves a record whose removal is repeated at the next RemoveX.
    pub fn remove(&self, id: &str) -> Result<()> {
        for dir in [self.state_dir(id), self.record_dir(id)] {
            persist::remove_dir_all_if_exists(&dir)
                .map_err(io_err(format!("removing {}", dir.display())))?;
        }
        Ok(())
    }
}
