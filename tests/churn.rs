//! Churn: 200 pods, each with a running container, created and removed by several clients
//! at once; every leak counter (processes, mounts, netns, veths, IP leases, cgroups, files,
//! daemon fds) must be back where it started.
mod common;

use std::time::{Duration, Instant};

use berth::cri::api as cri;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use common::*;
use tonic::transport::Channel;

const IMAGE: &str = "docker.io/library/busybox:latest";
/// 200 pods, or `BERTH_CHURN_PODS` (the emulated test VM runs fewer: hack/test.sh).
fn pods() -> usize {
    std::env::var("BERTH_CHURN_PODS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200)
}
const CLIENTS: usize = 4;

fn container_config() -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "1000".into()],
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

const STEPS: [&str; 7] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];

/// One pod's whole life, as the kubelet drives it; returns how long each step took.
async fn cycle(rt: &mut RuntimeServiceClient<Channel>, name: &str) -> [Duration; 7] {
    let mut times = [Duration::ZERO; 7];
    let mut t = Instant::now();
    let mut lap = |i: usize| {
        times[i] = t.elapsed();
        t = Instant::now();
    };
    let config = pod_config(name);
    let pod = run_pod(rt, config.clone()).await.expect("RunPodSandbox");
    lap(0);
    let ctr = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config()),
            sandbox_config: Some(config),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    lap(1);
    rt.start_container(cri::StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .expect("StartContainer");
    lap(2);
    rt.stop_container(cri::StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    lap(3);
    rt.remove_container(cri::RemoveContainerRequest { container_id: ctr })
        .await
        .expect("RemoveContainer");
    lap(4);
    stop_pod(rt, &pod).await;
    lap(5);
    remove_pod(rt, &pod).await;
    lap(6);
    times
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_pods_with_containers_by_four_clients_leave_nothing() {
    let daemon = TestDaemon::start().await;
    mirror_docker_io(&daemon);
    pull(&daemon, IMAGE).await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut rt = daemon.runtime().await;
        // One warm-up cycle each: the bridge and the client's connection exist from here on.
        cycle(&mut rt, &format!("warm-{i}")).await;
        clients.push(rt);
    }
    daemon.assert_no_leaks("after the warm-up");
    let fds_before = daemon.daemon_fds();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut rt) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            for n in (i..pods()).step_by(CLIENTS) {
                times.push(cycle(&mut rt, &format!("churn-{n}")).await);
            }
            (rt, times)
        }));
    }
    let mut clients = Vec::new();
    let mut times = Vec::new();
    for task in tasks {
        let (rt, t) = task.await.expect("a churn client panicked");
        clients.push(rt);
        times.extend(t);
    }
    let elapsed = started.elapsed();
    println!(
        "churn: {} pods with a container by {CLIENTS} clients in {:.2} s",
        pods(),
        elapsed.as_secs_f64()
    );
    for (i, step) in STEPS.iter().enumerate() {
        let mut samples: Vec<Duration> = times.iter().map(|t| t[i]).collect();
        samples.sort();
        println!(
            "  {step:<17} median {:>7.1} ms  p90 {:>7.1} ms",
            samples[samples.len() / 2].as_secs_f64() * 1e3,
            samples[samples.len() * 9 / 10].as_secs_f64() * 1e3
        );
    }

    daemon.assert_no_leaks("after the churn");
    // Connections to shims that are gone close a moment after their last request.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut fds_after = daemon.daemon_fds();
    while fds_after > fds_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        fds_after = daemon.daemon_fds();
    }
    assert!(
        fds_after <= fds_before,
        "daemon fds went from {fds_before} to {fds_after}"
    );
    let pods = clients[0]
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    let log = daemon.log_text();
    assert!(
        !log.contains(" ERROR "),
        "errors logged during the churn:\n{log}"
    );
}
