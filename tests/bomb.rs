//! Bounded unpack through PullImage: a 4 MiB gzip bomb (4 GiB of zeros in 4096 files) served
//! by a registry this test runs itself fails early against `max_unpacked_size`, against
//! `min_free_space` and, with the default configuration, against `max_expansion_ratio`, and
//! leaves no layer, blob or temp file behind; a large layer of ordinary content still pulls
//! with the defaults. (A plain layer over
//! `max_unpacked_size` is in tests/image_cri.rs.)
mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::cri::api as cri;
use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1 << 20;
/// Files of one MiB of zeros in the bomb: 4 GiB unpacked.
const BOMB_FILES: usize = 4096;
/// A registry name that only the test's mirror resolves.
const HOST: &str = "bomb.berth.test";

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// The bomb layer: a tar of BOMB_FILES files of 1 MiB of zeros, as concatenated gzip members
/// (one compressed MiB of zeros, repeated), so it costs the test almost nothing to build.
fn bomb_layer() -> Vec<u8> {
    let zeros = gzip(&vec![0; MIB]);
    let mut blob = Vec::new();
    for i in 0..BOMB_FILES {
        let mut header = tar::Header::new_gnu();
        header.set_path(format!("bomb/{i:05}")).unwrap();
        header.set_size(MIB as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        blob.extend_from_slice(&gzip(header.as_bytes()));
        blob.extend_from_slice(&zeros);
    }
    blob.extend_from_slice(&gzip(&[0; 1024]));
    blob
}

/// Path → body of the image `bomb:v1`.
fn bomb_image() -> HashMap<String, Vec<u8>> {
    let layer = bomb_layer();
    println!(
        "gzip bomb: {:.1} MiB compressed, {} MiB unpacked",
        layer.len() as f64 / MIB as f64,
        BOMB_FILES
    );
    // The diff_id is never reached: the unpack stops long before the end.
    image_routes("bomb", layer, digest(b"never reached"))
}

/// Path → body of the one-layer image `<repo>:v1`.
fn image_routes(repo: &str, layer: Vec<u8>, diff_id: String) -> HashMap<String, Vec<u8>> {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let mut routes = HashMap::new();
    routes.insert(format!("/v2/{repo}/blobs/{}", digest(&config)), config);
    routes.insert(format!("/v2/{repo}/blobs/{}", digest(&layer)), layer);
    routes.insert(
        format!("/v2/{repo}/manifests/{}", digest(&manifest)),
        manifest.clone(),
    );
    routes.insert(format!("/v2/{repo}/manifests/v1"), manifest);
    routes
}

/// A registry serving fixed paths over plain HTTP on 127.0.0.1; returns its address.
async fn serve(routes: HashMap<String, Vec<u8>>) -> String {
    let routes = Arc::new(routes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let mut words = text.split_whitespace();
                let method = words.next().unwrap_or("").to_string();
                let path = words.next().unwrap_or("").to_string();
                let Some(body) = routes.get(&path) else {
                    let _ = stream
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                };
                let content_type = if path.contains("/manifests/") {
                    "application/vnd.oci.image.manifest.v1+json"
                } else {
                    "application/octet-stream"
                };
                let header = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ndocker-content-digest: {}\r\nconnection: close\r\n\r\n",
                    body.len(),
                    digest(body)
                );
                let _ = stream.write_all(header.as_bytes()).await;
                if method != "HEAD" {
                    let _ = stream.write_all(body).await;
                }
            });
        }
    });
    addr
}

fn mirror(daemon: &TestDaemon, addr: &str) {
    let dir = daemon.registry_dir.join(HOST);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"https://{HOST}\"\n\n[host.\"http://{addr}\"]\ncapabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
}

/// Pulls the bomb and checks it failed naming `limit`, quickly, leaving nothing; the error
/// message.
async fn pull_bomb_fails(daemon: &TestDaemon, limit: &str) -> String {
    let addr = serve(bomb_image()).await;
    mirror(daemon, &addr);
    let mut images = daemon.images().await;
    let started = Instant::now();
    let err = images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: format!("{HOST}/bomb:v1"),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("the gzip bomb was unpacked");
    let took = started.elapsed();
    println!("bomb refused by {limit} after {took:?}: {}", err.message());
    assert!(err.message().contains(limit), "{}", err.message());
    assert!(took < Duration::from_secs(60), "took {took:?}");
    daemon.assert_no_leaks("after the refused bomb");
    assert_eq!(
        daemon.image_content(),
        (0, 0),
        "blobs or layers of the bomb left"
    );
    let listed = images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(listed.is_empty(), "{listed:?}");
    err.message().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_bomb_stops_at_max_unpacked_size() {
    let daemon =
        TestDaemon::start_with(false, &["--max-unpacked-size", &(16 * MIB).to_string()]).await;
    pull_bomb_fails(&daemon, "max_unpacked_size").await;
}

/// Regression: with the default configuration the bomb used to unpack all of its 4 GiB.
/// Now it stops at the default expansion ratio as soon as it has written 256 MiB, and the
/// error names the layer, its sizes and the setting to raise.
#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_bomb_was_unpacked_with_the_default_config() {
    let daemon = TestDaemon::start_with(false, &[]).await;
    let message = pull_bomb_fails(&daemon, "max_expansion_ratio").await;
    let layer = digest(&bomb_layer());
    assert!(
        message.contains(&layer),
        "names the layer {layer}: {message}"
    );
    assert!(message.contains("compressed bytes"), "{message}");
    assert!(message.contains("expanded to"), "{message}");
    assert!(message.contains("--max-expansion-ratio"), "{message}");
}

