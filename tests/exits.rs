//! Exits pushed by the shim, through the real daemon: StopContainer returns on the pushed
//! exit, reads never write records, and a restarted daemon subscribes again and misses
//! neither an exit from while it was down nor one after.
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use berth::cri::api as cri;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use common::*;
use tonic::transport::Channel;

const IMAGE: &str = "docker.io/library/busybox:latest";

async fn run_container(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    pod_config: &cri::PodSandboxConfig,
    name: &str,
    command: &[&str],
) -> String {
    let config = container_config(name, IMAGE, command);
    let id = create_container(rt, pod, pod_config, config).await.unwrap();
    start_container(rt, &id).await.unwrap();
    id
}

fn record_path(daemon: &TestDaemon, id: &str) -> PathBuf {
    daemon
        .root
        .join("containers")
        .join(id)
        .join("container.json")
}

fn record_on_disk(daemon: &TestDaemon, id: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(record_path(daemon, id)).unwrap()).unwrap()
}

/// Waits (at most 20 s) until the record ON DISK says exited, asking the daemon nothing:
/// only a pushed exit can get it there.
fn wait_exited_on_disk(daemon: &TestDaemon, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let record = record_on_disk(daemon, id);
        if record["state"] == "exited" {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "the record of {id} never said exited without being read: {record}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mtime(daemon: &TestDaemon, id: &str) -> SystemTime {
    std::fs::metadata(record_path(daemon, id))
        .unwrap()
        .modified()
        .unwrap()
}

fn kill_process(pid: u64, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_container_returns_once_the_process_is_gone_with_its_exit_recorded() {
    let daemon = TestDaemon::start().await;
    let (
        mut rt,
        Pod {
            id: pod, config, ..
        },
    ) = busybox_pod(&daemon, "exits-stop").await;
    // Exits 0 on SIGTERM (PID 1 of its namespace ignores an unhandled one).
    let id = run_container(
        &mut rt,
        &pod,
        &config,
        "graceful",
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.05; done",
        ],
    )
    .await;
    let stop = rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 60,
    });
    // A hang guard far below the 60 s grace: the call must end on the exit, not the grace.
    tokio::time::timeout(Duration::from_secs(30), stop)
        .await
        .expect("StopContainer waited for the grace period instead of the exit")
        .expect("StopContainer");
    // Recorded by the time the call returned: no poll, no second look needed.
    let status = container_status(&mut rt, &id).await;
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    assert!(status.finished_at > status.started_at);
    let on_disk = wait_exited_on_disk(&daemon, &id);
    assert_eq!(on_disk["exit_code"], 0);
    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
    daemon.assert_no_leaks("after the pod was removed");
}

