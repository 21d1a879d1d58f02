//! The CRI of Kubernetes 1.36 through the real daemon: the six Stream lists against their
//! List twins, UpdatePodSandboxResources in the pod cgroup, and ContainerConfig.stop_signal.
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth::cri::api as cri;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use common::*;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const IMAGE: &str = "docker.io/library/busybox:latest";

async fn remove_everything(
    daemon: &TestDaemon,
    rt: &mut RuntimeServiceClient<Channel>,
    pods: &[String],
) {
    for id in pods {
        stop_pod(rt, id).await;
        remove_pod(rt, id).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    daemon.assert_no_leaks("after removing the pods");
}

/// Every message of a server stream, and how many there were.
async fn drain<T>(mut stream: tonic::Streaming<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(message) = stream.next().await {
        out.push(message.expect("a stream message"));
    }
    out
}

fn sorted(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    ids.into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_lists_answer_what_their_list_twins_answer_in_chunks_with_the_same_filters() {
    const CONTAINERS: usize = 300;
    let daemon = TestDaemon::start().await;
    let (
        mut rt,
        Pod {
            id: pod_id,
            config: pod_config,
            ..
        },
    ) = busybox_pod(&daemon, "streams").await;
    let (_, Pod { id: other_pod, .. }) = busybox_pod(&daemon, "streams-other").await;
    for i in 0..CONTAINERS {
        let mut config = container_config(&format!("c{i}"), IMAGE, &["sleep", "100"]);
        config
            .labels
            .insert("group".into(), if i % 3 == 0 { "a" } else { "b" }.into());
        create_container(&mut rt, &pod_id, &pod_config, config)
            .await
            .expect("CreateContainer");
    }

    let filters = [
        None,
        Some(cri::ContainerFilter {
            label_selector: [("group".to_string(), "a".to_string())].into(),
            ..Default::default()
        }),
        Some(cri::ContainerFilter {
            pod_sandbox_id: other_pod.clone(),
            ..Default::default()
        }),
        Some(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerCreated as i32,
            }),
            ..Default::default()
        }),
    ];
    for filter in filters {
        let listed = rt
            .list_containers(cri::ListContainersRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
        let chunks = drain(
            rt.stream_containers(cri::StreamContainersRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap()
            .into_inner(),
        )
        .await;
        let streamed: Vec<cri::Container> =
            chunks.iter().flat_map(|c| c.containers.clone()).collect();
        assert_eq!(
            sorted(streamed.iter().map(|c| c.id.clone())),
            sorted(listed.iter().map(|c| c.id.clone())),
            "filter {filter:?}"
        );
        assert_eq!(
            streamed.len(),
            listed.len(),
            "no container twice ({filter:?})"
        );
        if listed.len() > 128 {
            assert!(
                chunks.len() > 1,
                "{} containers came in one message",
                listed.len()
            );
        }
    }
    let all = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(all.len(), CONTAINERS);

    // Pods, with the state and label filters.
    for filter in [
        None,
        Some(cri::PodSandboxFilter {
            label_selector: [("app".to_string(), "streams-other".to_string())].into(),
            ..Default::default()
        }),
        Some(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxNotready as i32,
            }),
            ..Default::default()
        }),
    ] {
        let listed = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .items;
        let streamed = drain(
            rt.stream_pod_sandboxes(cri::StreamPodSandboxesRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap()
            .into_inner(),
        )
        .await;
        assert_eq!(
            sorted(
                streamed
                    .iter()
                    .flat_map(|c| c.pod_sandboxes.iter().map(|p| p.id.clone()))
            ),
            sorted(listed.iter().map(|p| p.id.clone())),
            "filter {filter:?}"
        );
    }

    // Stats: container stats with a label filter, pod stats and metrics of every pod.
    let stats_filter = Some(cri::ContainerStatsFilter {
        label_selector: [("group".to_string(), "a".to_string())].into(),
        ..Default::default()
    });
    let listed = rt
        .list_container_stats(cri::ListContainerStatsRequest {
            filter: stats_filter.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    let streamed = drain(
        rt.stream_container_stats(cri::StreamContainerStatsRequest {
            filter: stats_filter,
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    let ids = |stats: &[cri::ContainerStats]| {
        sorted(
            stats
                .iter()
                .map(|s| s.attributes.as_ref().unwrap().id.clone()),
        )
    };
    let streamed: Vec<_> = streamed
        .into_iter()
        .flat_map(|c| c.container_stats)
        .collect();
    assert_eq!(listed.len(), CONTAINERS / 3);
    assert_eq!(ids(&streamed), ids(&listed));

    let pod_filter = Some(cri::PodSandboxStatsFilter {
        id: pod_id.clone(),
        ..Default::default()
    });
    let listed = rt
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: pod_filter.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    let streamed: Vec<_> = drain(
        rt.stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest { filter: pod_filter })
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .into_iter()
    .flat_map(|c| c.pod_sandbox_stats)
    .collect();
    assert_eq!(streamed.len(), 1);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        streamed[0].attributes.as_ref().unwrap().id,
        listed[0].attributes.as_ref().unwrap().id
    );
    let containers_in = |s: &cri::PodSandboxStats| s.linux.as_ref().unwrap().containers.len();
    assert_eq!(containers_in(&streamed[0]), containers_in(&listed[0]));

    let listed = rt
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    let streamed: Vec<_> = drain(
        rt.stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .into_iter()
    .flat_map(|c| c.pod_sandbox_metrics)
    .collect();
    assert_eq!(
        sorted(streamed.iter().map(|m| m.pod_sandbox_id.clone())),
        sorted(listed.iter().map(|m| m.pod_sandbox_id.clone()))
    );
    assert_eq!(listed.len(), 2);

    // Images, with and without a filter.
    let mut images = daemon.images().await;
    for filter in [
        None,
        Some(cri::ImageFilter {
            image: Some(cri::ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
        }),
    ] {
        let listed = images
            .list_images(cri::ListImagesRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .images;
        let streamed = drain(
            images
                .stream_images(cri::StreamImagesRequest {
                    filter: filter.clone(),
                })
                .await
                .unwrap()
                .into_inner(),
        )
        .await;
        assert!(!listed.is_empty());
        assert_eq!(
            sorted(
                streamed
                    .iter()
                    .flat_map(|c| c.images.iter().map(|i| i.id.clone()))
            ),
            sorted(listed.iter().map(|i| i.id.clone())),
            "filter {filter:?}"
        );
    }

    // A client that reads one chunk and goes away: the daemon keeps serving.
    let mut stream = rt
        .stream_containers(cri::StreamContainersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.expect("a first chunk").unwrap();
    assert!(!first.containers.is_empty() && first.containers.len() < CONTAINERS);
    drop(stream);
    let status = rt.status(cri::StatusRequest { verbose: false }).await;
    assert!(
        status.is_ok(),
        "the daemon after a client went away: {status:?}"
    );

    remove_everything(&daemon, &mut rt, &[pod_id, other_pod]).await;
}

/// The pod's cgroup directory in the hierarchy holding `controller` (v1) or the v2 tree.
fn pod_cgroup(daemon: &TestDaemon, controller: &str, pod_id: &str) -> PathBuf {
    let root = cgroup_roots()
        .into_iter()
        .find(|r| {
            cgroup_v2()
                || r.file_name()
                    .is_some_and(|n| n.to_string_lossy().split(',').any(|c| c == controller))
        })
        .unwrap_or_else(|| panic!("no {controller} hierarchy"));
    let dir = root
        .join(daemon.cgroup_parent.trim_start_matches('/'))
        .join(pod_id);
    assert!(dir.is_dir(), "the pod cgroup {} is missing", dir.display());
    dir
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn update_pod_sandbox_resources_writes_resources_plus_overhead_to_the_pod_cgroup() {
    let daemon = TestDaemon::start().await;
    let (mut rt, Pod { id: pod_id, .. }) = busybox_pod(&daemon, "resize").await;
    let mib = 1 << 20;
    let request = cri::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod_id.clone(),
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 256 * mib,
            ..Default::default()
        }),
        overhead: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 10_000,
            cpu_shares: 100,
            memory_limit_in_bytes: 64 * mib,
            ..Default::default()
        }),
    };
    rt.update_pod_sandbox_resources(request.clone())
        .await
        .expect("UpdatePodSandboxResources");
    let memory = pod_cgroup(&daemon, "memory", &pod_id);
    let cpu = pod_cgroup(&daemon, "cpu", &pod_id);
    if cgroup_v2() {
        assert_eq!(read(&memory.join("memory.max")), (320 * mib).to_string());
        assert_eq!(read(&cpu.join("cpu.max")), "60000 100000");
    } else {
        assert_eq!(
            read(&memory.join("memory.limit_in_bytes")),
            (320 * mib).to_string()
        );
        assert_eq!(read(&cpu.join("cpu.shares")), "612");
        assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "60000");
        assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    }

    // A resize down: the new figures replace the old.
    let mut smaller = request.clone();
    smaller.resources.as_mut().unwrap().memory_limit_in_bytes = 128 * mib;
    rt.update_pod_sandbox_resources(smaller)
        .await
        .expect("resize down");
    let file = if cgroup_v2() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    assert_eq!(read(&memory.join(file)), (192 * mib).to_string());

    let mut unknown = request.clone();
    unknown.pod_sandbox_id = "0123456789abcdef".into();
    let err = rt.update_pod_sandbox_resources(unknown).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());

    let mut no_resources = request.clone();
    no_resources.resources = None;
    let err = rt
        .update_pod_sandbox_resources(no_resources)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        err.message()
    );
    assert_eq!(
        read(&memory.join(file)),
        (192 * mib).to_string(),
        "a refused update changed the cgroup"
    );

    remove_everything(&daemon, &mut rt, &[pod_id]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_signal_from_the_cri_is_sent_reported_and_kept_across_a_restart() {
    let mut daemon = TestDaemon::start().await;
    let (
        mut rt,
        Pod {
            id: pod_id,
            config: pod_config,
            ..
        },
    ) = busybox_pod(&daemon, "stopsig").await;
    // The trap runs between two sleeps: the shell records which signal stopped it.
    let script = "trap 'echo stopped-by-USR1; exit 0' USR1; trap 'echo stopped-by-TERM; exit 1' TERM; \
                  echo ready; while true; do sleep 0.1; done";
    let mut config = container_config("trapper", IMAGE, &["sh", "-c", script]);
    config.stop_signal = cri::Signal::Sigusr1 as i32;
    let id = create_container(&mut rt, &pod_id, &pod_config, config)
        .await
        .expect("CreateContainer");
    start_container(&mut rt, &id).await.expect("StartContainer");
    assert_eq!(
        container_status(&mut rt, &id).await.stop_signal,
        cri::Signal::Sigusr1 as i32
    );

    // Without one, the busybox image (no STOPSIGNAL) stops with SIGTERM, and says so.
    let plain = create_container(
        &mut rt,
        &pod_id,
        &pod_config,
        container_config("plain", IMAGE, &["sleep", "100"]),
    )
    .await
    .expect("CreateContainer");
    assert_eq!(
        container_status(&mut rt, &plain).await.stop_signal,
        cri::Signal::Sigterm as i32
    );

    daemon.restart().await;
    let mut rt = daemon.runtime().await;
    assert_eq!(
        container_status(&mut rt, &id).await.stop_signal,
        cri::Signal::Sigusr1 as i32,
        "the stop signal after a daemon restart"
    );
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 10,
    })
    .await
    .expect("StopContainer");
    let status = wait_exited(&mut rt, &id).await;
    let log = std::fs::read_to_string(Path::new(&pod_config.log_directory).join("trapper.log"))
        .unwrap_or_default();
    assert!(log.contains("stopped-by-USR1"), "log: {log:?}");
    assert_eq!(status.exit_code, 0, "{status:?}");

    // A value outside the enum is refused and leaves no container.
    let mut bad = container_config("bad-signal", IMAGE, &["true"]);
    bad.stop_signal = 999;
    let err = create_container(&mut rt, &pod_id, &pod_config, bad)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        err.message()
    );
    assert!(err.message().contains("stop_signal"), "{}", err.message());
    let names: Vec<String> = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .filter_map(|c| c.metadata.map(|m| m.name))
        .collect();
    assert!(!names.contains(&"bad-signal".to_string()), "{names:?}");

    remove_everything(&daemon, &mut rt, &[pod_id]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_namespaces_host_network_is_reported_false_because_such_a_pod_is_refused() {
    let daemon = TestDaemon::start().await;
    let mut rt = daemon.runtime().await;
    let status = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let features = status.features.expect("RuntimeFeatures");
    assert!(!features.user_namespaces_host_network);
    let mut config = pod_config("userns-hostnet");
    with_userns(
        &mut config,
        userns_options(cri::NamespaceMode::Pod, &[(0, 100_000, 65_536)]),
    );
    if let Some(options) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        options.network = cri::NamespaceMode::Node as i32;
    }
    let err = run_pod(&mut rt, config).await.unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        err.message()
    );
    daemon.assert_no_leaks("after the refused pod");
}

