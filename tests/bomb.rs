//! Bounded unpack through PullImage: a 4 MiB gzip bomb (4 GiB of zeros in 4096 files) served
//! by a registry this test runs itself fails early against `max_unpacked_size` and against
//! `min_free_space`, and leaves no layer, blob or temp file behind. (A plain layer over
//! `max_unpacked_size` is in tests/image_cri.rs.)
mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use k8s_cri::v1 as cri;
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
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(b"never reached")]},
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
    routes.insert(format!("/v2/bomb/blobs/{}", digest(&config)), config);
    routes.insert(format!("/v2/bomb/blobs/{}", digest(&layer)), layer);
    routes.insert(
        format!("/v2/bomb/manifests/{}", digest(&manifest)),
        manifest.clone(),
    );
    routes.insert("/v2/bomb/manifests/v1".into(), manifest);
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

/// Pulls the bomb and checks it failed naming `limit`, quickly, leaving nothing.
async fn pull_bomb_fails(daemon: &TestDaemon, limit: &str) {
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
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_bomb_stops_at_max_unpacked_size() {
    let daemon =
        TestDaemon::start_with(false, &["--max-unpacked-size", &(16 * MIB).to_string()]).await;
    pull_bomb_fails(&daemon, "max_unpacked_size").await;
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
