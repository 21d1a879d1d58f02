//! CRI benchmarks against any runtime endpoint (berth, containerd, CRI-O), so the same
//! client measures each side by side. Run through `hack/bench.sh`, or directly:
//!
//! ```text
//! cargo bench --bench cri -- pods  --endpoint unix:///run/berth/berth.sock --pods 20 [--daemon-pid N]
//! cargo bench --bench cri -- pull  --endpoint unix:///run/berth/berth.sock --image REF --runs 10
//! cargo bench --bench cri -- containers --endpoint unix:///run/berth/berth.sock --image REF --pods 20
//! cargo bench --bench cri -- stats --endpoint unix:///run/berth/berth.sock --image REF --pods 50 --runs 50
//! cargo bench --bench cri -- shell --runs 5 --setup 'rm -rf d; mkdir d' -- 'gzip -dc a.tgz | tar -x -C d'
//! cargo bench --bench cri -- streaming --endpoint unix:///run/berth/berth.sock --image REF --runs 5
//! cargo bench --bench cri -- lifecycle --endpoint unix:///run/berth/berth.sock --image REF --pods 20 --clients 2
//! cargo bench --bench cri -- churn --endpoint unix:///run/berth/berth.sock --image REF --pods 100 --clients 2 \
//!     --cgroup-parent /bench-churn --bridge cni0 --ipam-dir /var/lib/cni/networks/NET \
//!     --netns-dir /run/berth/netns --count-procs 'berth shim,sleep 3600' --count-mounts /run/berth \
//!     --count-dirs /var/lib/berth/sandboxes,/var/lib/berth/containers [--daemon-pid N]
//! ```
//! `--pod-slice STEM` (any mode) gives each pod a kubelet-style slice parent below STEM,
//! for a runtime on its systemd cgroup driver.
//! `pods` times RunPodSandbox, StopPodSandbox and RemovePodSandbox one pod at a time and
//! reads the memory of each pod's pause process and of its parent (the shim) from
//! /proc/<pid>/smaps_rollup while all pods run; `pull` times cold pulls (the image is removed
//! before each); `shell` times a shell command the same way (after an untimed `--setup`), for a baseline;
//! `stats` starts `--pods` sleeping containers (five per pod) and times `--runs` calls of
//! ListContainerStats and ListPodSandboxStats over all of them, as a kubelet polls.
//! `streaming` times ExecSync of `true`, and measures the throughput of `cat` of a 256 MiB
//! file through an Exec over SPDY and of a port-forward (over SPDY) reading 256 MiB from a
//! server in the pod;
//! `lifecycle` runs `--pods` pods, each with one container, through RunPodSandbox,
//! CreateContainer, StartContainer, StopContainer, RemoveContainer, StopPodSandbox and
//! RemovePodSandbox from `--clients` clients at once (critest's benchmark parallelism),
//! reports each call, and two delays measured from the exit time the runtime itself
//! records (ContainerStatus.finished_at): until StopContainer returned, and until
//! GetContainerEvents delivered the STOPPED event (when the runtime has that call);
//! `churn` runs `--pods` pods, each with one container, through their whole life (run, create,
//! start, stop, remove) from `--clients` clients at once, reports the wall time of the whole
//! churn, and counts what the runtime holds before and after (processes, mounts, netns, veths,
//! IP leases, cgroups, files, daemon fds): every leak counter should be back to zero.
//! `stop-pid`, `bomb` and `push-bomb` are issue 14's contract figures (benches/cri/contract.rs);
//! `lists` times the Stream lists beside their List twins (benches/cri/lists.rs).

use std::time::{Duration, Instant};

#[path = "cri/contract.rs"]
mod contract;
#[path = "cri/lists.rs"]
mod lists;

use berth::cri::api as cri;
use berth::cri::api::image_service_client::ImageServiceClient;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    mode: String,
    endpoint: String,
    pods: usize,
    runs: usize,
    image: String,
    daemon_pid: Option<u32>,
    label: String,
    setup: String,
    command: String,
    clients: usize,
    cgroup_parent: String,
    pod_slice: String,
    bridge: String,
    ipam_dir: String,
    netns_dir: String,
    count_procs: Vec<String>,
    count_mounts: Vec<String>,
    count_dirs: Vec<String>,
}

