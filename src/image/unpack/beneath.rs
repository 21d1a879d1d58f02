//! File operations confined to the layer directory: every parent path is resolved with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` from the layer root's fd, and every
//! object is created with an `*at` call relative to the directory that resolution returned,
//! so no path in a tar (nor a symlink it made earlier) can lead a write outside.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// openat2 returns EAGAIN when a concurrent rename or mount may have raced the lookup;
/// nothing else writes the layer dir, so a few retries always suffice.
const EAGAIN_RETRIES: usize = 8;

/// Opens `path` (relative, non-empty) beneath `root`. Symlinks inside the layer are followed
/// (except in the last component when `oflags` has `NOFOLLOW`); absolute ones, or ones
/// climbing above `root`, fail with `EXDEV`.
pub fn open_beneath(
    root: BorrowedFd<'_>,
    path: &[u8],
    oflags: OFlags,
    mode: Mode,
) -> io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(root, path, oflags | OFlags::CLOEXEC, mode, RESOLVE) {
            Err(Errno::AGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            result => return result.map_err(io::Error::from),
        }
    }
}

/// A directory in the layer: the root itself (borrowed) or one resolved beneath it.
pub enum DirFd<'a> {
    Root(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl AsFd for DirFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DirFd::Root(fd) => *fd,
            DirFd::Owned(fd) => fd.as_fd(),
        }
    }
}

/// Resolves the directory `path` (empty = root) beneath `root`, as an `O_PATH` handle
/// good for `*at` calls.
pub fn resolve_dir<'a>(root: BorrowedFd<'a>, path: &[u8]) -> io::Result<DirFd<'a>> {
    if path.is_empty() {
        return Ok(DirFd::Root(root));
    }
    open_beneath(root, path, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).map(DirFd::Owned)
}

/// Creates every missing directory of `path` (0755, owned by the caller: root), the way a
/// tar that omits `a/` before `a/b` expects. Returns how many were created.
pub fn make_dirs(root: BorrowedFd<'_>, path: &[u8]) -> io::Result<u64> {
    let mut created = 0;
    let mut end = 0;
    while end < path.len() {
        end = path[end..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(path.len(), |i| end + i);
        let prefix = &path[..end];
        let (parent, name) = match prefix.iter().rposition(|&b| b == b'/') {
            Some(slash) => (&prefix[..slash], &prefix[slash + 1..]),
            None => (&[][..], prefix),
        };
        let parent_fd = resolve_dir(root, parent)?;
        match rustix::fs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => {
                // mkdir's mode went through the umask; set it exactly.
                rustix::fs::chmodat(
                    &parent_fd,
                    name,
                    Mode::from_raw_mode(0o755),
                    AtFlags::empty(),
                )?;
                created += 1;
            }
            // Whatever exists there must resolve to a directory; the next resolve_dir (or
            // the caller's) says so if not.
            Err(Errno::EXIST) => {}
            Err(err) => return Err(err.into()),
        }
        end += 1;
    }
    Ok(created)
}

/// Removes whatever `name` in `dir` is, without following symlinks. Returns whether it
/// was a directory (whose whole tree went with it).
pub fn remove_entry(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        remove_tree_at(dir, name)?;
        Ok(true)
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
        Ok(false)
    }
}

fn is_permission_error(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
}

/// Removes the directory `name` in `parent` and everything in it, never following a
/// symlink, and making directories writable when the layer made them read-only (a caller
/// without CAP_DAC_OVERRIDE cannot empty a 0500 directory otherwise).
pub fn remove_tree_at(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Err(Errno::ACCESS) => {
            rustix::fs::chmodat(parent, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
            rustix::fs::openat(parent, name, flags, Mode::empty())?
        }
        result => result?,
    };
    empty_dir(dir.as_fd())?;
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

fn empty_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    // Read every name first: unlinking while getdents walks the directory can skip entries.
    let mut children = Vec::new();
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            children.push((name.to_vec(), entry.file_type()));
        }
    }
    drop(reader);
    let mut made_writable = false;
    for (name, file_type) in children {
        let result = remove_child(dir, &name, file_type);
        match result {
            Err(err) if is_permission_error(&err) && !made_writable => {
                rustix::fs::fchmod(dir, Mode::from_raw_mode(0o700))?;
                made_writable = true;
                remove_child(dir, &name, file_type)?;
            }
            result => result?,
        }
    }
    Ok(())
}

fn remove_child(dir: BorrowedFd<'_>, name: &[u8], file_type: FileType) -> io::Result<()> {
    match file_type {
        FileType::Directory => remove_tree_at(dir, name),
        FileType::Unknown => remove_entry(dir, name).map(|_| ()),
        _ => rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(io::Error::from),
    }
}

/// Removes a layer directory (finished or half-written) and everything in it, without
/// following symlinks. A path that does not exist is not an error; a path that is a
/// symlink is removed itself, never its target.
pub fn remove_layer_dir(path: &Path) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no directory entry", path.display()),
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent_fd = rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    match remove_entry(parent_fd.as_fd(), name.as_bytes()) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result.map(|_| ()),
    }
}
