//! containerd 1.6 (Debian's) running pods through berth's shim v2
//! (`containerd-shim-berth-v2`): a private containerd (own config, root, state and
//! socket) with berth's shim as its default runtime, driven over its CRI socket; and the
//! shim's Task service driven directly over ttrpc for the bad-input cases. Root only;
//! fails with the reason when containerd is missing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth::cri::api as cri;
use berth::cri::api::image_service_client::ImageServiceClient;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use common::NetSlot;
use containerd_shim_protos::api::{
    CloseIORequest, CreateTaskRequest, DeleteRequest, DeleteResponse, Mount, ShutdownRequest,
    StartRequest, WaitRequest,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_sync::TaskClient;
use tonic::transport::Channel;

const SHIM_NAME: &str = "containerd-shim-berth-v2";
const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

fn require_containerd() {
    common::require_root_and_tools();
    let found = Command::new("containerd")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "containerd is not installed: run hack/install-deps.sh (Debian's containerd 1.6)"
    );
}

/// The shim binary under containerd's name, in a directory put first on PATH.
fn shim_bin_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth"), bin.join(SHIM_NAME)).unwrap();
    bin
}

struct Containerd {
    dir: tempfile::TempDir,
    socket: PathBuf,
    bin: PathBuf,
    config: PathBuf,
    cgroup_parent: String,
    child: Option<Child>,
    _net: NetSlot,
}

impl Containerd {
    fn start() -> Containerd {
        require_containerd();
        // Short: the shims' sockets live beside containerd's (107-byte limit).
        let dir = tempfile::Builder::new()
            .prefix("ctrd")
            .tempdir_in("/tmp")
            .unwrap();
        let net = NetSlot::acquire();
        let root = dir.path();
        let bin = shim_bin_dir(root);
        let net_dir = root.join("net.d");
        fs::create_dir_all(&net_dir).unwrap();
        fs::write(
            net_dir.join("10-test.conflist"),
            format!(
                r#"{{"cniVersion": "1.0.0", "name": "ctrd-{bridge}", "plugins": [
  {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": false,
   "ipam": {{"type": "host-local", "dataDir": "{ipam}", "ranges": [[{{"subnet": "{subnet}"}}]]}}}},
  {{"type": "portmap", "capabilities": {{"portMappings": true}}, "snat": true}}]}}"#,
                bridge = net.bridge(),
                ipam = root.join("ipam").display(),
                subnet = net.subnet(),
            ),
        )
        .unwrap();
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("critest-config/certs.d");
        let config = root.join("containerd.toml");
        fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}/root"
state = "{root}/state"
[grpc]
  address = "{root}/c.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  # No CAP_SYS_RESOURCE here: the pause's oom_score_adj -998 must be clamped.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "berth"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth]
      runtime_type = "io.containerd.berth.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}"
    conf_dir = "{net}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