/// Files of ordinary content in the realistic layer: 1 MiB each, 272 MiB with the
/// zero-filled file, past the 256 MiB where the expansion ratio starts to count.
const ORDINARY_FILES: usize = 256;
const ZERO_FILE: usize = 16 * MIB;

/// A tar header for a regular file of `size` bytes at `path`.
fn tar_header(path: &str, size: usize) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_path(path).unwrap();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    header.as_bytes().to_vec()
}

/// A realistic large layer: a 16 MiB zero-filled file (a preallocated database, say), then
/// 256 files of 1 MiB that are a third random bytes and two thirds text (about 2:1, as
/// binaries and libraries are). Built like the bomb, from gzip members compressed once and
/// repeated, so it costs little; the diff_id comes from `sha256sum` over the same bytes.
/// The compressed layer and its diff_id.
fn ordinary_layer() -> (Vec<u8>, String) {
    let mut unit = Vec::with_capacity(MIB);
    let mut n = 0u64;
    while unit.len() < MIB {
        if (unit.len() / 4096) % 3 == 0 {
            unit.extend((0..4096).map(|_| rand::random::<u8>()));
            continue;
        }
        n += 1;
        let line = format!(
            "setting_{n} = \"value {}\" # comment {}\n",
            n * 7919,
            n % 97
        );
        let room = 4096 - unit.len() % 4096;
        unit.extend_from_slice(&line.as_bytes()[..line.len().min(room)]);
    }
    unit.truncate(MIB);
    let (unit_gz, zeros, zeros_gz) = (gzip(&unit), vec![0u8; MIB], gzip(&vec![0u8; MIB]));
    let mut hasher = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils) is needed");
    let mut stdin = hasher.stdin.take().unwrap();
    let mut layer = Vec::new();
    let mut add = |plain: &[u8], compressed: &[u8]| {
        stdin.write_all(plain).unwrap();
        layer.extend_from_slice(compressed);
    };
    let header = tar_header("data/preallocated", ZERO_FILE);
    add(&header, &gzip(&header));
    for _ in 0..ZERO_FILE / MIB {
        add(&zeros, &zeros_gz);
    }
    for i in 0..ORDINARY_FILES {
        let header = tar_header(&format!("usr/lib/file{i:04}"), MIB);
        add(&header, &gzip(&header));
        add(&unit, &unit_gz);
    }
    let trailer = [0u8; 1024];
    add(&trailer, &gzip(&trailer));
    drop(stdin);
    let out = hasher.wait_with_output().unwrap();
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    (layer, format!("sha256:{hex}"))
}

/// The default expansion ratio does not trip on real data: a 272 MiB layer of ordinary
/// content (and a zero-filled file) pulls with the default configuration.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_ordinary_layer_pulls_with_the_default_config() {
    let built = Instant::now();
    let (layer, diff_id) = ordinary_layer();
    println!("built the ordinary layer in {:?}", built.elapsed());
    let expanded = ZERO_FILE + ORDINARY_FILES * MIB;
    println!(
        "ordinary layer: {:.1} MiB compressed, {} MiB unpacked ({:.1}:1)",
        layer.len() as f64 / MIB as f64,
        expanded / MIB,
        expanded as f64 / layer.len() as f64
    );
    let daemon = TestDaemon::start_with(false, &[]).await;
    let addr = serve(image_routes("ordinary", layer, diff_id)).await;
    mirror(&daemon, &addr);
    let mut images = daemon.images().await;
    let pulled = Instant::now();
    let image = images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: format!("{HOST}/ordinary:v1"),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("the ordinary large layer was refused: {e}"))
        .into_inner()
        .image_ref;
    println!("pulled in {:?}", pulled.elapsed());
    let (blobs, layers) = daemon.image_content();
    assert_eq!(layers, 1, "one unpacked layer ({blobs} blobs)");
    images
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("removing {image}: {e}"));
    daemon.assert_no_leaks("after the ordinary pull");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_bomb_cannot_fill_the_disk() {
    let probe = tempfile::tempdir().unwrap();
    let stat = nix::sys::statvfs::statvfs(probe.path()).unwrap();
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    // The bomb may use at most 64 MiB of what is free now before min_free_space stops it
    // (less if the machine writes meanwhile: then it stops at once, for the same reason).
    let min_free = free.saturating_sub(64 * MIB as u64);
    assert!(
        free > 1 << 30,
        "this test needs at least 1 GiB free ({free} bytes free)"
    );
    let daemon = TestDaemon::start_with(false, &["--min-free-space", &min_free.to_string()]).await;
    pull_bomb_fails(&daemon, "min_free_space").await;
}
