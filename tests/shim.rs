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
use berth::shim::{CreateOptions, PauseSpec, ShimClient, SpawnOptions, write_pause_bundle};
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

fn started() -> CreateOptions {
    CreateOptions {
        start: true,
        ..CreateOptions::default()
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
    let pid = client.create(&id, &bundle, started()).await.unwrap();
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
    // Asleep in pause(); on a loaded machine it may not have got there yet when first read.
    let mut status = status;
    for _ in 0..100 {
        if status.contains("State:\tS (sleeping)") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    }
    assert!(status.contains("State:\tS (sleeping)"), "{status}");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "berth-pause"
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
    let err = client
        .create("bad", &bad_bundle, CreateOptions::default())
        .await
        .unwrap_err();
    let berth::shim::client::ClientError::Rpc { status: source, .. } = &err else {
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
    let pid2 = client
        .create("second", &bundle2, CreateOptions::default())
        .await
        .unwrap();
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
        let pid = client.create(&id, &bundle, started()).await.unwrap();
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

// ---- Containers: stdio, the CRI log, exits and OOM ----

/// A "container" without a rootfs (init does not mount one yet): the host's view, no
/// new namespaces, running `args`.
fn write_container_bundle(dir: &Path, args: &[&str], terminal: bool, cgroup: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    let mut linux = serde_json::json!({ "namespaces": [] });
    if let Some(cgroup) = cgroup {
        linux["cgroupsPath"] = serde_json::json!(cgroup);
    }
    let config = serde_json::json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
        },
        "linux": linux,
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
}

/// One parsed CRI log record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    stream: String,
    tag: String,
    content: String,
}

/// Parses a CRI log file, checking every line's form (timestamp, stream, tag) and that
/// the timestamps never go backwards.
fn read_log(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "log does not end with a newline"
    );
    let mut last_timestamp = String::new();
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (timestamp, stream, tag, content) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts
                    .next()
                    .unwrap_or_else(|| panic!("short record {line:?}")),
            );
            // 2016-10-06T00:17:09.669794202Z
            let bytes = timestamp.as_bytes();
            assert_eq!(bytes.len(), 30, "timestamp {timestamp:?}");
            for (i, b) in bytes.iter().enumerate() {
                let expected_sep = match i {
                    4 | 7 => Some(b'-'),
                    10 => Some(b'T'),
                    13 | 16 => Some(b':'),
                    19 => Some(b'.'),
                    29 => Some(b'Z'),
                    _ => None,
                };
                match expected_sep {
                    Some(sep) => assert_eq!(*b, sep, "timestamp {timestamp:?}"),
                    None => assert!(b.is_ascii_digit(), "timestamp {timestamp:?}"),
                }
            }
            assert!(timestamp >= last_timestamp.as_str(), "timestamps go back");
            last_timestamp = timestamp.to_string();
            assert!(matches!(stream, "stdout" | "stderr"), "stream {stream:?}");
            assert!(matches!(tag, "F" | "P"), "tag {tag:?}");
            Record {
                stream: stream.into(),
                tag: tag.into(),
                content: content.into(),
            }
        })
        .collect()
}

fn record(stream: &str, tag: &str, content: &str) -> Record {
    Record {
        stream: stream.into(),
        tag: tag.into(),
        content: content.into(),
    }
}

fn of_stream(records: &[Record], stream: &str) -> Vec<Record> {
    records
        .iter()
        .filter(|r| r.stream == stream)
        .cloned()
        .collect()
}

/// A shim of its own for one test, shut down (or killed) at the end.
struct TestShim {
    state: tempfile::TempDir,
    client: ShimClient,
    pid: u32,
    _guard: ShimGuard,
}

impl TestShim {
    async fn new() -> Self {
        require_root();
        let state = tempfile::tempdir().unwrap();
        let id = format!("ctr{}", suffix());
        let client = spawn(spawn_options(state.path(), &id)).await.unwrap();
        let pid = client.spawned_pid();
        TestShim {
            state,
            client,
            pid,
            _guard: ShimGuard(pid),
        }
    }

