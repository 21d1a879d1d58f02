//! The CRI security context through the real daemon, each behaviour proved from inside the
//! container: /proc/self/status (Seccomp, NoNewPrivs, capabilities), a blocked syscall,
//! `id` output, writes to read-only mounts.
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth::cri::api as cri;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use common::*;
use tonic::transport::Channel;

fn container(
    name: &str,
    command: &[&str],
    security: cri::LinuxContainerSecurityContext,
) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(security),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &Pod,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    create_container(rt, &pod.id, &pod.config, config).await
}

async fn run(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &Pod,
    config: cri::ContainerConfig,
) -> String {
    let name = config.metadata.clone().unwrap_or_default().name;
    let id = create(rt, pod, config)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("start {name}: {e}"));
    id
}

/// The container's stdout and stderr lines, in order.
fn output(pod: &Pod, name: &str) -> Vec<String> {
    std::fs::read_to_string(pod.logs.join(format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
        .collect()
}

/// Runs `script` with `sh -c` to its end; its output lines.
async fn run_script(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &Pod,
    name: &str,
    script: &str,
    security: cri::LinuxContainerSecurityContext,
) -> Vec<String> {
    let id = run(rt, pod, container(name, &["sh", "-c", script], security)).await;
    wait_exited(rt, &id).await;
    output(pod, name)
}

async fn exec_sync(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    cmd: &[&str],
) -> cri::ExecSyncResponse {
    rt.exec_sync(cri::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 10,
    })
    .await
    .expect("ExecSync")
    .into_inner()
}

/// A `/proc/self/status` field as the container's shell printed it (`Seccomp:\t2` → "2").
fn field(lines: &[String], name: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} line in {lines:?}"))
}

async fn teardown(daemon: &TestDaemon, rt: &mut RuntimeServiceClient<Channel>, pod: &Pod) {
    stop_pod(rt, &pod.id).await;
    remove_pod(rt, &pod.id).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        daemon.leftover_processes().is_empty(),
        "processes: {:?}",
        daemon.leftover_processes()
    );
    assert!(
        daemon.leftover_mounts().is_empty(),
        "mounts: {:?}",
        daemon.leftover_mounts()
    );
    assert!(
        daemon.leftover_cgroups().is_empty(),
        "cgroups: {:?}",
        daemon.leftover_cgroups()
    );
}

fn profile(
    profile_type: cri::security_profile::ProfileType,
    localhost_ref: &str,
) -> Option<cri::SecurityProfile> {
    Some(cri::SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: localhost_ref.into(),
    })
}

