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
    let mut config = pod_config("kubelet-slice");
    config.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: parent.clone(),
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
