//! The README quickstart, step by step, with a small CRI client instead of crictl (which CI
//! does not have): the same examples/pod.json and examples/container.json, read as crictl
//! reads them, and the same checks as hack/quickstart.sh. A step the README shows that
//! breaks here breaks for a reader.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use berth::cri::api as cri;
use common::streaming::port_forward_get;
use common::*;
use serde_json::Value;

const IMAGE: &str = "docker.io/library/busybox:latest";

/// The object at `value`, failing on a key this reader does not know: a field added to an
/// example must be taught here, or the test would pass while ignoring it.
fn object<'a>(value: &'a Value, what: &str, known: &[&str]) -> &'a serde_json::Map<String, Value> {
    let map = value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: an object"));
    for key in map.keys() {
        assert!(
            known.contains(&key.as_str()),
            "{what}: {key:?} is not read by tests/quickstart.rs; teach it"
        );
    }
    map
}

fn string(map: &serde_json::Map<String, Value>, key: &str) -> String {
    map.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strings(map: &serde_json::Map<String, Value>, key: &str) -> Vec<String> {
    map.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn string_map(map: &serde_json::Map<String, Value>, key: &str) -> HashMap<String, String> {
    map.get(key)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("a string").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn read_json(path: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// examples/pod.json as a PodSandboxConfig (crictl's field names: the proto's, snake_case).
fn example_pod() -> cri::PodSandboxConfig {
    let json = read_json("examples/pod.json");
    let pod = object(
        &json,
        "pod.json",
        &[
            "metadata",
            "hostname",
            "log_directory",
            "dns_config",
            "port_mappings",
            "labels",
            "annotations",
            "linux",
        ],
    );
    let metadata = object(
        &pod["metadata"],
        "pod.json metadata",
        &["name", "namespace", "uid", "attempt"],
    );
    let dns = pod.get("dns_config").map(|dns| {
        let dns = object(
            dns,
            "pod.json dns_config",
            &["servers", "searches", "options"],
        );
        cri::DnsConfig {
            servers: strings(dns, "servers"),
            searches: strings(dns, "searches"),
            options: strings(dns, "options"),
        }
    });
    assert_eq!(
        pod.get("port_mappings")
            .and_then(Value::as_array)
            .map(Vec::len),
        Some(0),
        "pod.json port_mappings: teach tests/quickstart.rs to read them"
    );
    object(&pod["linux"], "pod.json linux", &[]);
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: string(metadata, "name"),
            namespace: string(metadata, "namespace"),
            uid: string(metadata, "uid"),
            attempt: metadata["attempt"].as_u64().unwrap_or(0) as u32,
        }),
        hostname: string(pod, "hostname"),
        log_directory: string(pod, "log_directory"),
        dns_config: dns,
        labels: string_map(pod, "labels"),
        annotations: string_map(pod, "annotations"),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// examples/container.json as a ContainerConfig.
fn example_container() -> cri::ContainerConfig {
    let json = read_json("examples/container.json");
    let container = object(
        &json,
        "container.json",
        &[
            "metadata",
            "image",
            "command",
            "stop_signal",
            "mounts",
            "log_path",
            "linux",
        ],
    );
    let mounts = container["mounts"]
        .as_array()
        .expect("container.json mounts: a list")
        .iter()
        .map(|m| {
            let m = object(
                m,
                "container.json mount",
                &["container_path", "image", "image_sub_path", "readonly"],
            );
            let image = object(&m["image"], "container.json mount image", &["image"]);
            cri::Mount {
                container_path: string(m, "container_path"),
                image: Some(cri::ImageSpec {
                    image: string(image, "image"),
                    ..Default::default()
                }),
                image_sub_path: string(m, "image_sub_path"),
                readonly: m["readonly"].as_bool().expect("a bool"),
                ..Default::default()
            }
        })
        .collect();
    let metadata = object(&container["metadata"], "container.json metadata", &["name"]);
    let image = object(&container["image"], "container.json image", &["image"]);
    let linux = object(&container["linux"], "container.json linux", &["resources"]);
    let resources = object(
        &linux["resources"],
        "container.json resources",
        &["memory_limit_in_bytes"],
    );
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: string(metadata, "name"),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: string(image, "image"),
            ..Default::default()
        }),
        command: strings(container, "command"),
        // The CRI Signal enum's number, as crictl reads it (29: SIGUSR1).
        stop_signal: container["stop_signal"].as_i64().expect("a number") as i32,
        log_path: string(container, "log_path"),
        mounts,
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: resources["memory_limit_in_bytes"]
                    .as_i64()
                    .expect("a number"),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn exec_sync(
    rt: &mut berth::cri::api::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    id: &str,
    cmd: &[&str],
) -> cri::ExecSyncResponse {
    rt.exec_sync(cri::ExecSyncRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 5,
    })
    .await
    .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}"))
    .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_quickstart_works() {
    use cri::ContainerEventType::*;
    let daemon = TestDaemon::start().await;
    mirror_docker_io(&daemon);
    let mut rt = daemon.runtime().await;
    let mut images = daemon.images().await;

    // crictl version / info / runtime-config
    let version = rt.version(cri::VersionRequest::default()).await.unwrap();
    assert_eq!(version.get_ref().runtime_name, "berth");
    let status = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conditions = status.status.expect("a status").conditions;
    for ready in ["RuntimeReady", "NetworkReady"] {
        assert!(
            conditions.iter().any(|c| c.r#type == ready && c.status),
            "{ready} in {conditions:?}"
        );
    }
    let config = rt
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        config.linux.expect("linux runtime config").cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );

    // crictl runp examples/pod.json; the log directory moves into the daemon's private dir
    // so that parallel runs of this test never share a log file.
    let mut pod_config = example_pod();
    assert_eq!(pod_config.log_directory, "/tmp/berth-quickstart");
    pod_config.log_directory = daemon.dir.path().join("logs").display().to_string();
    let pod = run_pod(&mut rt, pod_config.clone()).await.expect("runp");
    // crictl events &: subscribed before the container exists.
    let mut events = rt
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();

    // crictl pods
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                id: pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(pods[0].metadata.as_ref().unwrap().name, "quickstart");

    // crictl inspectp: IP from the bridge, pause pid, netns path
    let inspect = pod_status(&mut rt, &pod, true).await.unwrap();
    let ip = &inspect
        .status
        .as_ref()
        .unwrap()
        .network
        .as_ref()
        .unwrap()
        .ip;
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "pod IP {ip:?}");
    let info: Value = serde_json::from_str(&inspect.info["info"]).unwrap();
    assert!(info["pid"].as_u64().is_some(), "{info}");
    let netns = info["netNamespacePath"].as_str().expect("netns path");
    assert!(Path::new(netns).exists(), "{netns}");

    // crictl pull; create; start; ps
    pull(&daemon, IMAGE).await;
    let ctr = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(example_container()),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .expect("create")
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .expect("start");
    let listed = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                id: ctr.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].state,
        cri::ContainerState::ContainerRunning as i32
    );
    assert_eq!(listed[0].metadata.as_ref().unwrap().name, "hello");

    // crictl logs: the CRI log file, "<time> stdout F hello from berth"
    let log = Path::new(&pod_config.log_directory).join("hello.log");
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("hello from berth") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        text.lines()
            .any(|l| l.ends_with(" stdout F hello from berth")),
        "{log:?}: {text:?}"
    );

    // crictl inspect
    let status = container_status(&mut rt, &ctr).await;
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(status.stop_signal, cri::Signal::Sigusr1 as i32);

    // crictl exec: cat /etc/hostname; exit 3
    let hostname = exec_sync(&mut rt, &ctr, &["cat", "/etc/hostname"]).await;
    assert_eq!(hostname.exit_code, 0);
    assert_eq!(String::from_utf8_lossy(&hostname.stdout), "quickstart\n");
    // crictl exec head -1 /image-etc/passwd: the image volume of container.json
    let passwd = exec_sync(&mut rt, &ctr, &["head", "-1", "/image-etc/passwd"]).await;
    assert_eq!(
        String::from_utf8_lossy(&passwd.stdout),
        "root:x:0:0:root:/root:/bin/sh\n"
    );
    assert_eq!(
        exec_sync(&mut rt, &ctr, &["sh", "-c", "exit 3"])
            .await
            .exit_code,
        3
    );

    // crictl port-forward "$POD" 8080:80; curl /hostname (busybox httpd serves /etc)
    let mut page = String::new();
    for _ in 0..50 {
        let url = rt
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![80],
            })
            .await
            .unwrap()
            .into_inner()
            .url;
        page = port_forward_get(&url, 80, "/hostname").await;
        if page.starts_with("HTTP/1.") {
            break;
        }
        // httpd takes a moment to listen.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(page.contains(" 200 "), "{page}");
    assert!(page.ends_with("\r\n\r\nquickstart\n"), "{page:?}");

    // crictl stats; crictl statsp
    let stats = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: ctr.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .expect("container stats");
    assert!(stats.cpu.is_some() && stats.memory.is_some(), "{stats:?}");
    let stats = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .expect("pod stats");
    let linux = stats.linux.expect("linux pod stats");
    assert!(linux.cpu.is_some() && linux.network.is_some(), "{linux:?}");

    // crictl update --memory 100000000
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: ctr.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 100_000_000,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("update");
    let status = container_status(&mut rt, &ctr).await;
    let memory = status
        .resources
        .and_then(|r| r.linux)
        .map(|l| l.memory_limit_in_bytes);
    assert_eq!(memory, Some(100_000_000));

    // crictl stop; rm; stopp; rmp
    rt.stop_container(cri::StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 2,
    })
    .await
    .expect("stop");
    let status = container_status(&mut rt, &ctr).await;
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    // The example's trap saw its stop signal and exited cleanly, well before the timeout.
    assert_eq!(status.exit_code, 0, "{status:?}");
    let log = std::fs::read_to_string(&status.log_path).unwrap_or_default();
    assert!(log.contains("stopped by SIGUSR1"), "{log:?}");
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .expect("rm");
    stop_pod(&mut rt, &pod).await;
    let status = pod_status(&mut rt, &pod, false).await.unwrap();
    assert_eq!(
        status.status.unwrap().state,
        cri::PodSandboxState::SandboxNotready as i32
    );
    remove_pod(&mut rt, &pod).await;

    // What crictl events printed meanwhile: the container's whole life.
    let mut seen = Vec::new();
    while !seen.contains(&(ContainerDeletedEvent as i32)) {
        let event = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .unwrap_or_else(|_| panic!("events so far: {seen:?}"))
            .unwrap()
            .expect("the event stream stays open");
        if event.container_id == ctr && seen.last() != Some(&event.container_event_type) {
            seen.push(event.container_event_type);
        }
    }
    let expected = [
        ContainerCreatedEvent,
        ContainerStartedEvent,
        ContainerStoppedEvent,
        ContainerDeletedEvent,
    ];
    assert_eq!(seen, expected.map(|e| e as i32), "{seen:?}");

    // The image steps: pull (up to date), images, inspecti, imagefsinfo, rmi.
    pull(&daemon, IMAGE).await;
    let listed = images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(
        listed
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t == IMAGE)),
        "{listed:?}"
    );
    let spec = || cri::ImageSpec {
        image: IMAGE.into(),
        ..Default::default()
    };
    let status = images
        .image_status(cri::ImageStatusRequest {
            image: Some(spec()),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.image.expect("inspecti").repo_tags, [IMAGE]);
    let fs = images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let used = fs.image_filesystems[0].used_bytes.as_ref().map(|u| u.value);
    assert!(used.unwrap_or(0) > 0, "{fs:?}");
    images
        .remove_image(cri::RemoveImageRequest {
            image: Some(spec()),
        })
        .await
        .expect("rmi");
    let status = images
        .image_status(cri::ImageStatusRequest {
            image: Some(spec()),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none(), "removed: {status:?}");
    daemon.assert_no_leaks("after the quickstart");
}
