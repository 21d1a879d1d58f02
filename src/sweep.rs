//! The startup sweep: after recovery has loaded every record (and rolled back interrupted
//! creations), whatever berth made that no record points to any more is removed and logged
//! with what it was. Only berth's own things are looked at: shims by their command line and
//! state dir, netns pins, shim sockets and bundles under berth's state dir, mounts under that
//! dir, cgroups under berth's cgroup parent whose name is a berth id (unless a live shim of
//! another berth, one with another state dir, serves that pod: two berths may share a
//! parent, and neither kills the other's pods), and (systemd driver)
//! the units berth made, told by their description (`linux/systemd/sweep.rs`). Half-written image
//! blobs and layers are the image store's to clean (it does when it opens).
//!
//! The decision is a pure [`plan`] over what [`observe`] found, so it is tested as data.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::container::manager::{ContainerFilter, ContainerManager};
use crate::linux::cgroup::Cgroups;
use crate::sandbox::{SandboxFilter, SandboxManager};

/// How long a leftover cgroup may take to empty once its processes are killed.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where berth keeps its things.
#[derive(Debug, Clone)]
pub struct Scope {
    pub state: PathBuf,
    /// berth's own cgroup parent (`default_cgroup_parent`), as a cgroup path.
    pub cgroup_parent: String,
}

/// The ids records point to.
#[derive(Debug, Default, Clone)]
pub struct Known {
    pub sandboxes: HashSet<String>,
    pub containers: HashSet<String>,
}

/// What is on the machine now.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// pid and NUL-separated command line of every process.
    pub processes: Vec<(u32, Vec<u8>)>,
    /// Mount points of this mount namespace.
    pub mount_points: Vec<PathBuf>,
    /// File names in `<state>/netns`.
    pub netns_pins: Vec<String>,
    /// File names in `<state>/s` (shim sockets).
    pub shim_sockets: Vec<String>,
    /// Dir names in `<state>/sandboxes` and `<state>/containers`.
    pub sandbox_dirs: Vec<String>,
    pub container_dirs: Vec<String>,
    /// Cgroup paths one and two levels below the cgroup parent, in any hierarchy.
    pub cgroups: Vec<String>,
}

/// One thing to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// A shim whose pod berth does not know.
    Shim { pid: u32, sandbox_id: String },
    /// A cgroup (and everything below it) of an unknown pod or container.
    Cgroup(String),
    /// A pinned network namespace of an unknown pod.
    NetnsPin(PathBuf),
    /// Some other mount under the state dir.
    Mount(PathBuf),
    /// A shim socket of an unknown pod.
    Socket(PathBuf),
    /// A pod's or container's state dir (shim state, bundles) without a record.
    StateDir(PathBuf),
}

impl Leftover {
    fn kind(&self) -> &'static str {
        match self {
            Leftover::Shim { .. } => "shim process",
            Leftover::Cgroup(_) => "cgroup",
            Leftover::NetnsPin(_) => "netns pin",
            Leftover::Mount(_) => "mount",
            Leftover::Socket(_) => "shim socket",
            Leftover::StateDir(_) => "state dir",
        }
    }

    /// Removal order: processes first (they hold the rest), then what they held.
    fn rank(&self) -> u8 {
        match self {
            Leftover::Shim { .. } => 0,
            Leftover::Cgroup(_) => 1,
            Leftover::NetnsPin(_) => 2,
            Leftover::Mount(_) => 3,
            Leftover::Socket(_) => 4,
            Leftover::StateDir(_) => 5,
        }
    }
}

