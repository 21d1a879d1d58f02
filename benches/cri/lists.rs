//! The CRI 1.36 Stream lists beside their List twins over many containers (issue 16):
//! ListContainers and StreamContainers, ListPodSandbox and StreamPodSandboxes, each timed
//! over `--runs` calls (the Stream calls to their first message and to their end), and the
//! daemon's RSS before and after all the calls.
//!
//! The containers are real records: `--pods` containers of `true` (fifty per pod), created
//! and started by four clients at once, then exited, so the node holds records and not
//! processes (a thousand sleeping processes on two shared cores would measure the machine,
//! not the lists).
//!
//! ```text
//! cri lists --endpoint unix:///run/berth/berth.sock --image BUSYBOX --pods 1000 --runs 20 \
//!     [--daemon-pid N]
//! ```

use std::time::{Duration, Instant};

use berth::cri::api as cri;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use futures_util::StreamExt as _;

use super::{
    Args, Error, channel, container_config, create_container, memory_kib, pod_config, pull_image,
    report, run_pod,
};

/// Containers per pod: the kubelet's default max-pods is 110 per node, so a thousand
/// containers come in few, large pods.
const CONTAINERS_PER_POD: usize = 50;
/// Clients creating containers at once.
const CREATORS: usize = 4;

/// A container that exits at once (`true`), labelled for the list filters.
fn exiting_container(name: &str, image: &str) -> cri::ContainerConfig {
    let mut config = container_config(name, image);
    config.command = vec!["true".into()];
    config.labels = [("bench".to_string(), "lists".to_string())].into();
    config
}

