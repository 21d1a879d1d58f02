//! The init process (being built).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct InitArgs {}

pub fn run(_args: InitArgs) -> ExitCode {
    ExitCode::FAILURE
}
