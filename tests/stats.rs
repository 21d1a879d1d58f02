//! Stats, CRI metrics, the event stream and /metrics through the real daemon: busybox from
//! the local registry (hack/test-images.sh) in real pods on a bridge network.
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use berth::cri::api as cri;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use common::*;
use tonic::transport::Channel;

const IMAGE: &str = "docker.io/library/busybox:latest";
/// Short, so rates and refreshed samples come quickly.
const PERIOD: &str = "300ms";

async fn start_daemon(extra: &[&str]) -> TestDaemon {
    let mut args = vec!["--stats-collection-period", PERIOD];
    args.extend_from_slice(extra);
    let daemon = TestDaemon::start_with(true, &args).await;
    mirror_docker_io(&daemon);
    pull(&daemon, IMAGE).await;
    daemon
}

fn container_config(name: &str, command: &[&str]) -> cri::ContainerConfig {
    common::container_config(name, IMAGE, command)
}

async fn create(
    rt: &mut RuntimeServiceClient<Channel>,
    pod_id: &str,
    pod_config: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> String {
    create_container(rt, pod_id, pod_config, config)
        .await
        .expect("CreateContainer")
}

async fn start(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    start_container(rt, id).await.expect("StartContainer");
}

async fn list_stats(
    rt: &mut RuntimeServiceClient<Channel>,
    pod_id: &str,
) -> HashMap<String, cri::ContainerStats> {
    rt.list_container_stats(cri::ListContainerStatsRequest {
        filter: Some(cri::ContainerStatsFilter {
            pod_sandbox_id: pod_id.into(),
            ..Default::default()
        }),
    })
    .await
    .expect("ListContainerStats")
    .into_inner()
    .stats
    .into_iter()
    .map(|s| (s.attributes.clone().unwrap().id, s))
    .collect()
}

async fn pod_stats(rt: &mut RuntimeServiceClient<Channel>, pod_id: &str) -> cri::PodSandboxStats {
    rt.pod_sandbox_stats(cri::PodSandboxStatsRequest {
        pod_sandbox_id: pod_id.into(),
    })
    .await
    .expect("PodSandboxStats")
    .into_inner()
    .stats
    .expect("stats")
}

/// Polls `probe` until it gives a value, for at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn value(v: &Option<cri::UInt64Value>) -> u64 {
    v.as_ref().map(|v| v.value).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_container_shows_a_cpu_rate_and_a_filled_one_its_working_set() {
    let daemon = start_daemon(&[]).await;
    let mut rt = daemon.runtime().await;
    let config = pod_config("stats-cpu");
    let pod = run_pod(&mut rt, config.clone()).await.unwrap();
    let busy = create(
        &mut rt,
        &pod,
        &config,
        container_config("busy", &["sh", "-c", "while true; do :; done"]),
    )
    .await;
    // 24 MB held in a shell variable: anonymous memory, all of it in the working set (the
    // `echo` keeps the shell from exec'ing sleep in its place).
    let fat = create(
        &mut rt,
        &pod,
        &config,
        container_config(
            "fat",
            &[
                "sh",
                "-c",
                "x=$(head -c 24000000 /dev/zero | tr '\\0' a); sleep 1000; echo ${#x}",
            ],
        ),
    )
    .await;
    let idle = create(
        &mut rt,
        &pod,
        &config,
        container_config("idle", &["sleep", "1000"]),
    )
    .await;
    // A created container has stats too (critest lists them), before it ever ran.
    let created = list_stats(&mut rt, &pod).await;
    assert_eq!(created.len(), 3);
    assert!(created[&idle].cpu.as_ref().unwrap().timestamp > 0);
    for id in [&busy, &fat, &idle] {
        start(&mut rt, id).await;
    }

    // The machine may be busy: a tenth of a core is enough to tell a loop from a sleep.
    let stats = eventually(Duration::from_secs(40), "a CPU rate and 24 MB", || {
        let mut rt = rt.clone();
        let pod = pod.clone();
        let (busy, fat) = (busy.clone(), fat.clone());
        async move {
            let stats = list_stats(&mut rt, &pod).await;
            let rate = value(&stats[&busy].cpu.as_ref()?.usage_nano_cores);
            let working = value(&stats[&fat].memory.as_ref()?.working_set_bytes);
            (rate > 100_000_000 && working > 20_000_000).then_some(stats)
        }
    })
    .await;
    let busy_cpu = stats[&busy].cpu.unwrap();
    assert!(
        value(&busy_cpu.usage_nano_cores) <= 2_100_000_000,
        "a one-thread loop on this machine uses at most one core or so: {busy_cpu:?}"
    );
    let idle_stats = &stats[&idle];
    assert!(
        value(&idle_stats.cpu.as_ref().unwrap().usage_nano_cores) < 50_000_000,
        "sleep uses next to no CPU: {idle_stats:?}"
    );
    assert!(value(&idle_stats.memory.as_ref().unwrap().working_set_bytes) < 20_000_000);
    assert!(idle_stats.writable_layer.as_ref().unwrap().fs_id.is_some());

    // Within one period, answers come from the cache: the same sample twice.
    let t1 = list_stats(&mut rt, &pod).await[&busy].cpu.unwrap();
    let t2 = list_stats(&mut rt, &pod).await[&busy].cpu.unwrap();
    let t3 = eventually(Duration::from_secs(5), "a newer sample", || {
        let mut rt = rt.clone();
        let (pod, busy, ts) = (pod.clone(), busy.clone(), t2.timestamp);
        async move {
            let cpu = list_stats(&mut rt, &pod).await[&busy].cpu?;
            (cpu.timestamp > ts).then_some(cpu)
        }
    })
    .await;
    assert!(t1.timestamp <= t2.timestamp);
    assert!(value(&t3.usage_core_nano_seconds) > value(&t2.usage_core_nano_seconds));

    // The pod's own figures cover its containers.
    let ps = pod_stats(&mut rt, &pod).await;
    let linux = ps.linux.unwrap();
    assert_eq!(linux.containers.len(), 3);
    assert!(value(&linux.memory.unwrap().working_set_bytes) > 20_000_000);
    assert!(
        value(&linux.process.unwrap().process_count) >= 4,
        "pause, the loop, the fat shell and sleep"
    );
    assert!(
        value(&linux.cpu.unwrap().usage_core_nano_seconds)
            >= value(&busy_cpu.usage_core_nano_seconds)
    );

    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn network_bytes_grow_after_traffic_into_the_pod() {
    let daemon = start_daemon(&[]).await;
    let mut rt = daemon.runtime().await;
    let config = pod_config("stats-net");
    let pod = run_pod(&mut rt, config.clone()).await.unwrap();
    let id = create(
        &mut rt,
        &pod,
        &config,
        container_config("sleeper", &["sleep", "1000"]),
    )
    .await;
    start(&mut rt, &id).await;
    let status = pod_status(&mut rt, &pod, false).await.unwrap();
    let ip = status.status.unwrap().network.unwrap().ip;
    assert!(ip.starts_with(&daemon.net.subnet_prefix()), "pod IP {ip}");

    let before = pod_stats(&mut rt, &pod).await;
    let network = before
        .linux
        .unwrap()
        .network
        .expect("a pod on a bridge has network stats");
    let eth0 = network
        .default_interface
        .expect("eth0 is the default interface");
    assert_eq!(eth0.name, "eth0");
    assert!(network.interfaces.iter().all(|i| i.name != "lo"));
    let rx_before = value(&eth0.rx_bytes);

    // 200 KB of UDP into the pod over the bridge (nothing listens: the bytes still arrive).
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let payload = [0x5au8; 1000];
    for _ in 0..200 {
        socket.send_to(&payload, (ip.as_str(), 9)).unwrap();
    }
    let rx_after = eventually(Duration::from_secs(10), "rx bytes to grow", || {
        let mut rt = rt.clone();
        let pod = pod.clone();
        async move {
            let stats = pod_stats(&mut rt, &pod).await;
            let eth0 = stats.linux?.network?.default_interface?;
            let rx = value(&eth0.rx_bytes);
            (rx >= rx_before + 200_000).then_some(rx)
        }
    })
    .await;
    assert!(
        rx_after - rx_before < 10_000_000,
        "{rx_before} → {rx_after}"
    );

    // The same figures as cAdvisor-named CRI metrics.
    let metrics = rt
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    let ours = metrics
        .iter()
        .find(|m| m.pod_sandbox_id == pod)
        .expect("our pod's metrics");
    let descriptors = rt
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    let described: HashMap<&str, usize> = descriptors
        .iter()
        .map(|d| (d.name.as_str(), d.label_keys.len()))
        .collect();
    let rx_metric = ours
        .metrics
        .iter()
        .find(|m| {
            m.name == "container_network_receive_bytes_total"
                && m.label_values.last().map(String::as_str) == Some("eth0")
        })
        .expect("network receive metric for eth0");
    assert!(value(&rx_metric.value) >= rx_before + 200_000);
    assert_eq!(rx_metric.metric_type, cri::MetricType::Counter as i32);
    let container = &ours.container_metrics;
    assert_eq!(container.len(), 1);
    assert_eq!(container[0].container_id, id);
    let names: Vec<&str> = container[0]
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert!(
        names.contains(&"container_memory_working_set_bytes"),
        "{names:?}"
    );
    assert!(
        names.contains(&"container_cpu_usage_seconds_total"),
        "{names:?}"
    );
    // cgroup v2 adds the PSI stall totals (v1 has no such files, so no such series).
    assert_eq!(
        names.contains(&"container_pressure_cpu_waiting_seconds_total")
            && names.contains(&"container_pressure_memory_waiting_seconds_total"),
        common::cgroup_v2(),
        "{names:?}"
    );
    for m in ours.metrics.iter().chain(&container[0].metrics) {
        assert_eq!(
            described.get(m.name.as_str()),
            Some(&m.label_values.len()),
            "{} is described with as many labels as it has",
            m.name
        );
    }

    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_ids_are_not_found_alone_and_empty_in_lists() {
    let daemon = TestDaemon::start().await;
    let mut rt = daemon.runtime().await;
    let unknown = "f".repeat(64);
    let err = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let none = rt
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                id: unknown.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert!(none.is_empty());
    let none = rt
        .list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: unknown,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert!(none.is_empty());
}

/// Reads events until `done` says so, for at most `limit`.
async fn collect_events(
    stream: &mut tonic::Streaming<cri::ContainerEventResponse>,
    limit: Duration,
    mut done: impl FnMut(&[cri::ContainerEventResponse]) -> bool,
) -> Vec<cri::ContainerEventResponse> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !done(&events) {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(event))) => events.push(event),
            Ok(other) => panic!("event stream ended: {other:?}"),
            Err(_) => panic!("timed out; events so far: {:#?}", summary(&events)),
        }
    }
    events
}

