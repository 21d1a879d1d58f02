//! What a layer unpack may use (limits), what it reports (stats), and why it fails.

use std::io;
use std::path::PathBuf;

use super::path::PathRefusal;
use crate::error::{Error, ErrorKind};

// The default lives with the config (which must not import the unpacker: a cycle).
pub use crate::config::DEFAULT_MAX_EXPANSION_RATIO;

/// Expanded bytes after which the expansion ratio is enforced. Below it any ratio is
/// allowed: small layers of zeros or text are normal, and cannot hurt the disk.
pub const EXPANSION_CHECK_AFTER: u64 = 256 << 20;

/// `[image] max_unpacked_size`, `[image] min_free_space` and `[image] max_expansion_ratio`;
/// `None` = no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    pub max_unpacked_size: Option<u64>,
    pub min_free_space: Option<u64>,
    /// Bytes written per compressed byte read, enforced once a layer has expanded past
    /// [`EXPANSION_CHECK_AFTER`].
    pub max_expansion_ratio: Option<u64>,
}

impl Default for UnpackLimits {
    /// The configuration defaults: unlimited size, 1 GiB kept free, 200:1.
    fn default() -> Self {
        UnpackLimits {
            max_unpacked_size: None,
            min_free_space: Some(1 << 30),
            max_expansion_ratio: Some(DEFAULT_MAX_EXPANSION_RATIO),
        }
    }
}

/// What an unpack produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// `sha256:<hex>` of the uncompressed tar stream, all of it.
    pub diff_id: String,
    /// Sum of the sizes of the regular files written.
    pub bytes: u64,
    /// Inodes created (files, directories including implicit parents, symlinks, devices,
    /// fifos, whiteouts; hard links create none).
    pub inodes: u64,
}

/// Why an entry was refused: the layer is hostile or broken, never the host.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Path(PathRefusal),
    #[error("it resolves outside the layer directory (through a symlink or `..`)")]
    Escapes,
    #[error("its path runs into a symlink loop")]
    SymlinkLoop,
    #[error("a parent path component is not a directory")]
    ParentNotDirectory,
    #[error("a parent path component is a dangling symlink")]
    ParentMissing,
    #[error("hard link target {target:?}: {reason}")]
    HardLinkTargetPath { target: String, reason: PathRefusal },
    #[error("hard link target {0:?} is not in the layer (missing, or it comes later)")]
    HardLinkTargetMissing(String),
    #[error("hard link target {0:?} is not a regular file")]
    HardLinkTargetNotRegular(String),
    #[error("hard link target {0:?} resolves outside the layer directory")]
    HardLinkTargetEscapes(String),
    #[error("symlink without a target")]
    EmptySymlinkTarget,
    #[error("device entry without device numbers")]
    MissingDeviceNumbers,
    #[error("only a directory can stand for the layer root")]
    RootNotDirectory,
    #[error("uid or gid {0} is out of range")]
    IdOutOfRange(u64),
    #[error("unsupported entry type {0:?}")]
    UnsupportedType(char),
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("unknown layer media type {0:?}")]
    UnknownMediaType(String),
    #[error("layer entry {entry:?} refused: {reason}")]
    Refused { entry: String, reason: Refusal },
    #[error("layer exceeds max_unpacked_size ({limit} bytes) at entry {entry:?}")]
    TooLarge { entry: String, limit: u64 },
    #[error(
        "layer entry {entry:?} would leave less than min_free_space ({min_free} bytes) free \
         on the layer filesystem ({available} bytes available)"
    )]
    LowSpace {
        entry: String,
        min_free: u64,
        available: u64,
    },
    #[error(
        "layer expanded to {expanded} bytes from its first {compressed} compressed bytes \
         (about {}:1) at entry {entry:?}, past max_expansion_ratio ({max_ratio}:1, enforced \
         after {} MiB): a decompression bomb? If the image is trusted, raise [image] \
         max_expansion_ratio (--max-expansion-ratio; 0 turns the check off)",
        expanded / (*compressed).max(1),
        EXPANSION_CHECK_AFTER >> 20
    )]
    ExpansionRatio {
        entry: String,
        compressed: u64,
        expanded: u64,
        max_ratio: u64,
    },
    #[error("layer entry {entry:?}: bad tar header")]
    BadHeader {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {entry:?}: {what}")]
    Io {
        entry: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("reading the layer stream")]
    Stream(#[source] io::Error),
    #[error("layer directory {path}: {what}")]
    LayerDir {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl From<UnpackError> for Error {
    fn from(err: UnpackError) -> Self {
        let kind = match &err {
            UnpackError::UnknownMediaType(_)
            | UnpackError::Refused { .. }
            | UnpackError::TooLarge { .. }
            | UnpackError::LowSpace { .. }
            | UnpackError::ExpansionRatio { .. }
            | UnpackError::BadHeader { .. } => ErrorKind::FailedPrecondition,
            // Corrupt compression or tar framing is a bad image; other read errors come
            // from the caller's stream or the machine.
            UnpackError::Stream(source)
                if matches!(
                    source.kind(),
                    io::ErrorKind::InvalidData
                        | io::ErrorKind::InvalidInput
                        | io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::Other
                ) =>
            {
                ErrorKind::FailedPrecondition
            }
            UnpackError::Stream(_) | UnpackError::Io { .. } | UnpackError::LayerDir { .. } => {
                ErrorKind::Internal
            }
        };
        Error::with_source(kind, "unpack layer", err)
    }
}
