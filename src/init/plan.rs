//! What init will do for a spec, as data: which namespaces to join or create, whether a
//! fork is needed, whether the workload is the built-in pause.

use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// Annotation that makes init become the built-in pause process instead of an exec.
pub const PAUSE_ANNOTATION: &str = "berth.pause";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceJoin {
    pub kind: LinuxNamespaceType,
    pub path: PathBuf,
}

/// The user namespace, which init handles apart from the others: it is entered after
/// every other namespace is joined and the root filesystem is set up, because those steps
/// need init's rights in the host's user namespace (joining the host-owned pod netns,
/// mounting, id-mapping mounts).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UserNamespacePlan {
    /// Stay in init's own (the host's).
    #[default]
    Host,
    /// A new one with the spec's uid/gid mappings (the pause process of a pod).
    Create,
    /// Join this one (a container or exec of such a pod), last, before the user change.
    Join(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespacePlan {
    /// In join order, mount last (it changes how later paths resolve; all paths are
    /// opened before any join anyway). Never the user namespace.
    pub join: Vec<NamespaceJoin>,
    /// Namespaces to create with one unshare (never the user namespace).
    pub create: Vec<LinuxNamespaceType>,
    pub user: UserNamespacePlan,
}

impl NamespacePlan {
    pub fn from_spec(spec: &Spec) -> NamespacePlan {
        let mut plan = NamespacePlan::default();
        let namespaces = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        for ns in namespaces {
            if ns.typ() == LinuxNamespaceType::User {
                plan.user = match ns.path() {
                    Some(path) if !path.as_os_str().is_empty() => {
                        UserNamespacePlan::Join(path.clone())
                    }
                    _ => UserNamespacePlan::Create,
                };
                continue;
            }
            match ns.path() {
                Some(path) if !path.as_os_str().is_empty() => plan.join.push(NamespaceJoin {
                    kind: ns.typ(),
                    path: path.clone(),
                }),
                _ => plan.create.push(ns.typ()),
            }
        }
        plan.join.sort_by_key(|j| join_rank(j.kind));
        plan
    }

    /// Exec mode: join every namespace of the running process `pid` that a container
    /// has (its user namespace too when `join_user`: the pod has its own), creating none.
    pub fn exec_into(pid: i32, join_user: bool) -> NamespacePlan {
        let join = [
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Pid,
            // The container's own on cgroup v2, the host's (a no-op join) otherwise.
            LinuxNamespaceType::Cgroup,
            LinuxNamespaceType::Mount,
        ]
        .into_iter()
        .map(|kind| NamespaceJoin {
            kind,
            path: PathBuf::from(format!("/proc/{pid}/ns/{}", proc_ns_name(kind))),
        })
        .collect();
        let user = if join_user {
            UserNamespacePlan::Join(PathBuf::from(format!("/proc/{pid}/ns/user")))
        } else {
            UserNamespacePlan::Host
        };
        NamespacePlan {
            join,
            create: Vec::new(),
            user,
        }
    }

    pub fn unshare_flags(&self) -> CloneFlags {
        self.create
            .iter()
            .fold(CloneFlags::empty(), |flags, kind| flags | clone_flag(*kind))
    }

    /// Entering a PID namespace (new or joined) only applies to children: init must fork
    /// so the workload is inside it.
    pub fn needs_fork(&self) -> bool {
        self.create.contains(&LinuxNamespaceType::Pid)
            || self.join.iter().any(|j| j.kind == LinuxNamespaceType::Pid)
    }

    pub fn creates(&self, kind: LinuxNamespaceType) -> bool {
        self.create.contains(&kind)
    }
}

fn join_rank(kind: LinuxNamespaceType) -> u8 {
    match kind {
        LinuxNamespaceType::Mount => 1,
        _ => 0,
    }
}

pub fn clone_flag(kind: LinuxNamespaceType) -> CloneFlags {
    match kind {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // nix has no CLONE_NEWTIME constant; the value is fixed by the kernel ABI.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(0x80),
    }
}

/// The entry of a namespace kind under /proc/<pid>/ns/.
pub fn proc_ns_name(kind: LinuxNamespaceType) -> &'static str {
    match kind {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Short name used in step descriptions: "netns", "ipcns", ...
pub fn short_name(kind: LinuxNamespaceType) -> &'static str {
    match kind {
        LinuxNamespaceType::Mount => "mntns",
        LinuxNamespaceType::Cgroup => "cgroupns",
        LinuxNamespaceType::Uts => "utsns",
        LinuxNamespaceType::Ipc => "ipcns",
        LinuxNamespaceType::User => "userns",
        LinuxNamespaceType::Pid => "pidns",
        LinuxNamespaceType::Network => "netns",
        LinuxNamespaceType::Time => "timens",
    }
}

/// Whether the spec asks for the built-in pause process.
pub fn is_pause(spec: &Spec) -> bool {
    // Only berth's own pause bundle says so: an image whose entrypoint is /pause (the
    // upstream pause image) is an ordinary container.
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(PAUSE_ANNOTATION))
        .is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn joins_are_ordered_and_new_namespaces_collected() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[
                {"type":"mount","path":"/proc/1/ns/mnt"},
                {"type":"network","path":"/run/berth/netns/x"},
                {"type":"user","path":"/proc/1/ns/user"},
                {"type":"ipc"},{"type":"uts"},{"type":"pid"}]}}"#,
        );
        let plan = NamespacePlan::from_spec(&s);
        let kinds: Vec<_> = plan.join.iter().map(|j| j.kind).collect();
        assert_eq!(
            kinds,
            vec![LinuxNamespaceType::Network, LinuxNamespaceType::Mount]
        );
        assert_eq!(
            plan.user,
            UserNamespacePlan::Join(PathBuf::from("/proc/1/ns/user"))
        );
        assert_eq!(
            plan.unshare_flags(),
            CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWPID
        );
        assert!(plan.needs_fork());
    }

    #[test]
    fn exec_joins_the_container_namespaces_mount_last() {
        let plan = NamespacePlan::exec_into(42, false);
        let paths: Vec<_> = plan
            .join
            .iter()
            .map(|j| j.path.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            paths,
            vec![
                "/proc/42/ns/ipc",
                "/proc/42/ns/uts",
                "/proc/42/ns/net",
                "/proc/42/ns/pid",
                "/proc/42/ns/cgroup",
                "/proc/42/ns/mnt"
            ]
        );
        assert!(plan.create.is_empty());
        assert!(plan.needs_fork());
        assert!(plan.unshare_flags().is_empty());
        assert_eq!(plan.user, UserNamespacePlan::Host);
        assert_eq!(
            NamespacePlan::exec_into(42, true).user,
            UserNamespacePlan::Join(PathBuf::from("/proc/42/ns/user"))
        );
    }

    #[test]
    fn a_new_user_namespace_is_created_apart() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[
                {"type":"network","path":"/run/berth/netns/x"},
                {"type":"user"},{"type":"ipc"},{"type":"pid"}]}}"#,
        );
        let plan = NamespacePlan::from_spec(&s);
        assert_eq!(plan.user, UserNamespacePlan::Create);
        assert!(!plan.unshare_flags().contains(CloneFlags::CLONE_NEWUSER));
        assert_eq!(plan.join.len(), 1);
    }

    #[test]
    fn no_pid_namespace_means_no_fork() {
        let s = spec(r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"ipc"}]}}"#);
        let plan = NamespacePlan::from_spec(&s);
        assert!(!plan.needs_fork());
        assert!(plan.creates(LinuxNamespaceType::Ipc));
        let none = NamespacePlan::from_spec(&spec(r#"{"ociVersion":"1.0.2"}"#));
        assert_eq!(none, NamespacePlan::default());
    }

    #[test]
    fn pause_is_recognised_by_its_annotation_only() {
        // The upstream pause image runs /pause: that is an ordinary container.
        assert!(!is_pause(&spec(
            r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0},"args":["/pause"]}}"#
        )));
        assert!(is_pause(&spec(
            r#"{"ociVersion":"1.0.2","annotations":{"berth.pause":"true"}}"#
        )));
        assert!(!is_pause(&spec(
            r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0},"args":["/bin/sh"]}}"#
        )));
    }
}