fn parse_args() -> Result<Args, Error> {
    // cargo bench passes --bench; ignore it.
    let mut raw: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut args = Args {
        mode: String::new(),
        endpoint: "unix:///run/berth/berth.sock".into(),
        pods: 20,
        runs: 10,
        image: String::new(),
        daemon_pid: None,
        label: String::new(),
        setup: String::new(),
        command: String::new(),
        clients: 2,
        cgroup_parent: String::new(),
        pod_slice: String::new(),
        bridge: String::new(),
        ipam_dir: String::new(),
        netns_dir: String::new(),
        count_procs: Vec::new(),
        count_mounts: Vec::new(),
        count_dirs: Vec::new(),
    };
    let list = |v: String| -> Vec<String> {
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    if let Some(pos) = raw.iter().position(|a| a == "--") {
        args.command = raw
            .split_off(pos)
            .into_iter()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ");
    }
    let mut it = raw.into_iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--endpoint" => args.endpoint = value()?,
            "--pods" => args.pods = value()?.parse()?,
            "--runs" => args.runs = value()?.parse()?,
            "--image" => args.image = value()?,
            "--daemon-pid" => args.daemon_pid = Some(value()?.parse()?),
            "--label" => args.label = value()?,
            "--setup" => args.setup = value()?,
            "--clients" => args.clients = value()?.parse()?,
            "--cgroup-parent" => args.cgroup_parent = value()?,
            "--pod-slice" => args.pod_slice = value()?,
            "--bridge" => args.bridge = value()?,
            "--ipam-dir" => args.ipam_dir = value()?,
            "--netns-dir" => args.netns_dir = value()?,
            "--count-procs" => args.count_procs = list(value()?),
            "--count-mounts" => args.count_mounts = list(value()?),
            "--count-dirs" => args.count_dirs = list(value()?),
            mode if !mode.starts_with('-') && args.mode.is_empty() => args.mode = mode.into(),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if args.label.is_empty() {
        args.label = args.endpoint.clone();
    }
    if !args.pod_slice.is_empty() {
        let _ = POD_SLICE.set(args.pod_slice.clone());
    }
    Ok(args)
}

async fn channel(endpoint: &str) -> Result<Channel, Error> {
    let path = endpoint
        .strip_prefix("unix://")
        .ok_or("endpoint must be unix://PATH")?
        .to_string();
    Ok(Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await?)
}

/// Pulls `image` (the benchmarks need it present, not timed).
async fn pull_image(channel: &Channel, image: &str) -> Result<(), Error> {
    ImageServiceClient::new(channel.clone())
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// CreateContainer; returns the new container's ID.
async fn create_container(
    rt: &mut RuntimeServiceClient<Channel>,
    pod_sandbox_id: String,
    config: cri::ContainerConfig,
    sandbox_config: cri::PodSandboxConfig,
) -> Result<String, Error> {
    Ok(rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id,
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        })
        .await?
        .into_inner()
        .container_id)
}

async fn run_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    config: cri::PodSandboxConfig,
) -> Result<String, Error> {
    Ok(rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id)
}

/// Median and 90th percentile in milliseconds.
fn summary(samples: &mut [Duration]) -> (f64, f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| ms(samples[((samples.len() - 1) as f64 * q).round() as usize]);
    (
        at(0.5),
        at(0.9),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
    )
}

fn report(label: &str, what: &str, samples: &mut [Duration]) {
    let (median, p90, min, max) = summary(samples);
    println!(
        "{label:<12} {what:<18} n={:<3} median {median:>8.2} ms   p90 {p90:>8.2} ms   min {min:>8.2}   max {max:>8.2}",
        samples.len()
    );
}

