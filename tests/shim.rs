//! The shim, init and pause for real (root): a pause process in new IPC/UTS/PID
//! namespaces inside a test netns and cgroup, reconnects, kill, exit files, failing
//! init, shutdown; plus the memory cost of shims and pauses.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth::linux::cgroup::Cgroups;
use berth::shim::client::{ProcessState, connect, spawn};
use berth::shim::{PauseSpec, ShimClient, SpawnOptions, write_pause_bundle};
use berth::shim_api::ProcessStatus;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests/shim.rs needs root (namespaces, cgroups, ip netns)"
    );
    for tool in ["ip", "nsenter"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool} >/dev/null"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "tests/shim.rs needs `{tool}` on PATH");
    }
}

fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A network namespace made with `ip netns add`, deleted on drop.
struct TestNetns {
    name: String,
}

impl TestNetns {
    fn new() -> Self {
        let name = format!("berth-shim-test-{}", suffix());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {name} failed");
        TestNetns { name }
    }
    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// A test cgroup `berth-test/<random>`, killed and removed on drop (the parent too,
/// when empty).
struct TestCgroup {
    cgroups: Cgroups,
    path: String,
}

impl TestCgroup {
    fn new() -> Self {
        TestCgroup {
            cgroups: Cgroups::detect().unwrap(),
            path: format!("berth-test/{}", suffix()),
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.cgroups.kill_all(&self.path, Duration::from_secs(2));
        let _ = self.cgroups.remove(&self.path);
        // Other tests may still use the parent; removal then fails with EBUSY, fine.
        for hierarchy in self.cgroups.hierarchies() {
            let _ = std::fs::remove_dir(hierarchy.mount_point.join("berth-test"));
        }
    }
}

/// Kills a shim and its children if a test fails before shutting it down.
struct ShimGuard(u32);

impl Drop for ShimGuard {
    fn drop(&mut self) {
        if !alive(self.0) {
            return;
        }
        for child in children_of(self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn spawn_options(state: &Path, id: &str) -> SpawnOptions {
    let mut opts = SpawnOptions::new(id, &state.join("s").join("shim.sock"), state);
    // BERTH_TEST_BINARY lets the memory figures be taken with a release build.
    opts.binary = std::env::var_os("BERTH_TEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_berth")));
    opts.log_level = Some("debug".into());
    opts
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie is not alive; field 3 is the state.
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                children.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    children
}

fn ns_id(pid: &str, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap()
        .display()
        .to_string()
}

fn nsenter(pid: u32, flag: &str, command: &[&str]) -> String {
    let output = Command::new("nsenter")
        .args(["-t", &pid.to_string(), flag, "--"])
        .args(command)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "nsenter {flag} {command:?}: {output:?}"
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// (RSS, PSS) in KiB from /proc/<pid>/smaps_rollup.
fn memory_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap()
    };
    (field("Rss:"), field("Pss:"))
}

async fn wait_exited(client: &mut ShimClient, id: &str) -> ProcessState {
    let start = Instant::now();
    loop {
        let state = client.state(id).await.unwrap();
        if state.status == ProcessStatus::Exited {
            return state;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{id} did not exit: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_pod_lifecycle() {
    require_root();
    let state = tempfile::tempdir().unwrap();
    let netns = TestNetns::new();
    let cgroup = TestCgroup::new();
    let id = format!("pod{}", suffix());

    let mut client = spawn(spawn_options(state.path(), &id)).await.unwrap();
    let shim_pid = client.spawned_pid();
    assert!(shim_pid > 0);
    let _guard = ShimGuard(shim_pid);
    let (sandbox_id, info_pid) = client.info().await.unwrap();
    assert_eq!((sandbox_id.as_str(), info_pid), (id.as_str(), shim_pid));
    // The shim is detached from us: its own session, not our child.
    let shim_stat = std::fs::read_to_string(format!("/proc/{shim_pid}/stat")).unwrap();
    let fields: Vec<&str> = shim_stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_ne!(
        fields[1],
        std::process::id().to_string(),
        "shim's parent is the test"
    );
    assert_eq!(
        fields[3],
        shim_pid.to_string(),
        "shim leads its own session"
    );
    let socket_mode = std::fs::metadata(state.path().join("s/shim.sock"))
        .unwrap()
        .mode();
    assert_eq!(socket_mode & 0o777, 0o600);

    let bundle = state.path().join("bundles").join(&id);
    let sysctls: BTreeMap<String, String> = [
        ("net.ipv4.ip_unprivileged_port_start", "0"),
        ("kernel.shmmni", "1000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    write_pause_bundle(
        &bundle,
        &PauseSpec {
            sandbox_id: id.clone(),
            netns: Some(netns.path()),
            hostname: Some("berth-test".into()),
            cgroup_path: Some(cgroup.path.clone()),
            sysctls,
            share_pid_ns: true,
            host_ipc: false,
            host_uts: false,
            oom_score_adj: Some(-998),
        },
    )
    .unwrap();
    let pid = client.create(&id, &bundle, true).await.unwrap();
    let pid_s = pid.to_string();

    // Namespaces: new ipc/uts/pid, the test netns.
    for ns in ["ipc", "uts", "pid"] {
        assert_ne!(
            ns_id(&pid_s, ns),
            ns_id("self", ns),
            "{ns} namespace is the host's"
        );
    }
    let netns_inode = std::fs::metadata(netns.path()).unwrap().ino();
    assert_eq!(ns_id(&pid_s, "net"), format!("net:[{netns_inode}]"));
    // PID 1 of its namespace.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        nspid.ends_with("\t1"),
        "not PID 1 of its namespace: {nspid}"
    );
    assert!(status.contains("State:\tS (sleeping)"), "{status}");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "pause"
    );
    assert_eq!(nsenter(pid, "-u", &["hostname"]), "berth-test");
    assert_eq!(
        nsenter(
            pid,
            "-n",
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]
        ),
        "0"
    );
    assert_eq!(
        nsenter(pid, "-i", &["cat", "/proc/sys/kernel/shmmni"]),
        "1000"
    );
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/shmmni")
            .unwrap()
            .trim(),
        "1000",
        "the IPC sysctl leaked to the host"
    );
    // oom_score_adj -998 was asked; without CAP_SYS_RESOURCE it stays the shim's value.
    let shim_oom = std::fs::read_to_string(format!("/proc/{shim_pid}/oom_score_adj")).unwrap();
    let pause_oom = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    assert_eq!(pause_oom, shim_oom);
    // Cgroup membership in every hierarchy.
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in own.lines() {
        assert!(
            line.ends_with(&format!("/{}", cgroup.path)),
            "not in the test cgroup: {line}"
        );
    }
    assert_eq!(
        cgroup.cgroups.procs(&cgroup.path).unwrap(),
        vec![pid as i32]
    );
    let state_now = client.state(&id).await.unwrap();
    assert_eq!(state_now.status, ProcessStatus::Running);
    assert!(state_now.started_at > 0);
    let shim_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("shim.json")).unwrap()).unwrap();
    assert_eq!(shim_json["processes"][&id]["pid"], pid);
    assert_eq!(shim_json["processes"][&id]["status"], "running");

