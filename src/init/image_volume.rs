//! Image volumes (CRI `Mount.image`): each one is a read-only overlay of the image's layers,
//! made here in init's own mount namespace, so it lives and dies with the container's mounts
//! and needs nothing from the daemon after the create (a daemon restart changes nothing).
//! The part the container sees (the whole image or `image_sub_path`) is bound at its mount
//! point in the bundle, which the spec then binds into the container like any volume.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};

use super::error::{InitError, Result};
use super::mounts::{
    ATTR_NODEV, ATTR_NOSUID, ATTR_RDONLY, IMAGE_VOLUMES_DIR, IMAGE_VOLUMES_FILE, ImageVolumeLayout,
    RootfsLayers, image_volume_source,
};
use super::rootfs::{IdMap, mount_overlay, set_mount_attrs};

/// Mounts every image volume the daemon listed in the bundle (none when the file is absent).
/// With `idmap` (a pod with its own user namespace), the layers are id-mapped under the
/// overlay as the rootfs's are, so the image's files show owned by the pod's own ids.
pub fn mount_image_volumes(bundle: &Path, idmap: Option<&IdMap>) -> Result<()> {
    let file = bundle.join(IMAGE_VOLUMES_FILE);
    let text = match fs::read(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(InitError::io(format!("read {}", file.display()), &e)),
    };
    let volumes: Vec<ImageVolumeLayout> = serde_json::from_slice(&text)
        .map_err(|e| InitError::new(format!("parse {}", file.display()), e.to_string()))?;
    let dir = bundle.join(IMAGE_VOLUMES_DIR);
    // overlayfs wants two lower layers when it has no upper one: an empty directory at the
    // bottom lets a one-layer image be a volume too, and changes nothing above it.
    let empty = dir.join("empty");
    fs::create_dir_all(&empty)
        .map_err(|e| InitError::io(format!("create {}", empty.display()), &e))?;
    for volume in &volumes {
        mount_one(bundle, &dir, &empty, volume, idmap).map_err(|e| {
            InitError::io(
                format!("mount the image volume of mounts[{}]", volume.index),
                &e,
            )
        })?;
    }
    Ok(())
}

fn mount_one(
    bundle: &Path,
    dir: &Path,
    empty: &Path,
    volume: &ImageVolumeLayout,
    idmap: Option<&IdMap>,
) -> io::Result<()> {
    let image_root = dir.join(format!("{}.image", volume.index));
    fs::create_dir_all(&image_root)?;
    let mut lower = volume.lower.clone();
    lower.push(empty.to_path_buf());
    let layers = RootfsLayers {
        lower,
        upper: None,
        work: None,
    };
    let links = dir.join(format!("{}.links", volume.index));
    mount_overlay(&links, &layers, &image_root, idmap)?;
    let root = rustix::fs::open(
        image_root.as_path(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let part = open_part(&root, &volume.sub_path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("image_sub_path {:?}: {e}", volume.sub_path),
        )
    })?;
    let is_dir = rustix::fs::fstat(&part)
        .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir())?;
    let target = image_volume_source(bundle, volume.index);
    if is_dir {
        fs::create_dir_all(&target)?;
    } else {
        fs::write(&target, b"")?;
    }
    let tree = open_tree(
        &part,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )?;
    set_mount_attrs(&tree, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV, 0, 0, false)?;
    move_mount(
        &tree,
        "",
        rustix::fs::CWD,
        target.as_path(),
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// `sub_path` inside the mounted image: symlinks on the way resolve inside it (absolute
/// ones from the image root), as the daemon checked when it accepted the path.
fn open_part(root: &OwnedFd, sub_path: &str) -> io::Result<OwnedFd> {
    let path = if sub_path.is_empty() {
        PathBuf::from(".")
    } else {
        PathBuf::from(sub_path)
    };
    Ok(rustix::fs::openat2(
        root,
        path.as_path(),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    )?)
}
