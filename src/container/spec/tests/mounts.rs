//! Mounts: the defaults, the pod's files, CRI mounts and image volumes.

use super::*;

#[test]
fn default_mounts() {
    let spec = fixture().spec();
    let m = |d| mount_at(&spec, d).unwrap_or_else(|| panic!("{d} mounted"));
    let typ = |d| m(d).typ().clone().unwrap();
    assert_eq!(typ("/proc"), "proc");
    assert_eq!(typ("/dev"), "tmpfs");
    assert_eq!(
        options(m("/dev")),
        ["nosuid", "strictatime", "mode=755", "size=65536k"]
    );
    assert_eq!(typ("/dev/pts"), "devpts");
    for o in ["newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] {
        assert!(options(m("/dev/pts")).contains(&o.to_string()), "{o}");
    }
    assert_eq!(typ("/dev/mqueue"), "mqueue");
    assert_eq!(typ("/sys"), "sysfs");
    assert!(options(m("/sys")).contains(&"ro".to_string()));
    assert_eq!(typ("/sys/fs/cgroup"), "cgroup");
    assert!(options(m("/sys/fs/cgroup")).contains(&"ro".to_string()));
    // Without a pod shm: a private tmpfs.
    assert_eq!(typ("/dev/shm"), "tmpfs");
    assert!(options(m("/dev/shm")).contains(&"size=65536k".to_string()));
}

#[test]
fn pod_shm_is_bind_mounted() {
    let mut f = fixture();
    f.sandbox.shm_path = Some("/run/berth/sandboxes/sb1/shm".into());
    let spec = f.spec();
    let shm = mount_at(&spec, "/dev/shm").unwrap();
    assert_eq!(shm.typ().as_deref(), Some("bind"));
    assert_eq!(
        shm.source().as_deref(),
        Some(Path::new("/run/berth/sandboxes/sb1/shm"))
    );
    assert!(options(shm).contains(&"rbind".to_string()));
}

#[test]
fn pod_files_are_bind_mounted_unless_cri_mounts_them() {
    let mut f = fixture();
    let spec = f.spec();
    for (dest, file) in [
        ("/etc/hosts", "hosts"),
        ("/etc/resolv.conf", "resolv.conf"),
        ("/etc/hostname", "hostname"),
    ] {
        let m = mount_at(&spec, dest).unwrap();
        assert_eq!(
            m.source().clone().unwrap(),
            Path::new("/var/lib/berth/sandboxes/sb1").join(file)
        );
        assert_eq!(options(m), ["rbind", "rprivate", "rw"]);
    }
    f.config.mounts = vec![CriMount {
        container_path: "/etc/hosts".into(),
        host_path: "/my/hosts".into(),
        ..Default::default()
    }];
    f.config.security.readonly_rootfs = true;
    let spec = f.spec();
    let hosts: Vec<_> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/etc/hosts"))
        .collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].source().as_deref(), Some(Path::new("/my/hosts")));
    // With a read-only rootfs the pod files are read-only too.
    assert!(options(mount_at(&spec, "/etc/resolv.conf").unwrap()).contains(&"ro".to_string()));
}

#[test]
fn cri_mounts_are_binds_with_mode_and_propagation() {
    let mut f = fixture();
    let m = |dest: &str, host: &str, readonly, propagation| CriMount {
        container_path: dest.into(),
        host_path: host.into(),
        readonly,
        propagation,
        recursive_read_only: false,
        image: None,
    };
    f.config.mounts = vec![
        m("/a", "/h/a", true, MountPropagation::Private),
        m("/b", "/h/b", false, MountPropagation::HostToContainer),
    ];
    let spec = f.spec();
    assert_eq!(
        options(mount_at(&spec, "/a").unwrap()),
        ["rbind", "rprivate", "ro"]
    );
    let b = mount_at(&spec, "/b").unwrap();
    assert_eq!(options(b), ["rbind", "rslave", "rw"]);
    assert_eq!(b.typ().as_deref(), Some("bind"));
    assert_eq!(b.source().as_deref(), Some(Path::new("/h/b")));
    assert_eq!(linux(&spec).rootfs_propagation().as_deref(), Some("rslave"));
    f.config
        .mounts
        .push(m("/c", "/h/c", false, MountPropagation::Bidirectional));
    let spec = f.spec();
    assert_eq!(
        options(mount_at(&spec, "/c").unwrap()),
        ["rbind", "rshared", "rw"]
    );
    assert_eq!(
        linux(&spec).rootfs_propagation().as_deref(),
        Some("rshared")
    );
    assert_eq!(linux(&fixture().spec()).rootfs_propagation(), &None);
}

