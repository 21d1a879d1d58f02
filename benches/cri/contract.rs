//! Issue 14's figures: StopContainer of a container whose children ignore SIGTERM, in a pod
//! that shares its PID namespace and in one with the container's own (time, and what is
//! left running when it returns); and the pull of a 4 MiB gzip bomb that expands to 4 GiB
//! with the runtime's default configuration (time to fail or finish, peak disk use).
//!
//! ```text
//! cri push-bomb --image 127.0.0.1:5000/berth-bench/bomb:v1
//! cri stop-pid --endpoint unix:///run/berth/berth.sock --image BUSYBOX --runs 5
//! cri bomb --endpoint unix:///run/berth/berth.sock --image 127.0.0.1:5000/berth-bench/bomb:v1 \
//!     --count-dirs /var/lib/berth
//! ```

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth::cri::api as cri;
use berth::cri::api::image_service_client::ImageServiceClient;
use berth::cri::api::runtime_service_client::RuntimeServiceClient;
use sha2::{Digest, Sha256};

use super::{Args, Error, channel, create_container, pull_image, report, run_pod};

const MIB: usize = 1 << 20;
/// 1 MiB files of zeros in the bomb: 4 GiB unpacked from about 4.4 MiB.
const BOMB_FILES: usize = 4096;

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = gz.write_all(bytes);
    gz.finish().unwrap_or_default()
}

/// The bomb layer (as in tests/bomb.rs): concatenated gzip members, one per tar header and
/// one compressed MiB of zeros per file; and the digest of what it unpacks to (its diff_id),
/// so that a runtime with no bound unpacks it to the end and accepts it.
fn bomb_layer() -> Result<(Vec<u8>, String), Error> {
    let zero_mib = vec![0; MIB];
    let zeros = gzip(&zero_mib);
    let mut blob = Vec::new();
    let mut unpacked = Sha256::new();
    for i in 0..BOMB_FILES {
        let mut header = tar::Header::new_gnu();
        header.set_path(format!("bomb/{i:05}"))?;
        header.set_size(MIB as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        blob.extend_from_slice(&gzip(header.as_bytes()));
        blob.extend_from_slice(&zeros);
        unpacked.update(header.as_bytes());
        unpacked.update(&zero_mib);
    }
    blob.extend_from_slice(&gzip(&[0; 1024]));
    unpacked.update([0; 1024]);
    let diff_id = format!("sha256:{}", hex::encode(unpacked.finalize()));
    Ok((blob, diff_id))
}

/// Pushes the bomb to the plain-HTTP registry `--image` names (`HOST:PORT/REPO:TAG`).
pub async fn push_bomb(args: &Args) -> Result<(), Error> {
    let (host, rest) = args
        .image
        .split_once('/')
        .ok_or("push-bomb needs --image HOST:PORT/REPO:TAG")?;
    let (repo, tag) = rest.rsplit_once(':').ok_or("the image needs a tag")?;
    let (layer, diff_id) = bomb_layer()?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer), "size": layer.len()}],
    }))?;
    let http = reqwest::Client::new();
    let base = format!("http://{host}/v2/{repo}");
    for blob in [&config, &layer] {
        let upload = http
            .post(format!("{base}/blobs/uploads/"))
            .send()
            .await?
            .error_for_status()?;
        let location = upload
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or("the registry gave no upload location")?
            .to_string();
        let location = if location.starts_with('/') {
            format!("http://{host}{location}")
        } else {
            location
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        http.put(format!("{location}{separator}digest={}", digest(blob)))
            .header("content-type", "application/octet-stream")
            .body(blob.clone())
            .send()
            .await?
            .error_for_status()?;
    }
    http.put(format!("{base}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await?
        .error_for_status()?;
    println!(
        "pushed {} ({:.1} MiB layer, {} MiB unpacked)",
        args.image,
        layer.len() as f64 / MIB as f64,
        BOMB_FILES
    );
    Ok(())
}

/// Live (not zombie) processes whose command line starts with `sleep <token>`.
fn family_alive(token: u32) -> usize {
    let prefix = format!("sleep\0{token}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            cmdline.starts_with(prefix.as_bytes()) && !zombie
        })
        .count()
}

fn namespaces(pid: cri::NamespaceMode) -> Option<cri::NamespaceOption> {
    Some(cri::NamespaceOption {
        pid: pid as i32,
        ..Default::default()
    })
}

/// StopContainer (timeout 2 s) of a shell whose three children ignore SIGTERM, in a pod
/// sharing its PID namespace (the main process dies on SIGTERM at once) and with the
/// container's own (PID 1 ignores SIGTERM: SIGKILL after the timeout); how long it took and
/// how many of the four processes still ran when it returned.
pub async fn stop_pid(args: &Args) -> Result<(), Error> {
    if args.image.is_empty() {
        return Err("stop-pid needs --image".into());
    }
    let channel = channel(&args.endpoint).await?;
    pull_image(&channel, &args.image).await?;
    let mut rt = RuntimeServiceClient::new(channel);
    let run = format!("{:08x}", rand::random::<u32>());
    for (mode, what) in [
        (cri::NamespaceMode::Pod, "Stop (pid POD)"),
        (cri::NamespaceMode::Container, "Stop (pid CONT.)"),
    ] {
        let mut samples = Vec::new();
        let mut left = 0;
        for i in 0..args.runs {
            let mut pod = super::pod_config(i, &format!("{run}-{}", mode as i32));
            if let Some(linux) = pod.linux.as_mut() {
                linux.security_context = Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: namespaces(mode),
                    ..Default::default()
                });
            }
            let pod_id = run_pod(&mut rt, pod.clone()).await?;
            let token = rand::random_range(100_000..1_000_000u32);
            let mut config = super::container_config("family", &args.image);
            config.command = vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "for i in 1 2 3; do sh -c \"trap '' TERM; exec sleep {token}$i\" & done; exec sleep {token}0"
                ),
            ];
            config.linux = Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: namespaces(mode),
                    ..Default::default()
                }),
                ..Default::default()
            });
            let id = create_container(&mut rt, pod_id.clone(), config, pod).await?;
            rt.start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await?;
            let deadline = Instant::now() + Duration::from_secs(20);
            while family_alive(token) < 4 {
                if Instant::now() > deadline {
                    return Err("the container's children did not start".into());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let start = Instant::now();
            rt.stop_container(cri::StopContainerRequest {
                container_id: id,
                timeout: 2,
            })
            .await?;
            samples.push(start.elapsed());
            left += family_alive(token);
            rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await?;
            rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod_id,
            })
            .await?;
        }
        report(&args.label, what, &mut samples);
        println!(
            "{:<12} {what:<18} processes still running when StopContainer returned: {left} of {}",
            args.label,
            4 * args.runs
        );
    }
    Ok(())
}

