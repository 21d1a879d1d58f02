//! Layer unpacking: one (compressed) layer tar into its own directory, with OCI whiteouts
//! turned into overlay whiteouts, and nothing ever written outside that directory.
//!
//! ```text
//! Compression::from_media_type(&str) -> Result<Compression, UnpackError>
//! unpack_layer(reader, Compression, dest: &Path, &UnpackLimits) -> Result<UnpackStats, UnpackError>
//! extract_layer(reader, Compression, dest: &Path, &UnpackLimits) -> Result<UnpackStats, UnpackError>
//! remove_layer_dir(&Path) -> Result<(), UnpackError>
//! ```
//!
//! The caller (the pull, from a `spawn_blocking` task while the blob streams in) creates
//! `dest` empty (a temp dir next to `layers/<chain-id>`), calls [`unpack_layer`], compares
//! [`UnpackStats::diff_id`] with the config's `rootfs.diff_ids`, then renames `dest` into
//! place. On any error it calls [`remove_layer_dir`]. `unpack_layer` ends with one `syncfs`
//! on `dest`, so the rename can follow directly; [`extract_layer`] is the same without it,
//! for a caller that syncs the filesystem once for several layers (the pull does, before it
//! writes the image record).
//!
//! What the extractor does with a tar entry:
//! - Paths are normalized (`./x` is `x`); absolute paths and `..` components are refused.
//!   Every parent is resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so a
//!   parent path through a symlink that leaves the layer (absolute or `..`-climbing, made by
//!   an earlier entry) fails (`EXDEV`), as does a symlink loop (`ELOOP`). Symlink *entries*
//!   keep their targets verbatim (`bin/sh -> /bin/busybox` is normal).
//! - Missing parents are created (0755, root). A later entry for the same path replaces the
//!   earlier one; a directory over a directory only updates its metadata.
//! - Regular files, directories, symlinks, hard links (target must be a regular file already
//!   in this layer), character/block devices and fifos are created with `*at` calls; owner
//!   (numeric uid/gid), mode (with setuid/setgid/sticky), mtime/atime and `SCHILY.xattr.*`
//!   xattrs are kept (`trusted.overlay.*` xattrs from the tar are dropped: only the
//!   extractor decides what overlay sees). Directory times are set last.
//! - `.wh.<name>` becomes a 0/0 character device `<name>`; `.wh..wh..opq` sets
//!   `trusted.overlay.opaque=y` on its directory; other `.wh..wh.*` names are skipped.
//! - [`UnpackLimits`]: bytes written past `max_unpacked_size`, or free space on the layer
//!   filesystem below `min_free_space` (checked at the start, before each large file and
//!   every 64 MiB written), fail the unpack early, so a decompression bomb cannot fill the
//!   disk. Past 256 MiB written, a layer that wrote more than `max_expansion_ratio` bytes
//!   per compressed byte read so far fails too, so by default a bomb stops there. Metadata
//!   between two entries (PAX records, long names, skipped data) is capped at 16 MiB so it
//!   cannot exhaust memory either.
//! - `diff_id` is the sha256 of the whole decompressed stream, read to EOF.

mod beneath;
mod budget;
mod error;
mod extract;
mod path;

use std::cell::Cell;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};

use budget::{CountingReader, HashingReader, METADATA_ALLOWANCE};
pub use error::{
    DEFAULT_MAX_EXPANSION_RATIO, EXPANSION_CHECK_AFTER, Refusal, UnpackError, UnpackLimits,
    UnpackStats,
};
use extract::Extractor;
pub use path::PathRefusal;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From an OCI or Docker layer media type, including the non-distributable (OCI) and
    /// foreign (Docker) variants. Anything else (encrypted layers, configs, …) is an error.
    pub fn from_media_type(media_type: &str) -> Result<Compression, UnpackError> {
        let compression = match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
            other => return Err(UnpackError::UnknownMediaType(other.to_string())),
        };
        Ok(compression)
    }
}

/// Removes a layer directory and everything in it (a failed or unwanted unpack), without
/// following symlinks, even when the layer made directories read-only. A missing path is
/// not an error.
pub fn remove_layer_dir(path: &Path) -> Result<(), UnpackError> {
    beneath::remove_layer_dir(path).map_err(|source| UnpackError::LayerDir {
        path: path.to_path_buf(),
        what: "removing it",
        source,
    })
}

