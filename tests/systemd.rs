//! The systemd cgroup driver through the real daemon, checked from systemd's side (the
//! units' properties as `systemctl show` reads them over D-Bus) and from the cgroup files;
//! and berth run as a systemd service from `data/systemd/berth.service`.
//!
//! These need systemd as PID 1 on cgroup v2: the test VM (hack/test-vm.sh runs this suite
//! there). Where PID 1 is not systemd (this host), each test proves instead that
//! `--cgroup-driver systemd` is refused at start with the reason, never a silent pass.
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use berth::cri::api as cri;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use common::*;
use tonic::transport::Channel;

const BUSYBOX: &str = "docker.io/library/busybox:latest";

fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Where PID 1 is not systemd: berth asked for the systemd driver exits at start, saying why.
fn assert_refused_without_systemd() {
    assert!(!systemd_booted());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("none.toml"), "").unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--config", &p("none.toml"), "--socket", &p("berth.sock")])
        .args(["--root", &p("root"), "--state", &p("state")])
        .args(["--cgroup-driver", "systemd"])
        .output()
        .expect("running berth");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "berth started without systemd");
    assert!(
        stderr.contains("cgroup_driver") && stderr.contains("PID 1 is not systemd"),
        "{stderr}"
    );
}

/// `systemctl show` of `unit`: every property asked, by name.
fn show(unit: &str, properties: &[&str]) -> HashMap<String, String> {
    let mut cmd = Command::new("systemctl");
    cmd.arg("show");
    for p in properties {
        cmd.args(["-p", p]);
    }
    let out = cmd.arg(unit).output().expect("systemctl");
    assert!(out.status.success(), "systemctl show {unit}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits for systemd to forget a stopped unit (it collects inactive transient units on
/// its next pass), failing with the unit's state when it does not. A slice needs no unit
/// file, so asking about one loads it again: for a slice, stopped is gone.
async fn assert_gone(unit: &str) {
    let deadline = std::time::Instant::now() + slow(std::time::Duration::from_secs(10));
    loop {
        let now = show(unit, &["LoadState", "ActiveState"]);
        if now["LoadState"] == "not-found"
            || (unit.ends_with(".slice") && now["ActiveState"] == "inactive")
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "unit {unit} is still there: {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

async fn pod(
    daemon: &TestDaemon,
    config: cri::PodSandboxConfig,
) -> (RuntimeServiceClient<Channel>, String) {
    mirror_docker_io(daemon);
    pull(daemon, BUSYBOX).await;
    let mut rt = daemon.runtime().await;
    let id = run_pod(&mut rt, config).await.expect("RunPodSandbox");
    (rt, id)
}

async fn run(
    rt: &mut RuntimeServiceClient<Channel>,
    pod_id: &str,
    config: cri::ContainerConfig,
) -> String {
    let pod_config = pod_config("unused");
    let id = create_container(rt, pod_id, &pod_config, config)
        .await
        .expect("CreateContainer");
    start_container(rt, &id).await.expect("StartContainer");
    id
}

fn limited(
    name: &str,
    command: &[&str],
    memory: i64,
    shares: i64,
    quota: i64,
) -> cri::ContainerConfig {
    let mut config = container_config(name, BUSYBOX, command);
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: memory,
            cpu_shares: shares,
            cpu_quota: quota,
            cpu_period: if quota > 0 { 100_000 } else { 0 },
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// The pid in a verbose ContainerStatus.
async fn container_pid(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> u32 {
    let status = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").expect("verbose info")).expect("json");
    info["pid"].as_u64().expect("pid") as u32
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_are_properties_of_the_container_scope_and_reach_its_cgroup() {
    if !systemd_booted() {
        return assert_refused_without_systemd();
    }
    let daemon = TestDaemon::start_systemd().await;
    let (mut rt, pod_id) = pod(&daemon, pod_config("limits")).await;
    let stem = daemon.cgroup_parent.trim_end_matches(".slice").to_string();
    let pod_slice = format!("{stem}-pod{pod_id}.slice");
    let pause = show(
        &format!("berth-{pod_id}.scope"),
        &["ActiveState", "Slice", "Delegate", "Description"],
    );
    assert_eq!(pause["ActiveState"], "active", "{pause:?}");
    assert_eq!(pause["Slice"], pod_slice);
    assert_eq!(pause["Delegate"], "yes");
    assert_eq!(
        pause["Description"],
        format!("berth pause {pod_id} ({})", daemon.state.display())
    );

    // 64 MiB, 512 shares (weight 20 by the kubelet's formula), 25 ms per 100 ms.
    let id = run(
        &mut rt,
        &pod_id,
        limited("limited", &["sleep", "1000"], 64 << 20, 512, 25_000),
    )
    .await;
    let scope = format!("berth-{id}.scope");
    let props = [
        "ActiveState",
        "Slice",
        "Delegate",
        "MemoryMax",
        "CPUWeight",
        "CPUQuotaPerSecUSec",
    ];
    let unit = show(&scope, &props);
    assert_eq!(unit["ActiveState"], "active", "{unit:?}");
    assert_eq!(unit["Slice"], pod_slice);
    assert_eq!(unit["Delegate"], "yes");
    assert_eq!(unit["MemoryMax"], (64u64 << 20).to_string());
    assert_eq!(unit["CPUWeight"], "20");
    assert_eq!(unit["CPUQuotaPerSecUSec"], "250ms");
    // The cgroup files say the same, and the container's process is in the scope.
    let dir = Path::new("/sys/fs/cgroup")
        .join(daemon.pod_cgroup_dir(&pod_id))
        .join(&scope);
    assert_eq!(read(&dir.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(read(&dir.join("cpu.weight")), "20");
    assert_eq!(read(&dir.join("cpu.max")), "25000 100000");
    let pid = container_pid(&mut rt, &id).await;
    let own = read(Path::new(&format!("/proc/{pid}/cgroup")));
    assert!(
        own.ends_with(&format!("/{scope}")) || own == "0::/",
        "{own}"
    );
    assert!(
        read(&dir.join("cgroup.procs"))
            .lines()
            .any(|l| l == pid.to_string())
    );

    // UpdateContainerResources goes through SetUnitProperties.
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            cpu_shares: 256,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("UpdateContainerResources");
    let unit = show(&scope, &props);
    assert_eq!(unit["MemoryMax"], (96u64 << 20).to_string());
    assert_eq!(unit["CPUWeight"], "10");
    assert_eq!(read(&dir.join("memory.max")), (96u64 << 20).to_string());
    assert_eq!(read(&dir.join("cpu.weight")), "10");

    // Removal stops and forgets every unit berth made for the pod.
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("RemoveContainer");
    assert_gone(&scope).await;
    remove_pod(&mut rt, &pod_id).await;
    assert_gone(&format!("berth-{pod_id}.scope")).await;
    assert_gone(&pod_slice).await;
    daemon.assert_no_leaks("after removing the pod");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kubelet_style_slice_parent_is_expanded_and_a_bad_one_refused() {
    if !systemd_booted() {
        return assert_refused_without_systemd();
    }
    let daemon = TestDaemon::start_systemd().await;
    let top = format!("berthkube{:06x}", rand::random::<u32>() & 0xff_ffff);
    let parent = format!("{top}-besteffort-pod{:08x}.slice", rand::random::<u32>());
    // As the kubelet's systemd cgroup manager passes it: the slice's expanded path.
    let mut config = pod_config("kubelet-slice");
    config.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: format!("/{top}.slice/{top}-besteffort.slice/{parent}"),
        ..Default::default()
    });
    let (mut rt, pod_id) = pod(&daemon, config).await;
    let status = pod_status(&mut rt, &pod_id, true)
        .await
        .expect("PodSandboxStatus");
    let pause = pause_pid(&status);
    let own = read(Path::new(&format!("/proc/{pause}/cgroup")));
    assert_eq!(
        own,
        format!("0::/{top}.slice/{top}-besteffort.slice/{parent}/berth-{pod_id}.scope")
    );
    let id = run(
        &mut rt,
        &pod_id,
        container_config("in-kubelet-slice", BUSYBOX, &["sleep", "1000"]),
    )
    .await;
    assert_eq!(
        show(&format!("berth-{id}.scope"), &["Slice"])["Slice"],
        parent
    );
    remove_pod(&mut rt, &pod_id).await;
    assert_gone(&format!("berth-{id}.scope")).await;
    // The parent is the kubelet's to remove, not berth's.
    assert_eq!(show(&parent, &["ActiveState"])["ActiveState"], "active");
    let _ = Command::new("systemctl")
        .args(["stop", &format!("{top}.slice")])
        .status();

    // A cgroupfs path where a slice is expected: InvalidArgument naming the field, and
    // nothing made.
    let mut bad = pod_config("bad-parent");
    bad.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: "/kubepods/burstable/pod1".into(),
        ..Default::default()
    });
    let err = run_pod(&mut rt, bad)
        .await
        .expect_err("a cgroupfs path as parent");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("linux.cgroup_parent"), "{err:?}");
    daemon.assert_no_leaks("after a refused parent");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oom_kill_under_a_scope_is_reported_as_oomkilled() {
    if !systemd_booted() {
        return assert_refused_without_systemd();
    }
    let daemon = TestDaemon::start_systemd().await;
    let (mut rt, pod_id) = pod(&daemon, pod_config("oom")).await;
    let command = [
        "sh",
        "-c",
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
    ];
    let id = run(&mut rt, &pod_id, limited("oom", &command, 16 << 20, 0, 0)).await;
    let st = wait_exited(&mut rt, &id).await;
    assert_eq!(st.reason, "OOMKilled", "{st:?}");
    assert_eq!(st.exit_code, 137);
    remove_pod(&mut rt, &pod_id).await;
    assert_gone(&format!("berth-{id}.scope")).await;
    daemon.assert_no_leaks("after removing the pod");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_stops_units_no_record_points_to_and_leaves_every_other_unit_alone() {
    if !systemd_booted() {
        return assert_refused_without_systemd();
    }
    let mut daemon = TestDaemon::start_systemd().await;
    let (mut rt, pod_id) = pod(&daemon, pod_config("forgotten")).await;
    let id = run(
        &mut rt,
        &pod_id,
        container_config("forgotten", BUSYBOX, &["sleep", "1000"]),
    )
    .await;
    let stem = daemon.cgroup_parent.trim_end_matches(".slice").to_string();
    let pod_slice = format!("{stem}-pod{pod_id}.slice");
    // A scope that looks like berth's but is another berth's (another state dir).
    let foreign = format!("berth-foreign{:08x}.scope", rand::random::<u32>());
    let mut other = Command::new("systemd-run")
        .args(["--scope", "--unit", &foreign, "--description"])
        .arg(format!("berth container {id} (/run/another-berth)"))
        .args(["sleep", "1000"])
        .spawn()
        .expect("systemd-run");
    // berth dies and its records of the pod and the container are lost.
    daemon.kill9();
    std::fs::remove_dir_all(daemon.root.join("sandboxes").join(&pod_id)).unwrap();
    std::fs::remove_dir_all(daemon.root.join("containers").join(&id)).unwrap();
    daemon.restart().await;
    for unit in [
        format!("berth-{id}.scope"),
        format!("berth-{pod_id}.scope"),
        pod_slice,
    ] {
        assert_gone(&unit).await;
    }
    assert!(
        daemon
            .log_text()
            .contains("sweep: stopped a systemd unit no record points to"),
        "{}",
        daemon.log_text()
    );
    let left = show(&foreign, &["ActiveState"]);
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(
        left["ActiveState"], "active",
        "the sweep touched another's unit"
    );
    daemon.assert_no_leaks("after the sweep");
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_not_answering_is_unavailable_and_leaves_nothing() {
    if !systemd_booted() {
        return assert_refused_without_systemd();
    }
    // The daemon's system bus is a socket nobody listens on.
    let daemon = TestDaemon::start_systemd_with_env(&[(
        "DBUS_SYSTEM_BUS_ADDRESS",
        "unix:path=/run/berth-test-no-bus",
    )])
    .await;
    mirror_docker_io(&daemon);
    let mut rt = daemon.runtime().await;
    let err = run_pod(&mut rt, pod_config("no-bus"))
        .await
        .expect_err("a pod without systemd");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("systemd is not answering"),
        "{err:?}"
    );
    daemon.assert_no_leaks("after a pod systemd did not answer for");
}

/// A unit of the test's own, installed from the repo's unit file; stopped and removed on
/// drop so that a failed test leaves no service behind.
struct Service {
    name: String,
    path: std::path::PathBuf,
}

impl Service {
    fn install(daemon: &TestDaemon) -> Service {
        let name = format!("berth-test-{:08x}.service", rand::random::<u32>());
        let template =
            read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/systemd/berth.service"));
        let exec = daemon.command_line().join(" ");
        let unit: String = template
            .lines()
            .map(|l| {
                if l.starts_with("ExecStart=") {
                    format!(
                        "ExecStart={exec}\nStandardError=append:{}",
                        daemon.log.display()
                    )
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = Path::new("/run/systemd/system").join(&name);
        std::fs::write(&path, unit + "\n").expect("writing the unit");
        systemctl(&["daemon-reload"]);
        Service { name, path }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("systemctl")
            .args(["stop", &self.name])
            .status();
        let _ = std::fs::remove_file(&self.path);
        let _ = Command::new("systemctl").arg("daemon-reload").status();
    }
}

fn systemctl(args: &[&str]) {
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .expect("systemctl");
    assert!(status.success(), "systemctl {args:?}: {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_unit_file_runs_berth_and_a_restart_of_the_service_keeps_pods_running() {
    if !systemd_booted() {
        return assert_refused_without_systemd();
    }
    let mut daemon = TestDaemon::start_systemd().await;
    daemon.kill9();
    let service = Service::install(&daemon);
    // Type=notify: `systemctl start` returns once berth said READY=1, after recovery.
    systemctl(&["start", &service.name]);
    assert_eq!(
        show(&service.name, &["ActiveState"])["ActiveState"],
        "active"
    );
    daemon.wait_ready().await;
    let (mut rt, pod_id) = pod(&daemon, pod_config("survivor")).await;
    let id = run(
        &mut rt,
        &pod_id,
        container_config("survivor", BUSYBOX, &["sleep", "1000"]),
    )
    .await;
    let pause = pause_pid(&pod_status(&mut rt, &pod_id, true).await.unwrap());
    let pid = container_pid(&mut rt, &id).await;

    systemctl(&["restart", &service.name]);
    daemon.wait_ready().await;
    let mut rt = daemon.runtime().await;
    assert!(
        process_exists(pause) && process_exists(pid),
        "a restart of the service took pods with it"
    );
    let st = container_status(&mut rt, &id).await;
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerRunning as i32,
        "{st:?}"
    );
    let status = pod_status(&mut rt, &pod_id, false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);
    // The journal-free log (stderr appended to a file) keeps its timestamps.
    assert!(daemon.log_text().contains("berth is ready"));

    remove_pod(&mut rt, &pod_id).await;
    systemctl(&["stop", &service.name]);
    drop(service);
    daemon.assert_no_leaks("after removing the pod and stopping the service");
}

/// Waits for `unit` to reach ActiveState `state` (systemd-run --scope returns before the
/// test can ask), failing with what it is when it does not.
async fn wait_state(unit: &str, state: &str) {
    let deadline = std::time::Instant::now() + slow(std::time::Duration::from_secs(10));
    loop {
        let now = show(unit, &["ActiveState"]);
        if now["ActiveState"] == state {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "unit {unit} never became {state}: {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A container's scope name already taken by a unit berth did not make (another program
/// started `berth-<id>.scope` while berth was creating it): CreateContainer is
/// FailedPrecondition naming the unit, berth never stops that unit, and berth's half-made
/// container leaves nothing behind. The creation is held after its record is written
/// (BERTH_FAULT_HOLD) so the test learns the id and takes the name first, without racing.
#[tokio::test(flavor = "multi_thread")]
async fn a_scope_name_taken_by_a_unit_berth_did_not_make_is_failed_precondition_and_left_running() {
    if !systemd_booted() {
        return assert_refused_without_systemd();
    }
    let hold = slow(std::time::Duration::from_secs(3)).as_millis();
    let hold = format!("container.create.after_record={hold}");
    let daemon = TestDaemon::start_systemd_with_env(&[("BERTH_FAULT_HOLD", &hold)]).await;
    let (mut rt, pod_id) = pod(&daemon, pod_config("taken")).await;
    let mut rt1 = daemon.runtime().await;
    let pod1 = pod_id.clone();
    let creating = tokio::spawn(async move {
        let config = container_config("taken", BUSYBOX, &["sleep", "1000"]);
        create_container(&mut rt1, &pod1, &pod_config("unused"), config).await
    });
    // The record on disk: the creation reached the hold, and its directory names the id.
    let records = daemon.root.join("containers");
    let deadline = std::time::Instant::now() + slow(std::time::Duration::from_secs(30));
    let id = loop {
        let found = std::fs::read_dir(&records).ok().and_then(|dir| {
            dir.flatten()
                .find(|e| e.path().join("container.json").exists())
                .map(|e| e.file_name().to_string_lossy().to_string())
        });
        if let Some(id) = found {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the creation never wrote its record"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let scope = format!("berth-{id}.scope");
    let mut other = Command::new("systemd-run")
        .args(["--scope", "--unit", &scope, "--description", "not berth's"])
        .args(["sleep", "1000"])
        .spawn()
        .expect("systemd-run");
    wait_state(&scope, "active").await;

    let err = creating
        .await
        .unwrap()
        .expect_err("a container whose scope name is taken");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&scope) && err.message().contains("berth did not make it"),
        "{err:?}"
    );
    let left = show(&scope, &["ActiveState", "Description"]);
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(
        left["ActiveState"], "active",
        "berth stopped another's unit"
    );
    assert_eq!(left["Description"], "not berth's");
    assert!(
        daemon
            .log_text()
            .contains("not stopping a unit berth did not make"),
        "{}",
        daemon.log_text()
    );
    let listed = rt
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    assert!(
        listed.is_empty(),
        "a refused container is listed: {listed:?}"
    );
    remove_pod(&mut rt, &pod_id).await;
    daemon.assert_no_leaks("after a refused scope name");
}

/// One process of a container OOM-killed under its scope: the container's other processes
/// keep running and so does the scope. systemd stops a scope (every process in it) when
/// one of them is OOM-killed unless the scope's OOMPolicy is `continue`, which a delegated
/// scope gets by default (systemd 253, and Debian 12's 252.39 in the test VM); berth sets
/// no OOMPolicy, since a systemd without it for scopes would refuse the whole unit.
#[tokio::test(flavor = "multi_thread")]
async fn an_oom_kill_of_one_process_under_a_scope_leaves_the_others_running() {
    if !systemd_booted() {
        return assert_refused_without_systemd();
    }
    let daemon = TestDaemon::start_systemd().await;
    let (mut rt, pod_id) = pod(&daemon, pod_config("oom-one")).await;
    // The subshell holding 100 MB is the OOM killer's pick; the shell then says so and
    // sleeps on.
    let command = [
        "sh",
        "-c",
        "(x=$(head -c 100000000 /dev/zero | tr '\\0' a)); echo child-killed; exec sleep 1000",
    ];
    let id = run(
        &mut rt,
        &pod_id,
        limited("oom-one", &command, 16 << 20, 0, 0),
    )
    .await;
    let scope = format!("berth-{id}.scope");
    let events = Path::new("/sys/fs/cgroup")
        .join(daemon.pod_cgroup_dir(&pod_id))
        .join(&scope)
        .join("memory.events");
    let deadline = std::time::Instant::now() + slow(std::time::Duration::from_secs(30));
    loop {
        let killed = read(&events)
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if killed > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no OOM kill in {}",
            events.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // systemd handles the OOM event on its own schedule: give it time to act (a settle
    // wait, not a timed assertion), then the scope and the container must still run.
    tokio::time::sleep(slow(std::time::Duration::from_secs(2))).await;
    let unit = show(&scope, &["ActiveState", "Result", "OOMPolicy"]);
    let st = container_status(&mut rt, &id).await;
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerRunning as i32,
        "the container died with its OOM-killed child: {st:?}, scope {unit:?}"
    );
    assert_eq!(unit["ActiveState"], "active", "{unit:?}");
    assert_eq!(unit["OOMPolicy"], "continue", "{unit:?}");
    remove_pod(&mut rt, &pod_id).await;
    assert_gone(&scope).await;
    daemon.assert_no_leaks("after removing the pod");
}
