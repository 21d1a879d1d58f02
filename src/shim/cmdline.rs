//! The shim's command-line contract, as others read it from `/proc/<pid>/cmdline`: the
//! daemon tells its shims apart from other processes (and from other daemons' shims) by
//! the `shim` role and the `--sandbox-id` / `--state-dir` flags that `client::spawn` passes.

use std::path::PathBuf;

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