"#,
                root = root.display(),
                cni = common::CNI_BIN_DIR,
                net = net_dir.display(),
                certs = certs.display(),
            ),
        )
        .unwrap();
        let socket = root.join("c.sock");
        let mut containerd = Containerd {
            cgroup_parent: format!("/berth-ctrd-{}", net.index),
            socket,
            bin,
            config,
            child: None,
            dir,
            _net: net,
        };
        containerd.spawn();
        containerd
    }

    fn spawn(&mut self) {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))
            .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&self.config)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "containerd did not listen on {}:\n{}",
                self.socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    async fn channel(&self) -> Channel {
        common::unix_channel(&self.socket)
            .await
            .expect("connect to containerd")
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    /// Processes whose command line names this containerd's socket (its shims).
    fn shims(&self) -> Vec<(u32, String)> {
        processes_mentioning(&self.socket.to_string_lossy())
    }

    fn mounts(&self) -> Vec<String> {
        let root = self.dir.path().to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(&root))
            .map(str::to_string)
            .collect()
    }

    /// Cgroup directories left below the pods' cgroup parent, in every hierarchy.
    fn cgroups(&self) -> Vec<PathBuf> {
        common::cgroup_roots()
            .into_iter()
            .map(|root| root.join(self.cgroup_parent.trim_start_matches('/')))
            .filter_map(|dir| fs::read_dir(dir).ok())
            .flat_map(|entries| entries.flatten().map(|e| e.path()))
            .filter(|path| path.is_dir())
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        for (pid, _) in self.shims() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for line in self.mounts().iter().rev() {
            if let Some(target) = line.split_whitespace().nth(4) {
                let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        // What a failed test left running in its pods' cgroups (the shims are gone).
        for dir in self.cgroups() {
            for pid in fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for root in common::cgroup_roots() {
            let parent = root.join(self.cgroup_parent.trim_start_matches('/'));
            if let Ok(entries) = fs::read_dir(&parent) {
                for entry in entries.flatten().filter(|e| e.path().is_dir()) {
                    while fs::remove_dir(entry.path()).is_err() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            let _ = fs::remove_dir(parent);
        }
    }
}

fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) && common::process_exists(pid) {
            found.push((pid, text));
        }
    }
    found
}

async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + common::slow(Duration::from_secs(10));
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn exec_sync(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    cmd: &[&str],
) -> cri::ExecSyncResponse {
    rt.exec_sync(cri::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 30,
    })
    .await
    .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}"))
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_runs_a_pod_and_a_container_through_berths_shim() {
    let mut containerd = Containerd::start();
    let channel = containerd.channel().await;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    let mut images = ImageServiceClient::new(channel);
    images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: BUSYBOX.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| {
            panic!("pull {BUSYBOX} (hack/registry.sh start && hack/test-images.sh): {e}")
        });

    let logs = containerd.dir.path().join("logs");
    let mut pod_config = common::pod_config("ctrd");
    pod_config.log_directory = logs.to_string_lossy().into_owned();
    pod_config.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: containerd.cgroup_parent.clone(),
        ..Default::default()
    });
    let pod = common::run_pod(&mut rt, pod_config.clone())
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", containerd.log()));
    // The pod runs on berth's shim, one for the pod.
    let shims = containerd.shims();
    assert_eq!(shims.len(), 1, "one shim for the pod: {shims:?}");
    assert!(shims[0].1.contains(SHIM_NAME), "{shims:?}");
    let comm = fs::read_to_string(format!("/proc/{}/comm", shims[0].0)).unwrap();
    assert_eq!(comm.trim(), "berth-shim-v2");
    let bundle = containerd
        .dir
        .path()
        .join("state/io.containerd.runtime.v2.task/k8s.io")
        .join(&pod);
    let pod_spec: serde_json::Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let netns = pod_spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ns| ns["type"] == "network")
        .and_then(|ns| ns["path"].as_str())
        .expect("the pod's netns path")
        .to_string();

    let config = common::container_config(
        "hello",
        BUSYBOX,
        &["sh", "-c", "echo hello from berth; exec sleep 1000"],
    );
    let id = common::create_container(&mut rt, &pod, &pod_config, config)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", containerd.log()));
    common::start_container(&mut rt, &id)
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", containerd.log()));
    assert_eq!(
        containerd.shims().len(),
        1,
        "the container joined the pod's shim"
    );
    let log_file = logs.join("hello.log");
    let line = wait_for("the container's log line", || {
        fs::read_to_string(&log_file)
            .ok()
            .filter(|text| text.contains("hello from berth"))
    })
    .await;
    assert!(line.contains(" stdout F hello from berth"), "{line}");

    let out = exec_sync(
        &mut rt,
        &id,
        &["sh", "-c", "echo exec-out; echo exec-err >&2"],
    )
    .await;
    assert_eq!(out.exit_code, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exec-out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "exec-err\n");
    let out = exec_sync(&mut rt, &id, &["sh", "-c", "exit 3"]).await;
    assert_eq!(out.exit_code, 3);
    // The device cgroup allows the default devices: containerd's spec denies all and
    // lists none of them (runc allows them on its own).
    let out = exec_sync(
        &mut rt,
        &id,
        &[
            "sh",
            "-c",
            "echo x >/dev/null && head -c 3 /dev/zero | wc -c",
        ],
    )
    .await;
    assert_eq!(
        (out.exit_code, String::from_utf8_lossy(&out.stdout).trim()),
        (0, "3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 2,
    })
    .await
    .expect("StopContainer");
    let status = common::container_status(&mut rt, &id).await;
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert!(
        status.exit_code == 137 || status.exit_code == 143,
        "killed by the stop: {status:?}"
    );
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("RemoveContainer");
    common::stop_pod(&mut rt, &pod).await;
    common::remove_pod(&mut rt, &pod).await;

    wait_for("the pod's shim to exit", || {
        containerd.shims().is_empty().then_some(())
    })
    .await;
    containerd.stop();
    assert!(containerd.shims().is_empty(), "{:?}", containerd.shims());
    assert_eq!(containerd.mounts(), Vec::<String>::new(), "mounts left");
    assert_eq!(containerd.cgroups(), Vec::<PathBuf>::new(), "cgroups left");
    assert!(!Path::new(&netns).exists(), "netns {netns} left");
}

