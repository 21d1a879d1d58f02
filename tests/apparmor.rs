//! AppArmor through the real daemon, proved from inside the container: the profile in
//! /proc/self/attr/current, a mount and a read the runtime default denies, a file a
//! Localhost profile blocks. Where the kernel has no AppArmor (this host) the same tests
//! prove that RuntimeDefault is accepted and reported as not applied, and that a named
//! profile is refused; in the test VM (hack/test-vm.sh) AppArmor is on and
//! `apparmor_parser` is installed, and a missing one fails the test with the reason.
mod common;

use berth::cri::api as cri;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use common::*;
use tonic::transport::Channel;

use cri::security_profile::ProfileType;

fn host_has_apparmor() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.starts_with('Y'))
}

fn profile(profile_type: ProfileType, localhost_ref: &str) -> Option<cri::SecurityProfile> {
    Some(cri::SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: localhost_ref.into(),
    })
}

/// A security context with CAP_SYS_ADMIN and /proc/sys writable (so that only AppArmor
/// stands between the workload and mount(2) or a sysctl) and the given AppArmor choice.
#[allow(deprecated)]
fn security(
    apparmor: Option<cri::SecurityProfile>,
    legacy: &str,
    privileged: bool,
) -> cri::LinuxContainerSecurityContext {
    cri::LinuxContainerSecurityContext {
        apparmor,
        apparmor_profile: legacy.into(),
        privileged,
        // Not /proc/sys (the default list has it): a list replaces the defaults.
        readonly_paths: vec!["/proc/bus".into()],
        capabilities: Some(cri::Capability {
            add_capabilities: vec!["SYS_ADMIN".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container(
    name: &str,
    script: &str,
    sc: cri::LinuxContainerSecurityContext,
) -> cri::ContainerConfig {
    let mut config = container_config(name, BUSYBOX, &["sh", "-c", script]);
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
    config
}

async fn create(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &Pod,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    create_container(rt, &pod.id, &pod.config, config).await
}

/// Runs `script` to its end; the container's id and its output lines.
async fn run_script(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &Pod,
    name: &str,
    script: &str,
    sc: cri::LinuxContainerSecurityContext,
) -> (String, Vec<String>) {
    let id = create(rt, pod, container(name, script, sc))
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    start_container(rt, &id)
        .await
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    wait_exited(rt, &id).await;
    let lines = std::fs::read_to_string(pod.logs.join(format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
        .collect();
    (id, lines)
}

/// The value of a `key=value` line the script printed.
fn value(lines: &[String], key: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no {key}= line in {lines:?}"))
}

/// The `info` JSON of a verbose ContainerStatus.
async fn verbose_info(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> serde_json::Value {
    let info = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .info;
    serde_json::from_str(info.get("info").expect("an info key")).expect("info is JSON")
}

async fn container_count(rt: &mut RuntimeServiceClient<Channel>) -> usize {
    rt.list_containers(cri::ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
        .len()
}

async fn teardown(daemon: &TestDaemon, rt: &mut RuntimeServiceClient<Channel>, pod: &Pod) {
    stop_pod(rt, &pod.id).await;
    remove_pod(rt, &pod.id).await;
    daemon.assert_no_leaks("after the pod's removal");
}

/// The profile, a mount and a write to a sysctl (CAP_SYS_ADMIN given, /proc/sys left
/// writable: only AppArmor stands in the way). The sysctl is the pod's own UTS
/// namespace's domain name: harmless to the host even when the write goes through.
const PROBE: &str = "echo attr=$(cat /proc/self/attr/current 2>/dev/null); \
    mount -t tmpfs probe /tmp 2>/dev/null && echo mount=ok || echo mount=denied; \
    echo probe >/proc/sys/kernel/domainname 2>/dev/null && echo sysctl=ok || echo sysctl=denied";

#[tokio::test(flavor = "multi_thread")]
async fn runtime_default_confines_containers_and_execs_where_the_host_has_apparmor() {
    let apparmor = host_has_apparmor();
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "aa-default").await;

    // The runtime's Status says whether AppArmor is there and berth's profile loaded.
    let status = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("apparmor").expect("an apparmor key")).unwrap();
    assert_eq!(info["enabled"], apparmor, "{info}");
    if apparmor {
        assert_eq!(info["defaultProfile"], "berth-default", "{info}");
    }

    // RuntimeDefault by the field, by the deprecated string, and by saying nothing.
    let defaults = [
        (
            "rd-field",
            security(profile(ProfileType::RuntimeDefault, ""), "", false),
        ),
        ("rd-legacy", security(None, "runtime/default", false)),
        ("rd-unset", security(None, "", false)),
        // allowPrivilegeEscalation: false, as pods often say: the exec transition must
        // still happen under no_new_privs.
        ("rd-nnp", {
            let mut sc = security(None, "", false);
            sc.no_new_privs = true;
            sc
        }),
    ];
    for (name, sc) in defaults {
        let (id, out) = run_script(&mut rt, &pod, name, PROBE, sc).await;
        let applied = verbose_info(&mut rt, &id).await["apparmorProfile"].clone();
        if apparmor {
            assert_eq!(
                value(&out, "attr"),
                "berth-default (enforce)",
                "{name}: {out:?}"
            );
            assert_eq!(value(&out, "mount"), "denied", "{name}: {out:?}");
            assert_eq!(value(&out, "sysctl"), "denied", "{name}: {out:?}");
            assert_eq!(applied, "berth-default", "{name}");
        } else {
            // Accepted, and said not to be applied: nothing here could enforce it.
            assert_eq!(value(&out, "mount"), "ok", "{name}: {out:?}");
            assert_eq!(applied, "unconfined", "{name}");
        }
    }

    // Unconfined asked, or privileged: no profile.
    let unconfined = [
        (
            "unconfined",
            security(profile(ProfileType::Unconfined, ""), "", false),
        ),
        ("unconfined-legacy", security(None, "unconfined", false)),
        ("privileged", security(None, "", true)),
    ];
    for (name, sc) in unconfined {
        let (id, out) = run_script(&mut rt, &pod, name, PROBE, sc).await;
        if apparmor {
            assert_eq!(value(&out, "attr"), "unconfined", "{name}: {out:?}");
        }
        assert_eq!(value(&out, "mount"), "ok", "{name}: {out:?}");
        assert_eq!(value(&out, "sysctl"), "ok", "{name}: {out:?}");
        assert_eq!(
            verbose_info(&mut rt, &id).await["apparmorProfile"],
            "unconfined"
        );
    }

    // An exec runs under its container's profile.
    for (name, sc, want) in [
        (
            "exec-default",
            security(None, "", false),
            "berth-default (enforce)",
        ),
        (
            "exec-unconfined",
            security(profile(ProfileType::Unconfined, ""), "", false),
            "unconfined",
        ),
    ] {
        let id = create(&mut rt, &pod, container(name, "sleep 600", sc))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        start_container(&mut rt, &id).await.expect("start");
        let out = rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "cat /proc/self/attr/current; true".into(),
                ],
                timeout: 30,
            })
            .await
            .expect("ExecSync")
            .into_inner();
        assert_eq!(out.exit_code, 0, "{name}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if apparmor {
            assert_eq!(stdout.trim(), want, "{name}");
        } else {
            assert!(stdout.trim().is_empty(), "{name}: {stdout}");
        }
    }
    teardown(&daemon, &mut rt, &pod).await;
}

const TEST_PROFILE: &str = "berth-test-deny-blocked";

/// Unloads the test profile however the test ends.
struct LoadedProfile;

impl LoadedProfile {
    fn load() -> LoadedProfile {
        let text = format!(
            "profile {TEST_PROFILE} flags=(attach_disconnected) {{\n  file,\n  signal,\n  capability,\n  network,\n  deny /tmp/blocked w,\n}}\n"
        );
        let mut child = std::process::Command::new("apparmor_parser")
            .args(["-r", "-K"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("AppArmor is enabled but apparmor_parser cannot run (install the apparmor package): {e}")
            });
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write the profile");
        assert!(
            child.wait().expect("apparmor_parser").success(),
            "loading {TEST_PROFILE}"
        );
        LoadedProfile
    }
}

impl Drop for LoadedProfile {
    fn drop(&mut self) {
        let _ = std::process::Command::new("apparmor_parser")
            .args(["-R", "-K"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                if let Some(mut stdin) = c.stdin.take() {
                    let _ = writeln!(stdin, "profile {TEST_PROFILE} {{\n}}");
                }
                c.wait()
            });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn localhost_profiles_by_either_field_and_what_is_refused() {
    let apparmor = host_has_apparmor();
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "aa-localhost").await;
    let refused = |e: Result<String, tonic::Status>, what: &str| {
        let e = e.expect_err(what);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e}");
        e.message().to_owned()
    };

    // Names that are paths or unknown prefix forms, whatever the host.
    for (name, sc) in [
        (
            "bad-path",
            security(profile(ProfileType::Localhost, "/usr/bin/x"), "", false),
        ),
        (
            "bad-prefix",
            security(
                profile(ProfileType::Localhost, "localhost/localhost/x"),
                "",
                false,
            ),
        ),
        ("bad-legacy", security(None, "localhst/x", false)),
        (
            "bad-empty",
            security(profile(ProfileType::Localhost, ""), "", false),
        ),
    ] {
        refused(
            create(&mut rt, &pod, container(name, "true", sc)).await,
            name,
        );
    }
    assert_eq!(
        container_count(&mut rt).await,
        0,
        "a refused create left a container"
    );

    let blocks = "echo attr=$(cat /proc/self/attr/current 2>/dev/null); \
        echo x >/tmp/ok && echo ok=written; \
        echo x >/tmp/blocked 2>/dev/null && echo blocked=written || echo blocked=denied";
    if !apparmor {
        let msg = refused(
            create(
                &mut rt,
                &pod,
                container(
                    "no-aa",
                    blocks,
                    security(profile(ProfileType::Localhost, TEST_PROFILE), "", false),
                ),
            )
            .await,
            "a Localhost profile without AppArmor",
        );
        assert!(
            msg.contains(TEST_PROFILE) && msg.contains("not enabled"),
            "{msg}"
        );
        teardown(&daemon, &mut rt, &pod).await;
        return;
    }

    // Not loaded: refused, naming it.
    let msg = refused(
        create(
            &mut rt,
            &pod,
            container(
                "not-loaded",
                blocks,
                security(
                    profile(ProfileType::Localhost, "berth-test-not-loaded"),
                    "",
                    false,
                ),
            ),
        )
        .await,
        "a profile that is not loaded",
    );
    assert!(
        msg.contains("berth-test-not-loaded") && msg.contains("not loaded"),
        "{msg}"
    );
    assert_eq!(container_count(&mut rt).await, 0);

    let _loaded = LoadedProfile::load();
    let prefixed = format!("localhost/{TEST_PROFILE}");
    for (name, sc) in [
        (
            "field-prefixed",
            security(profile(ProfileType::Localhost, &prefixed), "", false),
        ),
        (
            "field-bare",
            security(profile(ProfileType::Localhost, TEST_PROFILE), "", false),
        ),
        ("legacy", security(None, &prefixed, false)),
    ] {
        let (id, out) = run_script(&mut rt, &pod, name, blocks, sc).await;
        assert_eq!(
            value(&out, "attr"),
            format!("{TEST_PROFILE} (enforce)"),
            "{name}: {out:?}"
        );
        assert_eq!(value(&out, "ok"), "written", "{name}: {out:?}");
        assert_eq!(value(&out, "blocked"), "denied", "{name}: {out:?}");
        assert_eq!(
            verbose_info(&mut rt, &id).await["apparmorProfile"],
            TEST_PROFILE
        );
    }
    // The same write, unconfined, goes through.
    let (_, out) = run_script(
        &mut rt,
        &pod,
        "control",
        blocks,
        security(None, "unconfined", false),
    )
    .await;
    assert_eq!(value(&out, "blocked"), "written", "{out:?}");
    teardown(&daemon, &mut rt, &pod).await;
}