fn rss_mib(pid: Option<u32>) -> String {
    pid.and_then(memory_kib)
        .map(|(rss, _)| format!("{:.1} MiB", rss as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

/// Times to the first message and to the end of a server stream; the items it carried.
async fn timed_stream<T, F>(
    open: F,
    count: impl Fn(&T) -> usize,
) -> Result<(Duration, Duration, usize), Error>
where
    F: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>,
{
    let t0 = Instant::now();
    let mut stream = open.await?.into_inner();
    let (mut first, mut items) = (None, 0);
    while let Some(message) = stream.next().await {
        first.get_or_insert_with(|| t0.elapsed());
        items += count(&message?);
    }
    let all = t0.elapsed();
    Ok((first.unwrap_or(all), all, items))
}

pub async fn lists(args: &Args) -> Result<(), Error> {
    if args.image.is_empty() {
        return Err("lists needs --image".into());
    }
    let channel = channel(&args.endpoint).await?;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    pull_image(&channel, &args.image).await?;
    let run = format!("{:08x}", rand::random::<u32>());
    let built = Instant::now();
    let mut pods = Vec::new();
    let mut jobs = Vec::new();
    for first in (0..args.pods).step_by(CONTAINERS_PER_POD) {
        let config = pod_config(500 + pods.len(), &run);
        let pod = run_pod(&mut rt, config.clone()).await?;
        pods.push(pod.clone());
        for i in first..(first + CONTAINERS_PER_POD).min(args.pods) {
            jobs.push((pod.clone(), config.clone(), i));
        }
    }
    let image = args.image.clone();
    let created: Vec<Result<(), Error>> = futures_util::stream::iter(jobs)
        .map(|(pod, config, i)| {
            let (mut rt, image) = (RuntimeServiceClient::new(channel.clone()), image.clone());
            async move {
                let id = create_container(
                    &mut rt,
                    pod,
                    exiting_container(&format!("l{i}"), &image),
                    config,
                )
                .await?;
                rt.start_container(cri::StartContainerRequest { container_id: id })
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(CREATORS)
        .collect()
        .await;
    let failed = created.iter().filter(|r| r.is_err()).count();
    let creation_error: Option<Error> = created
        .into_iter()
        .find_map(|r| r.err())
        .map(|e| format!("{failed} of {} containers failed, e.g.: {e}", args.pods).into());
    println!(
        "{:<12} lists: {} containers (exited `true`, real records) in {} pods made in {:.1} s",
        args.label,
        args.pods,
        pods.len(),
        built.elapsed().as_secs_f64()
    );
    let rss_before = rss_mib(args.daemon_pid);
    let mut timings: Vec<(&str, Vec<Duration>)> = [
        "ListContainers",
        "StreamContainers first message",
        "StreamContainers whole stream",
        "ListPodSandbox",
        "StreamPodSandboxes first message",
        "StreamPodSandboxes whole stream",
    ]
    .into_iter()
    .map(|name| (name, Vec::new()))
    .collect();
    let pod_count = pods.len();
    let measured = match creation_error {
        Some(e) => Err(e),
        None => measure(&mut rt, args, &mut timings).await,
    };
    let rss_after = rss_mib(args.daemon_pid);
    // Removed whatever the measurement did, so that the next bench starts clean.
    for pod in pods {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await?;
    }
    let stream_error = measured?;
    for (i, (name, samples)) in timings.iter_mut().enumerate() {
        // The first three calls list the containers, the last three the pods.
        let over = if i < 3 {
            format!("{} containers", args.pods)
        } else {
            format!("{pod_count} pods")
        };
        if !samples.is_empty() {
            report(&args.label, &format!("{name} ({over})"), samples);
        }
    }
    if let Some(e) = stream_error {
        println!("{:<12} lists: the Stream calls failed: {e}", args.label);
    }
    println!(
        "{:<12} lists: daemon RSS {rss_before} before the calls, {rss_after} after {} rounds of all six",
        args.label,
        args.runs + 1
    );
    Ok(())
}

/// `--runs` rounds of the six calls (call 0 warms the connection and is not counted). The
/// Stream calls stop at their first failure (a runtime without them), which is returned.
async fn measure(
    rt: &mut RuntimeServiceClient<tonic::transport::Channel>,
    args: &Args,
    timings: &mut [(&str, Vec<Duration>)],
) -> Result<Option<Error>, Error> {
    let filter = || {
        Some(cri::ContainerFilter {
            label_selector: [("bench".to_string(), "lists".to_string())].into(),
            ..Default::default()
        })
    };
    let mut stream_error: Option<Error> = None;
    for call in 0..=args.runs {
        let t0 = Instant::now();
        let listed = rt
            .list_containers(cri::ListContainersRequest { filter: filter() })
            .await?
            .into_inner()
            .containers
            .len();
        let list = t0.elapsed();
        if listed != args.pods {
            return Err(format!("ListContainers listed {listed}, not {}", args.pods).into());
        }
        let t0 = Instant::now();
        rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await?;
        let pod_list = t0.elapsed();
        if call > 0 {
            timings[0].1.push(list);
            timings[3].1.push(pod_list);
        }
        if stream_error.is_some() {
            continue;
        }
        let streamed = async {
            let (first, all, streamed) = timed_stream(
                rt.stream_containers(cri::StreamContainersRequest { filter: filter() }),
                |m: &cri::StreamContainersResponse| m.containers.len(),
            )
            .await?;
            if streamed != args.pods {
                return Err::<_, Error>(
                    format!("StreamContainers sent {streamed}, not {}", args.pods).into(),
                );
            }
            let (pod_first, pod_all, _) = timed_stream(
                rt.stream_pod_sandboxes(cri::StreamPodSandboxesRequest { filter: None }),
                |m: &cri::StreamPodSandboxesResponse| m.pod_sandboxes.len(),
            )
            .await?;
            Ok([first, all, pod_first, pod_all])
        }
        .await;
        match streamed {
            Ok(durations) if call > 0 => {
                for (slot, d) in [1, 2, 4, 5].into_iter().zip(durations) {
                    timings[slot].1.push(d);
                }
            }
            Ok(_) => {}
            Err(e) => stream_error = Some(e),
        }
    }
    Ok(stream_error)
}
