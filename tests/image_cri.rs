//! The CRI ImageService of the real daemon, pulling the fixture images of
//! hack/test-images.sh from the local registry (127.0.0.1:5000) through a docker.io mirror,
//! as crictl and the kubelet would.
mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

use berth::cri::api as cri;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

async fn pull(
    images: &mut berth::cri::api::image_service_client::ImageServiceClient<
        tonic::transport::Channel,
    >,
    image: &str,
) -> Result<String, tonic::Status> {
    images
        .pull_image(cri::PullImageRequest {
            image: spec(image),
            auth: None,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(
    images: &mut berth::cri::api::image_service_client::ImageServiceClient<
        tonic::transport::Channel,
    >,
    image: &str,
) -> cri::ImageStatusResponse {
    images
        .image_status(cri::ImageStatusRequest {
            image: spec(image),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.count())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_list_status_remove_and_restart_through_a_mirror() {
    let mut daemon = TestDaemon::start().await;
    mirror_docker_io(&daemon);
    let mut images = daemon.images().await;

    let id = pull(&mut images, "busybox").await.unwrap();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");

    let list = images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    let image = list
        .iter()
        .find(|i| i.id == id)
        .expect("pulled image listed");
    assert!(
        image
            .repo_tags
            .contains(&"docker.io/library/busybox:latest".to_string()),
        "{image:?}"
    );
    assert!(
        image
            .repo_digests
            .iter()
            .any(|d| d.starts_with("docker.io/library/busybox@sha256:")),
        "{image:?}"
    );
    assert!(image.size > 0);
    let repo_digest = image.repo_digests[0].clone();

    // Every kind of reference finds it: short name, full tag, id, digest.
    for reference in [
        "busybox",
        "docker.io/library/busybox:latest",
        id.as_str(),
        repo_digest.as_str(),
    ] {
        let st = status(&mut images, reference).await;
        assert_eq!(
            st.image.as_ref().map(|i| i.id.as_str()),
            Some(id.as_str()),
            "{reference}"
        );
    }
    let st = status(&mut images, "busybox").await;
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["os"], "linux", "{info}");

    let fs = images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let usage = &fs.image_filesystems[0];
    assert!(usage.used_bytes.as_ref().unwrap().value > 0);
    assert!(usage.inodes_used.as_ref().unwrap().value > 0);

    // An image that is not there: ImageStatus answers empty, PullImage NotFound.
    let st = status(&mut images, "docker.io/library/nosuchimage:1").await;
    assert!(st.image.is_none());
    // Straight at the local registry: its 404 is the only answer, so NotFound.
    let err = pull(
        &mut images,
        &format!("{}/library/nosuchimage:1", registry()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
    let err = pull(&mut images, "Not A Reference!").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Restart keeps the image.
    daemon.restart().await;
    let mut images = daemon.images().await;
    let st = status(&mut images, "busybox").await;
    assert_eq!(st.image.map(|i| i.id), Some(id.clone()));

    // Remove by tag removes the image, its blobs and layers; again is fine.
    for _ in 0..2 {
        images
            .remove_image(cri::RemoveImageRequest {
                image: spec("busybox"),
            })
            .await
            .unwrap();
    }
    assert!(status(&mut images, &id).await.image.is_none());
    let store = daemon.root.join("images");
    assert_eq!(files_under(&store.join("layers")), 0, "layers left");
    assert_eq!(files_under(&store.join("blobs/sha256")), 0, "blobs left");
}

/// The layers of berth-test/layers:v1 stacked by overlayfs show exactly what the image's
/// whiteouts, opaque dir, links, fifo, xattr and setuid file say.
#[tokio::test(flavor = "multi_thread")]
async fn unpacked_layers_stack_into_the_right_tree_under_overlayfs() {
    let daemon = TestDaemon::start().await;
    mirror_docker_io(&daemon);
    let registry = registry();
    let mut images = daemon.images().await;
    let reference = format!("{registry}/berth-test/layers:v1");
    let id = pull(&mut images, &reference)
        .await
        .unwrap_or_else(|e| panic!("pulling {reference} (hack/test-images.sh builds it): {e}"));
    let st = status(&mut images, &id).await;
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    let layers: Vec<PathBuf> = info["chainIDs"]
        .as_array()
        .expect("chainIDs")
        .iter()
        .map(|c| {
            let hex = c.as_str().unwrap().trim_start_matches("sha256:");
            daemon.root.join("images/layers").join(hex).join("fs")
        })
        .collect();
    assert!(layers.len() >= 4, "{layers:?}");
    for l in &layers {
        assert!(l.is_dir(), "{}", l.display());
    }

    // overlay lowerdir lists the top layer first.
    let lower = layers
        .iter()
        .rev()
        .map(|p| p.to_string_lossy().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let merged = daemon.dir.path().join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={lower}").as_str()),
    )
    .expect("mounting overlay of the image layers");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _guard = Unmount(merged.clone());
    let root = merged.join("layers");

    let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap();
    assert_eq!(read("keep.txt").trim(), "kept from layer 2");
    assert_eq!(read("replaced.txt").trim(), "layer 3");
    for gone in ["gone.txt", "gone-dir", "opaque/old.txt", "opaque/old-dir"] {
        assert!(!root.join(gone).exists(), "{gone} should be whited out");
    }
    assert!(root.join("opaque/new.txt").exists());
    assert_eq!(
        std::fs::read_link(root.join("symlink")).unwrap(),
        PathBuf::from("keep.txt")
    );
    let a = std::fs::metadata(root.join("hardlink-a")).unwrap();
    let b = std::fs::metadata(root.join("hardlink-b")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard links share an inode");
    assert!(
        std::fs::symlink_metadata(root.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let setuid = std::fs::metadata(root.join("setuid")).unwrap();
    assert_eq!(setuid.permissions().mode() & 0o7777, 0o4755);
    let out = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", "user.berth"])
        .arg(root.join("xattr.txt"))
        .output()
        .expect("getfattr (attr) is needed: run hack/install-deps.sh");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1");
    // The image's own busybox base is there too.
    assert!(merged.join("bin/sh").exists() || merged.join("bin/busybox").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_over_max_unpacked_size_fails_and_leaves_nothing() {
    let daemon = TestDaemon::start_with(true, &["--max-unpacked-size", "4096"]).await;
    mirror_docker_io(&daemon);
    let mut images = daemon.images().await;
    let err = pull(&mut images, "busybox").await.unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::FailedPrecondition,
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("max_unpacked_size"),
        "{}",
        err.message()
    );
    let store = daemon.root.join("images");
    assert_eq!(files_under(&store.join("layers")), 0, "layers left");
    assert_eq!(files_under(&store.join("blobs/sha256")), 0, "blobs left");
    assert_eq!(files_under(&store.join("ingest")), 0, "ingest left");
    let list = images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(list.is_empty());
}