/// RSS and PSS of a process in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// The anonymous memory (heap, stacks) of `pid`, in KiB.
fn anonymous_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find(|l| l.starts_with("Anonymous:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

/// `--pod-slice STEM`: every pod gets its own slice below STEM as its cgroup parent, the
/// way a kubelet with the systemd cgroup driver names it (`kubepods-besteffort-pod<uid>.slice`,
/// the uid's dashes turned into underscores), so that a runtime on its systemd driver
/// (containerd with `SystemdCgroup = true` needs a slice parent) is measured as on a node.
static POD_SLICE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn pod_config(i: usize, run: &str) -> cri::PodSandboxConfig {
    let cgroup_parent = match POD_SLICE.get() {
        Some(stem) => format!("{stem}-pod{}_{i}.slice", run.replace('-', "_")),
        None => String::new(),
    };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: format!("bench-{i}"),
            uid: format!("bench-{run}-{i}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: format!("bench-{i}"),
        log_directory: format!("/tmp/berth-bench-logs/{run}-{i}"),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn pods(args: &Args) -> Result<(), Error> {
    let mut rt = RuntimeServiceClient::new(channel(&args.endpoint).await?);
    let run = format!("{:08x}", rand::random::<u32>());
    let (mut create, mut stop, mut remove) = (Vec::new(), Vec::new(), Vec::new());

    // One pod first, not counted: the runtime's first pod may pull its pause image.
    let warm = run_pod(&mut rt, pod_config(9999, &run)).await?;
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: warm.clone(),
    })
    .await?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: warm,
    })
    .await?;

    let daemon_before = args.daemon_pid.and_then(memory_kib);
    // The daemon's memory per pod is its growth from half the pods to all of them: what
    // the first pod touches once (code, pools, caches) is not a cost per pod.
    let half = args.pods / 2;
    let mut daemon_half = None;
    let mut anon_half = None;
    let mut ids = Vec::new();
    for i in 0..args.pods {
        if i == half {
            tokio::time::sleep(Duration::from_secs(3)).await;
            daemon_half = args.daemon_pid.and_then(memory_kib);
            anon_half = args.daemon_pid.and_then(anonymous_kib);
        }
        let start = Instant::now();
        let id = run_pod(&mut rt, pod_config(i, &run)).await?;
        create.push(start.elapsed());
        ids.push(id);
    }
    // Memory is read in the steady state of running pods (they live for hours): a few
    // seconds after the last creation, the same wait for every runtime.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut per_pod = Vec::new();
    for id in &ids {
        let status = rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: true,
            })
            .await?
            .into_inner();
        let info: serde_json::Value = serde_json::from_str(
            status
                .info
                .get("info")
                .ok_or("no verbose info in PodSandboxStatus")?,
        )?;
        let pause = info["pid"].as_u64().ok_or("no pid in verbose info")? as u32;
        let shim = parent_pid(pause).ok_or("pause has no parent")?;
        let (pause_rss, pause_pss) = memory_kib(pause).ok_or("pause memory")?;
        let (shim_rss, shim_pss) = memory_kib(shim).ok_or("shim memory")?;
        per_pod.push((shim_rss, shim_pss, pause_rss, pause_pss));
    }
    let daemon = args.daemon_pid.and_then(memory_kib);
    let anon = args.daemon_pid.and_then(anonymous_kib);

    for id in &ids {
        let start = Instant::now();
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await?;
        stop.push(start.elapsed());
    }
    for id in &ids {
        let start = Instant::now();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await?;
        remove.push(start.elapsed());
    }
    // Read as the one with the pods running: after the same settling wait.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let daemon_after = args.daemon_pid.and_then(memory_kib);

    report(&args.label, "RunPodSandbox", &mut create);
    report(&args.label, "StopPodSandbox", &mut stop);
    report(&args.label, "RemovePodSandbox", &mut remove);
    let n = per_pod.len() as f64;
    let mean = |f: fn(&(u64, u64, u64, u64)) -> u64| {
        per_pod.iter().map(f).sum::<u64>() as f64 / n / 1024.0
    };
    println!(
        "{:<12} memory per pod      shim RSS {:.2} MiB PSS {:.2} MiB | pause RSS {:.2} MiB PSS {:.2} MiB | shim+pause RSS {:.2} MiB PSS {:.2} MiB  ({} pods running)",
        args.label,
        mean(|m| m.0),
        mean(|m| m.1),
        mean(|m| m.2),
        mean(|m| m.3),
        mean(|m| m.0 + m.2),
        mean(|m| m.1 + m.3),
        per_pod.len()
    );
    if let (Some((before, _)), Some((at_half, _)), Some((rss, pss)), Some((after, _))) =
        (daemon_before, daemon_half, daemon, daemon_after)
    {
        println!(
            "{:<12} daemon with {} pods  RSS {:.2} MiB PSS {:.2} MiB",
            args.label,
            per_pod.len(),
            rss as f64 / 1024.0,
            pss as f64 / 1024.0
        );
        println!(
            "{:<12} daemon RSS          before the pods {:.2} MiB, with {} {:.2} MiB, with {} {:.2} MiB ({:+.1} KiB per pod), {:.2} MiB 3 s after they were removed",
            args.label,
            before as f64 / 1024.0,
            half,
            at_half as f64 / 1024.0,
            per_pod.len(),
            rss as f64 / 1024.0,
            (rss as f64 - at_half as f64) / (per_pod.len() - half).max(1) as f64,
            after as f64 / 1024.0
        );
        // Anonymous memory alone: the daemon drops its idle code pages (idle_memory.rs), so
        // its RSS also moves with how much of its code a phase touched.
        if let (Some(anon_half), Some(anon)) = (anon_half, anon) {
            println!(
                "{:<12} daemon anonymous    with {} {:.2} MiB, with {} {:.2} MiB ({:+.1} KiB per pod)",
                args.label,
                half,
                anon_half as f64 / 1024.0,
                per_pod.len(),
                anon as f64 / 1024.0,
                (anon as f64 - anon_half as f64) / (per_pod.len() - half).max(1) as f64,
            );
        }
    }
    Ok(())
}

async fn pull(args: &Args) -> Result<(), Error> {
    if args.image.is_empty() {
        return Err("pull needs --image".into());
    }
    let mut images = ImageServiceClient::new(channel(&args.endpoint).await?);
    let spec = || {
        Some(cri::ImageSpec {
            image: args.image.clone(),
            ..Default::default()
        })
    };
    let mut samples = Vec::new();
    // One warm-up pull (connection set-up, registry caches), not counted.
    for run in 0..=args.runs {
        images
            .remove_image(cri::RemoveImageRequest { image: spec() })
            .await?;
        let start = Instant::now();
        images
            .pull_image(cri::PullImageRequest {
                image: spec(),
                auth: None,
                sandbox_config: None,
            })
            .await?;
        if run > 0 {
            samples.push(start.elapsed());
        }
    }
    images
        .remove_image(cri::RemoveImageRequest { image: spec() })
        .await?;
    report(&args.label, "PullImage (cold)", &mut samples);
    Ok(())
}

