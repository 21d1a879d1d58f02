//! CRI contract breaks of issue 14, through the real daemon: a stopped container leaves
//! nothing running whatever its PID namespace, and ExecSync output that cannot fit the
//! answer is refused instead of cut. (The decompression-bomb default is in tests/bomb.rs.)
mod common;

use std::time::{Duration, Instant};

use berth::cri::api as cri;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use common::*;
use tonic::transport::Channel;

const IMAGE: &str = "docker.io/library/busybox:latest";
const MIB: usize = 1 << 20;

async fn setup(
    daemon: &TestDaemon,
    name: &str,
    pod_pid: cri::NamespaceMode,
) -> (RuntimeServiceClient<Channel>, Pod) {
    busybox_pod_with(daemon, name, |config| {
        config.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: pod_pid as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    })
    .await
}

/// Creates and starts `command` in the pod with the given PID namespace mode.
async fn run(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &Pod,
    name: &str,
    command: &[&str],
    pid: cri::NamespaceMode,
    target_id: &str,
) -> String {
    let mut config = container_config(name, IMAGE, command);
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: pid as i32,
                target_id: target_id.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create_container(rt, &pod.id, &pod.config, config)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    start_container(rt, &id)
        .await
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    id
}

/// A shell that starts three children ignoring SIGTERM, then becomes `sleep <token>0`
/// (which dies on SIGTERM unless it is a namespace's PID 1); the children become
/// `sleep <token>1..3`. Four processes, all named by `token`.
fn family_command(token: u32) -> Vec<String> {
    let script = format!(
        "for i in 1 2 3; do sh -c \"trap '' TERM; exec sleep {token}$i\" & done; exec sleep {token}0"
    );
    vec!["sh".into(), "-c".into(), script]
}

/// Live (not zombie) host pids of the family `token`, with their command lines.
fn family_alive(token: u32) -> Vec<(u32, String)> {
    let prefix = format!("sleep\0{token}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).to_string();
            (text.starts_with(&prefix) && process_exists(pid))
                .then(|| (pid, text.replace('\0', " ")))
        })
        .collect()
}

/// Waits until the whole family (main process and three children) runs.
async fn wait_family(token: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alive = family_alive(token);
        if alive.len() == 4 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the family {token} did not start: {alive:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(rt: &mut RuntimeServiceClient<Channel>, id: &str, timeout: i64) {
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.into(),
        timeout,
    })
    .await
    .unwrap_or_else(|e| panic!("StopContainer {id}: {e}"));
}

