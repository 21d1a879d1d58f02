//! Starts the real `berth` binary on a private root, state dir, socket, CNI network and
//! cgroup parent, and talks CRI to it over the unix socket. Root only (CI is root).
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth::cri::api as cri;
use berth::cri::api::image_service_client::ImageServiceClient;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

pub mod streaming;

pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// Fails (never skips) when the machine lacks what the tests need.
pub fn require_root_and_tools() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests start real pods and must run as root"
    );
    for plugin in ["bridge", "host-local", "portmap", "loopback"] {
        assert!(
            Path::new(CNI_BIN_DIR).join(plugin).exists(),
            "CNI plugin {plugin} missing in {CNI_BIN_DIR}: run hack/install-deps.sh"
        );
    }
}

/// A network slot (bridge name and /24) held exclusively by one test daemon, across
/// test threads and test processes, so parallel tests never share a bridge.
pub struct NetSlot {
    pub index: u32,
    lock: PathBuf,
}

impl NetSlot {
    pub fn acquire() -> NetSlot {
        let dir = Path::new("/run/berth-test-netslots");
        fs::create_dir_all(dir).expect("creating net slot dir");
        for index in 10..250u32 {
            let lock = dir.join(index.to_string());
            let created = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&lock);
            if let Ok(mut f) = created {
                use std::io::Write;
                let _ = write!(f, "{}", std::process::id());
                return NetSlot { index, lock };
            }
            // A slot left by a test process that died is free again.
            let owner: Option<u32> = fs::read_to_string(&lock).ok().and_then(|s| s.parse().ok());
            if owner.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = fs::remove_file(&lock);
            }
        }
        panic!("no free test network slot under /run/berth-test-netslots");
    }

    pub fn bridge(&self) -> String {
        format!("berthtest{}", self.index)
    }

    pub fn subnet(&self) -> String {
        format!("10.123.{}.0/24", self.index)
    }

    pub fn subnet_prefix(&self) -> String {
        format!("10.123.{}.", self.index)
    }
}

impl Drop for NetSlot {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_file(&self.lock);
    }
}

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub ipam_dir: PathBuf,
    pub registry_dir: PathBuf,
    pub cgroup_parent: String,
    /// Whether this daemon runs the systemd cgroup driver (else cgroupfs).
    pub systemd: bool,
    pub net: NetSlot,
    pub log: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// Environment of the next spawn (BERTH_FAULT for the crash tests).
    env: Vec<(String, String)>,
}

impl TestDaemon {
    /// A daemon with the bridge network configured.
    pub async fn start() -> TestDaemon {
        Self::start_with(true, &[]).await
    }

    pub async fn start_with(network: bool, extra_args: &[&str]) -> TestDaemon {
        Self::start_full(network, extra_args, &[]).await
    }

    /// A daemon with the bridge network that kills itself at fault point `point`.
    pub async fn start_armed(point: &str) -> TestDaemon {
        Self::start_full(true, &[], &[("BERTH_FAULT", point)]).await
    }

