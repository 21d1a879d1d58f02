//! The process: command and args, environment, user and groups, working dir, rlimits, root, tty and stop signal.

use super::*;

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