/// Kills the shims of a containerd address however the test ends.
struct KillShimsOnDrop(String);

impl Drop for KillShimsOnDrop {
    fn drop(&mut self) {
        for (pid, _) in processes_mentioning(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A bundle whose rootfs is a bind of an empty directory, with `config` as config.json.
fn bad_bundle(dir: &Path, name: &str, config: serde_json::Value) -> (PathBuf, Mount) {
    let bundle = dir.join(name);
    let source = dir.join(format!("{name}-src"));
    fs::create_dir_all(&bundle).unwrap();
    fs::create_dir_all(&source).unwrap();
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let mut mount = Mount::new();
    mount.type_ = "bind".into();
    mount.source = source.to_string_lossy().into_owned();
    mount.options = vec!["rbind".into(), "rw".into()];
    (bundle, mount)
}

fn minimal_config(extra: serde_json::Value) -> serde_json::Value {
    let mut config = serde_json::json!({
        "ociVersion": "1.2.0",
        "process": {"args": ["/no/such/program"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                    "env": ["PATH=/bin"]},
        "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": "mount"}, {"type": "ipc"}]}
    });
    if let (Some(base), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            base.insert(key.clone(), value.clone());
        }
    }
    config
}

#[test]
fn create_refuses_what_init_cannot_do_naming_the_field_and_leaves_nothing() {
    require_containerd();
    let dir = tempfile::Builder::new()
        .prefix("shimv2")
        .tempdir_in("/tmp")
        .unwrap();
    let bin = shim_bin_dir(dir.path());
    let address = dir.path().join("c.sock");
    let _reap = KillShimsOnDrop(address.to_string_lossy().into_owned());
    let (first, _) = bad_bundle(dir.path(), "first", minimal_config(serde_json::json!({})));
    // `start` as containerd runs it, in the bundle: it prints the shim's address.
    let output = Command::new(bin.join(SHIM_NAME))
        .args(["-namespace", "test", "-address"])
        .arg(&address)
        .args(["-publish-binary", "/bin/true", "-id", "first", "start"])
        .current_dir(&first)
        .env_remove("TTRPC_ADDRESS")
        .output()
        .unwrap();
    assert!(output.status.success(), "start: {output:?}");
    let shim_address = String::from_utf8(output.stdout).unwrap();
    assert!(shim_address.starts_with("unix://"), "{shim_address}");
    assert_eq!(
        fs::read_to_string(first.join("address")).unwrap(),
        shim_address
    );
    let client = containerd_shim_protos::ttrpc::Client::connect(&shim_address).unwrap();
    let task = TaskClient::new(client);
    let ctx = || containerd_shim_protos::ttrpc::context::with_timeout(30_000_000_000);

    let cases = [
        (
            "hook",
            minimal_config(serde_json::json!({"hooks": {"prestart": [{"path": "/bin/true"}]}})),
            "hooks.prestart",
        ),
        (
            "namespace",
            minimal_config(
                serde_json::json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "blue"}]}}),
            ),
            "linux.namespaces[1].type \"blue\"",
        ),
        (
            "seccomp",
            minimal_config(
                serde_json::json!({"linux": {"namespaces": [{"type": "mount"}],
                "seccomp": {"defaultAction": "SCMP_ACT_DANCE"}}}),
            ),
            "linux.seccomp.defaultAction",
        ),
        // Refused by init itself, after the rootfs was mounted: the mount is undone.
        (
            "program",
            minimal_config(serde_json::json!({})),
            "/no/such/program",
        ),
    ];
    for (name, config, field) in cases {
        let (bundle, mount) = bad_bundle(dir.path(), name, config);
        let mut request = CreateTaskRequest::new();
        request.id = name.into();
        request.bundle = bundle.to_string_lossy().into_owned();
        request.rootfs = vec![mount];
        let err = task
            .create(ctx(), &request)
            .expect_err(&format!("{name}: Create must fail"));
        let text = match err {
            containerd_shim_protos::ttrpc::Error::RpcStatus(status) => status.message,
            other => panic!("{name}: not a status: {other:?}"),
        };
        assert!(text.contains(field), "{name}: {text} names {field}");
        let mounted: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&*dir.path().to_string_lossy()))
            .map(str::to_string)
            .collect();
        assert!(mounted.is_empty(), "{name}: mounts left: {mounted:?}");
    }
    let mut shutdown = ShutdownRequest::new();
    shutdown.id = "first".into();
    task.shutdown(ctx(), &shutdown).expect("Shutdown");
    let socket = shim_address.trim_start_matches("unix://").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&address.to_string_lossy()).is_empty() {
        assert!(Instant::now() < deadline, "the shim did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!Path::new(&socket).exists(), "the shim's socket is removed");
}

/// A running pod with one `sleep` container, on a fresh containerd.
async fn pod_with_sleeper(
    containerd: &Containerd,
    rt: &mut RuntimeServiceClient<Channel>,
    name: &str,
) -> (String, String) {
    let mut images = ImageServiceClient::new(containerd.channel().await);
    images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: BUSYBOX.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("pull {BUSYBOX}: {e}"));
    let mut pod_config = common::pod_config(name);
    pod_config.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: containerd.cgroup_parent.clone(),
        ..Default::default()
    });
    let pod = common::run_pod(rt, pod_config.clone())
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", containerd.log()));
    let config = common::container_config("sleeper", BUSYBOX, &["sleep", "1000"]);
    let id = common::create_container(rt, &pod, &pod_config, config)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", containerd.log()));
    common::start_container(rt, &id)
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", containerd.log()));
    (pod, id)
}