/// Extracts the (compressed) layer stream into `dest`, an empty directory the caller
/// created, and syncs its filesystem. Never writes outside `dest`. On error, the caller
/// removes `dest` with [`remove_layer_dir`].
pub fn unpack_layer(
    reader: impl Read,
    compression: Compression,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, UnpackError> {
    let stats = extract_layer(reader, compression, dest, limits)?;
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::LayerDir {
        path: dest.to_path_buf(),
        what: "opening it",
        source: e.into(),
    })?;
    rustix::fs::syncfs(&root).map_err(|e| UnpackError::LayerDir {
        path: dest.to_path_buf(),
        what: "syncfs",
        source: e.into(),
    })?;
    Ok(stats)
}

/// [`unpack_layer`] without the final `syncfs`: nothing written is durable yet.
pub fn extract_layer(
    reader: impl Read,
    compression: Compression,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, UnpackError> {
    let layer_dir_error = |what, source| UnpackError::LayerDir {
        path: dest.to_path_buf(),
        what,
        source,
    };
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| layer_dir_error("opening it", e.into()))?;

    let compressed = Rc::new(Cell::new(0));
    let input = BufReader::with_capacity(
        INPUT_BUFFER,
        CountingReader {
            inner: reader,
            count: Rc::clone(&compressed),
        },
    );
    let decoded: Box<dyn Read> = match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(UnpackError::Stream)?)
        }
    };
    let allowance = Rc::new(Cell::new(METADATA_ALLOWANCE));
    let mut archive = tar::Archive::new(HashingReader {
        inner: decoded,
        hasher: Sha256::new(),
        allowance: Rc::clone(&allowance),
    });

    let mut extractor = Extractor::new(root, limits, allowance.clone(), compressed)?;
    for entry in archive.entries().map_err(UnpackError::Stream)? {
        let mut entry = entry.map_err(UnpackError::Stream)?;
        extractor.entry(&mut entry)?;
        allowance.set(METADATA_ALLOWANCE);
    }
    extractor.set_dir_times()?;

    // Hash what follows the end-of-archive blocks too (record padding): the diff_id covers
    // the whole stream. It may not be more than the metadata allowance.
    let mut stream = archive.into_inner();
    io::copy(&mut stream, &mut io::sink()).map_err(UnpackError::Stream)?;
    let diff_id = format!("sha256:{}", hex::encode(stream.hasher.finalize()));
    Ok(UnpackStats {
        diff_id,
        bytes: extractor.budget.bytes,
        inodes: extractor.inodes,
    })
}

/// Compressed input is read in big chunks: fewer syscalls on the blob stream.
const INPUT_BUFFER: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorKind};
    use extract::refused;

    #[test]
    fn media_types_map_to_compression() {
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Compression::None),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.zstd",
                Compression::Zstd,
            ),
        ];
        for (media_type, expected) in cases {
            assert_eq!(
                Compression::from_media_type(media_type).unwrap(),
                expected,
                "{media_type}"
            );
        }
        for unknown in [
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            "application/vnd.oci.image.config.v1+json",
            "",
        ] {
            let err = Compression::from_media_type(unknown).unwrap_err();
            assert!(matches!(err, UnpackError::UnknownMediaType(_)), "{unknown}");
            assert_eq!(Error::from(err).kind(), ErrorKind::FailedPrecondition);
        }
    }

    #[test]
    fn error_kinds_separate_bad_layers_from_machine_failures() {
        let refused = refused("../x", Refusal::Path(PathRefusal::ParentComponent));
        assert_eq!(
            refused.to_string(),
            "layer entry \"../x\" refused: path contains a `..` component"
        );
        assert_eq!(Error::from(refused).kind(), ErrorKind::FailedPrecondition);
        let too_large = UnpackError::TooLarge {
            entry: "f".into(),
            limit: 10,
        };
        assert!(
            too_large
                .to_string()
                .contains("layer exceeds max_unpacked_size (10 bytes)")
        );
        assert_eq!(Error::from(too_large).kind(), ErrorKind::FailedPrecondition);
        let io = UnpackError::Io {
            entry: "f".into(),
            what: "writing file data",
            source: io::Error::from_raw_os_error(libc::EIO),
        };
        assert_eq!(Error::from(io).kind(), ErrorKind::Internal);
    }
}