    pub async fn start_full(
        network: bool,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> TestDaemon {
        Self::start_driver(systemd_driver(), network, extra_args, env).await
    }

    /// A daemon with the bridge network and the systemd cgroup driver, whatever
    /// `BERTH_TEST_CGROUP_DRIVER` says (tests/systemd.rs).
    pub async fn start_systemd() -> TestDaemon {
        Self::start_driver(true, true, &[], &[]).await
    }

    /// The same with extra environment for the daemon.
    pub async fn start_systemd_with_env(env: &[(&str, &str)]) -> TestDaemon {
        Self::start_driver(true, true, &[], env).await
    }

    async fn start_driver(
        systemd: bool,
        network: bool,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> TestDaemon {
        require_root_and_tools();
        let dir = tempfile::Builder::new()
            .prefix("berth-test")
            .tempdir()
            .expect("tempdir");
        let net = NetSlot::acquire();
        let mut daemon = TestDaemon {
            socket: dir.path().join("berth.sock"),
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            cni_conf_dir: dir.path().join("net.d"),
            ipam_dir: dir.path().join("ipam"),
            registry_dir: dir.path().join("certs.d"),
            cgroup_parent: if systemd {
                format!("berthtest{:08x}.slice", rand::random::<u32>())
            } else {
                format!("/berth-test-{:08x}", rand::random::<u32>())
            },
            systemd,
            log: dir.path().join("berth.log"),
            dir,
            net,
            child: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        fs::create_dir_all(&daemon.cni_conf_dir).expect("conf dir");
        fs::create_dir_all(&daemon.registry_dir).expect("registry dir");
        if network {
            daemon.write_bridge_conflist();
        }
        daemon.spawn();
        daemon.wait_ready().await;
        daemon
    }

    pub fn bridge_conflist(&self) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "berth-test",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.net.bridge(),
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": self.ipam_dir,
                        "ranges": [[{"subnet": self.net.subnet()}]],
                        "routes": [{"dst": "0.0.0.0/0"}]
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
            ]
        })
        .to_string()
    }

    pub fn write_bridge_conflist(&self) {
        fs::write(
            self.cni_conf_dir.join("10-berth-test.conflist"),
            self.bridge_conflist(),
        )
        .expect("writing conflist");
    }

    /// The daemon's command line (binary first), as `spawn` runs it.
    pub fn command_line(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![env!("CARGO_BIN_EXE_berth").to_string()];
        let path = |p: &Path| p.to_string_lossy().to_string();
        for (flag, value) in [
            ("--config", path(&self.dir.path().join("none.toml"))),
            ("--socket", path(&self.socket)),
            ("--root", path(&self.root)),
            ("--state", path(&self.state)),
            ("--cni-conf-dir", path(&self.cni_conf_dir)),
            ("--cni-bin-dir", CNI_BIN_DIR.to_string()),
            ("--registry-config-path", path(&self.registry_dir)),
            ("--default-cgroup-parent", self.cgroup_parent.clone()),
            (
                "--cgroup-driver",
                if self.systemd { "systemd" } else { "cgroupfs" }.to_string(),
            ),
            ("--log-level", "debug".to_string()),
        ] {
            args.push(flag.to_string());
            args.push(value);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let args = self.command_line();
        let mut cmd = Command::new(&args[0]);
        cmd.args(&args[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        // An empty config file: the test must not pick up /etc/berth/config.toml.
        fs::write(self.dir.path().join("none.toml"), "").expect("config file");
        self.child = Some(cmd.spawn().expect("spawning berth"));
    }

    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("berth exited with {status}:\n{}", self.log_text());
            }
            if let Ok(mut client) = self.try_runtime().await
                && client.version(cri::VersionRequest::default()).await.is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "berth did not become ready:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        let socket = self.socket.clone();
        Endpoint::from_static("http://[::]:50051")
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
    }

    async fn try_runtime(&self) -> Result<RuntimeServiceClient<Channel>, tonic::transport::Error> {
        Ok(RuntimeServiceClient::new(self.channel().await?))
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.try_runtime().await.expect("connecting to berth")
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await.expect("connecting to berth"))
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_ready().await;
    }

    /// Waits for the daemon to die at fault point `point` (SIGKILL, and the line it logs).
    pub async fn expect_killed_at(&mut self, point: &str) {
        use std::os::unix::process::ExitStatusExt;
        let mut child = self.child.take().expect("the daemon is not running");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for berth") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "berth did not die at fault point {point} (was it built with --features fault-injection?):\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "berth ended with {status}, not at fault point {point}:\n{}",
            self.log_text()
        );
        assert!(
            self.log_text()
                .contains(&format!("fault injection: killed at {point}")),
            "berth was killed, but not at {point}:\n{}",
            self.log_text()
        );
    }

    /// Starts the daemon again after it died, without any fault armed.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.env.retain(|(k, _)| k != "BERTH_FAULT");
        self.spawn();
        self.wait_ready().await;
    }

    /// Open file descriptors of the daemon.
    pub fn daemon_fds(&self) -> usize {
        let pid = self.daemon_pid().expect("the daemon is not running");
        fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Everything pods, containers and pulls can leave behind, counted.
    pub fn leaks(&self) -> Leaks {
        let names = |dir: &Path| -> Vec<String> {
            fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        };
        let mut files = Vec::new();
        for dir in [
            self.root.join("sandboxes"),
            self.root.join("containers"),
            self.state.join("sandboxes"),
            self.state.join("containers"),
            self.state.join("s"),
        ] {
            files.extend(names(&dir));
        }
        let images = self.root.join("images");
        let mut image_debris = names(&images.join("ingest"));
        image_debris.extend(
            names(&images.join("layers"))
                .into_iter()
                .chain(names(&images.join("records")))
                .filter(|p| p.contains("/.tmp")),
        );
        Leaks {
            processes: self
                .leftover_processes()
                .into_iter()
                .map(|(pid, cmd)| format!("{pid} {cmd}"))
                .collect(),
            mounts: self.leftover_mounts(),
            netns_pins: names(&self.state.join("netns")),
            veths: names(&PathBuf::from(format!(
                "/sys/class/net/{}/brif",
                self.net.bridge()
            ))),
            ip_leases: self.ip_leases(),
            cgroups: self
                .leftover_cgroups()
                .into_iter()
                .map(|p| p.display().to_string())
                .collect(),
            files,
            image_debris,
        }
    }

    /// Image blobs and unpacked layers in the store.
    pub fn image_content(&self) -> (usize, usize) {
        let images = self.root.join("images");
        let count = |dir: PathBuf| fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        (
            count(images.join("blobs/sha256")),
            count(images.join("layers")),
        )
    }

    /// Asserts that nothing at all is left (no pod, container or pull under way).
    pub fn assert_no_leaks(&self, when: &str) {
        let leaks = self.leaks();
        assert!(
            leaks.is_empty(),
            "{when}: left behind {leaks:#?}\n{}",
            self.log_text()
        );
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Processes whose command line mentions this daemon's state dir (shims, pauses).
    pub fn leftover_processes(&self) -> Vec<(u32, String)> {
        let needle = self.state.to_string_lossy().to_string();
        let me = self.daemon_pid();
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if Some(pid) == me {
                continue;
            }
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(&needle) {
                found.push((pid, text));
            }
        }
        found
    }

    /// Mounts under this daemon's temp dir (netns pins and the like), except the
    /// shared bind mount of the netns directory itself, which berth keeps for its lifetime
    /// (as `ip netns` does for /run/netns).
    pub fn leftover_mounts(&self) -> Vec<String> {
        self.mounts()
            .into_iter()
            .filter(|l| l.split(' ').nth(4) != Some(&*self.state.join("netns").to_string_lossy()))
            .collect()
    }

    fn mounts(&self) -> Vec<String> {
        let needle = self.dir.path().to_string_lossy().to_string();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(String::from)
            .collect()
    }

    /// The test's cgroup parent as a path below each hierarchy root (with the systemd
    /// driver the slice's path: `berthtest1.slice` is `berthtest1.slice`, a top slice).
    pub fn cgroup_parent_dir(&self) -> String {
        self.cgroup_parent.trim_start_matches('/').to_string()
    }

    /// The name of the cgroup berth makes for a container (or a pod's pause) `id`.
    pub fn cgroup_name(&self, id: &str) -> String {
        if self.systemd {
            format!("berth-{id}.scope")
        } else {
            id.to_string()
        }
    }

    /// The cgroup of pod `pod_id` (made by berth: the request named no parent), below
    /// each hierarchy root.
    pub fn pod_cgroup_dir(&self, pod_id: &str) -> String {
        match self.cgroup_parent.strip_suffix(".slice") {
            Some(stem) if self.systemd => format!("{stem}.slice/{stem}-pod{pod_id}.slice"),
            _ => format!("{}/{pod_id}", self.cgroup_parent_dir()),
        }
    }

    /// Cgroup dirs under the test's parent in any hierarchy.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for root in cgroup_roots() {
            let dir = root.join(self.cgroup_parent_dir());
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        found.push(e.path());
                    }
                }
            }
        }
        found
    }

    /// IP leases host-local still holds.
    pub fn ip_leases(&self) -> Vec<String> {
        let mut leases = Vec::new();
        for entry in walk(&self.ipam_dir) {
            let name = entry
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if name.parse::<std::net::IpAddr>().is_ok() {
                leases.push(name);
            }
        }
        leases
    }
}