#[tokio::test(flavor = "multi_thread")]
async fn psi_and_io_are_reported_where_the_cgroup_has_pressure_files_and_empty_on_v1() {
    let daemon = TestDaemon::start().await;
    let (
        mut rt,
        Pod {
            id: pod_id,
            config: pod_config,
            ..
        },
    ) = busybox_pod(&daemon, "psi").await;
    let id = create_container(
        &mut rt,
        &pod_id,
        &pod_config,
        container_config("busy", IMAGE, &["sleep", "100"]),
    )
    .await
    .expect("CreateContainer");
    start_container(&mut rt, &id).await.expect("StartContainer");
    // The collector samples once per period: wait for a sample with CPU figures.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let stats = rt
            .container_stats(cri::ContainerStatsRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .expect("stats");
        if stats
            .cpu
            .as_ref()
            .is_some_and(|c| c.usage_core_nano_seconds.is_some())
        {
            break stats;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no CPU sample: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let pod_stats = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .expect("pod stats");
    let pod_linux = pod_stats.linux.expect("linux pod stats");
    let cpu_psi = stats.cpu.as_ref().unwrap().psi;
    let memory_psi = stats.memory.as_ref().unwrap().psi;
    if cgroup_v2() {
        for (what, psi) in [("cpu", &cpu_psi), ("memory", &memory_psi)] {
            let psi = psi
                .as_ref()
                .unwrap_or_else(|| panic!("{what} PSI on cgroup v2"));
            assert!(psi.some.is_some(), "{what}: {psi:?}");
        }
        assert!(
            stats.io.as_ref().and_then(|io| io.psi.as_ref()).is_some(),
            "{:?}",
            stats.io
        );
        assert!(pod_linux.io.is_some(), "pod io on cgroup v2");
    } else {
        // v1 has no pressure files: the figures are absent, not zero.
        assert_eq!(cpu_psi, None);
        assert_eq!(memory_psi, None);
        assert_eq!(stats.io, None);
        assert_eq!(pod_linux.io, None);
        assert_eq!(pod_linux.cpu.unwrap().psi, None);
    }

    // ListPodSandboxMetrics: the same figures under cAdvisor's names, for the pod's own
    // cgroup and for the container, where the pressure files exist.
    let metrics = rt
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics
        .into_iter()
        .find(|m| m.pod_sandbox_id == pod_id)
        .expect("the pod's metrics");
    let names = |metrics: &[cri::Metric]| -> BTreeSet<String> {
        metrics
            .iter()
            .map(|m| m.name.clone())
            .filter(|n| n.starts_with("container_pressure_"))
            .collect()
    };
    let container_metrics = metrics
        .container_metrics
        .iter()
        .find(|c| c.container_id == id)
        .expect("the container's metrics");
    for (whose, found) in [
        ("pod", names(&metrics.metrics)),
        ("container", names(&container_metrics.metrics)),
    ] {
        if cgroup_v2() {
            for resource in ["cpu", "memory", "io"] {
                let waiting = format!("container_pressure_{resource}_waiting_seconds_total");
                assert!(found.contains(&waiting), "{whose}: {waiting} in {found:?}");
            }
            // memory.pressure always has a `full` line.
            assert!(
                found.contains("container_pressure_memory_stalled_seconds_total"),
                "{whose}: {found:?}"
            );
        } else {
            assert!(found.is_empty(), "{whose} on cgroup v1: {found:?}");
        }
    }
    remove_everything(&daemon, &mut rt, &[pod_id]).await;
}

/// ExecSync of `sh -c script` (10 s timeout): exit code and stdout+stderr as text.
async fn sh(rt: &mut RuntimeServiceClient<Channel>, id: &str, script: &str) -> (i32, String) {
    let out = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 10,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.exit_code, text)
}

fn image_mount(container_path: &str, image: &str, sub_path: &str) -> cri::Mount {
    cri::Mount {
        container_path: container_path.into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    }
}

async fn remove_image(daemon: &TestDaemon, image: &str) -> Result<(), tonic::Status> {
    daemon
        .images()
        .await
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
        })
        .await
        .map(|_| ())
}