/// One unary gRPC call made by hand over HTTP/2, with `grpc-timeout` set and no timer on
/// this side (tonic's channel would enforce the deadline itself and report its own
/// CANCELLED): the grpc-status and grpc-message the server answered.
async fn grpc_call_with_deadline(
    socket: &std::path::Path,
    method: &str,
    message: impl prost::Message,
    grpc_timeout: &str,
) -> (String, String) {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let encoded = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend((encoded.len() as u32).to_be_bytes());
    body.extend(encoded);
    let request = tonic::codegen::http::Request::post(format!("http://berth/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", grpc_timeout)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let (parts, body) = sender.send_request(request).await.unwrap().into_parts();
    let trailers = body.collect().await.unwrap().trailers().cloned();
    // A trailers-only answer carries its status in the headers.
    let status = trailers
        .filter(|t| t.contains_key("grpc-status"))
        .unwrap_or(parts.headers);
    let text = |name: &str| {
        status
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (text("grpc-status"), text("grpc-message"))
}

/// critest's "should timeout" specs failed at random: tonic answers an expired
/// `grpc-timeout` with CANCELLED, which a client reports when it arrives before its own
/// timer fires. berth answers DEADLINE_EXCEEDED, and the call's work still ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_its_client_deadline_is_deadline_exceeded_and_still_completes() {
    let daemon = TestDaemon::start().await;
    let (
        mut rt,
        Pod {
            id: pod, config, ..
        },
    ) = busybox_pod(&daemon, "exits-deadline").await;
    // Ignores SIGTERM: the stop takes its 2 s grace, far past the 200 ms deadline.
    let id = run_container(
        &mut rt,
        &pod,
        &config,
        "stubborn",
        &["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"],
    )
    .await;
    let stop = cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 2,
    };
    let started = Instant::now();
    let (code, message) = grpc_call_with_deadline(
        &daemon.socket,
        "runtime.v1.RuntimeService/StopContainer",
        stop,
        "200m",
    )
    .await;
    // 4 is DEADLINE_EXCEEDED (1 would be CANCELLED).
    assert_eq!(code, "4", "{message}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // The stop goes on in its own task: the container is killed after its grace.
    let exited = wait_exited(&mut rt, &id).await;
    assert_eq!(exited.exit_code, 137, "{exited:?}");
    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
    daemon.assert_no_leaks("after the pod was removed");
}

/// GET of `path` on `address`; the status line and body.
fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connecting to /metrics");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[tokio::test(flavor = "multi_thread")]
async fn container_status_list_and_metrics_never_write_records() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let daemon = TestDaemon::start_with(true, &["--metrics-address", &address]).await;
    let (
        mut rt,
        Pod {
            id: pod, config, ..
        },
    ) = busybox_pod(&daemon, "exits-reads").await;
    let running = run_container(&mut rt, &pod, &config, "running", &["sleep", "1000"]).await;
    let done = run_container(&mut rt, &pod, &config, "done", &["sh", "-c", "exit 7"]).await;
    // Nobody asks about `done`: its exit is pushed and written on its own.
    let record = wait_exited_on_disk(&daemon, &done);
    assert_eq!(
        (record["exit_code"].as_i64(), record["reason"].as_str()),
        (Some(7), Some("Error"))
    );

    let before: Vec<_> = [&running, &done]
        .iter()
        .map(|id| {
            (
                mtime(&daemon, id),
                std::fs::read(record_path(&daemon, id)).unwrap(),
            )
        })
        .collect();
    for _ in 0..5 {
        for id in [&running, &done] {
            container_status(&mut rt, id).await;
        }
        let listed = rt
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(listed.len(), 2);
        rt.list_container_stats(cri::ListContainerStatsRequest::default())
            .await
            .unwrap();
        pod_status(&mut rt, &pod, true).await.unwrap();
        rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .unwrap();
        let address = address.clone();
        let scraped = tokio::task::spawn_blocking(move || http_get(&address, "/metrics"))
            .await
            .unwrap();
        assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    }
    let after: Vec<_> = [&running, &done]
        .iter()
        .map(|id| {
            (
                mtime(&daemon, id),
                std::fs::read(record_path(&daemon, id)).unwrap(),
            )
        })
        .collect();
    assert!(before == after, "a read rewrote a container record");
    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
    daemon.assert_no_leaks("after the pod was removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_daemon_sees_the_exit_from_while_it_was_down_and_the_next_one_pushed() {
    let mut daemon = TestDaemon::start().await;
    let (
        mut rt,
        Pod {
            id: pod, config, ..
        },
    ) = busybox_pod(&daemon, "exits-restart").await;
    let first = run_container(&mut rt, &pod, &config, "first", &["sleep", "1000"]).await;
    let second = run_container(&mut rt, &pod, &config, "second", &["sleep", "1000"]).await;
    let pid_of = |id: &str| record_on_disk(&daemon, id)["pid"].as_u64().expect("pid");
    let (first_pid, second_pid) = (pid_of(&first), pid_of(&second));

    daemon.kill9();
    kill_process(first_pid, nix::sys::signal::Signal::SIGKILL);
    // Its shim records it while no daemon listens.
    let exit_file = daemon
        .state
        .join("sandboxes")
        .join(&pod)
        .join("shim/exits")
        .join(&first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exit_file.exists() {
        assert!(Instant::now() < deadline, "the shim wrote no exit file");
        std::thread::sleep(Duration::from_millis(10));
    }
    daemon.start_again().await;
    let mut rt = daemon.runtime().await;
    let status = container_status(&mut rt, &first).await;
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 137);

    // After the restart the daemon is subscribed again: an exit reaches the record and
    // the event stream with nobody reading the container.
    let mut events = daemon
        .runtime()
        .await
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    kill_process(second_pid, nix::sys::signal::Signal::SIGKILL);
    let record = wait_exited_on_disk(&daemon, &second);
    assert_eq!(record["exit_code"], 137);
    let stopped = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = events
                .message()
                .await
                .unwrap()
                .expect("the event stream ended");
            if event.container_id == second
                && event.container_event_type
                    == cri::ContainerEventType::ContainerStoppedEvent as i32
            {
                return event;
            }
        }
    })
    .await
    .expect("no STOPPED event for the container killed after the restart");
    let own = stopped
        .containers_statuses
        .iter()
        .find(|s| s.id == second)
        .expect("the event carries the container");
    assert_eq!(own.exit_code, 137);
    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
    daemon.assert_no_leaks("after the pod was removed");
}