#[test]
fn recursive_read_only_mounts() {
    let mut f = fixture();
    f.config.mounts = vec![CriMount {
        container_path: "/data".into(),
        host_path: "/h".into(),
        readonly: true,
        recursive_read_only: true,
        ..Default::default()
    }];
    assert_eq!(
        options(mount_at(&f.spec(), "/data").unwrap()),
        ["rbind", "rprivate", "ro", "rro"]
    );
    f.config.mounts[0].readonly = false;
    let err = Error::from(f.build().unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("recursive_read_only"), "{err}");
    f.config.mounts[0].readonly = true;
    for propagation in [
        MountPropagation::HostToContainer,
        MountPropagation::Bidirectional,
    ] {
        f.config.mounts[0].propagation = propagation;
        let err = Error::from(f.build().unwrap_err());
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("private propagation"), "{err}");
    }
}

#[test]
fn cri_mounts_are_sorted_parents_first() {
    let mut f = fixture();
    let m = |dest: &str| CriMount {
        container_path: dest.into(),
        host_path: format!("/h{dest}"),
        ..Default::default()
    };
    f.config.mounts = vec![m("/data/sub/deeper"), m("/data/sub"), m("/data"), m("/x")];
    let spec = f.spec();
    let order: Vec<_> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().to_string_lossy().into_owned())
        .filter(|d| d.starts_with("/data") || d == "/x")
        .collect();
    assert_eq!(order, ["/data", "/x", "/data/sub", "/data/sub/deeper"]);
}

#[test]
fn cri_dev_mount_replaces_default_dev_mounts() {
    let mut f = fixture();
    f.config.mounts = vec![CriMount {
        container_path: "/dev".into(),
        host_path: "/dev".into(),
        ..Default::default()
    }];
    let spec = f.spec();
    assert_eq!(
        mount_at(&spec, "/dev").unwrap().typ().as_deref(),
        Some("bind")
    );
    assert!(mount_at(&spec, "/dev/pts").is_none());
    assert!(mount_at(&spec, "/dev/shm").is_none());
}

#[test]
fn an_image_volume_is_a_read_only_bind_of_its_mount_point_in_the_bundle() {
    let mut f = fixture();
    f.config.mounts = vec![
        CriMount {
            container_path: "/data".into(),
            host_path: "/srv".into(),
            ..Default::default()
        },
        CriMount {
            container_path: "/data/tools".into(),
            readonly: true,
            image: Some(crate::container::config::ImageVolume {
                reference: "busybox".into(),
                sub_path: "bin".into(),
            }),
            ..Default::default()
        },
    ];
    let spec = f.spec();
    let m = mount_at(&spec, "/data/tools").unwrap();
    // Named by the CRI mount's index, as init's image-volumes.json names it.
    assert_eq!(
        m.source().as_deref(),
        Some(Path::new("/run/berth/containers/c1/bundle/image-volumes/1"))
    );
    assert_eq!(options(m), ["rbind", "rprivate", "ro", "nosuid", "nodev"]);
}

#[test]
fn relative_mount_source_is_invalid_argument() {
    let mut f = fixture();
    f.config.mounts = vec![CriMount {
        container_path: "/data".into(),
        host_path: "data".into(),
        ..Default::default()
    }];
    let err = Error::from(f.build().unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("mount /data"), "{err}");
}