fn container_config(name: &str, image: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        // Exits on SIGTERM (it is not PID 1: the pod shares the pause's PID namespace).
        command: vec!["sleep".into(), "3600".into()],
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// CreateContainer, StartContainer, StopContainer and RemoveContainer of `--pods`
/// containers in one pod, one at a time; then RunPodSandbox + CreateContainer +
/// StartContainer as one path, pod by pod.
async fn containers(args: &Args) -> Result<(), Error> {
    if args.image.is_empty() {
        return Err("containers needs --image".into());
    }
    let channel = channel(&args.endpoint).await?;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    pull_image(&channel, &args.image).await?;
    let run = format!("{:08x}", rand::random::<u32>());
    let shared_pod = pod_config(0, &run);
    let pod = run_pod(&mut rt, shared_pod.clone()).await?;
    let (mut create, mut start, mut both, mut stop, mut remove) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut ids = Vec::new();
    for i in 0..=args.pods {
        let t0 = Instant::now();
        let id = create_container(
            &mut rt,
            pod.clone(),
            container_config(&format!("c{i}"), &args.image),
            shared_pod.clone(),
        )
        .await?;
        let t1 = Instant::now();
        rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
        // The first container warms caches; it is not counted.
        if i > 0 {
            create.push(t1 - t0);
            start.push(t1.elapsed());
            both.push(t0.elapsed());
        }
        ids.push(id);
    }
    for (i, id) in ids.iter().enumerate() {
        let t0 = Instant::now();
        rt.stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 10,
        })
        .await?;
        let t1 = Instant::now();
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await?;
        if i > 0 {
            stop.push(t1 - t0);
            remove.push(t1.elapsed());
        }
    }
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;

    let mut whole = Vec::new();
    let mut pods = Vec::new();
    for i in 0..args.pods {
        let config = pod_config(100 + i, &run);
        let t0 = Instant::now();
        let pod = run_pod(&mut rt, config.clone()).await?;
        let id = create_container(
            &mut rt,
            pod.clone(),
            container_config("app", &args.image),
            config,
        )
        .await?;
        rt.start_container(cri::StartContainerRequest { container_id: id })
            .await?;
        whole.push(t0.elapsed());
        pods.push(pod);
    }
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
    report(&args.label, "CreateContainer", &mut create);
    report(&args.label, "StartContainer", &mut start);
    report(&args.label, "Create+Start", &mut both);
    report(&args.label, "StopContainer", &mut stop);
    report(&args.label, "RemoveContainer", &mut remove);
    report(&args.label, "pod+container", &mut whole);
    Ok(())
}

/// Containers per pod in the stats benchmark: several pods, as on a node.
const STATS_CONTAINERS_PER_POD: usize = 5;

/// ListContainerStats and ListPodSandboxStats with `--pods` running containers.
async fn stats(args: &Args) -> Result<(), Error> {
    if args.image.is_empty() {
        return Err("stats needs --image".into());
    }
    let channel = channel(&args.endpoint).await?;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    pull_image(&channel, &args.image).await?;
    let run = format!("{:08x}", rand::random::<u32>());
    // Pod cgroups under a parent of the bench's own, as the kubelet gives them (containerd
    // has no pod stats without one); removed at the end, as the kubelet would.
    let cgroup_parent = format!("/berth-bench-{run}");
    let mut pods = Vec::new();
    let mut started = 0;
    while started < args.pods {
        let mut config = pod_config(200 + pods.len(), &run);
        if let Some(linux) = config.linux.as_mut() {
            linux.cgroup_parent = format!("{cgroup_parent}/pod{}", pods.len());
        }
        let pod = run_pod(&mut rt, config.clone()).await?;
        pods.push(pod.clone());
        for _ in 0..STATS_CONTAINERS_PER_POD.min(args.pods - started) {
            let id = create_container(
                &mut rt,
                pod.clone(),
                container_config(&format!("c{started}"), &args.image),
                config.clone(),
            )
            .await?;
            rt.start_container(cri::StartContainerRequest { container_id: id })
                .await?;
            started += 1;
        }
    }
    // The steady state a kubelet polls in, the same wait for every runtime.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut containers, mut sandboxes) = (Vec::new(), Vec::new());
    let mut sandbox_error = None;
    // The Stream twins (CRI 1.36): time to the first message and to the end of the stream.
    let (mut stream_first, mut stream_all) = (Vec::new(), Vec::new());
    let mut pod_stream_all = Vec::new();
    let mut stream_error = None;
    for call in 0..=args.runs {
        let t0 = Instant::now();
        let listed = rt
            .list_container_stats(cri::ListContainerStatsRequest { filter: None })
            .await?
            .into_inner()
            .stats;
        let elapsed = t0.elapsed();
        if listed.len() != args.pods {
            return Err(format!(
                "ListContainerStats listed {} containers, not {}",
                listed.len(),
                args.pods
            )
            .into());
        }
        // The first call may read what no cache holds yet; it is not counted.
        if call > 0 {
            containers.push(elapsed);
        }
        if stream_error.is_none() {
            match stream_stats_timed(&mut rt, args.pods).await {
                Ok((first, all, pods_all)) if call > 0 => {
                    stream_first.push(first);
                    stream_all.push(all);
                    pod_stream_all.push(pods_all);
                }
                Ok(_) => {}
                Err(e) => stream_error = Some(e),
            }
        }
        if sandbox_error.is_none() {
            let t0 = Instant::now();
            match rt
                .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
                .await
            {
                Ok(_) if call > 0 => sandboxes.push(t0.elapsed()),
                Ok(_) => {}
                Err(e) => sandbox_error = Some(e),
            }
        }
    }
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
    remove_cgroup_tree(&cgroup_parent);
    report(
        &args.label,
        &format!("ListContainerStats ({} containers)", args.pods),
        &mut containers,
    );
    match stream_error {
        None => {
            report(
                &args.label,
                "StreamContainerStats first message",
                &mut stream_first,
            );
            report(
                &args.label,
                "StreamContainerStats whole stream",
                &mut stream_all,
            );
            report(
                &args.label,
                "StreamPodSandboxStats whole stream",
                &mut pod_stream_all,
            );
        }
        Some(e) => println!("{:<12} StreamContainerStats failed: {e}", args.label),
    }
    match sandbox_error {
        None => report(&args.label, "ListPodSandboxStats", &mut sandboxes),
        Some(e) => println!(
            "{:<12} ListPodSandboxStats failed: {} {}",
            args.label,
            e.code(),
            e.message()
        ),
    }
    Ok(())
}

