//! Limits while unpacking: bytes written against `max_unpacked_size`, free space against
//! `min_free_space`, and the metadata a tar may make the parser hold in memory; plus the
//! hashing reader that computes the diff_id on the way.

use std::cell::Cell;
use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::rc::Rc;

use sha2::{Digest, Sha256};

use super::error::UnpackError;

/// Bytes the tar may spend between two entries (headers, PAX records, long names, data of
/// entries that have none, trailing padding): the tar crate holds some of it in memory.
pub(super) const METADATA_ALLOWANCE: u64 = 16 << 20;
/// Free space is checked again after this much data, and after this many entries.
const SPACE_CHECK_BYTES: u64 = 64 << 20;
const SPACE_CHECK_ENTRIES: u64 = 8192;

/// Hashes everything the tar parser reads, and enforces the metadata allowance (set to
/// `u64::MAX` while file data is copied).
pub(super) struct HashingReader<R> {
    pub(super) inner: R,
    pub(super) hasher: Sha256,
    pub(super) allowance: Rc<Cell<u64>>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        let left = self.allowance.get();
        if left != u64::MAX {
            let left = left.checked_sub(n as u64).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("more than {METADATA_ALLOWANCE} bytes of tar metadata or padding between entries"),
                )
            })?;
            self.allowance.set(left);
        }
        Ok(n)
    }
}

/// Byte and free-space accounting for [`UnpackLimits`].
pub(super) struct Budget {
    pub(super) max_bytes: Option<u64>,
    pub(super) min_free: Option<u64>,
    pub(super) bytes: u64,
    pub(super) bytes_since_check: u64,
    pub(super) entries_since_check: u64,
}

impl Budget {
    pub(super) fn check_space(
        &mut self,
        root: BorrowedFd<'_>,
        entry: &str,
        upcoming: u64,
    ) -> Result<(), UnpackError> {
        self.bytes_since_check = 0;
        self.entries_since_check = 0;
        let Some(min_free) = self.min_free else {
            return Ok(());
        };
        let vfs = rustix::fs::fstatvfs(root).map_err(|e| UnpackError::Io {
            entry: entry.to_string(),
            what: "checking free space (fstatvfs)",
            source: e.into(),
        })?;
        let available = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        if available.saturating_sub(upcoming) < min_free {
            return Err(UnpackError::LowSpace {
                entry: entry.to_string(),
                min_free,
                available,
            });
        }
        Ok(())
    }

    pub(super) fn check_max(&self, entry: &str, extra: u64) -> Result<(), UnpackError> {
        match self.max_bytes {
            Some(limit) if self.bytes.saturating_add(extra) > limit => Err(UnpackError::TooLarge {
                entry: entry.to_string(),
                limit,
            }),
            _ => Ok(()),
        }
    }

    pub(super) fn entry(&mut self, root: BorrowedFd<'_>, entry: &str) -> Result<(), UnpackError> {
        self.entries_since_check += 1;
        if self.entries_since_check >= SPACE_CHECK_ENTRIES {
            self.check_space(root, entry, 0)?;
        }
        Ok(())
    }

    /// Before a regular file of `size` bytes: fail now if it cannot fit.
    pub(super) fn before_file(
        &mut self,
        root: BorrowedFd<'_>,
        entry: &str,
        size: u64,
    ) -> Result<(), UnpackError> {
        self.check_max(entry, size)?;
        if self.bytes_since_check.saturating_add(size) >= SPACE_CHECK_BYTES {
            self.check_space(root, entry, size)?;
        }
        Ok(())
    }

    pub(super) fn wrote(
        &mut self,
        root: BorrowedFd<'_>,
        entry: &str,
        n: u64,
    ) -> Result<(), UnpackError> {
        self.check_max(entry, n)?;
        self.bytes += n;
        self.bytes_since_check += n;
        if self.bytes_since_check >= SPACE_CHECK_BYTES {
            // Other layers unpack in parallel onto the same filesystem: look again.
            self.check_space(root, entry, 0)?;
        }
        Ok(())
    }
}