/// The host pid of a container's main process, from its shim's Pids (ContainerStatus
/// verbose info has it as `pid`).
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
        serde_json::from_str(status.info.get("info").expect("verbose info")).unwrap();
    info["pid"].as_u64().expect("pid in the info") as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_containerd_finds_the_pod_and_a_killed_shim_is_cleaned_up() {
    let mut containerd = Containerd::start();
    let mut rt = RuntimeServiceClient::new(containerd.channel().await);
    let (pod, id) = pod_with_sleeper(&containerd, &mut rt, "restart").await;
    let pid = container_pid(&mut rt, &id).await;
    let shims = containerd.shims();
    assert_eq!(shims.len(), 1, "{shims:?}");

    // containerd goes away and comes back: the shim and the container stay, and the new
    // containerd reconnects to them from the bundles' address files.
    containerd.stop();
    assert!(
        common::process_exists(pid),
        "the container outlives containerd"
    );
    assert_eq!(containerd.shims(), shims, "the shim outlives containerd");
    containerd.spawn();
    let mut rt = RuntimeServiceClient::new(containerd.channel().await);
    // containerd's CRI answers once it has loaded its tasks back.
    let deadline = Instant::now() + common::slow(Duration::from_secs(20));
    while let Err(e) = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
    {
        assert!(
            Instant::now() < deadline,
            "containerd's CRI after a restart: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = common::container_status(&mut rt, &id).await;
    assert_eq!(
        status.state,
        cri::ContainerState::ContainerRunning as i32,
        "{status:?}\n{}",
        containerd.log()
    );
    let out = exec_sync(&mut rt, &id, &["echo", "still here"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");

    // The shim is killed: containerd's `delete` of berth's binary kills what the shim
    // left (the container, the pause) and unmounts the rootfs; the container is exited.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0].0 as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_for("the orphaned container to be killed", || {
        (!common::process_exists(pid)).then_some(())
    })
    .await;
    let deadline = Instant::now() + common::slow(Duration::from_secs(10));
    loop {
        let status = common::container_status(&mut rt, &id).await;
        if status.state == cri::ContainerState::ContainerExited as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "not exited: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("RemoveContainer");
    common::stop_pod(&mut rt, &pod).await;
    common::remove_pod(&mut rt, &pod).await;
    // containerd runs `delete` of berth's binary for each task whose shim connection
    // closed; those finish on their own.
    wait_for("the shim and its deletes to exit", || {
        containerd.shims().is_empty().then_some(())
    })
    .await;
    containerd.stop();
    assert_eq!(containerd.mounts(), Vec::<String>::new(), "mounts left");
    assert_eq!(containerd.cgroups(), Vec::<PathBuf>::new(), "cgroups left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_stats_come_from_berths_shim() {
    let containerd = Containerd::start();
    let mut rt = RuntimeServiceClient::new(containerd.channel().await);
    let (pod, id) = pod_with_sleeper(&containerd, &mut rt, "stats").await;
    let stats = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("ContainerStats: {e}\n{}", containerd.log()))
        .into_inner()
        .stats
        .expect("stats");
    let memory = stats.memory.expect("memory stats");
    let usage = memory.usage_bytes.expect("memory usage").value;
    assert!(usage > 0, "{memory:?}");
    let working_set = memory.working_set_bytes.expect("working set").value;
    assert!(working_set <= usage, "{memory:?}");
    assert!(
        stats
            .cpu
            .expect("cpu stats")
            .usage_core_nano_seconds
            .is_some()
    );

    // Update: a new memory limit lands in the container's cgroup.
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}\n{}", containerd.log()));
    // The limit as the host's cgroup has it.
    let limit = common::cgroup_roots()
        .into_iter()
        .map(|root| {
            root.join(containerd.cgroup_parent.trim_start_matches('/'))
                .join(&id)
        })
        .find_map(|dir| {
            ["memory.max", "memory.limit_in_bytes"]
                .iter()
                .find_map(|file| fs::read_to_string(dir.join(file)).ok())
        })
        .expect("the container's memory limit file");
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    rt.remove_container(cri::RemoveContainerRequest { container_id: id })
        .await
        .expect("RemoveContainer");
    common::stop_pod(&mut rt, &pod).await;
    common::remove_pod(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privileged_container_gets_the_host_devices_containerd_lists() {
    let containerd = Containerd::start();
    let channel = containerd.channel().await;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    let mut images = ImageServiceClient::new(channel);
    images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: BUSYBOX.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("pull {BUSYBOX}: {e}"));
    let mut pod_config = common::pod_config("privileged");
    pod_config.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: containerd.cgroup_parent.clone(),
        security_context: Some(cri::LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = common::run_pod(&mut rt, pod_config.clone())
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", containerd.log()));
    let mut config = common::container_config("privileged", BUSYBOX, &["sleep", "1000"]);
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = common::create_container(&mut rt, &pod, &pod_config, config)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", containerd.log()));
    // containerd's privileged spec lists every host device, /dev/full among them, which
    // berth's init also binds from the host by default.
    common::start_container(&mut rt, &id)
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", containerd.log()));
    let out = exec_sync(&mut rt, &id, &["sh", "-c", "test -c /dev/full && echo ok"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    rt.remove_container(cri::RemoveContainerRequest { container_id: id })
        .await
        .expect("RemoveContainer");
    common::stop_pod(&mut rt, &pod).await;
    common::remove_pod(&mut rt, &pod).await;
}

/// A rootfs source with the host's (dynamic) busybox, its libraries and the applets
/// the direct Task tests run.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs-src");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("the host's busybox");
    for applet in ["sh", "cat", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let ldd = Command::new("ldd").arg("/bin/busybox").output().unwrap();
    assert!(ldd.status.success(), "ldd /bin/busybox: {ldd:?}");
    for library in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
    {
        let target = root.join(library.trim_start_matches('/'));
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(library, &target).unwrap_or_else(|e| panic!("copy {library}: {e}"));
    }
    root
}

/// A bundle of pod `group` running `args` in the busybox rootfs, in its own cgroup below
/// `cgroup_parent` when `cgroup` is set (so `delete` can kill what is left of it).
fn write_bundle(
    dir: &Path,
    rootfs: &Path,
    group: &str,
    cgroup_parent: &str,
    name: &str,
    args: &[&str],
    cgroup: bool,
) -> (PathBuf, Mount) {
    let mut config = minimal_config(serde_json::json!({
        "annotations": {"io.kubernetes.cri.sandbox-id": group},
    }));
    config["process"]["args"] = serde_json::json!(args);
    if cgroup {
        config["linux"]["cgroupsPath"] = serde_json::json!(format!("{cgroup_parent}/{name}"));
    }
    let bundle = dir.join(name);
    fs::create_dir_all(&bundle).unwrap();
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let mut mount = Mount::new();
    mount.type_ = "bind".into();
    mount.source = rootfs.to_string_lossy().into_owned();
    mount.options = vec!["rbind".into(), "ro".into()];
    (bundle, mount)
}

/// berth's shim started the way containerd starts it, driven directly over ttrpc, for
/// what containerd's CRI cannot reach from a test (stdin handling, a dead shim).
struct DirectShim {
    dir: tempfile::TempDir,
    bin: PathBuf,
    address: PathBuf,
    rootfs: PathBuf,
    group: String,
    /// The cgroup parent the tasks that ask for one get (removed on drop).
    cgroup_parent: String,
    task: TaskClient,
    _reap: KillShimsOnDrop,
}

impl DirectShim {
    /// Starts the shim of `group` with `first`'s bundle as `start`'s directory.
    fn start(group: &str, first: &str, args: &[&str]) -> (DirectShim, PathBuf, Mount) {
        require_containerd();
        let dir = tempfile::Builder::new()
            .prefix("shimv2")
            .tempdir_in("/tmp")
            .unwrap();
        let bin = shim_bin_dir(dir.path());
        let address = dir.path().join("c.sock");
        let reap = KillShimsOnDrop(address.to_string_lossy().into_owned());
        let rootfs = busybox_rootfs(dir.path());
        let cgroup_parent = format!("/berth-shimv2-{}", std::process::id());
        let (bundle, mount) = write_bundle(
            dir.path(),
            &rootfs,
            group,
            &cgroup_parent,
            first,
            args,
            false,
        );
        let output = Command::new(bin.join(SHIM_NAME))
            .args(["-namespace", "test", "-address"])
            .arg(&address)
            .args(["-publish-binary", "/bin/true", "-id", first, "start"])
            .current_dir(&bundle)
            .env_remove("TTRPC_ADDRESS")
            .output()
            .unwrap();
        assert!(output.status.success(), "start: {output:?}");
        let shim_address = String::from_utf8(output.stdout).unwrap();
        let client = containerd_shim_protos::ttrpc::Client::connect(&shim_address).unwrap();
        let shim = DirectShim {
            bin,
            address,
            rootfs,
            group: group.to_string(),
            cgroup_parent,
            task: TaskClient::new(client),
            dir,
            _reap: reap,
        };
        (shim, bundle, mount)
    }

    fn bundle(&self, name: &str, args: &[&str], cgroup: bool) -> (PathBuf, Mount) {
        write_bundle(
            self.dir.path(),
            &self.rootfs,
            &self.group,
            &self.cgroup_parent,
            name,
            args,
            cgroup,
        )
    }

    fn create(&self, name: &str, bundle: &Path, mount: Mount, stdin: &str, stdout: &str) -> u32 {
        let mut request = CreateTaskRequest::new();
        request.id = name.into();
        request.bundle = bundle.to_string_lossy().into_owned();
        request.rootfs = vec![mount];
        request.stdin = stdin.into();
        request.stdout = stdout.into();
        self.task
            .create(ctx(), &request)
            .unwrap_or_else(|e| panic!("Create {name}: {e:?}\n{}", self.log()))
            .pid
    }

    fn start_task(&self, name: &str) -> u32 {
        let mut request = StartRequest::new();
        request.id = name.into();
        self.task
            .start(ctx(), &request)
            .unwrap_or_else(|e| panic!("Start {name}: {e:?}\n{}", self.log()))
            .pid
    }

    fn fifo(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        path
    }

    /// The serving shim's log (beside its socket).
    fn log(&self) -> String {
        let Some(dir) = fs::read_dir(self.dir.path().join("s")).ok() else {
            return String::new();
        };
        dir.flatten()
            .filter_map(|e| fs::read_to_string(e.path().join("shim.log")).ok())
            .collect()
    }

    fn shim_pids(&self) -> Vec<u32> {
        processes_mentioning(&self.address.to_string_lossy())
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
    }

    fn mounts(&self) -> Vec<String> {
        let root = self.dir.path().to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|line| line.contains(&root))
            .map(str::to_string)
            .collect()
    }

    /// containerd's `delete` of a task whose shim is gone: the response it printed.
    fn delete_command(&self, name: &str, bundle: &Path) -> DeleteResponse {
        let output = Command::new(self.bin.join(SHIM_NAME))
            .args(["-namespace", "test", "-address"])
            .arg(&self.address)
            .args(["-publish-binary", "/bin/true", "-id", name, "-bundle"])
            .arg(bundle)
            .arg("delete")
            .current_dir(bundle)
            .output()
            .unwrap();
        assert!(output.status.success(), "delete {name}: {output:?}");
        DeleteResponse::parse_from_bytes(&output.stdout)
            .unwrap_or_else(|e| panic!("delete {name} printed no DeleteResponse: {e}"))
    }

    fn shutdown(&self) {
        let mut shutdown = ShutdownRequest::new();
        shutdown.id = self.group.clone();
        self.task.shutdown(ctx(), &shutdown).expect("Shutdown");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.shim_pids().is_empty() {
            assert!(Instant::now() < deadline, "the shim did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DirectShim {
    fn drop(&mut self) {
        for pid in self.shim_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for line in self.mounts().iter().rev() {
            if let Some(target) = line.split_whitespace().nth(4) {
                let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        for root in common::cgroup_roots() {
            let parent = root.join(self.cgroup_parent.trim_start_matches('/'));
            if let Ok(entries) = fs::read_dir(&parent) {
                for entry in entries.flatten().filter(|e| e.path().is_dir()) {
                    for pid in fs::read_to_string(entry.path().join("cgroup.procs"))
                        .unwrap_or_default()
                        .lines()
                        .filter_map(|l| l.parse::<i32>().ok())
                    {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while fs::remove_dir(entry.path()).is_err() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            let _ = fs::remove_dir(parent);
        }
    }
}

fn ctx() -> containerd_shim_protos::ttrpc::context::Context {
    containerd_shim_protos::ttrpc::context::with_timeout(30_000_000_000)
}

/// Reads what is in a FIFO now (it is open read-write and non-blocking: no EOF).
fn read_available(fifo: &mut fs::File) -> String {
    use std::io::Read;
    let mut text = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match fifo.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("read the FIFO: {e}"),
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn open_fifo_end(path: &Path) -> fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    // Read-write never waits for the other side; non-blocking, so reads stop at empty.
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap()
}

#[test]
fn close_io_ends_the_tasks_stdin_while_containerd_keeps_its_end_open() {
    let (shim, bundle, mount) = DirectShim::start("closeio", "cat", &["/bin/cat"]);
    let stdin = shim.fifo("cat-stdin");
    let stdout = shim.fifo("cat-stdout");
    // containerd's ends, held for the whole test as containerd's CRI holds them.
    let mut stdin_end = open_fifo_end(&stdin);
    let mut stdout_end = open_fifo_end(&stdout);
    shim.create(
        "cat",
        &bundle,
        mount,
        &stdin.to_string_lossy(),
        &stdout.to_string_lossy(),
    );
    shim.start_task("cat");
    use std::io::Write;
    stdin_end.write_all(b"hello\n").unwrap();
    let mut close = CloseIORequest::new();
    close.id = "cat".into();
    close.stdin = true;
    shim.task
        .close_io(ctx(), &close)
        .unwrap_or_else(|e| panic!("CloseIO: {e:?}"));
    // cat ends once its stdin does, with what was written before CloseIO passed on.
    let mut wait = WaitRequest::new();
    wait.id = "cat".into();
    let exited = shim
        .task
        .wait(
            containerd_shim_protos::ttrpc::context::with_timeout(10_000_000_000),
            &wait,
        )
        .unwrap_or_else(|e| panic!("cat did not exit after CloseIO: {e:?}\n{}", shim.log()));
    assert_eq!(exited.exit_status, 0);
    assert_eq!(read_available(&mut stdout_end), "hello\n");
    let mut delete = DeleteRequest::new();
    delete.id = "cat".into();
    let deleted = shim.task.delete(ctx(), &delete).expect("Delete");
    assert_eq!(deleted.exit_status, 0);
    shim.shutdown();
    assert_eq!(shim.mounts(), Vec::<String>::new(), "mounts left");
    drop((stdin_end, stdout_end));
}

#[test]
fn delete_after_the_shim_was_killed_reports_the_exit_the_shim_recorded() {
    let (shim, exits, exits_mount) =
        DirectShim::start("dead", "exits3", &["/bin/sh", "-c", "exit 3"]);
    shim.create("exits3", &exits, exits_mount, "", "");
    shim.start_task("exits3");
    let mut wait = WaitRequest::new();
    wait.id = "exits3".into();
    assert_eq!(shim.task.wait(ctx(), &wait).expect("Wait").exit_status, 3);
    let (sleeper, sleeper_mount) = shim.bundle("sleeper", &["/bin/sleep", "1000"], true);
    shim.create("sleeper", &sleeper, sleeper_mount, "", "");
    let sleeper_pid = shim.start_task("sleeper");

    let pids = shim.shim_pids();
    assert_eq!(pids.len(), 1, "one shim: {pids:?}");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shim.shim_pids().is_empty() {
        assert!(Instant::now() < deadline, "the shim did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The task had exited before the shim died: its recorded status, not a kill.
    let deleted = shim.delete_command("exits3", &exits);
    assert_eq!(deleted.exit_status, 3, "{deleted:?}");
    // The other was still running: `delete` killed it.
    let deleted = shim.delete_command("sleeper", &sleeper);
    assert_eq!(
        deleted.exit_status,
        128 + libc::SIGKILL as u32,
        "{deleted:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::process_exists(sleeper_pid) {
        assert!(Instant::now() < deadline, "the sleeper outlived delete");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(shim.mounts(), Vec::<String>::new(), "mounts left");
}
