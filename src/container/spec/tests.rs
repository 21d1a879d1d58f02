//! Spec building: CRI config in, expected OCI spec out.

use std::collections::BTreeMap;
use std::path::Path;

use nix::sys::signal::Signal;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxDeviceType, LinuxNamespaceType, Mount, PosixRlimitType, Spec,
};

use super::process::*;
use super::resources::*;
use super::security::*;
use super::*;
use crate::container::config::{
    Capabilities as CriCaps, ContainerMetadata, Device, HugepageLimit, Mount as CriMount,
};
use crate::container::config::{
    ContainerConfig, ContainerResources, MountPropagation, NamespaceMode,
};
use crate::error::{Error, ErrorKind};
use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nwww-data:x:33:\nstaff:x:50:www-data\n";

struct Fixture {
    config: ContainerConfig,
    image: ImageConfiguration,
    sandbox: SandboxInfo,
    target_pid: Option<u32>,
    host_devices: BTreeMap<String, HostDevice>,
    defaults: RuntimeDefaults,
    seccomp_localhost: Option<String>,
}

fn image(build: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> ImageConfiguration {
    ImageConfigurationBuilder::default()
        .config(build(ConfigBuilder::default()).build().unwrap())
        .build()
        .unwrap()
}

fn fixture() -> Fixture {
    Fixture {
        config: ContainerConfig {
            metadata: ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            },
            image: "busybox:latest".into(),
            ..Default::default()
        },
        image: image(|c| c.cmd(vec!["sh".to_string()])),
        sandbox: SandboxInfo {
            id: "sb1".into(),
            hostname: "pod-host".into(),
            pause_pid: 42,
            netns_path: Some("/run/berth/netns/sb1".into()),
            host_ipc: false,
            pod_files_dir: "/var/lib/berth/sandboxes/sb1".into(),
            pod_cgroup: "/berth/pod-sb1/".into(),
            scope_prefix: None,
            shm_path: None,
            runtime_handler: String::new(),
            userns: None,
        },
        target_pid: None,
        host_devices: BTreeMap::new(),
        defaults: RuntimeDefaults::default(),
        seccomp_localhost: None,
    }
}

impl Fixture {
    fn build(&self) -> Result<Spec, SpecError> {
        build_spec(&SpecInput {
            container_id: "c1",
            config: &self.config,
            image: &self.image,
            sandbox: &self.sandbox,
            bundle_dir: Path::new("/run/berth/containers/c1/bundle"),
            passwd: Some(PASSWD),
            group: Some(GROUP),
            target_pid: self.target_pid,
            host_devices: &self.host_devices,
            defaults: &self.defaults,
            seccomp_localhost: self.seccomp_localhost.as_deref(),
        })
    }
    fn spec(&self) -> Spec {
        self.build().expect("spec builds")
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn args(spec: &Spec) -> Vec<String> {
    spec.process().as_ref().unwrap().args().clone().unwrap()
}

fn env(spec: &Spec) -> Vec<String> {
    spec.process().as_ref().unwrap().env().clone().unwrap()
}

fn user(spec: &Spec) -> (u32, u32, Vec<u32>) {
    let u = spec.process().as_ref().unwrap().user();
    (
        u.uid(),
        u.gid(),
        u.additional_gids().clone().unwrap_or_default(),
    )
}

fn caps(spec: &Spec) -> oci_spec::runtime::LinuxCapabilities {
    spec.process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap()
}

fn linux(spec: &Spec) -> &oci_spec::runtime::Linux {
    spec.linux().as_ref().unwrap()
}

fn mount_at<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(dest))
}

fn options(m: &Mount) -> Vec<String> {
    m.options().clone().unwrap_or_default()
}

fn entrypoint_image() -> ImageConfiguration {
    image(|c| {
        c.entrypoint(strings(&["/entry", "e1"]))
            .cmd(strings(&["c1", "c2"]))
    })
}

#[test]
fn command_replaces_entrypoint_and_drops_cmd() {
    let mut f = fixture();
    f.image = entrypoint_image();
    f.config.command = strings(&["/bin/run"]);
    assert_eq!(args(&f.spec()), ["/bin/run"]);
    f.config.args = strings(&["a"]);
    assert_eq!(args(&f.spec()), ["/bin/run", "a"]);
}

#[test]
fn args_alone_replace_cmd_and_keep_entrypoint() {
    let mut f = fixture();
    f.image = entrypoint_image();
    f.config.args = strings(&["a", "b"]);
    assert_eq!(args(&f.spec()), ["/entry", "e1", "a", "b"]);
}

