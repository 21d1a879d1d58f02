//! AppArmor, capabilities, privileged containers, masked and read-only paths.

use super::*;

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
