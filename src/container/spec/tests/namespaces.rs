//! Namespaces: the pod's, the host's, user, PID and cgroup namespaces.

use super::*;

#[test]
fn containers_join_the_pods_user_namespace() {
    use crate::sandbox::spec::{IdMapping, UserNamespace};
    let mut f = fixture();
    let map = IdMapping {
        container_id: 0,
        host_id: 100000,
        length: 65536,
    };
    f.sandbox.userns = Some(UserNamespace {
        uids: vec![map],
        gids: vec![map],
    });
    let spec = f.spec();
    let user = linux(&spec)
        .namespaces()
        .iter()
        .flatten()
        .find(|n| n.typ() == LinuxNamespaceType::User)
        .expect("user namespace");
    assert_eq!(user.path().as_deref(), Some(Path::new("/proc/42/ns/user")));
    let uid = &linux(&spec).uid_mappings().as_ref().unwrap()[0];
    assert_eq!(
        (uid.container_id(), uid.host_id(), uid.size()),
        (0, 100000, 65536)
    );
    assert!(linux(&spec).gid_mappings().is_some());
    assert!(
        linux(&fixture().spec())
            .namespaces()
            .iter()
            .flatten()
            .all(|n| n.typ() != LinuxNamespaceType::User)
    );
    f.config.security.privileged = true;
    let err = Error::from(f.build().unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

/// The namespaces, without the cgroup one (it depends on the host's hierarchy: see
/// `unprivileged_containers_get_a_private_cgroup_namespace_on_cgroup_v2_only`).
fn ns(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<String>)> {
    linux(spec)
        .namespaces()
        .clone()
        .unwrap()
        .iter()
        .filter(|n| n.typ() != LinuxNamespaceType::Cgroup)
        .map(|n| {
            (
                n.typ(),
                n.path().as_ref().map(|p| p.to_string_lossy().into_owned()),
            )
        })
        .collect()
}

#[test]
fn namespaces_of_a_pod_container() {
    use LinuxNamespaceType::*;
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        ns(&fixture().spec()),
        [
            (Mount, None),
            (Network, s("/run/berth/netns/sb1")),
            (Ipc, s("/proc/42/ns/ipc")),
            (Uts, s("/proc/42/ns/uts")),
            (Pid, s("/proc/42/ns/pid")),
        ]
    );
}

#[test]
fn unprivileged_containers_get_a_private_cgroup_namespace_on_cgroup_v2_only() {
    let private_cgroupns = |f: &Fixture| {
        linux(&f.spec())
            .namespaces()
            .clone()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup && n.path().is_none())
    };
    let mut f = fixture();
    // This host's hierarchy decides: v2 (the test VM) gets one, v1 (hybrid) does not.
    assert_eq!(
        private_cgroupns(&f),
        crate::linux::cgroup::unified_host(),
        "cgroup v2 host: {}",
        crate::linux::cgroup::unified_host()
    );
    f.config.security.privileged = true;
    assert!(
        !private_cgroupns(&f),
        "a privileged container keeps the host's view"
    );
}

#[test]
fn namespaces_for_host_network_and_ipc() {
    use LinuxNamespaceType::*;
    let mut f = fixture();
    f.sandbox.netns_path = None;
    f.sandbox.host_ipc = true;
    let types: Vec<_> = ns(&f.spec()).into_iter().map(|(t, _)| t).collect();
    assert_eq!(types, [Mount, Uts, Pid]);
}

#[test]
fn pid_namespace_modes() {
    use LinuxNamespaceType::Pid;
    let pid = |f: &Fixture| -> Option<Option<String>> {
        ns(&f.spec())
            .into_iter()
            .find(|(t, _)| *t == Pid)
            .map(|(_, p)| p)
    };
    let mut f = fixture();
    f.config.security.namespaces.pid = NamespaceMode::Container;
    assert_eq!(pid(&f), Some(None));
    f.config.security.namespaces.pid = NamespaceMode::Node;
    assert_eq!(pid(&f), None);
    f.config.security.namespaces.pid = NamespaceMode::Target;
    f.config.security.namespaces.target_id = "other".into();
    let err = Error::from(f.build().unwrap_err());
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("other"));
    f.target_pid = Some(777);
    assert_eq!(pid(&f), Some(Some("/proc/777/ns/pid".into())));
}
