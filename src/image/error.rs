//! Why an image operation failed, and the gRPC code for it.

use super::pull::PullError;
use super::reference::ReferenceError;
use super::store::StoreError;
use crate::error::{Error, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error("image store")]
    Store(#[from] StoreError),
    #[error("image {0} not found")]
    NotFound(String),
    #[error("image config of {id}")]
    BadConfig {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("blocking task failed")]
    Join(#[from] tokio::task::JoinError),
}

impl ImageError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ImageError::Reference(_) => ErrorKind::InvalidArgument,
            ImageError::Pull(e) => e.kind(),
            ImageError::NotFound(_) => ErrorKind::NotFound,
            ImageError::Store(_) | ImageError::BadConfig { .. } | ImageError::Join(_) => {
                ErrorKind::Internal
            }
        }
    }
}

impl From<ImageError> for Error {
    fn from(err: ImageError) -> Self {
        Error::with_source(err.kind(), "image", err)
    }
}