    fn path(&self) -> &Path {
        self.state.path()
    }

    async fn shutdown(mut self) {
        self.client.shutdown().await.unwrap();
        let pid = self.pid;
        wait_until("the shim to exit", Duration::from_secs(5), || !alive(pid));
    }
}

fn exit_file(state: &Path, id: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(state.join("exits").join(id)).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_output_is_logged_in_cri_format_before_the_exit() {
    let mut shim = TestShim::new().await;
    let bundle = shim.path().join("bundles/c1");
    write_container_bundle(
        &bundle,
        &[
            "/bin/sh",
            "-c",
            "echo out; echo err >&2; printf partial; exit 3",
        ],
        false,
        None,
    );
    // The log's directory does not exist yet: the shim makes it.
    let log = shim.path().join("logs/c1/0.log");
    let options = CreateOptions {
        log_path: Some(log.clone()),
        ..CreateOptions::default()
    };
    let pid = shim.client.create("c1", &bundle, options).await.unwrap();
    // Created, not started: nothing ran yet.
    assert_eq!(read_log(&log), vec![]);
    assert_eq!(
        std::fs::metadata(&log).unwrap().mode() & 0o777,
        0o640 & !umask()
    );
    shim.client.start("c1").await.unwrap();
    let exited = wait_exited(&mut shim.client, "c1").await;
    assert_eq!(
        (exited.pid, exited.exit_code, exited.oom_killed),
        (pid, 3, false)
    );
    // Exited means drained: every record is in the file already.
    let records = read_log(&log);
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(
        of_stream(&records, "stdout"),
        vec![
            record("stdout", "F", "out"),
            record("stdout", "P", "partial")
        ]
    );
    assert_eq!(
        of_stream(&records, "stderr"),
        vec![record("stderr", "F", "err")]
    );
    let exit = exit_file(shim.path(), "c1");
    assert_eq!(exit["exit_code"], 3);
    assert_eq!(exit["exited_at"], exited.exited_at);
    assert_eq!(exit["oom_killed"], false);
    shim.client.delete("c1").await.unwrap();
    shim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_split_and_stdin_is_dev_null_unless_asked() {
    let mut shim = TestShim::new().await;
    let bundle = shim.path().join("bundles/long");
    // 40 KiB line, then a `cat` that must see EOF at once (stdin is /dev/null).
    write_container_bundle(
        &bundle,
        &[
            "/bin/sh",
            "-c",
            "head -c 40960 /dev/zero | tr '\\0' a; echo; cat; echo done",
        ],
        false,
        None,
    );
    let log = shim.path().join("long.log");
    let options = CreateOptions {
        start: true,
        log_path: Some(log.clone()),
        ..CreateOptions::default()
    };
    shim.client.create("long", &bundle, options).await.unwrap();
    assert_eq!(wait_exited(&mut shim.client, "long").await.exit_code, 0);
    let records = read_log(&log);
    let shape: Vec<(&str, &str, usize)> = records
        .iter()
        .map(|r| (r.stream.as_str(), r.tag.as_str(), r.content.len()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("stdout", "P", 16384),
            ("stdout", "P", 16384),
            ("stdout", "F", 8192),
            ("stdout", "F", 4)
        ]
    );
    assert!(
        records[..3]
            .iter()
            .all(|r| r.content.bytes().all(|b| b == b'a'))
    );
    assert_eq!(records[3].content, "done");

    // With stdin the shim keeps the pipe open: a reader waits instead of seeing EOF.
    let bundle = shim.path().join("bundles/stdin");
    write_container_bundle(
        &bundle,
        &["/bin/sh", "-c", "timeout 0.3 cat; echo cat=$?"],
        false,
        None,
    );
    let log = shim.path().join("stdin.log");
    let options = CreateOptions {
        start: true,
        log_path: Some(log.clone()),
        stdin: true,
        ..CreateOptions::default()
    };
    shim.client.create("stdin", &bundle, options).await.unwrap();
    assert_eq!(wait_exited(&mut shim.client, "stdin").await.exit_code, 0);
    // timeout(1) exits 124 when it had to stop cat.
    assert_eq!(read_log(&log), vec![record("stdout", "F", "cat=124")]);
    shim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_log_moves_later_lines_to_the_new_file_losing_none() {
    let mut shim = TestShim::new().await;
    let bundle = shim.path().join("bundles/rot");
    let trigger = shim.path().join("trigger");
    // "tw" waits in the shim's line buffer while the file is rotated.
    let script = format!(
        "echo one; printf tw; while [ ! -e {} ]; do sleep 0.02; done; echo o; echo three >&2",
        trigger.display()
    );
    write_container_bundle(&bundle, &["/bin/sh", "-c", &script], false, None);
    let log = shim.path().join("rot.log");
    let options = CreateOptions {
        start: true,
        log_path: Some(log.clone()),
        ..CreateOptions::default()
    };
    shim.client.create("rot", &bundle, options).await.unwrap();
    wait_until("the first line", Duration::from_secs(5), || {
        !read_log(&log).is_empty()
    });
    let rotated = shim.path().join("rot.log.20240101-000000");
    std::fs::rename(&log, &rotated).unwrap();
    shim.client.reopen_log("rot").await.unwrap();
    assert!(log.exists(), "reopen did not create the file");
    std::fs::write(&trigger, "").unwrap();
    assert_eq!(wait_exited(&mut shim.client, "rot").await.exit_code, 0);
    assert_eq!(read_log(&rotated), vec![record("stdout", "F", "one")]);
    let mut new = read_log(&log);
    new.sort_by(|a, b| a.stream.cmp(&b.stream));
    assert_eq!(
        new,
        vec![record("stderr", "F", "three"), record("stdout", "F", "two")]
    );
    // Bad requests: an unknown id, a process without a log.
    let err = shim.client.reopen_log("nosuch").await.unwrap_err();
    assert!(
        matches!(&err, berth::shim::client::ClientError::Rpc { status: source, .. } if source.code() == tonic::Code::NotFound),
        "{err:?}"
    );
    shim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_output_is_logged_as_stdout() {
    let mut shim = TestShim::new().await;
    let bundle = shim.path().join("bundles/tty");
    write_container_bundle(
        &bundle,
        &[
            "/bin/sh",
            "-c",
            "test -t 0 && test -t 1 && test -t 2 && stty size; echo err >&2; printf end",
        ],
        true,
        None,
    );
    let log = shim.path().join("tty.log");
    let options = CreateOptions {
        start: true,
        log_path: Some(log.clone()),
        tty: true,
        ..CreateOptions::default()
    };
    shim.client.create("tty", &bundle, options).await.unwrap();
    assert_eq!(wait_exited(&mut shim.client, "tty").await.exit_code, 0);
    assert_eq!(
        read_log(&log),
        vec![
            record("stdout", "F", "24 80"),
            record("stdout", "F", "err"),
            record("stdout", "P", "end")
        ]
    );

    // No log, no tty, no stdin: the output goes nowhere, not into the shim's own log.
    let bundle = shim.path().join("bundles/quiet");
    write_container_bundle(
        &bundle,
        &["/bin/sh", "-c", "echo quiet-marker; echo quiet-marker >&2"],
        false,
        None,
    );
    shim.client
        .create("quiet", &bundle, started())
        .await
        .unwrap();
    assert_eq!(wait_exited(&mut shim.client, "quiet").await.exit_code, 0);
    let shim_log = std::fs::read_to_string(shim.path().join("shim.log")).unwrap();
    assert!(shim_log.contains("process exited"), "{shim_log}");
    assert!(!shim_log.contains("quiet-marker"), "{shim_log}");
    shim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_recorded_with_exit_137() {
    let mut shim = TestShim::new().await;
    let cgroup = TestCgroup::new();
    cgroup.cgroups.create(&cgroup.path).unwrap();
    let limit = 8 * 1024 * 1024;
    let mut limited = false;
    for hierarchy in cgroup.cgroups.hierarchies() {
        let dir = hierarchy.mount_point.join(&cgroup.path);
        if hierarchy.v2 && dir.join("memory.max").exists() {
            std::fs::write(dir.join("memory.max"), limit.to_string()).unwrap();
            let _ = std::fs::write(dir.join("memory.swap.max"), "0");
            limited = true;
        } else if hierarchy.controllers.iter().any(|c| c == "memory") {
            std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
            // Without swap accounting the file is absent; then there is no swap to use.
            let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
            limited = true;
        }
    }
    assert!(
        limited,
        "no memory controller to limit the test cgroup with"
    );
    let bundle = shim.path().join("bundles/oom");
    write_container_bundle(
        &bundle,
        &[
            "/bin/sh",
            "-c",
            "echo start; x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
        ],
        false,
        Some(&cgroup.path),
    );
    let log = shim.path().join("oom.log");
    let options = CreateOptions {
        start: true,
        log_path: Some(log.clone()),
        cgroup_path: Some(cgroup.path.clone()),
        ..CreateOptions::default()
    };
    shim.client.create("oom", &bundle, options).await.unwrap();
    let exited = wait_exited(&mut shim.client, "oom").await;
    assert_eq!(
        (exited.exit_code, exited.oom_killed),
        (137, true),
        "{exited:?}"
    );
    assert_eq!(exit_file(shim.path(), "oom")["oom_killed"], true);
    // (head and tr complain on stderr when the shell dies under them.)
    assert_eq!(
        of_stream(&read_log(&log), "stdout"),
        vec![record("stdout", "F", "start")]
    );

    // A normal exit in the same cgroup afterwards is not an OOM kill.
    let bundle = shim.path().join("bundles/fine");
    write_container_bundle(&bundle, &["/bin/true"], false, Some(&cgroup.path));
    let options = CreateOptions {
        start: true,
        log_path: Some(shim.path().join("fine.log")),
        cgroup_path: Some(cgroup.path.clone()),
        ..CreateOptions::default()
    };
    shim.client.create("fine", &bundle, options).await.unwrap();
    let exited = wait_exited(&mut shim.client, "fine").await;
    assert_eq!((exited.exit_code, exited.oom_killed), (0, false));
    shim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_waits_at_most_two_seconds_for_a_grandchild_holding_the_output() {
    let mut shim = TestShim::new().await;
    let bundle = shim.path().join("bundles/bg");
    let cgroup = TestCgroup::new();
    write_container_bundle(
        &bundle,
        &["/bin/sh", "-c", "sleep 30 & echo main done"],
        false,
        Some(&cgroup.path),
    );
    let log = shim.path().join("bg.log");
    let options = CreateOptions {
        start: true,
        log_path: Some(log.clone()),
        cgroup_path: Some(cgroup.path.clone()),
        ..CreateOptions::default()
    };
    let started = Instant::now();
    shim.client.create("bg", &bundle, options).await.unwrap();
    let exited = wait_exited(&mut shim.client, "bg").await;
    let waited = started.elapsed();
    assert_eq!(exited.exit_code, 0);
    assert!(
        waited >= Duration::from_millis(1900),
        "exit recorded after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(4),
        "exit recorded after {waited:?}"
    );
    assert_eq!(read_log(&log), vec![record("stdout", "F", "main done")]);
    // kill --all reaches the grandchild through the cgroup from Create.
    assert_eq!(cgroup.cgroups.procs(&cgroup.path).unwrap().len(), 1);
    shim.client.kill("bg", 9, true).await.unwrap();
    wait_until("the grandchild to die", Duration::from_secs(5), || {
        cgroup.cgroups.procs(&cgroup.path).unwrap().is_empty()
    });
    shim.shutdown().await;
}

fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap()
}

// ---- The Events stream ----

/// The next exit on `stream`, at most 10 s away (a hang guard, not a timing).
async fn next_exit(
    stream: &mut berth::shim::client::ExitStream,
) -> berth::shim::client::ProcessExit {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("no exit came on the events stream")
        .expect("the events stream broke")
        .expect("the events stream ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_replay_the_held_exits_then_push_each_new_one_and_end_at_shutdown() {
    let mut shim = TestShim::new().await;
    // c1 exits before anyone subscribes.
    let early = shim.path().join("bundles/c1");
    write_container_bundle(&early, &["/bin/sh", "-c", "exit 3"], false, None);
    let early_pid = shim.client.create("c1", &early, started()).await.unwrap();
    wait_exited(&mut shim.client, "c1").await;

    let mut first = shim.client.events().await.unwrap();
    let replayed = next_exit(&mut first).await;
    assert_eq!(
        (replayed.id.as_str(), replayed.pid, replayed.exit_code),
        ("c1", early_pid, 3)
    );
    assert!(
        replayed.replayed,
        "an exit from before the subscription is a replay"
    );
    assert_eq!(
        replayed.exited_at,
        exit_file(shim.path(), "c1")["exited_at"],
        "the event and the exit file agree"
    );

    // c2 exits while subscribed: pushed as it happens, once its exit file is written.
    let late = shim.path().join("bundles/c2");
    write_container_bundle(&late, &["sleep", "1000"], false, None);
    let late_pid = shim.client.create("c2", &late, started()).await.unwrap();
    shim.client.kill("c2", libc::SIGKILL, false).await.unwrap();
    let pushed = next_exit(&mut first).await;
    assert_eq!(
        (
            pushed.id.as_str(),
            pushed.pid,
            pushed.exit_code,
            pushed.replayed
        ),
        ("c2", late_pid, 137, false)
    );
    assert_eq!(exit_file(shim.path(), "c2")["exit_code"], 137);

    // A second subscriber (a daemon that reconnected) gets every exit still held; a
    // deleted process is no longer held.
    shim.client.delete("c1").await.unwrap();
    let mut second = shim.client.events().await.unwrap();
    let again = next_exit(&mut second).await;
    assert_eq!((again.id.as_str(), again.replayed), ("c2", true));

    // Shutdown ends the streams (the daemon's subscription must not hold the shim up).
    let mut client = shim.client.clone();
    client.shutdown().await.unwrap();
    for stream in [&mut first, &mut second] {
        let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the stream did not end at shutdown");
        assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    }
    let pid = shim.pid;
    wait_until("the shim to exit", Duration::from_secs(5), || !alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shim_errors_reach_the_client_with_their_code_and_cause() {
    let mut shim = TestShim::new().await;
    let missing = shim.client.state("nope").await.unwrap_err();
    let berth::shim::client::ClientError::Rpc { status, .. } = &missing else {
        panic!("{missing:?}");
    };
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "process nope not found");
    // init's own words for a bundle it cannot run, as FailedPrecondition.
    let broken = shim.path().join("bundles/broken");
    write_container_bundle(&broken, &["/nonexistent/binary"], false, None);
    let err = shim
        .client
        .create("broken", &broken, started())
        .await
        .unwrap_err();
    let daemon_status = tonic::Status::from(berth::Error::from(err));
    assert_eq!(
        daemon_status.code(),
        tonic::Code::FailedPrecondition,
        "{daemon_status:?}"
    );
    assert!(
        daemon_status.message().contains("/nonexistent/binary"),
        "{}",
        daemon_status.message()
    );
    shim.shutdown().await;
}
