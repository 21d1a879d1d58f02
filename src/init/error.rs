//! How a step of `berth init` fails, worded for the kubelet ("mount /proc: permission
//! denied"), with OS errors described the same way everywhere.

use std::io;

use nix::errno::Errno;

/// A failed step, as the shim (and the kubelet) will read it: "step: reason".
#[derive(Debug, thiserror::Error)]
#[error("{step}: {reason}")]
pub struct InitError {
    step: String,
    reason: String,
}

impl InitError {
    pub(super) fn new(step: impl Into<String>, reason: impl Into<String>) -> Self {
        InitError {
            step: step.into(),
            reason: reason.into(),
        }
    }
    pub(super) fn errno(step: impl Into<String>, errno: Errno) -> Self {
        Self::new(step, describe_errno(errno))
    }
    pub(super) fn io(step: impl Into<String>, err: &io::Error) -> Self {
        Self::new(step, describe_io(err))
    }
}

/// "No such file or directory" → "no such file or directory".
fn describe_errno(errno: Errno) -> String {
    let desc = errno.desc();
    let mut chars = desc.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => desc.to_string(),
    }
}

pub(super) fn describe_io(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => describe_errno(Errno::from_raw(code)),
        None => err.to_string(),
    }
}

/// An error and its causes, with OS errors described the same way as above.
pub(super) fn describe_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        match e.downcast_ref::<io::Error>() {
            Some(io_err) => parts.push(describe_io(io_err)),
            None => parts.push(e.to_string()),
        }
        next = e.source();
    }
    parts.join(": ")
}

pub(super) type Result<T, E = InitError> = std::result::Result<T, E>;
