//! How a CNI call fails, and the command it was running.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, ErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
}

impl CniCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
        }
    }
}

impl std::fmt::Display for CniCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no network config found in {}", dir.display())]
    NoConfig { dir: PathBuf },
    #[error("reading network config {}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid network config {}: {reason}", path.display())]
    InvalidConfig { path: PathBuf, reason: String },
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("running CNI plugin {plugin}")]
    Spawn {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "CNI plugin {plugin} {command} failed: {msg}{}",
        details_suffix(details)
    )]
    Plugin {
        plugin: String,
        command: CniCommand,
        code: Option<u32>,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} {command} timed out after {after:?} and was killed")]
    Timeout {
        plugin: String,
        command: CniCommand,
        after: Duration,
    },
    #[error("CNI plugin {plugin} returned an invalid result: {reason}")]
    InvalidResult { plugin: String, reason: String },
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

impl From<CniError> for Error {
    fn from(err: CniError) -> Self {
        let kind = match err {
            CniError::NoConfig { .. }
            | CniError::ReadConfig { .. }
            | CniError::InvalidConfig { .. }
            | CniError::PluginNotFound { .. } => ErrorKind::FailedPrecondition,
            CniError::Spawn { .. }
            | CniError::Plugin { .. }
            | CniError::Timeout { .. }
            | CniError::InvalidResult { .. } => ErrorKind::Internal,
        };
        Error::with_source(kind, "CNI", err)
    }
}