/// What a test daemon left behind: each list should be empty when no pod exists.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leaks {
    pub processes: Vec<String>,
    pub mounts: Vec<String>,
    pub netns_pins: Vec<String>,
    pub veths: Vec<String>,
    pub ip_leases: Vec<String>,
    pub cgroups: Vec<String>,
    /// Records, state dirs, bundles and shim sockets.
    pub files: Vec<String>,
    /// Half-written image content (ingest, temp layer dirs, temp records).
    pub image_debris: Vec<String>,
}

impl Leaks {
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(_, n)| *n == 0)
    }

    /// Each counter by name.
    pub fn counts(&self) -> [(&'static str, usize); 8] {
        [
            ("processes", self.processes.len()),
            ("mounts", self.mounts.len()),
            ("netns", self.netns_pins.len()),
            ("veths", self.veths.len()),
            ("ip_leases", self.ip_leases.len()),
            ("cgroups", self.cgroups.len()),
            ("files", self.files.len()),
            ("image_debris", self.image_debris.len()),
        ]
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A hang guard's limit, stretched by `BERTH_TEST_TIME_SCALE` (default 1) on slow
/// machines: the emulated test VM (hack/vm.sh under TCG) runs fork+exec about 8x slower.
/// Guards only: no test asserts a duration.
pub fn slow(limit: std::time::Duration) -> std::time::Duration {
    let scale = std::env::var("BERTH_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    limit * scale
}

/// Whether the test daemons run the systemd cgroup driver (`BERTH_TEST_CGROUP_DRIVER=systemd`,
/// the test VM's second pass); cgroupfs otherwise, whatever `auto` would pick.
pub fn systemd_driver() -> bool {
    match std::env::var("BERTH_TEST_CGROUP_DRIVER").as_deref() {
        Ok("systemd") => true,
        Ok("cgroupfs") | Err(_) => false,
        Ok(other) => panic!("BERTH_TEST_CGROUP_DRIVER={other}: expected systemd or cgroupfs"),
    }
}

/// Whether this host runs the unified cgroup v2 hierarchy alone (the test VM) rather
/// than v1 controllers (this machine's hybrid layout).
pub fn cgroup_v2() -> bool {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let fstypes: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(" - ")?.1.split(' ').next())
        .collect();
    fstypes.contains(&"cgroup2") && !fstypes.contains(&"cgroup")
}

/// Roots of every mounted cgroup hierarchy (v1 controllers and the v2 tree).
pub fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for line in fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split(' ').next().unwrap_or_default();
        if (fstype == "cgroup" || fstype == "cgroup2")
            && let Some(mount_point) = left.split(' ').nth(4)
        {
            roots.push(PathBuf::from(mount_point));
        }
    }
    roots
}

