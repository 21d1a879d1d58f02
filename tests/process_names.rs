//! Operators can tell berth's processes apart in `ps`: the shim is `berth-shim` (its command
//! line names its pod), the pause `berth-pause`, and init `berth-init` while it waits for
//! StartContainer.

mod common;

use berth::cri::api as cri;
use common::*;

const IMAGE: &str = "docker.io/library/busybox:latest";

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/comm: {e}"))
        .trim()
        .to_string()
}

fn info(map: &std::collections::HashMap<String, String>) -> serde_json::Value {
    serde_json::from_str(map.get("info").expect("verbose info")).expect("info json")
}

#[tokio::test(flavor = "multi_thread")]
async fn shim_pause_and_init_show_their_role_in_comm() {
    let daemon = TestDaemon::start().await;
    mirror_docker_io(&daemon);
    pull(&daemon, IMAGE).await;
    let mut rt = daemon.runtime().await;
    let config = pod_config("names");
    let pod_id = run_pod(&mut rt, config.clone())
        .await
        .expect("RunPodSandbox");

    let status = pod_status(&mut rt, &pod_id, true).await.expect("status");
    let pod_info = info(&status.info);
    let shim_pid = pod_info["shimPid"].as_u64().expect("shimPid in info") as u32;
    assert_eq!(comm(shim_pid), "berth-shim");
    let cmdline = std::fs::read(format!("/proc/{shim_pid}/cmdline")).expect("shim cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains(&format!("--sandbox-id {pod_id}")),
        "the shim's command line names its pod: {cmdline}"
    );
    assert_eq!(comm(pause_pid(&status)), "berth-pause");

    // Created, not started: init waits at the start gate under its own name.
    let container = container_config("names", IMAGE, &["sleep", "30"]);
    let id = create_container(&mut rt, &pod_id, &config, container)
        .await
        .expect("CreateContainer");
    let status = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner();
    let init_pid = info(&status.info)["pid"].as_u64().expect("pid in info") as u32;
    assert!(init_pid > 0, "a created container has its init's pid");
    assert_eq!(comm(init_pid), "berth-init");

    // Started: the workload replaces init.
    start_container(&mut rt, &id).await.expect("StartContainer");
    assert_eq!(comm(init_pid), "sleep");

    rt.remove_container(cri::RemoveContainerRequest { container_id: id })
        .await
        .expect("RemoveContainer");
    stop_pod(&mut rt, &pod_id).await;
    remove_pod(&mut rt, &pod_id).await;
    daemon.assert_no_leaks("after the pod is removed");
}