#[test]
fn neither_runs_entrypoint_then_cmd() {
    let mut f = fixture();
    f.image = entrypoint_image();
    assert_eq!(args(&f.spec()), ["/entry", "e1", "c1", "c2"]);
}

#[test]
fn empty_string_entrypoint_means_none() {
    let mut f = fixture();
    f.image = image(|c| c.entrypoint(strings(&[""])).cmd(strings(&["sh"])));
    assert_eq!(args(&f.spec()), ["sh"]);
}

#[test]
fn no_command_at_all_is_invalid_argument() {
    let mut f = fixture();
    f.image = ImageConfiguration::default();
    let err = f.build().unwrap_err();
    assert!(matches!(err, SpecError::NoCommand));
    let err = Error::from(err);
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("no command specified"));
}

#[test]
fn env_image_then_cri_overrides_by_name_in_place() {
    let mut f = fixture();
    f.image = image(|c| {
        c.cmd(strings(&["sh"]))
            .env(strings(&["PATH=/img/bin", "A=image", "B=image"]))
    });
    f.config.envs = vec![
        ("B".into(), "cri".into()),
        ("C".into(), "new".into()),
        ("HOSTNAME".into(), "mine".into()),
    ];
    assert_eq!(
        env(&f.spec()),
        [
            "PATH=/img/bin",
            "HOSTNAME=mine",
            "A=image",
            "B=cri",
            "C=new",
            "HOME=/root"
        ]
    );
}

#[test]
fn path_default_and_hostname_env() {
    let f = fixture();
    let env = env(&f.spec());
    assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));
    assert_eq!(env[1], "HOSTNAME=pod-host");
}

#[test]
fn home_from_passwd_unless_set() {
    let mut f = fixture();
    f.config.security.run_as_username = "www-data".into();
    assert!(env(&f.spec()).contains(&"HOME=/var/www".to_string()));
    f.config.security.run_as_username.clear();
    f.config.security.run_as_user = Some(1234);
    assert!(env(&f.spec()).contains(&"HOME=/".to_string()));
    f.config.envs = vec![("HOME".into(), "/h".into())];
    let env = env(&f.spec());
    assert_eq!(env.iter().filter(|e| e.starts_with("HOME=")).count(), 1);
    assert!(env.contains(&"HOME=/h".to_string()));
}

#[test]
fn hostname_is_not_set_in_the_spec() {
    // The container joins the pause's UTS namespace, which has the pod's hostname.
    assert_eq!(fixture().spec().hostname(), &None);
}

#[test]
fn working_dir_cri_then_image_then_root() {
    let mut f = fixture();
    let cwd = |f: &Fixture| f.spec().process().as_ref().unwrap().cwd().clone();
    assert_eq!(cwd(&f), Path::new("/"));
    f.image = image(|c| c.cmd(strings(&["sh"])).working_dir("/srv"));
    assert_eq!(cwd(&f), Path::new("/srv"));
    f.config.working_dir = "/work".into();
    assert_eq!(cwd(&f), Path::new("/work"));
    assert_eq!(working_dir("", Some("rel")), "/rel");
}

fn apparmor_of(f: &Fixture) -> Option<String> {
    f.spec()
        .process()
        .as_ref()
        .unwrap()
        .apparmor_profile()
        .clone()
}

fn apparmor_choice(
    t: ProfileTypeAlias,
    r: &str,
) -> Option<crate::container::config::SecurityProfile> {
    Some(crate::container::config::SecurityProfile {
        profile_type: t,
        localhost_ref: r.into(),
    })
}

type ProfileTypeAlias = crate::container::config::ProfileType;

fn apparmor_enabled(default_profile: Result<&str, &str>) -> super::AppArmorHost {
    super::AppArmorHost::Enabled {
        default_profile: default_profile.map(str::to_owned).map_err(str::to_owned),
    }
}

#[test]
fn apparmor_localhost_needs_the_host_to_have_it() {
    let mut f = fixture();
    f.config.security.apparmor = apparmor_choice(ProfileTypeAlias::Localhost, "berth-test");
    let err = Error::from(f.build().unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("berth-test"), "{err}");
    f.defaults.apparmor = apparmor_enabled(Ok("berth-default"));
    assert_eq!(apparmor_of(&f), Some("berth-test".to_string()));
    f.config.security.privileged = true;
    assert_eq!(apparmor_of(&f), None);
}