/// StreamContainerStats (time to its first message, to its end) and StreamPodSandboxStats
/// (to its end), checking that the stream carried all `expected` containers.
async fn stream_stats_timed(
    rt: &mut RuntimeServiceClient<tonic::transport::Channel>,
    expected: usize,
) -> Result<(Duration, Duration, Duration), Error> {
    use tokio_stream::StreamExt;
    let t0 = Instant::now();
    let mut stream = rt
        .stream_container_stats(cri::StreamContainerStatsRequest { filter: None })
        .await?
        .into_inner();
    let mut first = None;
    let mut count = 0;
    while let Some(message) = stream.next().await {
        first.get_or_insert_with(|| t0.elapsed());
        count += message?.container_stats.len();
    }
    let all = t0.elapsed();
    if count != expected {
        return Err(format!("StreamContainerStats sent {count} containers, not {expected}").into());
    }
    let t0 = Instant::now();
    let mut pods = rt
        .stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest { filter: None })
        .await?
        .into_inner();
    while let Some(message) = pods.next().await {
        message?;
    }
    Ok((first.unwrap_or(all), all, t0.elapsed()))
}

/// Removes `path` and the (empty) cgroups below it in every mounted hierarchy.
fn remove_cgroup_tree(path: &str) {
    fn remove(dir: &std::path::Path) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove(&entry.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if (right.starts_with("cgroup ") || right.starts_with("cgroup2 "))
            && let Some(mount_point) = left.split(' ').nth(4)
        {
            remove(&std::path::Path::new(mount_point).join(path.trim_start_matches('/')));
        }
    }
}

fn shell(args: &Args) -> Result<(), Error> {
    if args.command.is_empty() {
        return Err("shell needs a command after --".into());
    }
    let mut samples = Vec::new();
    for run in 0..=args.runs {
        if !args.setup.is_empty() {
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(&args.setup)
                .status()?;
            if !status.success() {
                return Err(format!("{} failed: {status}", args.setup).into());
            }
        }
        let start = Instant::now();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&args.command)
            .status()?;
        if !status.success() {
            return Err(format!("{} failed: {status}", args.command).into());
        }
        if run > 0 {
            samples.push(start.elapsed());
        }
    }
    report(&args.label, "shell", &mut samples);
    Ok(())
}

/// What a runtime holds, counted the same way for every runtime.
#[derive(Debug, Clone, Copy, Default)]
struct Holdings {
    processes: usize,
    mounts: usize,
    netns: usize,
    veths: usize,
    ip_leases: usize,
    cgroups: usize,
    files: usize,
    daemon_fds: usize,
}

impl Holdings {
    const NAMES: [&'static str; 8] = [
        "processes",
        "mounts",
        "netns",
        "veths",
        "ip_leases",
        "cgroups",
        "files",
        "daemon_fds",
    ];

    fn values(&self) -> [usize; 8] {
        [
            self.processes,
            self.mounts,
            self.netns,
            self.veths,
            self.ip_leases,
            self.cgroups,
            self.files,
            self.daemon_fds,
        ]
    }
}

fn entries(dir: &str) -> Vec<std::path::PathBuf> {
    if dir.is_empty() {
        return Vec::new();
    }
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// Counts what the runtime holds now; see `churn` for what each counter looks at.
fn holdings(args: &Args) -> Holdings {
    let mut h = Holdings::default();
    // Processes: those in the pods' cgroup parent (pause, containers, stragglers) and those
    // whose command line matches (shims, which live outside the pods' cgroups).
    let mut pids = std::collections::HashSet::new();
    if !args.count_procs.is_empty() {
        for proc_dir in entries("/proc") {
            let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if args.count_procs.iter().any(|p| text.contains(p.as_str())) {
                pids.insert(proc_dir);
            }
        }
    }
    if !args.cgroup_parent.is_empty() {
        let parent = args.cgroup_parent.trim_start_matches('/');
        if let Some(root) = entries("/sys/fs/cgroup")
            .into_iter()
            .find(|r| r.join("cgroup.procs").exists() && r.join(parent).is_dir())
        {
            cgroup_pids(&root.join(parent), &mut pids);
        }
    }
    h.processes = pids.len();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    h.mounts = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| args.count_mounts.iter().any(|p| m.starts_with(p.as_str())))
        .count();
    h.netns = entries(&args.netns_dir).len();
    if !args.bridge.is_empty() {
        h.veths = entries(&format!("/sys/class/net/{}/brif", args.bridge)).len();
    }
    h.ip_leases = entries(&args.ipam_dir)
        .iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
        })
        .count();
    if !args.cgroup_parent.is_empty() {
        // Every hierarchy (v1 controllers and v2) below the parent the pods were given.
        for root in entries("/sys/fs/cgroup") {
            h.cgroups += count_dirs(&root.join(args.cgroup_parent.trim_start_matches('/')));
        }
    }
    h.files = args.count_dirs.iter().map(|d| entries(d).len()).sum();
    h.daemon_fds = args
        .daemon_pid
        .map(|pid| entries(&format!("/proc/{pid}/fd")).len())
        .unwrap_or(0);
    h
}

fn cgroup_pids(dir: &std::path::Path, pids: &mut std::collections::HashSet<std::path::PathBuf>) {
    for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
    {
        pids.insert(std::path::PathBuf::from("/proc").join(pid));
    }
    for sub in entries(&dir.to_string_lossy()) {
        if sub.is_dir() {
            cgroup_pids(&sub, pids);
        }
    }
}

