//! Daemon entry (being built).
use std::process::ExitCode;

pub fn run_daemon(_flags: &crate::config::ConfigFlags) -> ExitCode {
    ExitCode::FAILURE
}
