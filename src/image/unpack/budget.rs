//! Limits while unpacking: bytes written against `max_unpacked_size`, free space against
//! `min_free_space`, bytes written per compressed byte read against `max_expansion_ratio`,
//! and the metadata a tar may make the parser hold in memory; plus the hashing reader that
//! computes the diff_id on the way and the counting reader under the decompressor.

use std::cell::Cell;
use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::rc::Rc;

use sha2::{Digest, Sha256};

use super::error::{EXPANSION_CHECK_AFTER, UnpackError};

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

/// Counts the compressed bytes the decompressor takes from the layer stream.
pub(super) struct CountingReader<R> {
    pub(super) inner: R,
    pub(super) count: Rc<Cell<u64>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Whether `expanded` bytes written from the first `compressed` bytes of the layer stream
/// break `max_ratio`. The ratio is the one so far, not the whole layer's, so a bomb fails
/// as soon as it passes [`EXPANSION_CHECK_AFTER`], long before it has filled anything.
pub(super) fn expansion_exceeds(expanded: u64, compressed: u64, max_ratio: u64) -> bool {
    expanded > EXPANSION_CHECK_AFTER && expanded > compressed.saturating_mul(max_ratio)
}

/// Byte and free-space accounting for [`UnpackLimits`].
pub(super) struct Budget {
    pub(super) max_bytes: Option<u64>,
    pub(super) min_free: Option<u64>,
    pub(super) max_ratio: Option<u64>,
    /// Compressed bytes read so far (shared with the [`CountingReader`]).
    pub(super) compressed: Rc<Cell<u64>>,
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
        if let Some(max_ratio) = self.max_ratio
            && expansion_exceeds(self.bytes, self.compressed.get(), max_ratio)
        {
            return Err(UnpackError::ExpansionRatio {
                entry: entry.to_string(),
                compressed: self.compressed.get(),
                expanded: self.bytes,
                max_ratio,
            });
        }
        if self.bytes_since_check >= SPACE_CHECK_BYTES {
            // Other layers unpack in parallel onto the same filesystem: look again.
            self.check_space(root, entry, 0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn small_layers_may_expand_at_any_ratio() {
        // 256 MiB of zeros from 256 KiB: a normal small layer, whatever the ratio.
        assert!(!expansion_exceeds(EXPANSION_CHECK_AFTER, 256 << 10, 200));
        assert!(!expansion_exceeds(EXPANSION_CHECK_AFTER, 0, 1));
    }

    #[test]
    fn past_the_threshold_a_bomb_fails_and_ordinary_data_does_not() {
        let expanded = EXPANSION_CHECK_AFTER + 1;
        // A gzip bomb expands about 1000:1.
        assert!(expansion_exceeds(expanded, expanded / 1000, 200));
        // Binaries and text expand 2-10:1; sparse-ish data far less than 200:1.
        assert!(!expansion_exceeds(expanded, expanded / 3, 200));
        assert!(!expansion_exceeds(10 * 1024 * MIB, 100 * MIB, 200));
        // Exactly at the ratio is allowed; one byte past it is not.
        assert!(!expansion_exceeds(300 * MIB, 300 * MIB / 200, 200));
        assert!(expansion_exceeds(300 * MIB + 1, 300 * MIB / 200, 200));
        // No overflow with absurd figures.
        assert!(!expansion_exceeds(u64::MAX, u64::MAX, u64::MAX));
    }

    #[test]
    fn the_counting_reader_counts_what_passes() {
        let count = Rc::new(Cell::new(0));
        let mut reader = CountingReader {
            inner: &b"hello world"[..],
            count: Rc::clone(&count),
        };
        let mut buf = [0u8; 4];
        reader.read_exact(&mut buf).unwrap();
        assert_eq!(count.get(), 4);
        io::copy(&mut reader, &mut io::sink()).unwrap();
        assert_eq!(count.get(), 11);
    }
}
