//! Devices, resources and the cgroup path.

use super::*;

#[test]
fn privileged_containers_get_every_host_device() {
    let mut f = fixture();
    let dev = |minor| HostDevice {
        block: true,
        major: 8,
        minor,
        file_mode: 0o660,
        uid: 0,
        gid: 6,
    };
    f.host_devices.insert("/dev/sda".into(), dev(0));
    f.host_devices.insert("/dev/sda1".into(), dev(1));
    f.host_devices.insert("/dev/null".into(), dev(3));
    let paths = |spec: &Spec| -> Vec<String> {
        linux(spec)
            .devices()
            .iter()
            .flatten()
            .map(|d| d.path().to_string_lossy().to_string())
            .collect()
    };
    assert!(paths(&f.spec()).is_empty());
    f.config.security.privileged = true;
    // /dev/null is bound from the host by init like in every container.
    assert_eq!(paths(&f.spec()), ["/dev/sda", "/dev/sda1"]);
}

#[test]
fn devices_become_nodes_and_cgroup_rules() {
    let mut f = fixture();
    f.host_devices.insert(
        "/dev/fuse".into(),
        HostDevice {
            block: false,
            major: 10,
            minor: 229,
            file_mode: 0o666,
            uid: 0,
            gid: 0,
        },
    );
    f.config.devices = vec![Device {
        container_path: "/dev/myfuse".into(),
        host_path: "/dev/fuse".into(),
        permissions: "rw".into(),
    }];
    let spec = f.spec();
    let nodes = linux(&spec).devices().clone().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].path(), Path::new("/dev/myfuse"));
    assert_eq!(nodes[0].typ(), LinuxDeviceType::C);
    assert_eq!((nodes[0].major(), nodes[0].minor()), (10, 229));
    assert_eq!(nodes[0].file_mode(), Some(0o666));
    let rules = linux(&spec)
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert!(!rules[0].allow() && rules[0].access().as_deref() == Some("rwm"));
    let allowed = |major, minor| {
        rules.iter().any(|r| {
            r.allow()
                && r.typ() == Some(LinuxDeviceType::C)
                && r.major() == Some(major)
                && r.minor() == minor
        })
    };
    for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)] {
        assert!(allowed(major, Some(minor)), "{major}:{minor}");
    }
    assert!(allowed(136, None));
    let fuse = rules.last().unwrap();
    assert_eq!((fuse.major(), fuse.minor()), (Some(10), Some(229)));
    assert_eq!(fuse.access().as_deref(), Some("rw"));
}

#[test]
fn device_not_on_host_is_invalid_argument() {
    let mut f = fixture();
    f.config.devices = vec![Device {
        container_path: "/dev/x".into(),
        host_path: "/dev/nothing".into(),
        permissions: String::new(),
    }];
    let err = Error::from(f.build().unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("/dev/nothing"));
}

#[test]
fn resources_map_to_linux_resources() {
    let mut f = fixture();
    f.config.resources = ContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        oom_score_adj: 0,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }],
        unified: [("memory.high".to_string(), "1000000".to_string())].into(),
        memory_swap_limit_in_bytes: 128 << 20,
    };
    let spec = f.spec();
    let r = linux(&spec).resources().clone().unwrap();
    let cpu = r.cpu().clone().unwrap();
    assert_eq!(cpu.shares(), Some(512));
    assert_eq!(cpu.quota(), Some(50_000));
    assert_eq!(cpu.period(), Some(100_000));
    assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
    assert_eq!(cpu.mems().as_deref(), Some("0"));
    let mem = r.memory().unwrap();
    assert_eq!(mem.limit(), Some(64 << 20));
    assert_eq!(mem.swap(), Some(128 << 20));
    let huge = r.hugepage_limits().clone().unwrap();
    assert_eq!(huge[0].page_size(), "2MB");
    assert_eq!(huge[0].limit(), 4 << 20);
    assert_eq!(r.unified().as_ref().unwrap()["memory.high"], "1000000");
}

#[test]
fn unset_resources_stay_unset() {
    let r = linux_resources(&ContainerResources::default()).unwrap();
    assert_eq!(r.cpu(), &None);
    assert_eq!(r.memory(), &None);
    assert_eq!(r.hugepage_limits(), &None);
    assert_eq!(r.unified(), &None);
}

#[test]
fn oom_score_adj_is_clamped() {
    let mut f = fixture();
    let adj = |f: &Fixture| f.spec().process().as_ref().unwrap().oom_score_adj();
    f.config.resources.oom_score_adj = 1000;
    assert_eq!(adj(&f), Some(1000));
    f.config.resources.oom_score_adj = -997;
    assert_eq!(adj(&f), Some(-997));
    f.defaults.min_oom_score_adj = 0;
    assert_eq!(adj(&f), Some(0));
    f.config.resources.oom_score_adj = 5000;
    assert_eq!(adj(&f), Some(1000));
}

#[test]
fn cgroups_path_is_under_the_pod_cgroup() {
    assert_eq!(
        linux(&fixture().spec()).cgroups_path().as_deref(),
        Some(Path::new("/berth/pod-sb1/c1"))
    );
}

#[test]
fn cgroups_path_is_a_scope_in_the_pod_slice_with_the_systemd_driver() {
    let mut f = fixture();
    f.sandbox.pod_cgroup = "/kubepods.slice/kubepods-pod1.slice".into();
    f.sandbox.scope_prefix = Some("berth".into());
    assert_eq!(
        linux(&f.spec()).cgroups_path().as_deref(),
        Some(Path::new(
            "/kubepods.slice/kubepods-pod1.slice/berth-c1.scope"
        ))
    );
}
