//! Image volumes (CRI `Mount.image`) on the daemon's side: the image must be pulled (else
//! NotFound, so the kubelet pulls and retries) and `image_sub_path` must name something in
//! it (else InvalidArgument). The path is looked up in the image's unpacked layers the way
//! the overlay will show them, before anything is created; init then mounts the overlay
//! (init/image_volume.rs).

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;

use crate::container::config::Mount;
use crate::container::merged_view::{self, Entry, MAX_SYMLINKS, components};
use crate::error::{Error, ErrorKind, Result};
use crate::image::ImageService;
use crate::init::mounts::ImageVolumeLayout;

/// The image volumes of one container, resolved.
#[derive(Debug, Default)]
pub struct ImageVolumes {
    /// What init mounts (the bundle's image-volumes.json).
    pub layouts: Vec<ImageVolumeLayout>,
    /// The image IDs the volumes use, so that RemoveImage can refuse them.
    pub image_ids: Vec<String>,
}

/// Resolves each image volume of `mounts` to its image's layers and checks its sub-path.
pub async fn resolve(images: &ImageService, mounts: &[Mount]) -> Result<ImageVolumes> {
    let mut out = ImageVolumes::default();
    for (index, mount) in mounts.iter().enumerate() {
        let Some(volume) = &mount.image else {
            continue;
        };
        let field = format!("mounts[{index}].image");
        let (image, layers, _) = images
            .resolve_for_container(&volume.reference)
            .await
            .map_err(|e| e.context(format!("{field} {:?}", volume.reference)))?;
        let lower: Vec<PathBuf> = layers.into_iter().rev().collect();
        let (sub_path, layers_top_first) = (volume.sub_path.clone(), lower.clone());
        tokio::task::spawn_blocking(move || find_sub_path(&layers_top_first, &sub_path))
            .await
            .map_err(|e| Error::internal("image volume lookup task", e))?
            .map_err(|e| {
                let kind = match e {
                    SubPathError::Io(_) => ErrorKind::Internal,
                    _ => ErrorKind::InvalidArgument,
                };
                Error::with_source(
                    kind,
                    format!(
                        "mounts[{index}].image_sub_path {:?} in image {}",
                        volume.sub_path, image.id
                    ),
                    e,
                )
            })?;
        out.layouts.push(ImageVolumeLayout {
            index,
            lower,
            sub_path: volume.sub_path.clone(),
        });
        if !out.image_ids.contains(&image.id) {
            out.image_ids.push(image.id);
        }
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum SubPathError {
    #[error("does not exist in the image ({0} is missing)")]
    Missing(String),
    #[error("leaves the image (the symlink {0} climbs above its root)")]
    Escapes(String),
    #[error("too many levels of symbolic links")]
    TooManyLinks,
    #[error("reading the image's layers")]
    Io(#[source] io::Error),
}

/// What the merged image has at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Dir,
    /// A file, or anything else that is not a directory.
    Other,
}

/// Looks `sub_path` (relative, already free of `..`) up in the stacked layer directories as
/// the read-only overlay of them will show it: the top layer that has an entry wins, a
/// whiteout or an opaque directory hides what is below. Symlinks resolve inside the image
/// (an absolute target starts again at the image root); one whose `..` climbs above the
/// root is an escape, never clamped, so what the container gets is what was named.
pub fn find_sub_path(layers_top_first: &[PathBuf], sub_path: &str) -> Result<Found, SubPathError> {
    let mut pending: VecDeque<String> = components(sub_path).collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut found = Found::Dir;
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if found != Found::Dir {
            // A component below something that is not a directory.
            return Err(SubPathError::Missing(format!(
                "/{}/{part}",
                resolved.join("/")
            )));
        }
        if part == ".." {
            // Only symlink targets bring `..` here (the CRI adapter refuses it in the path).
            if resolved.pop().is_none() {
                return Err(SubPathError::Escapes("/".into()));
            }
            continue;
        }
        resolved.push(part);
        let shown = format!("/{}", resolved.join("/"));
        match merged_view::entry(layers_top_first, &resolved).map_err(SubPathError::Io)? {
            None => return Err(SubPathError::Missing(shown)),
            Some(Entry::Dir) => found = Found::Dir,
            Some(Entry::File(_) | Entry::Other) => found = Found::Other,
            Some(Entry::Symlink(target)) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(SubPathError::TooManyLinks);
                }
                resolved.pop();
                if target.starts_with('/') {
                    resolved.clear();
                }
                // Tracked so that an escape names the link, not the path it led to.
                let climbs_out = {
                    let mut depth = resolved.len() as isize;
                    components(&target).any(|p| {
                        depth += if p == ".." { -1 } else { 1 };
                        depth < 0
                    })
                };
                if climbs_out {
                    return Err(SubPathError::Escapes(shown));
                }
                for p in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(p);
                }
                found = Found::Dir;
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::merged_view::OPAQUE_XATTR;
    use std::fs;
    use std::path::Path;

    /// Two layers, top first: the lower one has the files, the upper one hides some.
    fn layers() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let (top, bottom) = (dir.path().join("top"), dir.path().join("bottom"));
        for d in ["data/sub", "data/gone-dir", "opaque/old", "etc"] {
            fs::create_dir_all(bottom.join(d)).unwrap();
        }
        fs::write(bottom.join("data/file"), "x").unwrap();
        fs::write(bottom.join("data/gone"), "x").unwrap();
        fs::write(bottom.join("etc/conf"), "x").unwrap();
        fs::create_dir_all(top.join("data")).unwrap();
        fs::create_dir_all(top.join("opaque/new")).unwrap();
        std::os::unix::fs::symlink("sub", top.join("data/rel")).unwrap();
        std::os::unix::fs::symlink("/etc", top.join("data/abs")).unwrap();
        std::os::unix::fs::symlink("../../..", top.join("data/climb")).unwrap();
        std::os::unix::fs::symlink("../etc/conf", top.join("data/up")).unwrap();
        std::os::unix::fs::symlink("loop", top.join("data/loop")).unwrap();
        let whiteout = |p: &Path| {
            nix::sys::stat::mknod(
                p,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
        };
        // Whiteouts and opaque directories need root (as the unpacker's tests do).
        whiteout(&top.join("data/gone")).expect("mknod a whiteout (run as root)");
        whiteout(&top.join("data/gone-dir")).unwrap();
        rustix::fs::setxattr(
            top.join("opaque"),
            OPAQUE_XATTR,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("set trusted.overlay.opaque (run as root)");
        (dir, vec![top, bottom])
    }

    #[test]
    fn sub_paths_resolve_through_the_layers_as_the_overlay_shows_them() {
        let (_dir, layers) = layers();
        let find = |p: &str| find_sub_path(&layers, p);
        assert_eq!(find("").unwrap(), Found::Dir);
        assert_eq!(find("data").unwrap(), Found::Dir);
        assert_eq!(find("data/sub").unwrap(), Found::Dir);
        assert_eq!(find("data/file").unwrap(), Found::Other);
        assert_eq!(find("./data//file").unwrap(), Found::Other);
        assert_eq!(find("opaque/new").unwrap(), Found::Dir);
        // Symlinks resolve inside the image, absolute ones from its root.
        assert_eq!(find("data/rel").unwrap(), Found::Dir);
        assert_eq!(find("data/abs/conf").unwrap(), Found::Other);
        assert_eq!(find("data/up").unwrap(), Found::Other);
    }

    #[test]
    fn hidden_missing_and_escaping_sub_paths_are_refused() {
        let (_dir, layers) = layers();
        let find = |p: &str| find_sub_path(&layers, p);
        for missing in [
            "nothing",
            "data/gone",
            "data/gone-dir",
            "opaque/old",
            "data/file/below",
        ] {
            assert!(
                matches!(find(missing), Err(SubPathError::Missing(_))),
                "{missing}: {:?}",
                find(missing)
            );
        }
        match find("data/climb/etc") {
            Err(SubPathError::Escapes(link)) => assert_eq!(link, "/data/climb"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(find("data/loop"), Err(SubPathError::TooManyLinks)));
    }
}
