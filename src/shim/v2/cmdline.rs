//! The command line containerd gives a shim v2 binary (Go-style single-dash flags, then
//! the action), and where a shim group's socket and state live. Pure, so it is tested
//! as data.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What containerd asks the binary to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start (or find) the shim of this task's group and print its address.
    Start,
    /// Clean up after a shim that died: kill what is left, unmount, print the exit.
    Delete,
    /// berth's own: the daemonised shim serving the Task API on fd 3.
    Serve,
    /// `-v`: print the version.
    Version,
}

/// The serving shim's internal action word (containerd never passes it).
pub const SERVE: &str = "serve";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flags {
    pub namespace: String,
    /// containerd's gRPC socket path.
    pub address: String,
    pub publish_binary: String,
    pub id: String,
    pub bundle: Option<PathBuf>,
    pub debug: bool,
    pub action: Action,
}

/// Parses containerd's flags (`-name value`, `-name=value`, `--name value`; `-debug` and
/// `-v` take none) and the action.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Flags, String> {
    let mut flags = Flags {
        namespace: String::new(),
        address: String::new(),
        publish_binary: String::new(),
        id: String::new(),
        bundle: None,
        debug: false,
        action: Action::Serve,
    };
    let mut action = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            if action.is_some() {
                return Err(format!("unexpected argument {arg:?}"));
            }
            action = Some(match arg.as_str() {
                "start" => Action::Start,
                "delete" => Action::Delete,
                SERVE => Action::Serve,
                other => return Err(format!("unknown action {other:?}")),
            });
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (flag, None),
        };
        match name {
            "debug" => {
                flags.debug = inline.is_none_or(|v| v != "false");
                continue;
            }
            "v" | "version" => {
                action = Some(Action::Version);
                continue;
            }
            _ => {}
        }
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .ok_or_else(|| format!("flag -{name} needs a value"))?,
        };
        match name {
            "namespace" => flags.namespace = value,
            "address" => flags.address = value,
            "publish-binary" => flags.publish_binary = value,
            "id" => flags.id = value,
            "bundle" => flags.bundle = Some(PathBuf::from(value)),
            // Accepted and unused: berth's shim needs no socket of its own for these.
            "socket" | "containerd-binary" => {}
            other => return Err(format!("unknown flag -{other}")),
        }
    }
    flags.action = action.ok_or("no action given (start, delete)")?;
    if flags.action != Action::Version {
        if flags.namespace.is_empty() {
            return Err("-namespace is required".into());
        }
        if flags.id.is_empty() {
            return Err("-id is required".into());
        }
    }
    Ok(flags)
}

/// A unix socket path holds at most 107 bytes.
const MAX_SOCKET_PATH: usize = 107;

/// The socket of the shim serving group `group` of `namespace` for the containerd at
/// `address`: beside containerd's own socket (so a private containerd keeps its shims
/// private), named by a hash short enough for any sane directory.
pub fn socket_path(address: &str, namespace: &str, group: &str) -> Result<PathBuf, String> {
    let dir = Path::new(address).parent().unwrap_or(Path::new("/run"));
    let mut hasher = Sha256::new();
    for part in [address, namespace, group] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hex::encode(hasher.finalize());
    let path = dir.join("s").join(format!("berth-{}", &digest[..24]));
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(format!(
            "shim socket {} is longer than {MAX_SOCKET_PATH} bytes: put containerd's socket in a shorter directory",
            path.display()
        ));
    }
    Ok(path)
}

/// The serving shim's own files (its log, shim.json, exit files), beside its socket.
pub fn state_dir(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".d");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn containerd_start_command_line_parses() {
        let flags = parse(args(
            "-namespace k8s.io -address /run/c/containerd.sock -publish-binary /usr/bin/containerd -id abc -debug start",
        ))
        .unwrap();
        assert_eq!(flags.namespace, "k8s.io");
        assert_eq!(flags.address, "/run/c/containerd.sock");
        assert_eq!(flags.publish_binary, "/usr/bin/containerd");
        assert_eq!(flags.id, "abc");
        assert!(flags.debug);
        assert_eq!(flags.action, Action::Start);
    }

    #[test]
    fn delete_takes_the_bundle_and_inline_values() {
        let flags = parse(args("--namespace=ns -id=x -bundle /b delete")).unwrap();
        assert_eq!(flags.bundle, Some(PathBuf::from("/b")));
        assert_eq!(flags.action, Action::Delete);
        assert!(!flags.debug);
    }

    #[test]
    fn missing_action_id_or_unknown_flag_is_refused() {
        assert!(
            parse(args("-namespace ns -id x"))
                .unwrap_err()
                .contains("no action")
        );
        assert!(
            parse(args("-namespace ns start"))
                .unwrap_err()
                .contains("-id")
        );
        assert!(
            parse(args("-namespace ns -id x -frobnicate 1 start"))
                .unwrap_err()
                .contains("frobnicate")
        );
        assert!(parse(args("-namespace ns -id x start extra")).is_err());
        assert_eq!(parse(args("-v")).unwrap().action, Action::Version);
    }

    #[test]
    fn sockets_differ_per_group_and_live_beside_containerd() {
        let a = socket_path("/tmp/t/containerd.sock", "k8s.io", "pod1").unwrap();
        let b = socket_path("/tmp/t/containerd.sock", "k8s.io", "pod2").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("/tmp/t/s"));
        assert_eq!(
            a,
            socket_path("/tmp/t/containerd.sock", "k8s.io", "pod1").unwrap()
        );
        assert_eq!(
            state_dir(&a).to_string_lossy(),
            format!("{}.d", a.display())
        );
        let long = format!("/{}/containerd.sock", "d".repeat(100));
        assert!(socket_path(&long, "ns", "g").unwrap_err().contains("107"));
    }
}