/// Allocated bytes of every file under `dir` (not following symlinks).
fn disk_use(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => m.blocks() * 512 + disk_use(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Pulls `--image` (the bomb) once with the runtime as configured, sampling the disk use
/// under `--count-dirs` every 10 ms: how long until it failed (or finished), and the peak
/// above what was there before. A pulled image is removed after.
pub async fn bomb(args: &Args) -> Result<(), Error> {
    if args.image.is_empty() || args.count_dirs.is_empty() {
        return Err("bomb needs --image and --count-dirs".into());
    }
    let dirs: Vec<std::path::PathBuf> = args.count_dirs.iter().map(Into::into).collect();
    let total = move |dirs: &[std::path::PathBuf]| dirs.iter().map(|d| disk_use(d)).sum::<u64>();
    let before = total(&dirs);
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, dirs) = (peak.clone(), done.clone(), dirs.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(total(&dirs), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut images = ImageServiceClient::new(channel(&args.endpoint).await?);
    let spec = || {
        Some(cri::ImageSpec {
            image: args.image.clone(),
            ..Default::default()
        })
    };
    let start = Instant::now();
    let result = images
        .pull_image(cri::PullImageRequest {
            image: spec(),
            ..Default::default()
        })
        .await;
    let took = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let after = total(&dirs);
    let peak_mib = peak.load(Ordering::Relaxed).saturating_sub(before) as f64 / MIB as f64;
    let left_mib = after.saturating_sub(before) as f64 / MIB as f64;
    let outcome = match &result {
        Ok(_) => "pulled (unpacked all of it)".to_string(),
        Err(status) => format!("failed ({:?}: {})", status.code(), status.message()),
    };
    println!(
        "{:<12} PullImage (bomb)   {outcome}\n{:<12} PullImage (bomb)   after {:.2} s; peak disk use +{peak_mib:.0} MiB, left after +{left_mib:.0} MiB",
        args.label,
        args.label,
        took.as_secs_f64()
    );
    if result.is_ok() {
        images
            .remove_image(cri::RemoveImageRequest { image: spec() })
            .await?;
    }
    Ok(())
}