    let (shim_rss, shim_pss) = memory_kib(shim_pid);
    let (pause_rss, pause_pss) = memory_kib(pid);
    println!(
        "memory, one pod: shim RSS {shim_rss} KiB PSS {shim_pss} KiB; pause RSS {pause_rss} KiB PSS {pause_pss} KiB"
    );

    // The daemon side goes away and comes back.
    drop(client);
    let mut client = connect(&state.path().join("s/shim.sock")).await.unwrap();
    assert_eq!(client.info().await.unwrap(), (id.clone(), shim_pid));
    assert_eq!(client.state(&id).await.unwrap().pid, pid);

    // A failing init reports the step and leaves nothing behind.
    let bad_bundle = state.path().join("bundles/bad");
    let missing = PathBuf::from(format!("/run/netns/berth-missing-{}", suffix()));
    write_pause_bundle(
        &bad_bundle,
        &PauseSpec {
            sandbox_id: "bad".into(),
            netns: Some(missing.clone()),
            share_pid_ns: true,
            ..PauseSpec::default()
        },
    )
    .unwrap();
    let err = client.create("bad", &bad_bundle, false).await.unwrap_err();
    let berth::shim::client::ClientError::Rpc { source, .. } = &err else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!(source.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        source.message(),
        format!(
            "join netns {}: no such file or directory",
            missing.display()
        )
    );
    wait_until(
        "the failed init to be reaped",
        Duration::from_secs(5),
        || children_of(shim_pid) == vec![pid],
    );
    assert!(
        client.state("bad").await.is_err(),
        "failed process still listed"
    );