fn count_dirs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| 1 + count_dirs(&e.path()))
        .sum()
}

/// Unix nanoseconds now (the clock the runtimes stamp exits with).
fn unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// How a cycle runs. The churn stops with a 10 s timeout and, with `probe`, counts what the
/// runtime holds while the container runs; the lifecycle mode stops with 30 s and then
/// reads the exit time back (not timed).
#[derive(Clone, Copy)]
enum CycleKind<'a> {
    Churn { probe: Option<&'a Args> },
    Lifecycle,
}

/// What one pod's lifecycle measured: the seven calls, the container's id; in the
/// lifecycle mode its exit time (finished_at) and when StopContainer returned (both unix
/// ns); for the churn's probe, what the runtime held while the container ran.
struct Cycle {
    calls: [Duration; 7],
    container: String,
    finished_at: i64,
    stop_returned_at: i64,
    held: Option<Holdings>,
}

/// One pod with one container through its whole life (both the churn and lifecycle modes).
async fn cycle(
    rt: &mut RuntimeServiceClient<Channel>,
    config: cri::PodSandboxConfig,
    image: &str,
    kind: CycleKind<'_>,
) -> Result<Cycle, Error> {
    let mut calls = [Duration::ZERO; 7];
    let mut t = Instant::now();
    let mut lap = |calls: &mut [Duration; 7], i: usize| {
        calls[i] = t.elapsed();
        t = Instant::now();
    };
    let pod = run_pod(rt, config.clone()).await?;
    lap(&mut calls, 0);
    let id = create_container(rt, pod.clone(), container_config("app", image), config).await?;
    lap(&mut calls, 1);
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await?;
    lap(&mut calls, 2);
    let (held, timeout) = match kind {
        CycleKind::Churn { probe } => (probe.map(holdings), 10),
        CycleKind::Lifecycle => (None, 30),
    };
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout,
    })
    .await?;
    let stop_returned_at = unix_nanos();
    lap(&mut calls, 3);
    let mut finished_at = 0;
    if let CycleKind::Lifecycle = kind {
        let status = rt.container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        });
        finished_at = status
            .await?
            .into_inner()
            .status
            .map_or(0, |s| s.finished_at);
        lap(&mut calls, 4); // not a call of the cycle: remove's time overwrites it
    }
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await?;
    lap(&mut calls, 4);
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    lap(&mut calls, 5);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    lap(&mut calls, 6);
    Ok(Cycle {
        calls,
        container: id,
        finished_at,
        stop_returned_at,
        held,
    })
}

/// The pod/container lifecycle under critest's benchmark parallelism (see the top).
async fn lifecycle(args: &Args) -> Result<(), Error> {
    if args.image.is_empty() {
        return Err("lifecycle needs --image".into());
    }
    let channel = channel(&args.endpoint).await?;
    pull_image(&channel, &args.image).await?;
    let run = format!("{:08x}", rand::random::<u32>());
    // STOPPED events by container, stamped as they arrive.
    let stopped = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let events = RuntimeServiceClient::new(channel.clone())
        .get_container_events(cri::GetEventsRequest {})
        .await;
    let watcher = match events {
        Ok(stream) => {
            let mut stream = stream.into_inner();
            let stopped = stopped.clone();
            Some(tokio::spawn(async move {
                while let Ok(Some(event)) = stream.message().await {
                    if event.container_event_type
                        == cri::ContainerEventType::ContainerStoppedEvent as i32
                    {
                        stopped
                            .lock()
                            .unwrap()
                            .entry(event.container_id)
                            .or_insert_with(unix_nanos);
                    }
                }
            }))
        }
        Err(status) => {
            println!(
                "{:<12} GetContainerEvents unavailable: {:?} {}",
                args.label,
                status.code(),
                status.message()
            );
            None
        }
    };
    let clients = args.clients.max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = |channel: Channel| {
        let (next, run) = (&next, &run);
        async move {
            let mut rt = RuntimeServiceClient::new(channel);
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= args.pods {
                    return Ok::<_, Error>(done);
                }
                let config = pod_config(i, run);
                done.push(cycle(&mut rt, config, &args.image, CycleKind::Lifecycle).await?);
            }
        }
    };
    let mut workers = Vec::new();
    for _ in 0..clients {
        // Each client on its own connection, as separate kubelet workers would be.
        workers.push(worker(self::channel(&args.endpoint).await?));
    }
    let results = futures_util::future::join_all(workers).await;
    let mut cycles = Vec::new();
    for result in results {
        cycles.extend(result?);
    }
    // The last events may trail the last call by a little.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let names = [
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
        "StopContainer",
        "RemoveContainer",
        "StopPodSandbox",
        "RemovePodSandbox",
    ];
    for (i, name) in names.iter().enumerate() {
        let mut samples: Vec<Duration> = cycles.iter().map(|c| c.calls[i]).collect();
        report(&args.label, name, &mut samples);
    }
    let since_exit = |at: i64, finished_at: i64| {
        Duration::from_nanos(u64::try_from(at - finished_at).unwrap_or(0))
    };
    let mut stop_delay: Vec<Duration> = cycles
        .iter()
        .filter(|c| c.finished_at > 0)
        .map(|c| since_exit(c.stop_returned_at, c.finished_at))
        .collect();
    if !stop_delay.is_empty() {
        report(&args.label, "exit→Stop returns", &mut stop_delay);
    }
    let stopped = stopped.lock().unwrap();
    let mut event_delay: Vec<Duration> = cycles
        .iter()
        .filter(|c| c.finished_at > 0)
        .filter_map(|c| Some(since_exit(*stopped.get(&c.container)?, c.finished_at)))
        .collect();
    if event_delay.is_empty() {
        println!("{:<12} exit→STOPPED event: no events received", args.label);
    } else {
        report(&args.label, "exit→STOPPED event", &mut event_delay);
    }
    Ok(())
}