#[test]
fn apparmor_runtime_default_is_berths_profile_where_the_host_has_apparmor() {
    let mut f = fixture();
    // No AppArmor: accepted, nothing applied (nothing could enforce it).
    for choice in [None, apparmor_choice(ProfileTypeAlias::RuntimeDefault, "")] {
        f.config.security.apparmor = choice;
        assert_eq!(apparmor_of(&f), None);
    }
    f.defaults.apparmor = apparmor_enabled(Ok("berth-default"));
    for choice in [None, apparmor_choice(ProfileTypeAlias::RuntimeDefault, "")] {
        f.config.security.apparmor = choice;
        assert_eq!(apparmor_of(&f), Some("berth-default".to_string()));
    }
    f.config.security.apparmor = apparmor_choice(ProfileTypeAlias::Unconfined, "");
    assert_eq!(apparmor_of(&f), None);
    f.config.security.apparmor = None;
    f.config.security.privileged = true;
    assert_eq!(apparmor_of(&f), None);
}

#[test]
fn apparmor_runtime_default_without_the_profile_is_failed_precondition() {
    let mut f = fixture();
    f.defaults.apparmor = apparmor_enabled(Err("apparmor_parser is not installed"));
    let err = Error::from(f.build().unwrap_err());
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.to_string().contains("apparmor_parser is not installed"),
        "{err:#}"
    );
    // What does not need the default profile still runs.
    f.config.security.apparmor = apparmor_choice(ProfileTypeAlias::Unconfined, "");
    assert_eq!(apparmor_of(&f), None);
    f.config.security.apparmor = apparmor_choice(ProfileTypeAlias::Localhost, "mine");
    assert_eq!(apparmor_of(&f), Some("mine".to_string()));
}

#[test]
fn apparmor_localhost_name_with_path_characters_is_invalid_argument() {
    let mut f = fixture();
    f.defaults.apparmor = apparmor_enabled(Ok("berth-default"));
    for name in [
        "/usr/bin/man",
        "a/b",
        "..",
        "localhost/x",
        "a b",
        "x\nexec y",
        ":ns:p",
    ] {
        f.config.security.apparmor = apparmor_choice(ProfileTypeAlias::Localhost, name);
        let err = Error::from(f.build().unwrap_err());
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name}");
    }
    f.config.security.apparmor =
        apparmor_choice(ProfileTypeAlias::Localhost, "cri-validate_1.x+y@z");
    assert_eq!(apparmor_of(&f), Some("cri-validate_1.x+y@z".to_string()));
}

#[test]
fn supplemental_groups_policy_merges_or_not() {
    let mut f = fixture();
    f.config.security.run_as_user = Some(33);
    f.config.security.supplemental_groups = vec![1234];
    assert_eq!(user(&f.spec()), (33, 33, vec![33, 50, 1234]));
    f.config.security.supplemental_groups_policy =
        crate::container::config::SupplementalGroupsPolicy::Strict;
    assert_eq!(user(&f.spec()), (33, 33, vec![33, 1234]));
}

