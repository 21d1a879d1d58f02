//! Why a pull failed: every endpoint tried, each with its reason, and the gRPC code.

use std::time::Duration;

use crate::error::ErrorKind;
use crate::image::hosts::{self};
use crate::image::registry::RegistryError;
use crate::image::store::StoreError;
use crate::image::unpack::UnpackError;

/// One endpoint that was tried and why it failed.
#[derive(Debug)]
pub struct Attempt {
    pub endpoint: String,
    pub error: RegistryError,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("registry hosts configuration")]
    Hosts(#[from] hosts::HostsError),
    #[error("{what}: {}", describe_attempts(.attempts))]
    Endpoints {
        what: String,
        attempts: Vec<Attempt>,
    },
    #[error("manifest from {endpoint} has digest {actual}, not the {expected} asked for")]
    ManifestDigest {
        endpoint: String,
        expected: String,
        actual: String,
    },
    #[error("the manifest list has no linux/amd64 image (it has: {platforms})")]
    NoPlatform { platforms: String },
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedManifest(String),
    #[error("bad manifest {digest}")]
    BadManifest {
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("bad digest {0:?} in manifest")]
    BadDigest(String),
    #[error("bad image config {digest}")]
    BadConfig {
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the image config lists {diff_ids} layers, the manifest {layers}")]
    LayerCount { diff_ids: usize, layers: usize },
    #[error("layer {digest}")]
    LayerMediaType {
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error("downloading {digest} from {endpoint}")]
    Download {
        digest: String,
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unpacking layer {digest}")]
    Unpack {
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error(
        "layer {digest}: its uncompressed content is {actual}, the image config says {expected}"
    )]
    DiffId {
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("storing {digest}")]
    Store {
        digest: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "no bytes received for {} (image.pull_progress_timeout); pull cancelled",
        humantime::format_duration(*.0)
    )]
    ProgressTimeout(Duration),
    #[error("pull task failed")]
    Join(#[from] tokio::task::JoinError),
    #[error("stopped because another layer of the pull failed")]
    Cancelled,
    #[error("layer {digest}: the download stopped before its end")]
    Truncated { digest: String },
}

impl PullError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PullError::Endpoints { attempts, .. } => {
                if attempts
                    .iter()
                    .all(|a| matches!(a.error, RegistryError::NotFound { .. }))
                {
                    ErrorKind::NotFound
                } else if attempts.iter().any(|a| {
                    matches!(
                        a.error,
                        RegistryError::Unauthorized { .. } | RegistryError::Token { .. }
                    )
                }) {
                    ErrorKind::FailedPrecondition
                } else {
                    ErrorKind::Unavailable
                }
            }
            PullError::Download { .. } | PullError::Truncated { .. } => ErrorKind::Unavailable,
            PullError::ProgressTimeout(_) => ErrorKind::DeadlineExceeded,
            PullError::Store {
                source: StoreError::DigestMismatch { .. },
                ..
            } => ErrorKind::FailedPrecondition,
            PullError::Unpack {
                source: UnpackError::Io { .. } | UnpackError::LayerDir { .. },
                ..
            } => ErrorKind::Internal,
            // The layer is broken or hostile, or too big for the limits.
            PullError::Unpack { .. } => ErrorKind::FailedPrecondition,
            PullError::Store { .. } | PullError::Join(_) | PullError::Cancelled => {
                ErrorKind::Internal
            }
            PullError::Hosts(_)
            | PullError::ManifestDigest { .. }
            | PullError::NoPlatform { .. }
            | PullError::UnsupportedManifest(_)
            | PullError::BadManifest { .. }
            | PullError::BadDigest(_)
            | PullError::BadConfig { .. }
            | PullError::LayerCount { .. }
            | PullError::LayerMediaType { .. }
            | PullError::DiffId { .. } => ErrorKind::FailedPrecondition,
        }
    }
}

pub(super) fn describe_attempts(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "no endpoint with the needed capability (check hosts.toml capabilities)".into();
    }
    let parts: Vec<String> = attempts
        .iter()
        .map(|a| format!("{} ({})", a.endpoint, error_chain(&a.error)))
        .collect();
    format!("every endpoint failed: {}", parts.join("; "))
}

/// An error and its causes on one line (reqwest's own Display omits the cause).
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}