async fn container_names(rt: &mut RuntimeServiceClient<Channel>) -> Vec<String> {
    rt.list_containers(cri::ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
        .into_iter()
        .filter_map(|c| c.metadata.map(|m| m.name))
        .collect()
}

/// berth-test/layers:v1 (hack/test-images.sh) has whiteouts, an opaque directory and a
/// symlink in /layers: a volume of it must show the merged image, as its rootfs would.
#[tokio::test(flavor = "multi_thread")]
async fn image_volumes_show_the_image_read_only_whole_or_by_sub_path_and_hold_it_against_removal() {
    let mut daemon = TestDaemon::start().await;
    let (
        mut rt,
        Pod {
            id: pod_id,
            config: pod_config,
            ..
        },
    ) = busybox_pod(&daemon, "imgvol").await;
    let layers = format!("{}/berth-test/layers:v1", registry());
    pull(&daemon, &layers).await;
    let layers_id = daemon
        .images()
        .await
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: layers.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .expect("pulled")
        .id;

    let mut config = container_config("vols", IMAGE, &["sleep", "1000"]);
    config.mounts = vec![
        // By reference, the whole image.
        image_mount("/whole", &layers, ""),
        // By image ID, one directory (whose lower-layer contents an opaque dir replaced).
        image_mount("/opaque", &layers_id, "layers/opaque"),
        // A file, reached through the image's own symlink.
        image_mount("/keep.txt", &layers, "layers/symlink"),
    ];
    let id = create_container(&mut rt, &pod_id, &pod_config, config)
        .await
        .expect("CreateContainer with image volumes");
    start_container(&mut rt, &id).await.expect("StartContainer");

    let (code, out) = sh(&mut rt, &id, "ls /whole/layers | sort | tr '\\n' ' '").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.trim(),
        "fifo hardlink-a hardlink-b keep.txt opaque replaced.txt setuid symlink xattr.txt",
        "the merged image, whiteouts applied"
    );
    assert_eq!(
        sh(&mut rt, &id, "cat /whole/layers/replaced.txt").await,
        (0, "layer 3\n".into())
    );
    assert_eq!(
        sh(&mut rt, &id, "ls /opaque").await,
        (0, "new.txt\n".into()),
        "only the sub-path, as the opaque directory leaves it"
    );
    assert_eq!(
        sh(&mut rt, &id, "cat /keep.txt").await,
        (0, "kept from layer 2\n".into())
    );
    for write in [
        "touch /whole/new",
        "echo x > /whole/layers/keep.txt",
        "touch /opaque/x",
        "echo x > /keep.txt",
    ] {
        let (code, out) = sh(&mut rt, &id, write).await;
        assert_ne!(code, 0, "{write} must fail on a read-only volume");
        assert!(out.contains("Read-only file system"), "{write}: {out}");
    }
    // Mounted nosuid: the set-uid bit gives nothing.
    let (_, mounts) = sh(&mut rt, &id, "grep ' /whole ' /proc/self/mountinfo").await;
    assert!(mounts.contains("ro,nosuid,nodev"), "{mounts}");
    let status = container_status(&mut rt, &id).await;
    let reported: Vec<(String, String, String)> = status
        .mounts
        .iter()
        .map(|m| {
            (
                m.container_path.clone(),
                m.image
                    .as_ref()
                    .map(|i| i.image.clone())
                    .unwrap_or_default(),
                m.image_sub_path.clone(),
            )
        })
        .collect();
    assert_eq!(
        reported,
        [
            ("/whole".to_string(), layers.clone(), String::new()),
            ("/opaque".into(), layers_id.clone(), "layers/opaque".into()),
            ("/keep.txt".into(), layers.clone(), "layers/symlink".into()),
        ]
    );

    // In use as a volume, and (busybox) as a container's image: neither can be removed,
    // and the refusal names the container; a daemon restart changes nothing.
    daemon.restart().await;
    let mut rt = daemon.runtime().await;
    let busybox = IMAGE.to_string();
    for (image, how) in [(&layers, "mounts as an image volume"), (&busybox, "runs")] {
        let err = remove_image(&daemon, image).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::FailedPrecondition,
            "{}",
            err.message()
        );
        assert!(
            err.message().contains(&id) && err.message().contains(how),
            "{}",
            err.message()
        );
    }
    assert_eq!(
        sh(&mut rt, &id, "cat /keep.txt").await,
        (0, "kept from layer 2\n".into()),
        "the volume after a daemon restart"
    );

    // Bad input: nothing is created for any of it.
    let bad_cases: [(&str, cri::Mount, tonic::Code, &str); 5] = [
        (
            "not-pulled",
            image_mount("/v", "docker.io/library/not-pulled:v1", ""),
            tonic::Code::NotFound,
            "mounts[0].image",
        ),
        (
            "missing-sub-path",
            image_mount("/v", &layers, "layers/gone.txt"),
            tonic::Code::InvalidArgument,
            "does not exist",
        ),
        (
            "dot-dot",
            image_mount("/v", &layers, "layers/../../etc"),
            tonic::Code::InvalidArgument,
            "image_sub_path",
        ),
        (
            "absolute",
            image_mount("/v", &layers, "/layers"),
            tonic::Code::InvalidArgument,
            "image_sub_path",
        ),
        (
            "below-a-file",
            image_mount("/v", &layers, "layers/keep.txt/x"),
            tonic::Code::InvalidArgument,
            "does not exist",
        ),
    ];
    let dirs_before = std::fs::read_dir(daemon.root.join("containers"))
        .map(|d| d.count())
        .unwrap_or(0);
    for (name, mount, code, words) in bad_cases {
        let mut config = container_config(name, IMAGE, &["true"]);
        config.mounts = vec![mount];
        let err = create_container(&mut rt, &pod_id, &pod_config, config)
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{name}: {}", err.message());
        assert!(err.message().contains(words), "{name}: {}", err.message());
    }
    let names = container_names(&mut rt).await;
    assert_eq!(names, ["vols"], "no container of the refused requests");
    assert_eq!(
        std::fs::read_dir(daemon.root.join("containers"))
            .map(|d| d.count())
            .unwrap_or(0),
        dirs_before,
        "no container directory of the refused requests"
    );

    // Once the container is gone, the images can go.
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("RemoveContainer");
    remove_image(&daemon, &layers_id)
        .await
        .expect("RemoveImage once no container uses it");
    remove_everything(&daemon, &mut rt, &[pod_id]).await;
}