/// A berth object id: 64 lowercase hex digits.
fn is_berth_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The leftovers among `observed`, in removal order.
pub fn plan(scope: &Scope, known: &Known, observed: &Observed) -> Vec<Leftover> {
    let mut out = Vec::new();
    for (pid, cmdline) in &observed.processes {
        if let Some((sandbox_id, state_dir)) = crate::shim::cmdline::shim_args(cmdline)
            && state_dir.starts_with(&scope.state)
            && !known.sandboxes.contains(&sandbox_id)
        {
            out.push(Leftover::Shim {
                pid: *pid,
                sandbox_id,
            });
        }
    }
    // Pods of another berth sharing this cgroup parent (its own state dir, its own live
    // shim): their cgroups hold that berth's pods, which are never ours to kill.
    let foreign: HashSet<String> = observed
        .processes
        .iter()
        .filter_map(|(_, cmdline)| crate::shim::cmdline::shim_args(cmdline))
        .filter(|(_, state_dir)| !state_dir.starts_with(&scope.state))
        .map(|(sandbox_id, _)| sandbox_id)
        .collect();
    let parent = scope.cgroup_parent.trim_end_matches('/');
    for path in &observed.cgroups {
        let Some(rest) = path.strip_prefix(parent).and_then(|r| r.strip_prefix('/')) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let stray = match parts.as_slice() {
            [pod] => is_berth_id(pod) && !known.sandboxes.contains(*pod) && !foreign.contains(*pod),
            // Inside a known pod's cgroup: the pause's (named by the pod) and the containers'.
            [pod, child] => {
                known.sandboxes.contains(*pod)
                    && is_berth_id(child)
                    && child != pod
                    && !known.containers.contains(*child)
            }
            _ => false,
        };
        if stray {
            out.push(Leftover::Cgroup(path.clone()));
        }
    }
    let netns_dir = scope.state.join("netns");
    for name in &observed.netns_pins {
        if !known.sandboxes.contains(name) {
            out.push(Leftover::NetnsPin(netns_dir.join(name)));
        }
    }
    for mount_point in &observed.mount_points {
        let under_state = mount_point.starts_with(&scope.state) && *mount_point != scope.state;
        // The netns dir is berth's shared mount point for the pins; pins are handled above.
        let netns = *mount_point == netns_dir || mount_point.parent() == Some(&netns_dir);
        if under_state && !netns && !out.contains(&Leftover::Mount(mount_point.clone())) {
            out.push(Leftover::Mount(mount_point.clone()));
        }
    }
    for name in &observed.shim_sockets {
        let prefix = name.strip_suffix(".sock").unwrap_or(name);
        if !known.sandboxes.iter().any(|id| id.starts_with(prefix)) {
            out.push(Leftover::Socket(scope.state.join("s").join(name)));
        }
    }
    for (dirs, known_ids, sub) in [
        (&observed.sandbox_dirs, &known.sandboxes, "sandboxes"),
        (&observed.container_dirs, &known.containers, "containers"),
    ] {
        for name in dirs {
            if is_berth_id(name) && !known_ids.contains(name) {
                out.push(Leftover::StateDir(scope.state.join(sub).join(name)));
            }
        }
    }
    out.sort_by_key(Leftover::rank);
    out
}

