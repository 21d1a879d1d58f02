//! The shim's command-line contract, as others read it from `/proc/<pid>/cmdline`: the
//! daemon tells its shims apart from other processes (and from other daemons' shims) by
//! the `shim` role and the `--sandbox-id` / `--state-dir` flags that `client::spawn` passes.

use std::path::PathBuf;

/// The shim's own command line (`berth shim ...`), parsed by clap; `shim_args` below reads
/// the same flags back from `/proc/<pid>/cmdline`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShimArgs {
    /// The pod this shim serves.
    #[arg(long)]
    pub sandbox_id: String,
    /// Unix socket to serve berth.shim.v1 on (keep it short: sockaddr_un holds 107 bytes).
    #[arg(long)]
    pub socket: PathBuf,
    /// Directory for shim.json and exits/.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Log file (appended); default `<state-dir>/shim.log`.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// `(sandbox id, state dir)` of a shim command line (`<exe> shim --sandbox-id ID … --state-dir DIR`).
pub fn shim_args(cmdline: &[u8]) -> Option<(String, PathBuf)> {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    if args.get(1) != Some(&&b"shim"[..]) {
        return None;
    }
    let value = |flag: &[u8]| {
        args.windows(2)
            .find(|w| w[0] == flag)
            .map(|w| String::from_utf8_lossy(w[1]).into_owned())
    };
    Some((
        value(b"--sandbox-id")?,
        PathBuf::from(value(b"--state-dir")?),
    ))
}

/// Whether a NUL-separated command line is `<exe> shim … --sandbox-id <sandbox_id> …`.
pub fn is_shim_of(cmdline: &[u8], sandbox_id: &str) -> bool {
    shim_args(cmdline).is_some_and(|(id, _)| id == sandbox_id)
}
