//! The one error of the shim API. Every handler returns it; `From<ApiError> for Status`
//! is the only place the shim picks a gRPC code, and it keeps the whole cause chain in
//! the message so the daemon (and the kubelet behind it) sees the real reason.
//!
//! The daemon maps the code back in `client.rs` (one table too), keeping code and message.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("process {0} not found")]
    NotFound(String),
    #[error("process {0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// The process is not in a state that allows the call (not running, being started…).
    #[error("{0}")]
    FailedPrecondition(String),
    /// `berth init` reported it could not set the process up or exec it (its own words).
    #[error("{0}")]
    InitFailed(String),
    /// An exec's command could not be started (init's own words).
    #[error("{0}")]
    ExecFailed(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// An answer that would not fit the CRI's message limit (ExecSync output).
    #[error("{0}")]
    ResourceExhausted(String),
    /// A system call or file the shim itself needed failed.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    /// Something the shim lost track of (an exit channel dropped, say).
    #[error("{0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Names what was being done when an I/O call failed.
pub fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ApiError {
    let what = what.into();
    move |source| ApiError::Io { what, source }
}

pub fn sys_err(what: impl Into<String>) -> impl FnOnce(nix::Error) -> ApiError {
    let what = what.into();
    move |source| ApiError::Sys { what, source }
}

impl ApiError {
    pub fn code(&self) -> tonic::Code {
        match self {
            ApiError::NotFound(_) => tonic::Code::NotFound,
            ApiError::AlreadyExists(_) => tonic::Code::AlreadyExists,
            ApiError::InvalidArgument(_) => tonic::Code::InvalidArgument,
            ApiError::FailedPrecondition(_) | ApiError::InitFailed(_) => {
                tonic::Code::FailedPrecondition
            }
            // As runc/containerd report an exec that could not start.
            ApiError::ExecFailed(_) => tonic::Code::Unknown,
            ApiError::DeadlineExceeded(_) => tonic::Code::DeadlineExceeded,
            ApiError::ResourceExhausted(_) => tonic::Code::ResourceExhausted,
            ApiError::Io { .. } | ApiError::Sys { .. } | ApiError::Internal(_) => {
                tonic::Code::Internal
            }
        }
    }

    /// The message followed by every cause.
    pub fn chain(&self) -> String {
        let mut message = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            next = cause.source();
        }
        message
    }
}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        tonic::Status::new(err.code(), err.chain())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keeps_the_code_and_the_cause_chain() {
        let err = io_err("spawn berth init")(io::Error::from_raw_os_error(libc::ENOENT));
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            status.message().starts_with("spawn berth init: ")
                && status.message().contains("No such file"),
            "{}",
            status.message()
        );
        let cases = [
            (ApiError::NotFound("c".into()), tonic::Code::NotFound),
            (
                ApiError::AlreadyExists("c".into()),
                tonic::Code::AlreadyExists,
            ),
            (
                ApiError::InvalidArgument("x".into()),
                tonic::Code::InvalidArgument,
            ),
            (
                ApiError::FailedPrecondition("x".into()),
                tonic::Code::FailedPrecondition,
            ),
            (
                ApiError::InitFailed("mount /proc: EPERM".into()),
                tonic::Code::FailedPrecondition,
            ),
            (ApiError::ExecFailed("x".into()), tonic::Code::Unknown),
            (
                ApiError::DeadlineExceeded("x".into()),
                tonic::Code::DeadlineExceeded,
            ),
            (ApiError::Internal("x".into()), tonic::Code::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(tonic::Status::from(err).code(), code);
        }
        assert_eq!(
            tonic::Status::from(ApiError::NotFound("c1".into())).message(),
            "process c1 not found"
        );
    }
}