    // Kill: exit 128+9, recorded in State and in the exit file.
    client.kill(&id, 9, false).await.unwrap();
    let exited = wait_exited(&mut client, &id).await;
    assert_eq!(exited.exit_code, 137);
    assert!(exited.exited_at >= exited.started_at);
    let exit_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("exits").join(&id)).unwrap())
            .unwrap();
    assert_eq!(exit_file["exit_code"], 137);
    assert_eq!(exit_file["exited_at"], exited.exited_at);
    client.delete(&id).await.unwrap();
    assert!(client.state(&id).await.is_err());

    // A second pause (without a pid namespace) so Shutdown has something to kill.
    let bundle2 = state.path().join("bundles/second");
    write_pause_bundle(
        &bundle2,
        &PauseSpec {
            sandbox_id: id.clone(),
            cgroup_path: Some(cgroup.path.clone()),
            ..PauseSpec::default()
        },
    )
    .unwrap();
    let pid2 = client.create("second", &bundle2, false).await.unwrap();
    assert_eq!(
        client.state("second").await.unwrap().status,
        ProcessStatus::Created
    );
    client.start("second").await.unwrap();
    assert_eq!(
        client.state("second").await.unwrap().status,
        ProcessStatus::Running
    );
    assert!(alive(pid2));

    client.shutdown().await.unwrap();
    wait_until("the shim to exit", Duration::from_secs(5), || {
        !alive(shim_pid)
    });
    assert!(!alive(pid2), "pause left running after shutdown");
    assert!(
        !state.path().join("s/shim.sock").exists(),
        "socket left behind"
    );
    assert!(cgroup.cgroups.procs(&cgroup.path).unwrap().is_empty());
    cgroup.cgroups.remove(&cgroup.path).unwrap();
    for hierarchy in cgroup.cgroups.hierarchies() {
        assert!(!hierarchy.mount_point.join(&cgroup.path).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_ten_pods() {
    require_root();
    let state = tempfile::tempdir().unwrap();
    let mut pods = Vec::new();
    let mut guards = Vec::new();
    for n in 0..10 {
        let dir = state.path().join(format!("pod{n}"));
        let id = format!("mem{n}{}", suffix());
        let mut client = spawn(spawn_options(&dir, &id)).await.unwrap();
        guards.push(ShimGuard(client.spawned_pid()));
        let bundle = dir.join("bundle");
        write_pause_bundle(
            &bundle,
            &PauseSpec {
                sandbox_id: id.clone(),
                hostname: Some(format!("mem{n}")),
                share_pid_ns: true,
                ..PauseSpec::default()
            },
        )
        .unwrap();
        let pid = client.create(&id, &bundle, true).await.unwrap();
        pods.push((client, client_pid_of(&dir), pid));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut rss, mut pss, mut shim_pss, mut pause_pss) = (0, 0, 0, 0);
    for (client, shim_pid, pid) in &pods {
        assert_eq!(client.spawned_pid(), *shim_pid);
        let (s_rss, s_pss) = memory_kib(*shim_pid);
        let (p_rss, p_pss) = memory_kib(*pid);
        rss += s_rss + p_rss;
        pss += s_pss + p_pss;
        shim_pss += s_pss;
        pause_pss += p_pss;
    }
    println!(
        "memory, 10 pods: per pod RSS {} KiB, PSS {} KiB (shim PSS {} KiB, pause PSS {} KiB)",
        rss / 10,
        pss / 10,
        shim_pss / 10,
        pause_pss / 10
    );
    assert!(pss > 0 && rss >= pss);
    // For looking at the processes by hand: BERTH_TEST_HOLD=<seconds>.
    if let Some(secs) = std::env::var("BERTH_TEST_HOLD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    for (mut client, shim_pid, _) in pods {
        client.shutdown().await.unwrap();
        wait_until("a shim to exit", Duration::from_secs(5), || {
            !alive(shim_pid)
        });
    }
}

/// The shim's pid from its shim.json (written by the shim itself).
fn client_pid_of(state_dir: &Path) -> u32 {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("shim.json")).unwrap()).unwrap();
    record["shim_pid"].as_u64().unwrap() as u32
}
