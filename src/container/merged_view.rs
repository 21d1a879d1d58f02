//! An image's unpacked layer directories (top first) read as their overlay mount would
//! show them, without mounting: the top layer that has a path wins; a whiteout (a 0/0
//! character device) or an opaque directory (`trusted.overlay.opaque=y`) on the way hides
//! the layers below, and so does a non-directory where a lower layer has a directory.
//! Symlinks are reported, never followed: each caller resolves them inside the image root
//! with the rules it needs (users.rs clamps `..` at the root as the kernel does inside the
//! container; image_volume.rs refuses a climb out).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Symlinks followed while resolving one path, as the kernel's limit.
pub const MAX_SYMLINKS: usize = 40;
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What the merged view shows at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir,
    /// A regular file, at this path in the layer that shows it.
    File(PathBuf),
    Symlink(String),
    /// A device, socket or fifo.
    Other,
}

/// The merged view's entry at `parts` (components, none of them `.` or `..`; the merged
/// view must show each parent as a directory, not a symlink). Ok(None) when it shows nothing.
pub fn entry(layers_top_first: &[PathBuf], parts: &[String]) -> io::Result<Option<Entry>> {
    if parts.is_empty() {
        return Ok(Some(Entry::Dir));
    }
    'layers: for layer in layers_top_first {
        let mut here = layer.clone();
        let mut opaque_above = false;
        for (i, part) in parts.iter().enumerate() {
            here.push(part);
            let meta = match std::fs::symlink_metadata(&here) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if opaque_above {
                        return Ok(None);
                    }
                    continue 'layers;
                }
                Err(e) => return Err(e),
            };
            if meta.file_type().is_char_device() && meta.rdev() == 0 {
                return Ok(None); // a whiteout
            }
            if i + 1 == parts.len() {
                let file_type = meta.file_type();
                return Ok(Some(if file_type.is_symlink() {
                    let target = std::fs::read_link(&here)?;
                    Entry::Symlink(target.to_string_lossy().into_owned())
                } else if file_type.is_dir() {
                    Entry::Dir
                } else if file_type.is_file() {
                    Entry::File(here)
                } else {
                    Entry::Other
                }));
            }
            if !meta.is_dir() {
                return Ok(None);
            }
            if is_opaque(&here)? {
                opaque_above = true;
            }
        }
    }
    Ok(None)
}

/// The components of `path`, without empty ones and `.`.
pub fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_string)
}

fn is_opaque(dir: &Path) -> io::Result<bool> {
    let mut value = [0u8; 4];
    match rustix::fs::lgetxattr(dir, OPAQUE_XATTR, &mut value) {
        Ok(n) => Ok(&value[..n] == b"y"),
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