/// Runs a family in `pid` mode, stops it with a 2 s timeout and checks that none of the
/// four is alive when StopContainer returns, and that the exit code is the main process's.
async fn stop_family_leaves_nothing(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &Pod,
    name: &str,
    pid: cri::NamespaceMode,
    target_id: &str,
    main_exit_code: i32,
) {
    let token = rand::random_range(100_000..1_000_000u32);
    let command = family_command(token);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let id = run(rt, pod, name, &command, pid, target_id).await;
    wait_family(token).await;
    stop(rt, &id, 2).await;
    let alive = family_alive(token);
    assert!(
        alive.is_empty(),
        "{name} ({pid:?}): still running after StopContainer returned: {alive:?}"
    );
    let status = container_status(rt, &id).await;
    assert_eq!(
        status.state,
        cri::ContainerState::ContainerExited as i32,
        "{status:?}"
    );
    assert_eq!(status.exit_code, main_exit_code, "{name}: {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_in_a_shared_pid_pod_left_children_running() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = setup(&daemon, "shared-pid", cri::NamespaceMode::Pod).await;
    // The main process is not PID 1 here: it dies on SIGTERM (143) at once, and its
    // children, reparented to the pause process, must still go.
    stop_family_leaves_nothing(&mut rt, &pod, "pod-pid", cri::NamespaceMode::Pod, "", 143).await;

    // The same family stopped by StopPodSandbox (no StopContainer first).
    let token = rand::random_range(100_000..1_000_000u32);
    let command = family_command(token);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let id = run(
        &mut rt,
        &pod,
        "by-pod-stop",
        &command,
        cri::NamespaceMode::Pod,
        "",
    )
    .await;
    wait_family(token).await;
    stop_pod(&mut rt, &pod.id).await;
    let alive = family_alive(token);
    assert!(
        alive.is_empty(),
        "still running after StopPodSandbox: {alive:?}"
    );
    let status = container_status(&mut rt, &id).await;
    assert_eq!(
        status.state,
        cri::ContainerState::ContainerExited as i32,
        "{status:?}"
    );
    remove_pod(&mut rt, &pod.id).await;
    daemon.assert_no_leaks("after the shared-PID pod");
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_with_own_or_target_pid_namespace_leaves_nothing() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = setup(&daemon, "own-pid", cri::NamespaceMode::Container).await;
    // PID 1 of its own namespace ignores SIGTERM (no handler): SIGKILL after the timeout
    // (137), and the kernel takes the children with it.
    stop_family_leaves_nothing(
        &mut rt,
        &pod,
        "container-pid",
        cri::NamespaceMode::Container,
        "",
        137,
    )
    .await;

    // TARGET: the family joins another container's PID namespace; its children are
    // reparented to that container's PID 1, which must survive the stop.
    let target = run(
        &mut rt,
        &pod,
        "target",
        &["sleep", "86400"],
        cri::NamespaceMode::Container,
        "",
    )
    .await;
    stop_family_leaves_nothing(
        &mut rt,
        &pod,
        "target-pid",
        cri::NamespaceMode::Target,
        &target,
        143,
    )
    .await;
    let status = container_status(&mut rt, &target).await;
    assert_eq!(
        status.state,
        cri::ContainerState::ContainerRunning as i32,
        "the target was touched: {status:?}"
    );
    stop_pod(&mut rt, &pod.id).await;
    remove_pod(&mut rt, &pod.id).await;
    daemon.assert_no_leaks("after the own-PID pod");
}

async fn exec_sync(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    script: &str,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    // The kubelet takes 16 MiB messages; tonic's default is 4 MiB.
    rt.clone()
        .max_decoding_message_size(16 * MIB)
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 60,
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_output_past_the_cri_limit_was_cut_silently() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = setup(&daemon, "exec-limit", cri::NamespaceMode::Container).await;
    let id = run(
        &mut rt,
        &pod,
        "exec",
        &["sleep", "86400"],
        cri::NamespaceMode::Container,
        "",
    )
    .await;

    // 15 MiB arrives whole.
    let whole = exec_sync(
        &mut rt,
        &id,
        &format!("yes 2>/dev/null | head -c {}", 15 * MIB),
    )
    .await
    .expect("15 MiB of output fits");
    assert_eq!(whole.exit_code, 0);
    assert_eq!(whole.stdout.len(), 15 * MIB);
    assert!(
        whole.stdout.chunks(2).all(|c| c == b"y\n"),
        "the output is not what was written"
    );
    assert!(whole.stderr.is_empty());

    // 20 MiB on stdout, and 20 MiB split over both streams: refused, with the size.
    for (script, words) in [
        (
            format!("head -c {} /dev/zero", 20 * MIB),
            "wrote 20971520 bytes of output (stdout 20971520, stderr 0)",
        ),
        (
            format!("head -c {0} /dev/zero; head -c {0} /dev/zero >&2", 10 * MIB),
            "wrote 20971520 bytes of output (stdout 10485760, stderr 10485760)",
        ),
    ] {
        let err = exec_sync(&mut rt, &id, &script)
            .await
            .expect_err("output past the limit was answered");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains(words), "{err:?}");
        assert!(
            err.message().contains("16773120 bytes"),
            "the limit is named: {err:?}"
        );
    }
    stop_pod(&mut rt, &pod.id).await;
    remove_pod(&mut rt, &pod.id).await;
    daemon.assert_no_leaks("after the exec tests");
}

/// The v1 path of the cgroup sweep (freeze, kill, thaw), which hosts without `cgroup.kill`
/// take: a shell forking without pause is emptied out of a cgroup of the v1 hierarchies
/// alone, and the cgroup is left thawed.
#[test]
fn kill_all_empties_a_forking_v1_cgroup_through_the_freezer() {
    use berth::linux::cgroup::{Cgroups, parse_mountinfo};
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let v1: Vec<_> = parse_mountinfo(&mountinfo)
        .into_iter()
        .filter(|h| !h.v2)
        .collect();
    assert!(
        v1.iter()
            .any(|h| h.controllers.iter().any(|c| c == "freezer")),
        "this test needs the v1 freezer hierarchy: {v1:?}"
    );
    let cgroups = Cgroups::from_hierarchies(v1.clone()).unwrap();
    let path = format!("berth-test-sweep-{:08x}", rand::random::<u32>());
    cgroups.create(&path).unwrap();
    let mut shell = std::process::Command::new("sh")
        .args(["-c", "while :; do (sleep 300 &); done"])
        .spawn()
        .unwrap();
    let pid = shell.id() as i32;
    cgroups.add_process(&path, pid).unwrap();
    // Reap the shell once killed, so it does not stay a zombie of this process.
    let reaper = std::thread::spawn(move || shell.wait());
    std::thread::sleep(Duration::from_millis(300));
    let before = cgroups.procs(&path).unwrap();
    assert!(before.len() > 1, "the shell forked nothing: {before:?}");
    let killed = cgroups.kill_all(&path, Duration::from_secs(5));
    let after = cgroups.procs(&path).unwrap();
    let freezer = v1
        .iter()
        .find(|h| h.controllers.iter().any(|c| c == "freezer"))
        .unwrap();
    let state =
        std::fs::read_to_string(freezer.mount_point.join(&path).join("freezer.state")).unwrap();
    let _ = reaper.join();
    let removed = cgroups.remove(&path);
    killed.unwrap();
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(state.trim(), "THAWED");
    removed.unwrap();
}
