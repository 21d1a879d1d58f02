//! Pod sandboxes through the real daemon: lifecycle, networking, bad input, restart.
mod common;

use std::time::Duration;

use berth::cri::api as cri;
use common::*;

fn ready(status: &cri::PodSandboxStatusResponse) -> bool {
    status.status.as_ref().map(|s| s.state) == Some(cri::PodSandboxState::SandboxReady as i32)
}

fn ip_of(status: &cri::PodSandboxStatusResponse) -> String {
    status
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|n| n.ip.clone())
        .unwrap_or_default()
}

fn ns_inode(pid: u32, ns: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{ns}"))
        .expect("ns link")
        .ino()
}

#[tokio::test(flavor = "multi_thread")]
async fn version_status_and_runtime_config() {
    let daemon = TestDaemon::start().await;
    let mut rt = daemon.runtime().await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "socket mode");
    let v = rt
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "berth");
    assert_eq!(v.runtime_api_version, "v1");

    let status = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conditions = status.status.unwrap().conditions;
    for kind in ["RuntimeReady", "NetworkReady"] {
        let c = conditions.iter().find(|c| c.r#type == kind).unwrap();
        assert!(c.status, "{kind} should be true: {c:?}");
    }
    let config: serde_json::Value = serde_json::from_str(&status.info["config"]).unwrap();
    assert_eq!(config["socket"], daemon.socket.to_string_lossy().as_ref());
    assert_eq!(config["cni"]["bin_dirs"][0], CNI_BIN_DIR);

    let rc = rt
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    // The driver in use, in RuntimeConfig and in the verbose config alike.
    let (driver, name) = if daemon.systemd {
        (cri::CgroupDriver::Systemd, "systemd")
    } else {
        (cri::CgroupDriver::Cgroupfs, "cgroupfs")
    };
    assert_eq!(rc.linux.unwrap().cgroup_driver, driver as i32);
    assert_eq!(config["cgroup_driver"], name);

    rt.update_runtime_config(cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig {
                pod_cidr: "10.200.0.0/24".into(),
            }),
        }),
    })
    .await
    .unwrap();
    let status = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.info["podCIDR"], "10.200.0.0/24");

    // An empty checkpoint request is bad input (tests/cri136.rs covers the call itself).
    let err = rt
        .checkpoint_container(cri::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("location"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn network_ready_follows_the_cni_conf_dir_without_restart() {
    let daemon = TestDaemon::start_with(false, &[]).await;
    let mut rt = daemon.runtime().await;
    let network_condition = |s: cri::StatusResponse| {
        s.status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.r#type == "NetworkReady")
            .unwrap()
    };
    let c = network_condition(
        rt.status(cri::StatusRequest::default())
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(!c.status);
    assert!(!c.reason.is_empty());
    assert!(
        c.message
            .contains(&daemon.cni_conf_dir.to_string_lossy().to_string()),
        "{c:?}"
    );

    daemon.write_bridge_conflist();
    let c = network_condition(
        rt.status(cri::StatusRequest::default())
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(c.status, "{c:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_lifecycle_leaves_nothing_behind() {
    let daemon = TestDaemon::start().await;
    let mut rt = daemon.runtime().await;
    let mut config = pod_config("lifecycle");
    config.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.0.0.10".into()],
        searches: vec!["svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    config.linux = Some(cri::LinuxPodSandboxConfig {
        sysctls: [(
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "0".to_string(),
        )]
        .into(),
        ..Default::default()
    });
    let id = run_pod(&mut rt, config).await.unwrap();
    assert_eq!(id.len(), 64);

    let status = pod_status(&mut rt, &id, true).await.unwrap();
    assert!(ready(&status), "{status:?}");
    let ip = ip_of(&status);
    assert!(
        ip.starts_with(&daemon.net.subnet_prefix()),
        "ip {ip} not in {}",
        daemon.net.subnet()
    );
    let s = status.status.as_ref().unwrap();
    assert_eq!(s.metadata.as_ref().unwrap().name, "lifecycle");
    assert_eq!(s.labels["app"], "lifecycle");
    assert!(s.created_at > 0);

    // The pause process: its own IPC and UTS namespaces, inside the pod netns.
    let pid = pause_pid(&status);
    assert!(process_exists(pid));
    let me = std::process::id();
    assert_ne!(ns_inode(pid, "ipc"), ns_inode(me, "ipc"));
    assert_ne!(ns_inode(pid, "uts"), ns_inode(me, "uts"));
    assert_ne!(ns_inode(pid, "net"), ns_inode(me, "net"));
    let netns = daemon.state.join("netns").join(&id);
    assert_eq!(
        std::fs::metadata(&netns)
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            })
            .unwrap(),
        ns_inode(pid, "net"),
        "the pinned netns is the pause's"
    );
    // Sysctl applied inside the pod's netns only.
    let inside = std::process::Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-n",
            "cat",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&inside.stdout).trim(), "0");
    // Hostname inside the UTS namespace.
    let hostname = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-u", "hostname"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&hostname.stdout).trim(),
        "lifecycle"
    );
    // Pod files.
    let pod_dir = daemon.root.join("sandboxes").join(&id);
    let resolv = std::fs::read_to_string(pod_dir.join("resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.0.0.10"), "{resolv}");
    assert!(resolv.contains("search svc.cluster.local"), "{resolv}");
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    let hosts = std::fs::read_to_string(pod_dir.join("hosts")).unwrap();
    assert!(
        hosts.contains(&ip) && hosts.contains("lifecycle"),
        "{hosts}"
    );
    assert!(!daemon.leftover_cgroups().is_empty(), "pod cgroup exists");
    assert_eq!(daemon.ip_leases(), vec![ip.clone()]);

    // The pod answers on its IP from the host (the bridge routes to it).
    let out = std::process::Command::new("ping")
        .args(["-c", "1", "-W", "2", &ip])
        .output()
        .expect("ping (iputils-ping) is needed: run hack/install-deps.sh");
    assert!(out.status.success(), "ping {ip}: {out:?}");

    // List with filters.
    let list = |filter: cri::PodSandboxFilter| {
        let mut rt = rt.clone();
        async move {
            rt.list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await
            .unwrap()
            .into_inner()
            .items
        }
    };
    assert_eq!(list(Default::default()).await.len(), 1);
    assert_eq!(
        list(cri::PodSandboxFilter {
            id: id[..12].to_string(),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert!(
        list(cri::PodSandboxFilter {
            label_selector: [("app".to_string(), "other".to_string())].into(),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        list(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady as i32
            }),
            ..Default::default()
        })
        .await
        .len(),
        1
    );

    // Stop: processes gone, IP released, state NotReady; twice is fine.
    stop_pod(&mut rt, &id).await;
    stop_pod(&mut rt, &id).await;
    let status = pod_status(&mut rt, &id, false).await.unwrap();
    assert!(!ready(&status));
    assert!(!process_exists(pid), "pause still running after stop");
    assert!(daemon.ip_leases().is_empty(), "IP lease kept after stop");
    assert!(!netns.exists(), "netns pin kept after stop");

    // Remove: nothing left anywhere; twice is fine; then NotFound.
    remove_pod(&mut rt, &id).await;
    remove_pod(&mut rt, &id).await;
    let err = pod_status(&mut rt, &id, false).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_nothing_left(&daemon, &id);
}

fn assert_nothing_left(daemon: &TestDaemon, id: &str) {
    assert!(
        daemon.leftover_processes().is_empty(),
        "processes left: {:?}\n{}",
        daemon.leftover_processes(),
        daemon.log_text()
    );
    assert!(
        daemon.leftover_mounts().is_empty(),
        "mounts left: {:?}",
        daemon.leftover_mounts()
    );
    assert!(
        daemon.leftover_cgroups().is_empty(),
        "cgroups left: {:?}",
        daemon.leftover_cgroups()
    );
    assert!(daemon.ip_leases().is_empty(), "leases left");
    assert!(!daemon.root.join("sandboxes").join(id).exists());
    assert!(!daemon.state.join("sandboxes").join(id).exists());
    assert!(!daemon.state.join("netns").join(id).exists());
    let sockets: Vec<_> = std::fs::read_dir(daemon.state.join("s"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(sockets.is_empty(), "shim sockets left: {sockets:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_ids_stop_and_remove_succeed_status_is_not_found() {
    let daemon = TestDaemon::start().await;
    let mut rt = daemon.runtime().await;
    let unknown = "f".repeat(64);
    stop_pod(&mut rt, &unknown).await;
    remove_pod(&mut rt, &unknown).await;
    let err = pod_status(&mut rt, &unknown, false).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = pod_status(&mut rt, "", false).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_invalid_argument_and_leave_nothing() {
    let daemon = TestDaemon::start().await;
    let mut rt = daemon.runtime().await;

    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let mut config = pod_config("nometa");
    config.metadata = None;
    let err = run_pod(&mut rt, config).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("metadata"), "{}", err.message());

    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("handler")),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("kata"));

    for (sysctl, host_net) in [("kernel.panic", false), ("net.ipv4.ip_forward", true)] {
        let mut config = pod_config("sysctl");
        config.linux = Some(cri::LinuxPodSandboxConfig {
            sysctls: [(sysctl.to_string(), "1".to_string())].into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: if host_net {
                        cri::NamespaceMode::Node as i32
                    } else {
                        cri::NamespaceMode::Pod as i32
                    },
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let err = run_pod(&mut rt, config).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{sysctl}");
        assert!(err.message().contains(sysctl), "{}", err.message());
    }

    let items = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(items.is_empty());
    assert!(daemon.leftover_processes().is_empty());
    assert!(daemon.leftover_mounts().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn cni_plugin_failure_reports_the_plugin_message_and_rolls_back() {
    let daemon = TestDaemon::start_with(false, &[]).await;
    // host-local has no address to give: the range holds only the gateway.
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "broken",
        "plugins": [{
            "type": "bridge",
            "bridge": daemon.net.bridge(),
            "ipam": {
                "type": "host-local",
                "dataDir": daemon.ipam_dir,
                "ranges": [[{
                    "subnet": daemon.net.subnet(),
                    "rangeStart": format!("{}1", daemon.net.subnet_prefix()),
                    "rangeEnd": format!("{}1", daemon.net.subnet_prefix()),
                    "gateway": format!("{}1", daemon.net.subnet_prefix())
                }]]
            }
        }]
    });
    std::fs::write(
        daemon.cni_conf_dir.join("10-broken.conflist"),
        conflist.to_string(),
    )
    .unwrap();
    let mut rt = daemon.runtime().await;
    let err = run_pod(&mut rt, pod_config("cnifail")).await.unwrap_err();
    assert!(
        err.message().contains("no IP addresses available"),
        "plugin message should reach the client: {}",
        err.message()
    );
    let items = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(items.is_empty(), "{items:?}");
    // Give the rollback's shim shutdown a moment to reap.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        daemon.leftover_processes().is_empty(),
        "{:?}",
        daemon.leftover_processes()
    );
    assert!(
        daemon.leftover_mounts().is_empty(),
        "{:?}",
        daemon.leftover_mounts()
    );
    assert!(
        daemon.leftover_cgroups().is_empty(),
        "{:?}",
        daemon.leftover_cgroups()
    );
    assert!(daemon.ip_leases().is_empty());
    let sandboxes = std::fs::read_dir(daemon.root.join("sandboxes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(sandboxes, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn host_network_pod_has_no_netns_and_no_ip() {
    let daemon = TestDaemon::start().await;
    let mut rt = daemon.runtime().await;
    let mut config = pod_config("hostnet");
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                pid: cri::NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run_pod(&mut rt, config).await.unwrap();
    let status = pod_status(&mut rt, &id, true).await.unwrap();
    assert!(ready(&status));
    assert_eq!(ip_of(&status), "");
    let pid = pause_pid(&status);
    let me = std::process::id();
    assert_eq!(ns_inode(pid, "net"), ns_inode(me, "net"));
    // A shared PID namespace: the pause is PID 1 of its own.
    assert_ne!(ns_inode(pid, "pid"), ns_inode(me, "pid"));
    let nspid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
        .unwrap();
    assert_eq!(nspid, "1");
    assert!(!daemon.state.join("netns").join(&id).exists());
    remove_pod(&mut rt, &id).await;
    assert_nothing_left(&daemon, &id);
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_run_with_same_metadata_returns_the_same_sandbox() {
    let daemon = TestDaemon::start().await;
    let mut rt = daemon.runtime().await;
    let config = pod_config("retry");
    // Two calls at once (a client that timed out and retried) and one after.
    let (mut rt_a, mut rt_b) = (rt.clone(), rt.clone());
    let (a, b) = tokio::join!(
        run_pod(&mut rt_a, config.clone()),
        run_pod(&mut rt_b, config.clone())
    );
    let a = a.unwrap();
    assert_eq!(a, b.unwrap());
    assert_eq!(run_pod(&mut rt, config).await.unwrap(), a);
    let items = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items.len(), 1);
    remove_pod(&mut rt, &a).await;
    assert_nothing_left(&daemon, &a);
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_survive_kill_9_of_the_daemon() {
    let mut daemon = TestDaemon::start().await;
    let mut rt = daemon.runtime().await;
    let mut before = Vec::new();
    for name in ["survivor-a", "survivor-b"] {
        let id = run_pod(&mut rt, pod_config(name)).await.unwrap();
        let status = pod_status(&mut rt, &id, true).await.unwrap();
        before.push((id, ip_of(&status), pause_pid(&status)));
    }
    daemon.restart().await;
    let mut rt = daemon.runtime().await;
    for (id, ip, pid) in &before {
        let status = pod_status(&mut rt, id, true).await.unwrap();
        assert!(ready(&status), "{id} not ready after restart");
        assert_eq!(&ip_of(&status), ip);
        assert_eq!(pause_pid(&status), *pid, "same pause process");
        assert!(process_exists(*pid));
    }
    // The reconnected shims still take orders.
    for (id, _, pid) in &before {
        stop_pod(&mut rt, id).await;
        assert!(!process_exists(*pid));
        remove_pod(&mut rt, id).await;
    }
    for (id, _, _) in &before {
        assert_nothing_left(&daemon, id);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn second_daemon_on_the_same_socket_is_refused_and_stale_socket_replaced() {
    let daemon = TestDaemon::start().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--config")
        .arg(daemon.dir.path().join("none.toml"))
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("--root")
        .arg(daemon.dir.path().join("root2"))
        .arg("--state")
        .arg(daemon.dir.path().join("state2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another berth daemon"), "{stderr}");
    // The first one still serves.
    let mut rt = daemon.runtime().await;
    rt.version(cri::VersionRequest::default()).await.unwrap();

    // A socket file left by a dead daemon does not stop a new one.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--config")
        .arg(daemon.dir.path().join("none.toml"))
        .arg("--socket")
        .arg(&stale)
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--cni-conf-dir")
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut served = false;
    for _ in 0..200 {
        if std::os::unix::net::UnixStream::connect(&stale).is_ok() {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(served, "daemon did not replace the stale socket");
}

#[test]
fn config_default_prints_a_config_the_daemon_accepts_and_unknown_keys_are_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("socket = \"/run/berth/berth.sock\""));
    assert!(text.contains("[cni]") && text.contains("[streaming]"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[streaming]\nadress = \"0.0.0.0\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("adress"), "{stderr}");
}

/// The README quickstart's pod (examples/pod.json, in crictl's JSON form) runs as written.
#[tokio::test(flavor = "multi_thread")]
async fn the_quickstart_example_pod_runs() {
    let daemon = TestDaemon::start().await;
    let mut rt = daemon.runtime().await;
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pod.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let map = |v: &serde_json::Value| -> std::collections::HashMap<String, String> {
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let meta = &json["metadata"];
    let config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: meta["name"].as_str().unwrap().into(),
            uid: meta["uid"].as_str().unwrap().into(),
            namespace: meta["namespace"].as_str().unwrap().into(),
            attempt: meta["attempt"].as_u64().unwrap() as u32,
        }),
        hostname: json["hostname"].as_str().unwrap().into(),
        log_directory: json["log_directory"].as_str().unwrap().into(),
        dns_config: Some(cri::DnsConfig {
            servers: strings(&json["dns_config"]["servers"]),
            searches: strings(&json["dns_config"]["searches"]),
            options: strings(&json["dns_config"]["options"]),
        }),
        labels: map(&json["labels"]),
        annotations: map(&json["annotations"]),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let id = run_pod(&mut rt, config).await.unwrap();
    let status = pod_status(&mut rt, &id, false).await.unwrap();
    assert!(ready(&status));
    assert!(ip_of(&status).starts_with(&daemon.net.subnet_prefix()));
    let resolv =
        std::fs::read_to_string(daemon.root.join("sandboxes").join(&id).join("resolv.conf"))
            .unwrap();
    assert!(resolv.contains("nameserver 1.1.1.1"), "{resolv}");
    remove_pod(&mut rt, &id).await;
    assert_nothing_left(&daemon, &id);
}