#[test]
fn user_from_cri_ids() {
    let mut f = fixture();
    assert_eq!(user(&f.spec()), (0, 0, vec![0]));
    f.config.security.run_as_user = Some(33);
    assert_eq!(user(&f.spec()), (33, 33, vec![33, 50]));
    f.config.security.run_as_group = Some(7);
    f.config.security.supplemental_groups = vec![8, 7, 50];
    assert_eq!(user(&f.spec()), (33, 7, vec![7, 50, 8]));
    f.config.security.run_as_user = Some(-1);
    let err = Error::from(f.build().unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn user_from_cri_username_wins_over_uid() {
    let mut f = fixture();
    f.config.security.run_as_user = Some(1000);
    f.config.security.run_as_username = "www-data".into();
    assert_eq!(user(&f.spec()), (33, 33, vec![33, 50]));
    f.config.security.run_as_username = "ghost".into();
    let err = Error::from(f.build().unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("ghost"), "{err}");
}

#[test]
fn user_from_image_in_every_form() {
    type Ids = (u32, u32, Vec<u32>);
    let cases: [(&str, Ids); 6] = [
        ("1002", (1002, 0, vec![0])),
        ("www-data", (33, 33, vec![33, 50])),
        ("1003:1004", (1003, 1004, vec![1004])),
        ("www-data:staff", (33, 50, vec![50])),
        ("1003:staff", (1003, 50, vec![50])),
        ("www-data:1004", (33, 1004, vec![1004, 50])),
    ];
    for (image_user, expected) in cases {
        let mut f = fixture();
        f.image = image(|c| c.cmd(strings(&["sh"])).user(image_user));
        assert_eq!(user(&f.spec()), expected, "USER {image_user}");
    }
}

#[test]
fn cri_user_overrides_image_user_and_group_alone_regroups_it() {
    let mut f = fixture();
    f.image = image(|c| c.cmd(strings(&["sh"])).user("www-data"));
    f.config.security.run_as_user = Some(1000);
    assert_eq!(user(&f.spec()), (1000, 0, vec![0]));
    f.config.security.run_as_user = None;
    f.config.security.run_as_group = Some(9);
    assert_eq!(user(&f.spec()), (33, 9, vec![9, 50]));
}

#[test]
fn unknown_image_user_name_fails_naming_it() {
    let mut f = fixture();
    f.image = image(|c| c.cmd(strings(&["sh"])).user("nobody:staff"));
    let err = Error::from(f.build().unwrap_err());
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("nobody"), "{err}");
    f.image = image(|c| c.cmd(strings(&["sh"])).user("www-data:nogroup"));
    let err = f.build().unwrap_err().to_string();
    assert!(err.contains("www-data:nogroup"), "{err}");
}

#[test]
fn default_capabilities() {
    let caps = caps(&fixture().spec());
    let expected: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    assert_eq!(caps.bounding().as_ref(), Some(&expected));
    assert_eq!(caps.effective().as_ref(), Some(&expected));
    assert_eq!(caps.permitted().as_ref(), Some(&expected));
    assert_eq!(caps.inheritable(), &None);
    assert_eq!(caps.ambient(), &None);
}

#[test]
fn capabilities_add_and_drop_with_or_without_prefix() {
    let mut f = fixture();
    f.config.security.capabilities = CriCaps {
        add: strings(&["NET_ADMIN", "CAP_SYS_TIME", "sys_nice"]),
        drop: strings(&["CAP_CHOWN", "KILL"]),
        add_ambient: vec![],
    };
    let set = caps(&f.spec()).effective().clone().unwrap();
    assert!(set.contains(&Capability::NetAdmin));
    assert!(set.contains(&Capability::SysTime));
    assert!(set.contains(&Capability::SysNice));
    assert!(!set.contains(&Capability::Chown));
    assert!(!set.contains(&Capability::Kill));
    assert_eq!(set.len(), DEFAULT_CAPABILITIES.len() + 3 - 2);
}

#[test]
fn capabilities_all() {
    let mut f = fixture();
    f.config.security.capabilities.add = strings(&["ALL"]);
    f.config.security.capabilities.drop = strings(&["NET_RAW"]);
    let set = caps(&f.spec()).bounding().clone().unwrap();
    assert_eq!(set.len(), ALL_CAPABILITIES.len() - 1);
    assert!(!set.contains(&Capability::NetRaw));
    f.config.security.capabilities.add = strings(&["CHOWN"]);
    f.config.security.capabilities.drop = strings(&["all"]);
    let set = caps(&f.spec()).bounding().clone().unwrap();
    assert_eq!(set, [Capability::Chown].into_iter().collect());
}

#[test]
fn unknown_capability_is_invalid_argument() {
    let mut f = fixture();
    f.config.security.capabilities.add = strings(&["CAP_FLY"]);
    let err = Error::from(f.build().unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("CAP_FLY"));
}

#[test]
fn ambient_capabilities_are_ambient_and_inheritable() {
    let mut f = fixture();
    f.config.security.capabilities.add_ambient = strings(&["NET_BIND_SERVICE"]);
    let caps = caps(&f.spec());
    let expected: Capabilities = [Capability::NetBindService].into_iter().collect();
    assert_eq!(caps.ambient().as_ref(), Some(&expected));
    assert_eq!(caps.inheritable().as_ref(), Some(&expected));
}

#[test]
fn privileged_gets_everything() {
    let mut f = fixture();
    f.config.security.privileged = true;
    f.config.security.capabilities.drop = strings(&["ALL"]);
    f.config.security.masked_paths = Some(strings(&["/proc/kcore"]));
    let spec = f.spec();
    assert_eq!(
        caps(&spec).bounding().as_ref().map(|s| s.len()),
        Some(ALL_CAPABILITIES.len())
    );
    assert_eq!(linux(&spec).masked_paths().as_deref(), Some(&[][..]));
    assert_eq!(linux(&spec).readonly_paths().as_deref(), Some(&[][..]));
    assert!(options(mount_at(&spec, "/sys").unwrap()).contains(&"rw".to_string()));
    assert!(options(mount_at(&spec, "/sys/fs/cgroup").unwrap()).contains(&"rw".to_string()));
    let rules = linux(&spec)
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert!(rules.iter().any(|r| r.allow()
        && r.typ() == Some(LinuxDeviceType::A)
        && r.access().as_deref() == Some("rwm")));
}

#[test]
fn masked_and_readonly_paths_default_or_given() {
    let mut f = fixture();
    let spec = f.spec();
    assert_eq!(
        linux(&spec).masked_paths().clone().unwrap(),
        strings(&DEFAULT_MASKED_PATHS)
    );
    assert_eq!(
        linux(&spec).readonly_paths().clone().unwrap(),
        strings(&DEFAULT_READONLY_PATHS)
    );
    f.config.security.masked_paths = Some(strings(&["/proc/x"]));
    f.config.security.readonly_paths = Some(vec![]);
    let spec = f.spec();
    assert_eq!(linux(&spec).masked_paths().clone().unwrap(), ["/proc/x"]);
    assert_eq!(linux(&spec).readonly_paths().clone().unwrap(), [""; 0]);
}

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
fn root_is_the_bundle_rootfs_and_readonly_rootfs() {
    let mut f = fixture();
    let spec = f.spec();
    let root = spec.root().as_ref().unwrap();
    assert_eq!(
        root.path(),
        Path::new("/run/berth/containers/c1/bundle/rootfs")
    );
    assert_eq!(root.readonly(), Some(false));
    f.config.security.readonly_rootfs = true;
    assert_eq!(f.spec().root().as_ref().unwrap().readonly(), Some(true));
}

#[test]
fn tty_is_terminal_and_no_new_privs() {
    let mut f = fixture();
    let p = f.spec().process().clone().unwrap();
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(p.no_new_privileges(), Some(false));
    f.config.tty = true;
    f.config.security.no_new_privs = true;
    let p = f.spec().process().clone().unwrap();
    assert_eq!(p.terminal(), Some(true));
    assert_eq!(p.no_new_privileges(), Some(true));
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

#[test]
fn nofile_rlimit() {
    let spec = fixture().spec();
    let rlimits = spec.process().as_ref().unwrap().rlimits().clone().unwrap();
    assert_eq!(rlimits.len(), 1);
    assert_eq!(rlimits[0].typ(), PosixRlimitType::RlimitNofile);
    assert_eq!(
        (rlimits[0].soft(), rlimits[0].hard()),
        (1_048_576, 1_048_576)
    );
}

#[test]
fn annotations_copied_and_added() {
    let mut f = fixture();
    f.config.annotations.insert("user/key".into(), "v".into());
    let spec = f.spec();
    let a = spec.annotations().as_ref().unwrap();
    assert_eq!(a["user/key"], "v");
    assert_eq!(a[ANNOTATION_CONTAINER_TYPE], "container");
    assert_eq!(a[ANNOTATION_SANDBOX_ID], "sb1");
    assert_eq!(a[ANNOTATION_CONTAINER_NAME], "app");
    assert_eq!(a[ANNOTATION_IMAGE_NAME], "busybox:latest");
}

#[test]
fn oci_version_and_json_shape() {
    let spec = fixture().spec();
    assert_eq!(spec.version(), OCI_VERSION);
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["ociVersion"], "1.2.0");
    assert!(json.get("hostname").is_none());
    assert_eq!(json["linux"]["cgroupsPath"], "/berth/pod-sb1/c1");
    let back: Spec = serde_json::from_value(json).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn stop_signal_cri_then_image_then_sigterm() {
    let plain = ImageConfiguration::default();
    assert_eq!(stop_signal(&plain, None), Signal::SIGTERM);
    let img = image(|c| c.stop_signal("SIGQUIT"));
    assert_eq!(stop_signal(&img, None), Signal::SIGQUIT);
    assert_eq!(stop_signal(&img, Some("SIGINT")), Signal::SIGINT);
    assert_eq!(stop_signal(&img, Some("")), Signal::SIGQUIT);
    assert_eq!(stop_signal(&img, Some("BOGUS")), Signal::SIGQUIT);
}

#[test]
fn signal_names_and_numbers_parse() {
    assert_eq!(parse_signal("SIGUSR1"), Some(Signal::SIGUSR1));
    assert_eq!(parse_signal("usr1"), Some(Signal::SIGUSR1));
    assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
    assert_eq!(parse_signal("TERM"), Some(Signal::SIGTERM));
    assert_eq!(parse_signal("SIGNOPE"), None);
    assert_eq!(parse_signal("0"), None);
}