fn names_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Decodes the octal escapes (`\040` for a space) mountinfo uses in paths.
fn unescape_mountinfo(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let octal = |b: &[u8]| -> Option<u8> {
        let digits = b
            .iter()
            .map(|c| (b'0'..=b'7').contains(c).then(|| c - b'0'));
        digits
            .collect::<Option<Vec<u8>>>()
            .and_then(|d| u8::try_from(d.iter().fold(0u32, |acc, v| acc * 8 + u32::from(*v))).ok())
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Some(v) = octal(&bytes[i + 1..i + 4])
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Reads what is on the machine (blocking).
pub fn observe(scope: &Scope, cgroups: &Cgroups) -> Observed {
    let mut observed = Observed::default();
    for name in names_in(Path::new("/proc")) {
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) {
            observed.processes.push((pid, cmdline));
        }
    }
    observed.mount_points = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .collect();
    observed.netns_pins = names_in(&scope.state.join("netns"));
    observed.shim_sockets = names_in(&scope.state.join("s"));
    observed.sandbox_dirs = names_in(&scope.state.join("sandboxes"));
    observed.container_dirs = names_in(&scope.state.join("containers"));
    let parent = scope.cgroup_parent.trim_end_matches('/');
    let mut seen = HashSet::new();
    for hierarchy in cgroups.hierarchies() {
        let base = hierarchy.mount_point.join(parent.trim_start_matches('/'));
        for pod in names_in(&base) {
            if !base.join(&pod).is_dir() {
                continue;
            }
            let pod_path = format!("{parent}/{pod}");
            for child in names_in(&base.join(&pod)) {
                if base.join(&pod).join(&child).is_dir() {
                    seen.insert(format!("{pod_path}/{child}"));
                }
            }
            seen.insert(pod_path);
        }
    }
    observed.cgroups = seen.into_iter().collect();
    observed.cgroups.sort();
    observed
}

/// Removes one leftover (blocking).
fn remove(leftover: &Leftover, cgroups: &Cgroups) -> std::result::Result<(), String> {
    match leftover {
        Leftover::Shim { pid, sandbox_id } => {
            // Looked at again: the pid must still be that shim.
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if crate::shim::cmdline::shim_args(&cmdline).is_some_and(|(id, _)| id == *sandbox_id) {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Leftover::Cgroup(path) => {
            cgroups
                .kill_all(path, KILL_WAIT)
                .map_err(|e| e.to_string())?;
            cgroups.remove(path).map_err(|e| e.to_string())
        }
        Leftover::NetnsPin(path) => {
            crate::linux::netns::unpin_netns(path).map_err(|e| e.to_string())
        }
        Leftover::Mount(path) => {
            nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).map_err(|e| e.to_string())
        }
        Leftover::Socket(path) => {
            crate::persist::remove_file_if_exists(path).map_err(|e| e.to_string())
        }
        Leftover::StateDir(path) => {
            crate::persist::remove_dir_all_if_exists(path).map_err(|e| e.to_string())
        }
    }
}

/// Removes `leftovers` in order, logging each (blocking).
pub fn remove_all(leftovers: &[Leftover], cgroups: &Cgroups) {
    for leftover in leftovers {
        let what = leftover.kind();
        let result = remove(leftover, cgroups);
        match (leftover, result) {
            (Leftover::Shim { pid, sandbox_id }, Ok(())) => {
                tracing::warn!(pid, sandbox_id = %sandbox_id, "sweep: killed a shim of an unknown pod")
            }
            (Leftover::Cgroup(path), Ok(())) => {
                tracing::warn!(cgroup = %path, "sweep: removed a cgroup no record points to")
            }
            (
                Leftover::NetnsPin(path)
                | Leftover::Mount(path)
                | Leftover::Socket(path)
                | Leftover::StateDir(path),
                Ok(()),
            ) => {
                tracing::warn!(path = %path.display(), "sweep: removed a {what} no record points to")
            }
            (leftover, Err(error)) => {
                tracing::error!(leftover = ?leftover, error = %error, "sweep: could not remove a {what}")
            }
        }
    }
}

/// CNI DEL for a pod whose netns pin outlived its record, with today's network config: the
/// CNI container id is the pod id (the pin's name), which is all host-local needs to free
/// the pod's IP lease and portmap needs to drop its rules. Best effort.
async fn release_network(sandboxes: &SandboxManager, pin: &Path) {
    let Some(id) = pin.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let Ok(network) = sandboxes.cni().load() else {
        return;
    };
    let attachment = crate::cni::Attachment::new(id.clone(), Some(pin.to_path_buf()), "", "", "");
    match sandboxes.cni().del(&network, &attachment, None).await {
        Ok(()) => tracing::warn!(sandbox_id = %id, "sweep: released the network of an unknown pod"),
        Err(e) => {
            tracing::warn!(sandbox_id = %id, error = %e, "sweep: CNI DEL for an unknown pod failed")
        }
    }
}

/// The sweep at daemon start, after recovery and before serving.
pub async fn sweep(
    config: &Config,
    sandboxes: &Arc<SandboxManager>,
    containers: &Arc<ContainerManager>,
) -> Vec<Leftover> {
    let mut known = Known::default();
    for (record, _) in sandboxes.list(&SandboxFilter::default()) {
        known.sandboxes.insert(record.id);
    }
    for record in containers.list(&ContainerFilter::default()) {
        known.containers.insert(record.id);
    }
    // An object whose record could not be read is left alone with everything it holds.
    known
        .sandboxes
        .extend(names_in(&config.root.join("sandboxes")));
    known
        .containers
        .extend(names_in(&config.root.join("containers")));
    let scope = Scope {
        state: config.state.clone(),
        cgroup_parent: config.default_cgroup_parent.clone(),
    };
    let cgroups = sandboxes.cgroups().clone();
    let started = std::time::Instant::now();
    let known_units = known.clone();
    let found = {
        let cgroups = cgroups.clone();
        tokio::task::spawn_blocking(move || plan(&scope, &known, &observe(&scope, &cgroups))).await
    };
    let leftovers = found.unwrap_or_else(|e| {
        tracing::error!(error = %e, "sweep: looking for leftovers failed");
        Vec::new()
    });
    // Shims and their processes first (the netns must be empty for its veth to go), then
    // the network, while the pins still exist.
    let (first, rest): (Vec<Leftover>, Vec<Leftover>) = leftovers
        .iter()
        .cloned()
        .partition(|l| matches!(l, Leftover::Shim { .. } | Leftover::Cgroup(_)));
    let blocking_cgroups = cgroups.clone();
    let _ = tokio::task::spawn_blocking(move || remove_all(&first, &blocking_cgroups)).await;
    // With the systemd driver, berth's units no record points to go too (after the shims
    // and cgroups above, so that only empty units are left to stop).
    if let Some(driver) = sandboxes.systemd() {
        driver
            .sweep(&known_units.sandboxes, &known_units.containers)
            .await;
    }
    for leftover in &rest {
        if let Leftover::NetnsPin(pin) = leftover {
            release_network(sandboxes, pin).await;
        }
    }
    let _ = tokio::task::spawn_blocking(move || remove_all(&rest, &cgroups)).await;
    tracing::info!(
        leftovers = leftovers.len(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "startup sweep done"
    );
    leftovers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn scope() -> Scope {
        Scope {
            state: "/run/berth".into(),
            cgroup_parent: "/berth".into(),
        }
    }

    fn shim_cmdline(sandbox: &str, state: &str) -> Vec<u8> {
        format!(
            "/usr/bin/berth\0shim\0--sandbox-id\0{sandbox}\0--socket\0{state}/s/x.sock\0--state-dir\0{state}/sandboxes/{sandbox}/shim\0"
        )
        .into_bytes()
    }

    #[test]
    fn only_berth_things_without_a_record_are_leftovers() {
        let (a, b, c, d, e, f) = (id('a'), id('b'), id('c'), id('d'), id('e'), id('f'));
        let known = Known {
            sandboxes: [a.clone()].into(),
            containers: [c.clone()].into(),
        };
        let observed = Observed {
            processes: vec![
                (10, shim_cmdline(&a, "/run/berth")),
                (11, shim_cmdline(&b, "/run/berth")),
                // Another berth's shim (other state dir) is not ours, nor is its pod's
                // cgroup under the parent both share.
                (12, shim_cmdline(&e, "/run/other")),
                // A state dir that merely begins with ours is another berth's too.
                (14, shim_cmdline(&f, "/run/berth-critest")),
                (13, b"/bin/sleep\0x\0".to_vec()),
            ],
            mount_points: vec![
                "/".into(),
                "/run/berth/netns".into(),
                format!("/run/berth/netns/{a}").into(),
                format!("/run/berth/netns/{b}").into(),
                "/run/berth/containers/x/rootfs".into(),
                "/run/other/thing".into(),
            ],
            netns_pins: vec![a.clone(), b.clone()],
            shim_sockets: vec![format!("{}.sock", &a[..16]), format!("{}.sock", &b[..16])],
            sandbox_dirs: vec![a.clone(), b.clone(), "not-an-id".into()],
            container_dirs: vec![c.clone(), d.clone()],
            cgroups: vec![
                format!("/berth/{a}"),
                format!("/berth/{a}/{a}"),
                format!("/berth/{a}/{c}"),
                format!("/berth/{a}/{d}"),
                format!("/berth/{b}"),
                format!("/berth/{b}/{b}"),
                format!("/berth/{e}"),
                format!("/berth/{e}/{e}"),
                format!("/berth/{f}"),
                "/berth/kubelet-made".into(),
                format!("/elsewhere/{b}"),
            ],
        };
        let leftovers = plan(&scope(), &known, &observed);
        assert_eq!(
            leftovers,
            vec![
                Leftover::Shim {
                    pid: 11,
                    sandbox_id: b.clone()
                },
                Leftover::Cgroup(format!("/berth/{a}/{d}")),
                Leftover::Cgroup(format!("/berth/{b}")),
                Leftover::NetnsPin(format!("/run/berth/netns/{b}").into()),
                Leftover::Mount("/run/berth/containers/x/rootfs".into()),
                Leftover::Socket(format!("/run/berth/s/{}.sock", &b[..16]).into()),
                Leftover::StateDir(format!("/run/berth/sandboxes/{b}").into()),
                Leftover::StateDir(format!("/run/berth/containers/{d}").into()),
            ]
        );
    }

    #[test]
    fn nothing_is_a_leftover_when_everything_is_known() {
        let a = id('a');
        let known = Known {
            sandboxes: [a.clone()].into(),
            containers: HashSet::new(),
        };
        let observed = Observed {
            processes: vec![(10, shim_cmdline(&a, "/run/berth"))],
            mount_points: vec![format!("/run/berth/netns/{a}").into()],
            netns_pins: vec![a.clone()],
            shim_sockets: vec![format!("{}.sock", &a[..16])],
            sandbox_dirs: vec![a.clone()],
            container_dirs: vec![],
            cgroups: vec![format!("/berth/{a}"), format!("/berth/{a}/{a}")],
        };
        assert!(plan(&scope(), &known, &observed).is_empty());
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            unescape_mountinfo("/run/a\\040b"),
            PathBuf::from("/run/a b")
        );
        assert_eq!(unescape_mountinfo("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape_mountinfo("/tail\\04"), PathBuf::from("/tail\\04"));
    }
}
