//! argv dispatch only: daemon (default) | shim | init | config default.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A Kubernetes CRI v1 container runtime"
)]
struct Cli {
    #[command(flatten)]
    config: berth::config::ConfigFlags,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Subcommand)]
enum Role {
    /// Run the CRI daemon in the foreground (the default).
    Daemon,
    /// The per-pod shim (started by the daemon).
    Shim(berth::shim::ShimArgs),
    /// Container setup inside its namespaces (started by the shim).
    Init(berth::init::InitArgs),
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the full default configuration, commented.
    Default,
}

fn main() -> ExitCode {
    // The pod's pause process re-execs the binary as `berth-pause pause`: keep it off clap
    // and everything else so it stays small.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "pause") {
        return berth::init::pause::run();
    }
    // containerd runs the binary as `containerd-shim-berth-v2` (its shim v2 contract,
    // Go-style flags): not clap's.
    if berth::shim::v2::invoked_as_shim(std::env::args_os().next().as_deref()) {
        return berth::shim::v2::main();
    }
    let cli = Cli::parse();
    match cli.role.unwrap_or(Role::Daemon) {
        Role::Daemon => berth::server::run_daemon(&cli.config),
        Role::Shim(args) => berth::shim::run(args),
        Role::Init(args) => berth::init::run(args),
        Role::Config {
            action: ConfigAction::Default,
        } => {
            print!("{}", berth::config::Config::default_toml());
            ExitCode::SUCCESS
        }
    }
}