impl Drop for TestDaemon {
    /// Best-effort cleanup so one failed test does not poison the machine; the tests
    /// themselves assert that berth left nothing behind before this runs.
    fn drop(&mut self) {
        self.kill9();
        for (pid, _) in self.leftover_processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for root in cgroup_roots() {
            let parent = root.join(self.cgroup_parent_dir());
            for p in walk_dirs(&parent).into_iter().rev() {
                for pid in fs::read_to_string(p.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        for root in cgroup_roots() {
            let parent = root.join(self.cgroup_parent_dir());
            for p in walk_dirs(&parent).into_iter().rev() {
                let _ = fs::remove_dir(&p);
            }
        }
        if self.systemd {
            // The parent slice berth started (and any unit left below it).
            let _ = Command::new("systemctl")
                .args(["stop", &self.cgroup_parent])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("systemctl")
                .args(["reset-failed", "berthtest*", "berth-*"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // Pins first, then the netns dir they sit in.
        for line in self.mounts().iter().rev() {
            if let Some(mount_point) = line.split(' ').nth(4) {
                let _ = nix::mount::umount2(mount_point, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// `dir` and every directory below it, parents first.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    if !dir.is_dir() {
        return Vec::new();
    }
    let mut out = vec![dir.to_path_buf()];
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk_dirs(&e.path()));
        }
    }
    out
}

/// A minimal pod config as the kubelet would send it.
pub fn pod_config(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}-{:08x}", rand::random::<u32>()),
            namespace: "berth-test".into(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: String::new(),
        labels: [("app".to_string(), name.to_string())].into(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

pub const BUSYBOX: &str = "docker.io/library/busybox:latest";

/// A running pod of a test daemon.
pub struct Pod {
    pub id: String,
    pub config: cri::PodSandboxConfig,
    /// Its log directory (the containers' log paths are relative to it).
    pub logs: PathBuf,
}

/// busybox pulled through the local mirror and a pod `name` running, its log directory
/// under the test's dir.
pub async fn busybox_pod(daemon: &TestDaemon, name: &str) -> (RuntimeServiceClient<Channel>, Pod) {
    busybox_pod_with(daemon, name, |_| {}).await
}

/// The same, with `edit` applied to the pod's config first.
pub async fn busybox_pod_with(
    daemon: &TestDaemon,
    name: &str,
    edit: impl FnOnce(&mut cri::PodSandboxConfig),
) -> (RuntimeServiceClient<Channel>, Pod) {
    mirror_docker_io(daemon);
    pull(daemon, BUSYBOX).await;
    let mut rt = daemon.runtime().await;
    let logs = daemon.dir.path().join(format!("logs-{name}"));
    let mut config = pod_config(name);
    config.log_directory = logs.to_string_lossy().to_string();
    edit(&mut config);
    let id = run_pod(&mut rt, config.clone())
        .await
        .expect("RunPodSandbox");
    (rt, Pod { id, config, logs })
}

/// A user namespace of `mode` with the same (container id, host id, length) maps for
/// uids and gids.
pub fn userns_options(
    mode: cri::NamespaceMode,
    maps: &[(u32, u32, u32)],
) -> Option<cri::UserNamespace> {
    let maps: Vec<cri::IdMapping> = maps
        .iter()
        .map(|&(container_id, host_id, length)| cri::IdMapping {
            container_id,
            host_id,
            length,
        })
        .collect();
    Some(cri::UserNamespace {
        mode: mode as i32,
        uids: maps.clone(),
        gids: maps,
    })
}

/// `config` with its own user namespace as `userns` says (the other namespaces as the
/// CRI defaults them).
pub fn with_userns(config: &mut cri::PodSandboxConfig, userns: Option<cri::UserNamespace>) {
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                userns_options: userns,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
}

pub async fn run_pod(
    client: &mut RuntimeServiceClient<Channel>,
    config: cri::PodSandboxConfig,
) -> Result<String, tonic::Status> {
    client
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

pub async fn pod_status(
    client: &mut RuntimeServiceClient<Channel>,
    id: &str,
    verbose: bool,
) -> Result<cri::PodSandboxStatusResponse, tonic::Status> {
    client
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose,
        })
        .await
        .map(|r| r.into_inner())
}

/// The pause pid from a verbose status.
pub fn pause_pid(status: &cri::PodSandboxStatusResponse) -> u32 {
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").expect("verbose info")).expect("info json");
    info["pid"].as_u64().expect("pid in info") as u32
}

pub fn process_exists(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

pub fn registry() -> String {
    let port = std::env::var("BERTH_REGISTRY_PORT").unwrap_or_else(|_| "5000".into());
    format!("127.0.0.1:{port}")
}

/// Mirrors docker.io to the local registry; fails with the fix when the fixtures are missing.
pub fn mirror_docker_io(daemon: &TestDaemon) {
    let registry = registry();
    let probe = std::process::Command::new("curl")
        .args([
            "-fsS",
            "-o",
            "/dev/null",
            &format!("http://{registry}/v2/library/busybox/manifests/latest"),
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ])
        .status()
        .expect("curl is needed: run hack/install-deps.sh");
    assert!(
        probe.success(),
        "the local registry on {registry} lacks library/busybox:latest: run hack/registry.sh start && hack/test-images.sh"
    );
    let dir = daemon.registry_dir.join("docker.io");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\n\n[host.\"http://{registry}\"]\ncapabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
}

/// StopPodSandbox that must succeed.
pub async fn stop_pod(client: &mut RuntimeServiceClient<Channel>, id: &str) {
    client
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .expect("StopPodSandbox");
}

/// RemovePodSandbox that must succeed.
pub async fn remove_pod(client: &mut RuntimeServiceClient<Channel>, id: &str) {
    client
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .expect("RemovePodSandbox");
}

/// Pulls `image` through the daemon (from the local registry, through the mirrors).
pub async fn pull(daemon: &TestDaemon, image: &str) {
    daemon
        .images()
        .await
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| {
            panic!("pulling {image} from the local registry (hack/test-images.sh fills it): {e}")
        });
}

/// A container of `image` running `command`, logging to `<name>.log` in the pod's log
/// directory, labelled `container=<name>`.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: [("container".to_string(), name.to_string())].into(),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

pub async fn create_container(
    rt: &mut RuntimeServiceClient<Channel>,
    pod_id: &str,
    pod_config: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    rt.create_container(cri::CreateContainerRequest {
        pod_sandbox_id: pod_id.into(),
        config: Some(config),
        sandbox_config: Some(pod_config.clone()),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

pub async fn start_container(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
) -> Result<(), tonic::Status> {
    rt.start_container(cri::StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .map(|_| ())
}

/// ContainerStatus that must succeed.
pub async fn container_status(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
) -> cri::ContainerStatus {
    rt.container_status(cri::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .expect("ContainerStatus")
    .into_inner()
    .status
    .expect("a status")
}

/// Waits (at most 20 s) for a container to have exited; its status then.
pub async fn wait_exited(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> cri::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = container_status(rt, id).await;
        if st.state == cri::ContainerState::ContainerExited as i32 {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not exit: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