fn caps(add: &[&str]) -> Option<cri::Capability> {
    Some(cri::Capability {
        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

async fn container_count(rt: &mut RuntimeServiceClient<Channel>) -> usize {
    rt.list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .len()
}

/// swapoff(2) is refused by the default profile even with CAP_SYS_ADMIN (EPERM), while
/// unconfined it reaches the kernel, which finds no such file (ENOENT).
const SECCOMP_PROBE: &str = "grep Seccomp: /proc/self/status; grep NoNewPrivs: /proc/self/status; swapoff /nonexistent-berth 2>&1; true";

#[tokio::test(flavor = "multi_thread")]
async fn seccomp_profiles_are_applied_to_containers_and_execs() {
    use cri::security_profile::ProfileType;
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "seccomp").await;

    let out = run_script(
        &mut rt,
        &pod,
        "default",
        SECCOMP_PROBE,
        cri::LinuxContainerSecurityContext {
            seccomp: profile(ProfileType::RuntimeDefault, ""),
            capabilities: caps(&["SYS_ADMIN"]),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(field(&out, "Seccomp"), "2", "{out:?}");
    assert_eq!(field(&out, "NoNewPrivs"), "0", "{out:?}");
    assert!(
        out.iter().any(|l| l.contains("Operation not permitted")),
        "{out:?}"
    );

    let out = run_script(
        &mut rt,
        &pod,
        "unconfined",
        SECCOMP_PROBE,
        cri::LinuxContainerSecurityContext {
            seccomp: profile(ProfileType::Unconfined, ""),
            capabilities: caps(&["SYS_ADMIN"]),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(field(&out, "Seccomp"), "0", "{out:?}");
    assert!(
        out.iter().any(|l| l.contains("No such file or directory")),
        "{out:?}"
    );

    // The default profile with no_new_privs, as a non-root user: loaded last, before exec.
    let out = run_script(
        &mut rt,
        &pod,
        "default-nnp",
        SECCOMP_PROBE,
        cri::LinuxContainerSecurityContext {
            seccomp: profile(ProfileType::RuntimeDefault, ""),
            no_new_privs: true,
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(field(&out, "Seccomp"), "2", "{out:?}");
    assert_eq!(field(&out, "NoNewPrivs"), "1", "{out:?}");

    // A Localhost profile in the Docker form blocking chmod, for the container and its execs.
    let block_chmod = daemon.dir.path().join("block-chmod.json");
    std::fs::write(
        &block_chmod,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let block_chmod = block_chmod.to_string_lossy().to_string();
    let id = run(
        &mut rt,
        &pod,
        container(
            "localhost",
            &["sh", "-c", "chmod 400 / 2>&1; sleep 60"],
            cri::LinuxContainerSecurityContext {
                seccomp: profile(ProfileType::Localhost, &block_chmod),
                ..Default::default()
            },
        ),
    )
    .await;
    let exec = exec_sync(&mut rt, &id, &["chmod", "400", "/tmp"]).await;
    assert_ne!(exec.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&exec.stderr).contains("Operation not permitted"),
        "{exec:?}"
    );
    let out = output(&pod, "localhost");
    assert!(
        out.iter().any(|l| l.contains("Operation not permitted")),
        "{out:?}"
    );
    // The daemon compiled the profile into the bundle; without that program init compiles
    // the spec's profile itself, to the same effect.
    let program = daemon
        .state
        .join("containers")
        .join(&id)
        .join("bundle/seccomp.bpf");
    let bytes = std::fs::metadata(&program)
        .expect("seccomp.bpf in the bundle")
        .len();
    assert!(bytes > 0 && bytes % 8 == 0, "{bytes}");
    std::fs::remove_file(&program).unwrap();
    let exec = exec_sync(&mut rt, &id, &["chmod", "400", "/tmp"]).await;
    assert!(
        String::from_utf8_lossy(&exec.stderr).contains("Operation not permitted"),
        "{exec:?}"
    );

    // Privileged containers run unconfined whatever they ask.
    let out = run_script(
        &mut rt,
        &pod,
        "privileged",
        "grep Seccomp: /proc/self/status; chmod 755 /tmp && echo chmod-ok",
        cri::LinuxContainerSecurityContext {
            seccomp: profile(ProfileType::Localhost, &block_chmod),
            privileged: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(field(&out, "Seccomp"), "0", "{out:?}");
    assert!(out.contains(&"chmod-ok".to_string()), "{out:?}");

    // The deprecated string field still works.
    #[allow(deprecated)]
    let out = run_script(
        &mut rt,
        &pod,
        "legacy",
        "grep Seccomp: /proc/self/status",
        cri::LinuxContainerSecurityContext {
            seccomp_profile_path: "runtime/default".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(field(&out, "Seccomp"), "2", "{out:?}");

    // A missing or malformed Localhost profile: InvalidArgument naming the file, and no
    // container is left.
    let before = container_count(&mut rt).await;
    let malformed = daemon.dir.path().join("malformed.json");
    std::fs::write(&malformed, "{\"defaultAction\": ").unwrap();
    for path in [daemon.dir.path().join("missing.json"), malformed] {
        let path = path.to_string_lossy().to_string();
        let err = create(
            &mut rt,
            &pod,
            container(
                "bad-profile",
                &["true"],
                cri::LinuxContainerSecurityContext {
                    seccomp: profile(ProfileType::Localhost, &path),
                    ..Default::default()
                },
            ),
        )
        .await
        .expect_err("a bad profile must be refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(&path), "{err:?}");
    }
    assert_eq!(container_count(&mut rt).await, before);

    teardown(&daemon, &mut rt, &pod).await;
}

/// Mirrors `host` (e.g. gcr.io) to the local registry, where hack/test-images.sh put
/// critest's images under the same repository paths.
fn mirror(daemon: &TestDaemon, host: &str) {
    let dir = daemon.registry_dir.join(host);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"https://{host}\"\n\n[host.\"http://{}\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
            registry()
        ),
    )
    .unwrap();
}

const CRI_TOOLS: &str = "gcr.io/k8s-staging-cri-tools";

#[tokio::test(flavor = "multi_thread")]
async fn users_and_groups_in_every_form_and_both_group_policies() {
    let daemon = TestDaemon::start().await;
    mirror(&daemon, "gcr.io");
    let images = [
        "test-image-user-uid",
        "test-image-user-username",
        "test-image-user-uid-group",
        "test-image-user-username-group",
        "test-image-predefined-group",
    ];
    for image in images {
        pull(&daemon, &format!("{CRI_TOOLS}/{image}:latest")).await;
    }
    let (mut rt, pod) = busybox_pod(&daemon, "users").await;
    let status_features = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .features
        .unwrap_or_default();
    assert!(status_features.supplemental_groups_policy);

    struct Case {
        name: &'static str,
        image: String,
        security: cri::LinuxContainerSecurityContext,
        /// `id -u`, `id -g`, `id -G` as the container prints them.
        want: [&'static str; 3],
    }
    let image = |name: &str| format!("{CRI_TOOLS}/{name}:latest");
    let uid = |v| Some(cri::Int64Value { value: v });
    let cases = vec![
        Case {
            name: "image-uid",
            image: image("test-image-user-uid"),
            security: Default::default(),
            want: ["1002", "0", "0"],
        },
        Case {
            name: "image-username",
            image: image("test-image-user-username"),
            security: Default::default(),
            want: ["33", "33", "33"],
        },
        Case {
            name: "image-uid-group",
            image: image("test-image-user-uid-group"),
            security: Default::default(),
            want: ["1003", "1004", "1004"],
        },
        Case {
            name: "image-username-group",
            image: image("test-image-user-username-group"),
            security: Default::default(),
            want: ["33", "1004", "1004"],
        },
        Case {
            name: "image-predefined-group",
            image: image("test-image-predefined-group"),
            security: Default::default(),
            want: ["1000", "1000", "1000 50000"],
        },
        Case {
            name: "cri-username",
            image: BUSYBOX.into(),
            security: cri::LinuxContainerSecurityContext {
                run_as_username: "nobody".into(),
                ..Default::default()
            },
            want: ["65534", "65534", "65534"],
        },
        Case {
            name: "cri-uid-gid",
            image: BUSYBOX.into(),
            security: cri::LinuxContainerSecurityContext {
                run_as_user: uid(1001),
                run_as_group: uid(1002),
                supplemental_groups: vec![1234, 5678],
                ..Default::default()
            },
            want: ["1001", "1002", "1002 1234 5678"],
        },
        Case {
            name: "merge",
            image: image("test-image-predefined-group"),
            security: cri::LinuxContainerSecurityContext {
                run_as_user: uid(1000),
                supplemental_groups: vec![1234],
                ..Default::default()
            },
            want: ["1000", "1000", "1000 1234 50000"],
        },
        Case {
            name: "strict",
            image: image("test-image-predefined-group"),
            security: cri::LinuxContainerSecurityContext {
                run_as_user: uid(1000),
                supplemental_groups: vec![1234],
                supplemental_groups_policy: cri::SupplementalGroupsPolicy::Strict as i32,
                ..Default::default()
            },
            want: ["1000", "1000", "1000 1234"],
        },
    ];
    for case in cases {
        let mut config = container(
            case.name,
            &["sh", "-c", "id -u; id -g; id -G; sleep 60"],
            case.security,
        );
        config.image = Some(cri::ImageSpec {
            image: case.image.clone(),
            ..Default::default()
        });
        let id = run(&mut rt, &pod, config).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let out = loop {
            let out = output(&pod, case.name);
            if out.len() >= 3 || Instant::now() > deadline {
                break out;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(out, case.want, "{}", case.name);
        // An exec'd process gets the same identity.
        let exec = exec_sync(&mut rt, &id, &["id", "-G"]).await;
        assert_eq!(
            String::from_utf8_lossy(&exec.stdout).trim(),
            case.want[2],
            "{} exec",
            case.name
        );
        // ContainerStatus reports what was applied.
        let user = container_status(&mut rt, &id)
            .await
            .user
            .and_then(|u| u.linux)
            .expect("ContainerStatus.user.linux");
        let mut groups = user.supplemental_groups.clone();
        groups.sort();
        let want_groups: Vec<i64> = case.want[2]
            .split(' ')
            .map(|g| g.parse().unwrap())
            .collect();
        assert_eq!(
            (user.uid.to_string(), user.gid.to_string(), groups),
            (
                case.want[0].to_string(),
                case.want[1].to_string(),
                want_groups
            ),
            "{}",
            case.name
        );
        rt.remove_container(cri::RemoveContainerRequest { container_id: id })
            .await
            .unwrap();
    }

    // A user name that is not in the image's /etc/passwd: InvalidArgument naming it.
    let before = container_count(&mut rt).await;
    let err = create(
        &mut rt,
        &pod,
        container(
            "unknown-user",
            &["true"],
            cri::LinuxContainerSecurityContext {
                run_as_username: "no-such-user-berth".into(),
                ..Default::default()
            },
        ),
    )
    .await
    .expect_err("an unknown user must be refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("no-such-user-berth"), "{err:?}");
    assert_eq!(container_count(&mut rt).await, before);

    teardown(&daemon, &mut rt, &pod).await;
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct HostMount(PathBuf);

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn recursive_read_only_mounts_cover_submounts() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod(&daemon, "rro").await;
    let features = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .runtime_handlers;
    assert!(
        features
            .iter()
            .all(|h| h.features.is_some_and(|f| f.recursive_read_only_mounts)),
        "{features:?}"
    );
    // A host dir with a writable tmpfs mounted below it.
    let host = daemon.dir.path().join("rro-host");
    let sub = host.join("tmpfs");
    std::fs::create_dir_all(&sub).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .expect("mount a tmpfs below the host dir");
    let guard = HostMount(sub.clone());
    let volume = |rro: bool, propagation: cri::MountPropagation| cri::Mount {
        container_path: "/mnt".into(),
        host_path: host.to_string_lossy().to_string(),
        readonly: true,
        recursive_read_only: rro,
        propagation: propagation as i32,
        ..Default::default()
    };
    let script = "touch /mnt/top 2>&1; touch /mnt/tmpfs/below 2>&1 && echo below-ok; true";

    let mut config = container("ro", &["sh", "-c", script], Default::default());
    config.mounts = vec![volume(false, cri::MountPropagation::PropagationPrivate)];
    let id = run(&mut rt, &pod, config).await;
    wait_exited(&mut rt, &id).await;
    let out = output(&pod, "ro");
    assert!(out[0].contains("Read-only file system"), "{out:?}");
    assert_eq!(
        out[1], "below-ok",
        "plain ro leaves submounts writable: {out:?}"
    );
    std::fs::remove_file(sub.join("below")).expect("the write reached the host tmpfs");

    let mut config = container("rro", &["sh", "-c", script], Default::default());
    config.mounts = vec![volume(true, cri::MountPropagation::PropagationPrivate)];
    let id = run(&mut rt, &pod, config).await;
    wait_exited(&mut rt, &id).await;
    let out = output(&pod, "rro");
    assert!(out[0].contains("Read-only file system"), "{out:?}");
    assert!(out[1].contains("Read-only file system"), "{out:?}");
    assert!(!sub.join("below").exists());

    // Refused: rro with propagation from the host, or without readonly.
    let before = container_count(&mut rt).await;
    let mut rw = volume(true, cri::MountPropagation::PropagationPrivate);
    rw.readonly = false;
    for bad in [
        volume(true, cri::MountPropagation::PropagationHostToContainer),
        volume(true, cri::MountPropagation::PropagationBidirectional),
        rw,
    ] {
        let mut config = container("bad-rro", &["true"], Default::default());
        config.mounts = vec![bad];
        let err = create(&mut rt, &pod, config)
            .await
            .expect_err("must be refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("recursive_read_only"), "{err:?}");
    }
    assert_eq!(container_count(&mut rt).await, before);
    // The test's own mount goes first: teardown looks for anything left below the dir.
    drop(guard);
    teardown(&daemon, &mut rt, &pod).await;
}

/// A capability mask from /proc/self/status (hex).
fn mask(lines: &[String], name: &str) -> u64 {
    u64::from_str_radix(&field(lines, name), 16).unwrap()
}

/// What init itself holds: a container can get no more.
fn own_capabilities() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap();
    u64::from_str_radix(line.trim(), 16).unwrap()
}

const STATUS_PROBE: &str = "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status; \
    wc -c /proc/timer_list 2>&1 | head -1; \
    echo 1 > /proc/sys/kernel/ns_last_pid 2>&1 || echo proc-sys-ro; \
    grep -E ' /sys (ro|rw),' /proc/self/mountinfo | cut -d' ' -f6 | cut -d, -f1 | sed 's/^/sys-/'; \
    ls /dev/loop-control 2>&1";

#[tokio::test(flavor = "multi_thread")]
async fn privileged_and_capabilities_from_inside() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod_with(&daemon, "caps", |c| {
        c.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        });
    })
    .await;
    let held = own_capabilities();

    // The default set: 14 capabilities, nothing ambient, /proc masked and read-only in
    // places, /sys read-only, no host devices.
    let out = run_script(&mut rt, &pod, "default", STATUS_PROBE, Default::default()).await;
    let default_set: u64 = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31]
        .iter()
        .fold(0, |m, b| m | (1 << b));
    assert_eq!(mask(&out, "CapEff"), default_set, "{out:?}");
    assert_eq!(mask(&out, "CapBnd"), default_set, "{out:?}");
    assert_eq!(mask(&out, "CapAmb"), 0, "{out:?}");
    assert!(
        out.iter().any(|l| l.starts_with("0 /proc/timer_list")),
        "masked: {out:?}"
    );
    assert!(out.contains(&"proc-sys-ro".to_string()), "{out:?}");
    assert!(out.contains(&"sys-ro".to_string()), "{out:?}");
    assert!(
        out.iter()
            .any(|l| l.contains("loop-control") && l.contains("No such file")),
        "{out:?}"
    );

    // Privileged: every capability init holds, nothing masked, /sys writable, the host's
    // devices, no seccomp.
    let out = run_script(
        &mut rt,
        &pod,
        "privileged",
        STATUS_PROBE,
        cri::LinuxContainerSecurityContext {
            privileged: true,
            seccomp: profile(cri::security_profile::ProfileType::RuntimeDefault, ""),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(mask(&out, "CapEff"), held, "{out:?}");
    assert_eq!(field(&out, "Seccomp"), "0", "{out:?}");
    assert!(!out.contains(&"proc-sys-ro".to_string()), "{out:?}");
    assert!(
        out.iter()
            .any(|l| l.ends_with(" /proc/timer_list") && !l.starts_with("0 ")),
        "unmasked: {out:?}"
    );
    assert!(out.contains(&"sys-rw".to_string()), "{out:?}");
    assert!(
        out.iter().any(|l| l == "/dev/loop-control"),
        "host devices: {out:?}"
    );

    // add ALL, drop ALL, names with and without CAP_, ambient for a non-root user.
    let with = |add: &[&str], drop: &[&str]| cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let out = run_script(&mut rt, &pod, "add-all", STATUS_PROBE, with(&["ALL"], &[])).await;
    assert_eq!(mask(&out, "CapEff"), held, "{out:?}");
    let out = run_script(&mut rt, &pod, "drop-all", STATUS_PROBE, with(&[], &["ALL"])).await;
    assert_eq!(mask(&out, "CapBnd"), 0, "{out:?}");
    assert_eq!(mask(&out, "CapEff"), 0, "{out:?}");
    let out = run_script(
        &mut rt,
        &pod,
        "named",
        "grep ^CapEff /proc/self/status; brctl addbr berthtest0 && echo addbr-ok; ping -c1 127.0.0.1 2>&1 | tail -1",
        with(&["CAP_NET_ADMIN"], &["NET_RAW"]),
    )
    .await;
    assert_eq!(
        mask(&out, "CapEff"),
        (default_set | (1 << 12)) & !(1 << 13),
        "{out:?}"
    );
    assert!(out.contains(&"addbr-ok".to_string()), "{out:?}");
    assert!(
        out.iter()
            .any(|l| l.to_lowercase().contains("permission denied")),
        "{out:?}"
    );
    let mut ambient = with(&[], &[]);
    ambient.run_as_user = Some(cri::Int64Value { value: 1000 });
    ambient.capabilities = Some(cri::Capability {
        add_ambient_capabilities: vec!["NET_BIND_SERVICE".into()],
        ..Default::default()
    });
    let out = run_script(&mut rt, &pod, "ambient", STATUS_PROBE, ambient).await;
    assert_eq!(mask(&out, "CapAmb"), 1 << 10, "{out:?}");
    assert_eq!(
        mask(&out, "CapEff"),
        1 << 10,
        "non-root keeps only the ambient: {out:?}"
    );

    // An unknown capability: InvalidArgument naming it, nothing created.
    let before = container_count(&mut rt).await;
    let err = create(
        &mut rt,
        &pod,
        container("bad-cap", &["true"], with(&["CAP_NO_SUCH_THING"], &[])),
    )
    .await
    .expect_err("an unknown capability must be refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("CAP_NO_SUCH_THING"), "{err:?}");
    assert_eq!(container_count(&mut rt).await, before);
    teardown(&daemon, &mut rt, &pod).await;
}

/// The host uid of a process, from /proc/<pid>/status.
fn host_uid(pid: u64) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_in_its_own_user_namespace_with_idmapped_rootfs_and_volumes() {
    let daemon = TestDaemon::start().await;
    let features = daemon
        .runtime()
        .await
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .runtime_handlers;
    assert!(
        features
            .iter()
            .all(|h| h.features.is_some_and(|f| f.user_namespaces)),
        "{features:?}"
    );
    const HOST_ID: u32 = 200_000;
    let (mut rt, pod) = busybox_pod_with(&daemon, "userns", |c| {
        with_userns(
            c,
            userns_options(cri::NamespaceMode::Pod, &[(0, HOST_ID, 65536)]),
        );
        // A network and an IPC sysctl: one written before the user namespace exists,
        // one inside it.
        c.linux.as_mut().unwrap().sysctls = [
            (
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "0".to_string(),
            ),
            ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
        ]
        .into();
    })
    .await;
    let status = pod_status(&mut rt, &pod.id, true).await.unwrap();
    let reported = status
        .status
        .as_ref()
        .and_then(|s| s.linux.as_ref())
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .and_then(|o| o.userns_options.as_ref())
        .expect("PodSandboxStatus reports the user namespace");
    assert_eq!(reported.uids[0].host_id, HOST_ID);
    let pause = pause_pid(&status);
    assert_eq!(host_uid(u64::from(pause)), HOST_ID.to_string());

    // A host volume holding a root-owned file.
    let volume = daemon.dir.path().join("userns-volume");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("from-host"), "hi\n").unwrap();
    let mut config = container(
        "inside",
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map; id -u; stat -c %u:%g /bin/busybox /data/from-host; \
             touch /new && stat -c new:%u /new; echo x > /data/from-container && echo volume-ok; \
             cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shm_rmid_forced; \
             sleep 60",
        ],
        Default::default(),
    );
    config.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: volume.to_string_lossy().to_string(),
        ..Default::default()
    }];
    let id = run(&mut rt, &pod, config).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = output(&pod, "inside");
        if out.len() >= 8 || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let uid_map: Vec<&str> = out[0].split_whitespace().collect();
    assert_eq!(uid_map, ["0", &HOST_ID.to_string(), "65536"], "{out:?}");
    assert_eq!(out[1], "0", "{out:?}");
    // Through the id-mapped mounts, host root's files are the container root's.
    assert_eq!(out[2], "0:0", "{out:?}");
    assert_eq!(out[3], "0:0", "{out:?}");
    assert_eq!(out[4], "new:0", "{out:?}");
    assert_eq!(out[5], "volume-ok", "{out:?}");
    assert_eq!(out[6..8], ["0", "1"], "pod sysctls: {out:?}");
    // ... and the container root's writes are host root's on disk.
    let written = std::fs::metadata(volume.join("from-container")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&written), 0);

    // On the host the container runs as the mapped uid.
    let verbose = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    assert_eq!(host_uid(info["pid"].as_u64().unwrap()), HOST_ID.to_string());

    // An exec joins the pod's user namespace too.
    let exec = exec_sync(&mut rt, &id, &["cat", "/proc/self/uid_map"]).await;
    let exec_map: Vec<String> = String::from_utf8_lossy(&exec.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(exec_map, ["0", &HOST_ID.to_string(), "65536"], "{exec:?}");

    // Containers cannot ask for a user namespace of their own.
    let mut own = container("own-userns", &["true"], Default::default());
    own.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                userns_options: userns_options(cri::NamespaceMode::Container, &[]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = create(&mut rt, &pod, own).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    teardown(&daemon, &mut rt, &pod).await;

    // Bad pod requests: InvalidArgument naming the field, and no pod is left.
    for (bad, words) in [
        (
            userns_options(
                cri::NamespaceMode::Pod,
                &[(0, HOST_ID, 100), (100, HOST_ID + 1000, 100)],
            ),
            "exactly one",
        ),
        (
            userns_options(cri::NamespaceMode::Pod, &[(1, HOST_ID, 100)]),
            "container ID 0",
        ),
        (
            userns_options(cri::NamespaceMode::Container, &[]),
            "Container",
        ),
        (userns_options(cri::NamespaceMode::Target, &[]), "Target"),
    ] {
        let mut config = pod_config("bad-userns");
        with_userns(&mut config, bad);
        let err = run_pod(&mut rt, config).await.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(words), "{err:?} lacks {words}");
    }
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
}

fn ns_link(pid: &str, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap()
        .to_string_lossy()
        .to_string()
}

const NS_PROBE: &str = "for n in pid ipc net uts; do readlink /proc/self/ns/$n; done; \
    tr '\\0' ' ' < /proc/1/cmdline; echo";

#[tokio::test(flavor = "multi_thread")]
async fn pid_ipc_and_network_namespaces_in_every_mode() {
    let daemon = TestDaemon::start().await;
    let with_pid = |mode: cri::NamespaceMode, target: &str| cri::LinuxContainerSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            pid: mode as i32,
            target_id: target.into(),
            ..Default::default()
        }),
        ..Default::default()
    };

    // A pod with its own namespaces: POD, CONTAINER and TARGET pid modes.
    let (mut rt, pod) = busybox_pod(&daemon, "ns-pod").await;
    let pause = pause_pid(&pod_status(&mut rt, &pod.id, true).await.unwrap()).to_string();
    let out = run_script(
        &mut rt,
        &pod,
        "pod-pid",
        NS_PROBE,
        with_pid(cri::NamespaceMode::Pod, ""),
    )
    .await;
    for (i, ns) in ["pid", "ipc", "net", "uts"].iter().enumerate() {
        assert_eq!(out[i], ns_link(&pause, ns), "{ns}: {out:?}");
    }
    assert!(!out[4].contains("sleep"), "{out:?}");

    let target = run(
        &mut rt,
        &pod,
        container(
            "target",
            &["sleep", "300"],
            with_pid(cri::NamespaceMode::Container, ""),
        ),
    )
    .await;
    let out = run_script(
        &mut rt,
        &pod,
        "debug",
        NS_PROBE,
        with_pid(cri::NamespaceMode::Target, &target),
    )
    .await;
    assert_ne!(out[0], ns_link(&pause, "pid"), "{out:?}");
    assert_eq!(out[4].trim(), "sleep 300", "the target's PID 1: {out:?}");
    teardown(&daemon, &mut rt, &pod).await;

    // A pod on the host's PID, IPC and network namespaces.
    let (mut rt, pod) = busybox_pod_with(&daemon, "ns-host", |c| {
        c.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    pid: cri::NamespaceMode::Node as i32,
                    ipc: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    })
    .await;
    let out = run_script(
        &mut rt,
        &pod,
        "host",
        NS_PROBE,
        with_pid(cri::NamespaceMode::Node, ""),
    )
    .await;
    for (i, ns) in ["pid", "ipc", "net"].iter().enumerate() {
        assert_eq!(out[i], ns_link("self", ns), "{ns}: {out:?}");
    }
    assert_ne!(
        out[3],
        ns_link("self", "uts"),
        "the pod keeps its own hostname: {out:?}"
    );
    let host_init = std::fs::read("/proc/1/cmdline").unwrap();
    let host_init: String = String::from_utf8_lossy(&host_init).replace('\0', " ");
    assert_eq!(out[4].trim(), host_init.trim(), "the host's PID 1: {out:?}");
    teardown(&daemon, &mut rt, &pod).await;
}