/// A pod with its own user namespace: an image volume's files show owned by the pod's
/// root, as the container's own rootfs does, also when the volume's image shares layers
/// with the container's (busybox in busybox: those layers are id-mapped once).
#[tokio::test(flavor = "multi_thread")]
async fn image_volumes_in_a_user_namespace_pod_show_the_images_files_owned_by_the_pods_root() {
    let daemon = TestDaemon::start().await;
    let (mut rt, pod) = busybox_pod_with(&daemon, "imgvol-userns", |config| {
        with_userns(
            config,
            userns_options(cri::NamespaceMode::Pod, &[(0, 300_000, 65_536)]),
        )
    })
    .await;
    let layers = format!("{}/berth-test/layers:v1", registry());
    pull(&daemon, &layers).await;
    let mut config = container_config("vols", IMAGE, &["sleep", "1000"]);
    config.mounts = vec![
        image_mount("/layers", &layers, "layers"),
        image_mount("/busybox", IMAGE, "bin"),
    ];
    let id = create_container(&mut rt, &pod.id, &pod.config, config)
        .await
        .expect("CreateContainer with image volumes in a user namespace pod");
    start_container(&mut rt, &id).await.expect("StartContainer");
    assert_eq!(
        sh(&mut rt, &id, "cat /layers/replaced.txt").await,
        (0, "layer 3\n".into())
    );
    // Owned by root inside (host uid 300000), not by the overflow id an unmapped
    // or twice-mapped owner would show as.
    assert_eq!(
        sh(
            &mut rt,
            &id,
            "stat -c '%u:%g' /layers/replaced.txt /busybox/sh /bin/sh"
        )
        .await,
        (0, "0:0\n0:0\n0:0\n".into())
    );
    let (code, out) = sh(&mut rt, &id, "/busybox/true && touch /layers/x").await;
    assert_ne!(code, 0, "the volume is read-only: {out}");
    assert!(out.contains("Read-only file system"), "{out}");
    remove_everything(&daemon, &mut rt, &[pod.id]).await;
}

