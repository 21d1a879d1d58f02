//! The per-pod shim process (being built).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ShimArgs {}

pub fn run(_args: ShimArgs) -> ExitCode {
    ExitCode::FAILURE
}
