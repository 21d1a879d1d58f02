//! The crate error: a kind plus a message and the source chain. Modules keep their own
//! `thiserror` enums and convert into this one; `From<Error> for tonic::Status` is the
//! only place a gRPC code is chosen.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    FailedPrecondition,
    Unavailable,
    DeadlineExceeded,
    /// A request whose answer would be too large (ExecSync output past the CRI's limit).
    ResourceExhausted,
    Unimplemented,
    /// The other side gave up on the call.
    Cancelled,
    /// A failure whose cause fits no other kind (a command that could not be exec'd).
    Unknown,
    Internal,
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Source>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` that says what was being done, caused by `source`.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<Source>,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::DeadlineExceeded, message)
    }
    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceExhausted, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unimplemented, message)
    }
    pub fn internal(message: impl Into<String>, source: impl Into<Source>) -> Self {
        Self::with_source(ErrorKind::Internal, message, source)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Prefixes the message with what the caller was doing, keeping kind and source.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

/// An I/O failure as an Internal error saying what was being done.
pub fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::internal(what, e)
}

/// A failure the request caused (a path or a profile it names) as an InvalidArgument
/// error saying what.
pub fn invalid_err<E>(what: impl Into<String>) -> impl FnOnce(E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let what = what.into();
    move |e| Error::with_source(ErrorKind::InvalidArgument, what, e)
}

/// Runs `work` on the blocking pool (file and cgroup I/O must not stall a tokio worker);
/// `what` names it if the task itself fails.
pub async fn blocking<T, E>(
    what: &'static str,
    work: impl FnOnce() -> std::result::Result<T, E> + Send + 'static,
) -> Result<T>
where
    T: Send + 'static,
    E: Into<Error> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Into::into),
        Err(e) => Err(Error::internal(what, e)),
    }
}

impl fmt::Display for Error {
    /// The message followed by every cause, so a gRPC client sees the real reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let mut next: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|s| s as _);
        while let Some(cause) = next {
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let code = match err.kind {
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            ErrorKind::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorKind::Unimplemented => tonic::Code::Unimplemented,
            ErrorKind::Cancelled => tonic::Code::Cancelled,
            ErrorKind::Unknown => tonic::Code::Unknown,
            ErrorKind::Internal => tonic::Code::Internal,
        };
        tonic::Status::new(code, err.to_string())
    }
}

impl From<crate::config::ConfigError> for Error {
    fn from(err: crate::config::ConfigError) -> Self {
        Error::with_source(ErrorKind::InvalidArgument, "configuration", err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_the_code_and_the_whole_cause_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let err = Error::internal("mount /proc", io).context("start container abc");
        let status: tonic::Status = err.into();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(
            status.message(),
            "start container abc: mount /proc: permission denied"
        );
    }

    #[test]
    fn kinds_map_to_their_codes() {
        let cases = [
            (Error::not_found("x"), tonic::Code::NotFound),
            (Error::invalid_argument("x"), tonic::Code::InvalidArgument),
            (
                Error::failed_precondition("x"),
                tonic::Code::FailedPrecondition,
            ),
            (Error::unavailable("x"), tonic::Code::Unavailable),
            (Error::already_exists("x"), tonic::Code::AlreadyExists),
            (Error::deadline_exceeded("x"), tonic::Code::DeadlineExceeded),
            (Error::unimplemented("x"), tonic::Code::Unimplemented),
            (
                Error::resource_exhausted("x"),
                tonic::Code::ResourceExhausted,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(tonic::Status::from(err).code(), code);
        }
    }
}