fn summary(events: &[cri::ContainerEventResponse]) -> Vec<(String, i32)> {
    events
        .iter()
        .map(|e| (e.container_id[..12].to_string(), e.container_event_type))
        .collect()
}

fn kinds_of(events: &[cri::ContainerEventResponse], id: &str) -> Vec<cri::ContainerEventType> {
    events
        .iter()
        .filter(|e| e.container_id == id)
        .map(|e| cri::ContainerEventType::try_from(e.container_event_type).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_sees_every_transition_in_order() {
    use cri::ContainerEventType::*;
    let daemon = start_daemon(&[]).await;
    let mut rt = daemon.runtime().await;
    // Two subscribers on their own connections: both see everything.
    let mut first = daemon
        .runtime()
        .await
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut second = daemon
        .runtime()
        .await
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();

    let config = pod_config("stats-events");
    let pod = run_pod(&mut rt, config.clone()).await.unwrap();
    let long = create(
        &mut rt,
        &pod,
        &config,
        container_config("long", &["sleep", "1000"]),
    )
    .await;
    start(&mut rt, &long).await;
    // This one exits by itself: nobody asks about it, the event still comes.
    let short = create(
        &mut rt,
        &pod,
        &config,
        container_config("short", &["sh", "-c", "exit 3"]),
    )
    .await;
    start(&mut rt, &short).await;
    let events = collect_events(&mut first, Duration::from_secs(15), |e| {
        kinds_of(e, &short).contains(&ContainerStoppedEvent)
    })
    .await;
    let stopped = events
        .iter()
        .find(|e| e.container_id == short && e.container_event_type == ContainerStoppedEvent as i32)
        .unwrap();
    let own = stopped
        .containers_statuses
        .iter()
        .find(|s| s.id == short)
        .expect("the event lists the stopped container");
    assert_eq!(own.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(own.exit_code, 3);

    rt.stop_container(cri::StopContainerRequest {
        container_id: long.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    for id in [&long, &short] {
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .unwrap();
    }
    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;

    let mut all = events;
    all.extend(
        collect_events(&mut first, Duration::from_secs(15), |e| {
            kinds_of(e, &pod).contains(&ContainerDeletedEvent)
        })
        .await,
    );
    let lifecycle = vec![
        ContainerCreatedEvent,
        ContainerStartedEvent,
        ContainerStoppedEvent,
        ContainerDeletedEvent,
    ];
    assert_eq!(kinds_of(&all, &long), lifecycle, "{:#?}", summary(&all));
    assert_eq!(kinds_of(&all, &short), lifecycle, "{:#?}", summary(&all));
    assert_eq!(kinds_of(&all, &pod), lifecycle, "the sandbox's own events");
    for event in &all {
        let status = event
            .pod_sandbox_status
            .as_ref()
            .expect("every event carries the pod sandbox status (Evented PLEG needs it)");
        assert_eq!(status.id, pod);
        assert_eq!(status.metadata.as_ref().unwrap().name, "stats-events");
        assert!(event.created_at > 0);
        let listed = event
            .containers_statuses
            .iter()
            .any(|s| s.id == event.container_id);
        let deleted = event.container_event_type == ContainerDeletedEvent as i32;
        if event.container_id != pod {
            assert_eq!(
                listed, !deleted,
                "a container is listed in its events until deleted"
            );
        }
    }
    let started = all
        .iter()
        .find(|e| e.container_id == long && e.container_event_type == ContainerStartedEvent as i32)
        .unwrap();
    let long_status = started
        .containers_statuses
        .iter()
        .find(|s| s.id == long)
        .unwrap();
    assert_eq!(
        long_status.state,
        cri::ContainerState::ContainerRunning as i32
    );

    let other = collect_events(&mut second, Duration::from_secs(5), |e| {
        e.len() >= all.len()
    })
    .await;
    assert_eq!(
        summary(&other),
        summary(&all),
        "the second subscriber saw the same"
    );
    assert!(
        daemon.leftover_processes().is_empty(),
        "{:?}",
        daemon.leftover_processes()
    );
    assert!(
        daemon.leftover_cgroups().is_empty(),
        "{:?}",
        daemon.leftover_cgroups()
    );
}

/// Prometheus text format, checked line by line: comments are HELP/TYPE with a known type,
/// samples are `name{label="value",...} number`, and every sample belongs to a declared family.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, tail) = (parts.next().unwrap(), parts.next().unwrap(), parts.next());
            assert!(name_ok(name), "bad metric name in {line:?}");
            match kind {
                "HELP" => assert!(tail.is_some_and(|t| !t.is_empty()), "{line:?}"),
                "TYPE" => {
                    let t = tail.unwrap();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line:?}"
                    );
                    assert!(
                        types.insert(name.to_string(), t.to_string()).is_none(),
                        "TYPE twice: {name}"
                    );
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        assert!(!line.is_empty(), "blank line in exposition");
        let (series, number) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let number: f64 = match number {
            "+Inf" => f64::INFINITY,
            n => n
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "{line:?}");
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
            let inner = inner.unwrap_or_else(|| panic!("unbalanced braces in {line:?}"));
            // name="value" pairs; values may hold escaped quotes.
            let mut rest = inner;
            while !rest.is_empty() {
                let (label, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
                assert!(name_ok(label), "{line:?}");
                let mut end = None;
                let mut escaped = false;
                for (i, c) in after.char_indices() {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.unwrap_or_else(|| panic!("unterminated label in {line:?}"));
                rest = after[end + 1..]
                    .strip_prefix(',')
                    .unwrap_or(&after[end + 1..]);
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample without a TYPE: {line:?}"
        );
        samples.insert(series.to_string(), number);
    }
    samples
}

fn http_get(address: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connecting to /metrics");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_endpoint_serves_prometheus_text() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let daemon = start_daemon(&["--metrics-address", &address]).await;
    let mut rt = daemon.runtime().await;
    let config = pod_config("stats-metrics");
    let pod = run_pod(&mut rt, config.clone()).await.unwrap();
    let id = create(
        &mut rt,
        &pod,
        &config,
        container_config("c", &["sleep", "1000"]),
    )
    .await;
    start(&mut rt, &id).await;
    let _ = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: "f".repeat(64),
            verbose: false,
        })
        .await
        .unwrap_err();

    let (head, body) = tokio::task::spawn_blocking({
        let address = address.clone();
        move || http_get(&address, "/metrics")
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let samples = parse_prometheus(&body);
    let get = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("{series} missing in:\n{body}"))
    };
    assert!(get("berth_cri_request_duration_seconds_count{method=\"RunPodSandbox\"}") >= 1.0);
    assert!(
        get("berth_cri_request_duration_seconds_bucket{method=\"Version\",le=\"+Inf\"}") >= 1.0
    );
    assert_eq!(
        get("berth_cri_request_errors_total{method=\"ContainerStatus\",code=\"NotFound\"}"),
        1.0
    );
    assert_eq!(get("berth_pod_sandboxes{state=\"ready\"}"), 1.0);
    assert_eq!(get("berth_containers{state=\"running\"}"), 1.0);
    assert!(get("berth_cni_duration_seconds_count{operation=\"add\"}") >= 1.0);
    assert!(
        get("berth_container_events_total") >= 4.0,
        "sandbox created+started, container created+started"
    );
    assert_eq!(get("berth_container_events_dropped_total"), 0.0);
    assert!(
        get("berth_image_pull_bytes_total") > 0.0,
        "busybox came from the registry"
    );

    let (head, _) = tokio::task::spawn_blocking(move || http_get(&address, "/nope"))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_shim_shows_as_stopped_pod_and_container_events() {
    use cri::ContainerEventType::*;
    let daemon = start_daemon(&[]).await;
    let mut rt = daemon.runtime().await;
    let config = pod_config("stats-shim-death");
    let pod = run_pod(&mut rt, config.clone()).await.unwrap();
    let id = create(
        &mut rt,
        &pod,
        &config,
        container_config("c", &["sleep", "1000"]),
    )
    .await;
    start(&mut rt, &id).await;
    let mut events = daemon
        .runtime()
        .await
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let status = pod_status(&mut rt, &pod, true).await.unwrap();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    let shim = info["shimPid"].as_u64().expect("shimPid in verbose info") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let seen = collect_events(&mut events, Duration::from_secs(15), |e| {
        kinds_of(e, &pod).contains(&ContainerStoppedEvent)
            && kinds_of(e, &id).contains(&ContainerStoppedEvent)
    })
    .await;
    let stopped = seen
        .iter()
        .find(|e| e.container_id == id)
        .expect("the container's STOPPED event");
    let own = stopped
        .containers_statuses
        .iter()
        .find(|s| s.id == id)
        .unwrap();
    assert_eq!(own.state, cri::ContainerState::ContainerExited as i32);
    let pod_event = seen.iter().find(|e| e.container_id == pod).unwrap();
    assert_eq!(
        pod_event.pod_sandbox_status.as_ref().unwrap().state,
        cri::PodSandboxState::SandboxNotready as i32
    );
    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sample_older_than_a_second_is_read_again_whatever_the_period() {
    // crictl stats reads twice a second apart and fails when both readings are the same:
    // with a one-minute period, the second read must still be a new sample.
    let daemon = TestDaemon::start_with(true, &["--stats-collection-period", "60s"]).await;
    mirror_docker_io(&daemon);
    pull(&daemon, IMAGE).await;
    let mut rt = daemon.runtime().await;
    let config = pod_config("stats-fresh");
    let pod = run_pod(&mut rt, config.clone()).await.unwrap();
    let busy = create(
        &mut rt,
        &pod,
        &config,
        container_config("busy", &["sh", "-c", "while true; do :; done"]),
    )
    .await;
    start(&mut rt, &busy).await;
    let first = list_stats(&mut rt, &pod).await[&busy].cpu.unwrap();
    let again = list_stats(&mut rt, &pod).await[&busy].cpu.unwrap();
    assert_eq!(
        first.timestamp, again.timestamp,
        "within a second: the cache"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = list_stats(&mut rt, &pod).await[&busy].cpu.unwrap();
    assert!(later.timestamp > first.timestamp);
    assert!(value(&later.usage_core_nano_seconds) > value(&first.usage_core_nano_seconds));
    assert!(
        value(&later.usage_nano_cores) > 100_000_000,
        "the rate between the two reads shows the loop: {later:?}"
    );
    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
}