async fn checkpoint(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    location: &Path,
) -> Result<(), tonic::Status> {
    rt.checkpoint_container(cri::CheckpointContainerRequest {
        container_id: id.into(),
        location: location.display().to_string(),
        timeout: 60,
    })
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoint_container_without_criu_or_of_a_missing_or_stopped_container_is_refused_clearly()
{
    let daemon = TestDaemon::start_with(true, &["--criu-path", "/nonexistent/criu"]).await;
    let (
        mut rt,
        Pod {
            id: pod_id,
            config: pod_config,
            ..
        },
    ) = busybox_pod(&daemon, "nocriu").await;
    let location = daemon.dir.path().join("checkpoint.tar");

    let err = checkpoint(&mut rt, "no-such-container", &location)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());

    let id = create_container(
        &mut rt,
        &pod_id,
        &pod_config,
        container_config("sleeper", IMAGE, &["sleep", "1000"]),
    )
    .await
    .expect("CreateContainer");
    let err = checkpoint(&mut rt, &id, &location).await.unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::FailedPrecondition,
        "{}",
        err.message()
    );
    assert!(err.message().contains("not running"), "{}", err.message());

    start_container(&mut rt, &id).await.expect("StartContainer");
    let err = checkpoint(&mut rt, &id, &location).await.unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::FailedPrecondition,
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("CRIU") && err.message().contains("/nonexistent/criu"),
        "{}",
        err.message()
    );
    let err = checkpoint(&mut rt, &id, Path::new("relative.tar"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        err.message()
    );
    assert!(!location.exists(), "nothing written at the location");
    let leftovers: Vec<_> = std::fs::read_dir(daemon.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("checkpoint"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        container_status(&mut rt, &id).await.state,
        cri::ContainerState::ContainerRunning as i32,
        "still running"
    );
    remove_everything(&daemon, &mut rt, &[pod_id]).await;
}

/// The names in a tar archive (through the host's tar).
fn archive_names(archive: &Path) -> Vec<String> {
    let out = std::process::Command::new("tar")
        .arg("-tf")
        .arg(archive)
        .output()
        .expect("tar is needed");
    assert!(out.status.success(), "tar -tf {}", archive.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

/// Whether CRIU can work on this kernel (`criu check`): CRIU 3.17 (Debian 12's) fails its
/// vDSO probe on Linux 6.13 and later.
/// Whether CRIU can checkpoint on this kernel (`criu check`). Where the runner says it must
/// (BERTH_TEST_CRIU_WORKS=1: the test VM, whose Debian 12 kernels CRIU 3.17 supports), a
/// failing check fails the test instead of choosing the refusal branch; elsewhere (this
/// host's 6.18, where 3.17 fails its vDSO probe) the refusal is what is tested.
fn criu_works() -> bool {
    let criu = berth::container::checkpoint::find_criu(Path::new("criu"))
        .expect("CRIU is needed for this test: apt-get install criu (hack/install-deps.sh)");
    let check = std::process::Command::new(criu)
        .arg("check")
        .output()
        .expect("run criu check");
    if std::env::var("BERTH_TEST_CRIU_WORKS").as_deref() == Ok("1") {
        assert!(
            check.status.success(),
            "BERTH_TEST_CRIU_WORKS=1 but `criu check` fails: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    check.status.success()
}

/// A counter that writes /tmp/count ten times a second, in the pod's PID namespace (POD,
/// the CRI's default: the pause is its init) or in its own (CONTAINER, as the kubelet asks
/// unless the pod shares its process namespace).
async fn start_counter(
    rt: &mut RuntimeServiceClient<Channel>,
    pod_id: &str,
    pod_config: &cri::PodSandboxConfig,
    name: &str,
    pid: cri::NamespaceMode,
) -> String {
    let mut config = container_config(
        name,
        IMAGE,
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done",
        ],
    );
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: pid as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create_container(rt, pod_id, pod_config, config)
        .await
        .expect("CreateContainer");
    start_container(rt, &id).await.expect("StartContainer");
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoint_container_writes_a_criu_archive_and_leaves_the_container_running() {
    let works = criu_works();
    let daemon = TestDaemon::start().await;
    let (
        mut rt,
        Pod {
            id: pod_id,
            config: pod_config,
            ..
        },
    ) = busybox_pod(&daemon, "criu").await;
    let id = start_counter(
        &mut rt,
        &pod_id,
        &pod_config,
        "counter",
        cri::NamespaceMode::Pod,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let location = daemon.dir.path().join("counter.tar");
    if !works {
        // The node cannot checkpoint: said so, with CRIU's own reason, and nothing left.
        let err = checkpoint(&mut rt, &id, &location).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::FailedPrecondition,
            "{}",
            err.message()
        );
        assert!(
            err.message().contains("CRIU cannot run on this kernel"),
            "{}",
            err.message()
        );
        assert!(!location.exists());
        let leftovers: Vec<_> = std::fs::read_dir(daemon.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("checkpoint"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        remove_everything(&daemon, &mut rt, &[pod_id]).await;
        return;
    }
    let own = start_counter(
        &mut rt,
        &pod_id,
        &pod_config,
        "own-pid-ns",
        cri::NamespaceMode::Container,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (id, location) in [
        (&id, location.clone()),
        (&own, daemon.dir.path().join("own-pid-ns.tar")),
    ] {
        checkpoint(&mut rt, id, &location)
            .await
            .unwrap_or_else(|e| panic!("CheckpointContainer {id}: {}", e.message()));
        let names = archive_names(&location);
        for expected in [
            "spec.dump",
            "config.dump",
            "rootfs-diff.tar",
            "dump.log",
            "checkpoint/inventory.img",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(
            names.iter().any(|n| n.starts_with("checkpoint/pages-")),
            "memory pages in {names:?}"
        );
        // --leave-running: it still counts.
        let (_, before) = sh(&mut rt, id, "cat /tmp/count").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, after) = sh(&mut rt, id, "cat /tmp/count").await;
        assert_ne!(before, after, "the container runs on after the checkpoint");
    }
    // The same location again: never overwritten.
    let err = checkpoint(&mut rt, &id, &location).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{}", err.message());
    remove_everything(&daemon, &mut rt, &[pod_id]).await;
}