/// `--pods` pods, each with one container, created and removed by `--clients` clients at
/// once; the wall time and the leak counters before and after.
async fn churn(args: &Args) -> Result<(), Error> {
    if args.image.is_empty() {
        return Err("churn needs --image".into());
    }
    let channel = channel(&args.endpoint).await?;
    pull_image(&channel, &args.image).await?;
    let run = format!("{:08x}", rand::random::<u32>());
    let config = |i: usize| {
        let mut config = pod_config(i, &run);
        if let Some(linux) = config.linux.as_mut() {
            linux.cgroup_parent = args.cgroup_parent.clone();
        }
        config
    };
    // One cycle per client first, not counted: pause image, bridge, connections.
    // The first also shows that every counter sees a running pod (a counter looking in the
    // wrong place would read 0 and hide a leak).
    let mut clients = Vec::new();
    let mut with_one_pod = None;
    for c in 0..args.clients {
        let mut rt = RuntimeServiceClient::new(channel.clone());
        let probe = (c == 0).then_some(args);
        with_one_pod = with_one_pod.or(cycle(
            &mut rt,
            config(90_000 + c),
            &args.image,
            CycleKind::Churn { probe },
        )
        .await?
        .held);
        clients.push(rt);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = holdings(args);
    if let Some(held) = with_one_pod {
        let seen: Vec<String> = Holdings::NAMES
            .iter()
            .zip(held.values().iter().zip(before.values()))
            .map(|(name, (h, b))| format!("{name} {:+}", *h as i64 - b as i64))
            .collect();
        println!(
            "{:<12} churn counters     {}   (one pod running - none)",
            args.label,
            seen.join("  ")
        );
    }
    let start = Instant::now();
    let work = clients.into_iter().enumerate().map(|(c, mut rt)| {
        let config = &config;
        async move {
            let mut times = Vec::new();
            for i in (c..args.pods).step_by(args.clients) {
                let kind = CycleKind::Churn { probe: None };
                times.push(cycle(&mut rt, config(i), &args.image, kind).await?.calls);
            }
            Ok::<_, Error>(times)
        }
    });
    let mut times = Vec::new();
    for result in futures_util::future::join_all(work).await {
        times.extend(result?);
    }
    let cycle = start.elapsed();
    // Give asynchronous clean-up (closing connections, reaping) a moment, the same for all.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = holdings(args);
    println!(
        "{:<12} churn              {} pods with a container by {} clients: cycle {:.2} s ({:.1} ms per pod)",
        args.label,
        args.pods,
        args.clients,
        cycle.as_secs_f64(),
        cycle.as_secs_f64() * 1e3 / args.pods as f64
    );
    for (i, step) in [
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
        "StopContainer",
        "RemoveContainer",
        "StopPodSandbox",
        "RemovePodSandbox",
    ]
    .iter()
    .enumerate()
    {
        let mut samples: Vec<Duration> = times.iter().map(|t| t[i]).collect();
        report(&args.label, &format!("churn {step}"), &mut samples);
    }
    let leaks: Vec<String> = Holdings::NAMES
        .iter()
        .zip(before.values().iter().zip(after.values()))
        .map(|(name, (b, a))| format!("{name} {:+}", a as i64 - *b as i64))
        .collect();
    println!(
        "{:<12} churn leaks        {}   (after - before)",
        args.label,
        leaks.join("  ")
    );
    Ok(())
}

/// Bytes moved per throughput run.
const STREAM_BYTES: usize = 256 * 1024 * 1024;
/// The port the in-pod server sends those bytes from.
const STREAM_PORT: u16 = 9000;

/// The HTTP/1.1 upgrade to SPDY/3.1 on a streaming URL (client-go's way).
async fn spdy_connect(url: &str, protocol: &str) -> Result<tokio::net::TcpStream, Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or("streaming URL is not http")?;
    let (host, path) = rest.split_once('/').ok_or("streaming URL has no path")?;
    let mut tcp = tokio::net::TcpStream::connect(host).await?;
    tcp.set_nodelay(true)?;
    let head = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await?;
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        if tcp.read(&mut byte).await? == 0 {
            return Err("connection closed during the upgrade".into());
        }
        response.push(byte[0]);
    }
    if !response.starts_with(b"HTTP/1.1 101") {
        return Err(format!("upgrade refused: {}", String::from_utf8_lossy(&response)).into());
    }
    Ok(tcp)
}

/// Reads a stream to its end; the number of bytes.
async fn drain(mut reader: impl tokio::io::AsyncRead + Unpin) -> Result<usize, Error> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

fn report_throughput(label: &str, what: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    println!(
        "{label:<12} {what:<18} n={:<3} median {:>8.1} MiB/s   min {:>8.1}   max {:>8.1}",
        samples.len(),
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1]
    );
}

/// ExecSync latency, exec and port-forward throughput, in one pod.
async fn streaming(args: &Args) -> Result<(), Error> {
    use berth::streaming::spdy::{Headers, Session, SessionConfig};
    if args.image.is_empty() {
        return Err("streaming needs --image".into());
    }
    let channel = channel(&args.endpoint).await?;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    pull_image(&channel, &args.image).await?;
    let run = format!("{:08x}", rand::random::<u32>());
    let pod_config = pod_config(0, &run);
    let pod = run_pod(&mut rt, pod_config.clone()).await?;
    let mut server = container_config("server", &args.image);
    server.command = vec![
        "sh".into(),
        "-c".into(),
        format!(
            "head -c {STREAM_BYTES} /dev/zero > /tmp/big; while true; do nc -l -p {STREAM_PORT} < /tmp/big; done"
        ),
    ];
    let id = create_container(&mut rt, pod.clone(), server, pod_config).await?;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await?;
    let exec_sync = |cmd: &[&str]| cri::ExecSyncRequest {
        container_id: id.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 60,
    };
    // The file is written once the server's shell runs; wait for it.
    for _ in 0..200 {
        let size = rt
            .exec_sync(exec_sync(&["stat", "-c", "%s", "/tmp/big"]))
            .await?
            .into_inner();
        if String::from_utf8_lossy(&size.stdout).trim() == STREAM_BYTES.to_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut latencies = Vec::new();
    for i in 0..=args.runs.max(10) * 5 {
        let t0 = Instant::now();
        let response = rt.exec_sync(exec_sync(&["true"])).await?.into_inner();
        if response.exit_code != 0 {
            return Err(format!("true exited {}", response.exit_code).into());
        }
        if i > 0 {
            latencies.push(t0.elapsed());
        }
    }
    report(&args.label, "ExecSync true", &mut latencies);

    let mut exec_rates = Vec::new();
    for _ in 0..args.runs {
        let url = rt
            .exec(cri::ExecRequest {
                container_id: id.clone(),
                cmd: vec!["cat".into(), "/tmp/big".into()],
                tty: false,
                stdin: false,
                stdout: true,
                stderr: true,
            })
            .await?
            .into_inner()
            .url;
        let t0 = Instant::now();
        let tcp = spdy_connect(&url, "v4.channel.k8s.io").await?;
        let (session, _incoming) = Session::client(tcp, SessionConfig::default());
        let open = |kind: &str| Headers::new().with("streamtype", kind);
        let error = session.open_stream(open("error"), false).await?;
        let stdout = session.open_stream(open("stdout"), false).await?;
        let stderr = session.open_stream(open("stderr"), false).await?;
        let stderr = tokio::spawn(drain(stderr.reader));
        let got = drain(stdout.reader).await?;
        let _ = stderr.await;
        let _ = drain(error.reader).await;
        let elapsed = t0.elapsed();
        session.close().await;
        if got != STREAM_BYTES {
            return Err(format!("exec sent {got} bytes, not {STREAM_BYTES}").into());
        }
        exec_rates.push(STREAM_BYTES as f64 / (1 << 20) as f64 / elapsed.as_secs_f64());
    }
    report_throughput(&args.label, "exec cat (SPDY)", &mut exec_rates);

    let mut forward_rates = Vec::new();
    for request in 0..args.runs {
        let url = rt
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![i32::from(STREAM_PORT)],
            })
            .await?
            .into_inner()
            .url;
        let t0 = Instant::now();
        let tcp = spdy_connect(&url, "portforward.k8s.io").await?;
        let (session, _incoming) = Session::client(tcp, SessionConfig::default());
        let headers = |kind: &str| {
            Headers::new()
                .with("streamtype", kind)
                .with("port", STREAM_PORT.to_string())
                .with("requestid", request.to_string())
        };
        let _error = session.open_stream(headers("error"), false).await?;
        let data = session.open_stream(headers("data"), false).await?;
        let got = drain(data.reader).await?;
        let elapsed = t0.elapsed();
        session.close().await;
        if got != STREAM_BYTES {
            return Err(format!("port-forward sent {got} bytes, not {STREAM_BYTES}").into());
        }
        forward_rates.push(STREAM_BYTES as f64 / (1 << 20) as f64 / elapsed.as_secs_f64());
        // nc listens again once the last connection is done.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report_throughput(&args.label, "port-forward (SPDY)", &mut forward_rates);

    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    Ok(())
}

fn main() -> Result<(), Error> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.mode.as_str() {
        "pods" => runtime.block_on(pods(&args)),
        "pull" => runtime.block_on(pull(&args)),
        "containers" => runtime.block_on(containers(&args)),
        "stats" => runtime.block_on(stats(&args)),
        "shell" => shell(&args),
        "churn" => runtime.block_on(churn(&args)),
        "lifecycle" => runtime.block_on(lifecycle(&args)),
        "streaming" => runtime.block_on(streaming(&args)),
        "stop-pid" => runtime.block_on(contract::stop_pid(&args)),
        "bomb" => runtime.block_on(contract::bomb(&args)),
        "push-bomb" => runtime.block_on(contract::push_bomb(&args)),
        "lists" => runtime.block_on(lists::lists(&args)),
        other => Err(format!(
            "unknown mode {other:?}: pods, containers, pull, stats, churn, lifecycle, streaming, \
             stop-pid, bomb, push-bomb, lists or shell"
        )
        .into()),
    }
}
