//! The extractor proper: one tar entry at a time, created beneath the layer root.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

use super::beneath::{DirFd, make_dirs, open_beneath, remove_entry, resolve_dir};
use super::budget::Budget;
use super::error::{Refusal, UnpackError, UnpackLimits};
use super::path::{LayerPath, Whiteout, classify_whiteout};

/// File data is moved through one buffer of this size.
const DATA_BUFFER: usize = 256 * 1024;

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const XATTR_PAX_PREFIX: &[u8] = b"SCHILY.xattr.";
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// Owner, mode, times and xattrs of one entry.
struct Meta {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    times: Timestamps,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

pub(super) fn refused(entry: &str, reason: Refusal) -> UnpackError {
    UnpackError::Refused {
        entry: entry.to_string(),
        reason,
    }
}

fn io_error<'a>(entry: &'a str, what: &'static str) -> impl FnOnce(Errno) -> UnpackError + 'a {
    move |errno| UnpackError::Io {
        entry: entry.to_string(),
        what,
        source: errno.into(),
    }
}

/// A failed path resolution beneath the layer root, as the refusal it means.
fn resolve_error(entry: &str, what: &'static str, err: io::Error) -> UnpackError {
    let reason = match err.raw_os_error() {
        Some(libc::EXDEV) => Refusal::Escapes,
        Some(libc::ELOOP) => Refusal::SymlinkLoop,
        Some(libc::ENOTDIR) => Refusal::ParentNotDirectory,
        Some(libc::ENOENT) => Refusal::ParentMissing,
        _ => {
            return UnpackError::Io {
                entry: entry.to_string(),
                what,
                source: err,
            };
        }
    };
    refused(entry, reason)
}

fn is_errno(err: &io::Error, errno: i32) -> bool {
    err.raw_os_error() == Some(errno)
}

/// `SCHILY.xattr`-style PAX time: `secs[.fraction]`, possibly negative.
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, digit) in frac.bytes().take(9).enumerate() {
        if !digit.is_ascii_digit() {
            return None;
        }
        nanos += i64::from(digit - b'0') * 10i64.pow(8 - i as u32);
    }
    let (tv_sec, tv_nsec) = if negative && nanos > 0 {
        (-secs - 1, 1_000_000_000 - nanos)
    } else if negative {
        (-secs, 0)
    } else {
        (secs, nanos)
    };
    Some(Timespec { tv_sec, tv_nsec })
}

pub(super) struct Extractor {
    pub(super) root: OwnedFd,
    pub(super) budget: Budget,
    pub(super) inodes: u64,
    /// Directory times, applied at the end (creating children changes them).
    dir_times: HashMap<LayerPath, Timestamps>,
    allowance: Rc<Cell<u64>>,
    buf: Vec<u8>,
}

/// Ownership, mode (not for symlinks: they have none of their own), xattrs and times of
/// the entry `path` just created in `dir`, which is the entry's parent. chown comes before
/// chmod, which it would otherwise clear setuid bits after.
fn set_meta_at(
    dir: BorrowedFd<'_>,
    path: &LayerPath,
    meta: &Meta,
    shown: &str,
    symlink: bool,
) -> Result<(), UnpackError> {
    let name = path.split_last().map(|(_, name)| name).unwrap_or_default();
    rustix::fs::chownat(
        dir,
        name,
        Some(meta.uid),
        Some(meta.gid),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io_error(shown, "chown"))?;
    if !symlink {
        // Just created by mknodat: not a symlink, so chmodat cannot follow anything.
        rustix::fs::chmodat(dir, name, meta.mode, AtFlags::empty())
            .map_err(io_error(shown, "chmod"))?;
    }
    // Many filesystems refuse xattrs on symlinks (user.* always): those are skipped.
    set_xattrs_path(dir, name, &meta.xattrs, shown, symlink)?;
    rustix::fs::utimensat(dir, name, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(io_error(shown, "setting times"))
}

impl Extractor {
    pub(super) fn new(
        root: OwnedFd,
        limits: &UnpackLimits,
        allowance: Rc<Cell<u64>>,
        compressed: Rc<Cell<u64>>,
    ) -> Result<Self, UnpackError> {
        let mut budget = Budget {
            max_bytes: limits.max_unpacked_size,
            min_free: limits.min_free_space,
            max_ratio: limits.max_expansion_ratio,
            compressed,
            bytes: 0,
            bytes_since_check: 0,
            entries_since_check: 0,
        };
        budget.check_space(root.as_fd(), ".", 0)?;
        Ok(Extractor {
            root,
            budget,
            inodes: 0,
            dir_times: HashMap::new(),
            allowance,
            buf: vec![0; DATA_BUFFER],
        })
    }

    pub(super) fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let path = LayerPath::parse(&raw_path).map_err(|r| refused(&shown, Refusal::Path(r)))?;
        self.budget.entry(self.root.as_fd(), &shown)?;

        if let Some((parent, name)) = path.split_last() {
            match classify_whiteout(name).map_err(|r| refused(&shown, Refusal::Path(r)))? {
                Whiteout::None => {}
                Whiteout::Opaque => return self.opaque(parent, &shown),
                Whiteout::Remove(target) => {
                    return self.whiteout(&LayerPath::join(parent, target), &shown);
                }
                Whiteout::Meta => return Ok(()),
            }
        }

        let mut kind = entry.header().entry_type();
        // Pre-POSIX tars mark directories only with a trailing slash.
        if kind == EntryType::Regular && raw_path.ends_with(b"/") {
            kind = EntryType::Directory;
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let meta = self.meta(entry, &shown)?;
                self.file(&path, entry, meta, &shown)
            }
            EntryType::Directory => {
                let meta = self.meta(entry, &shown)?;
                self.dir(&path, meta, &shown)
            }
            EntryType::Symlink => {
                let meta = self.meta(entry, &shown)?;
                let target = entry.link_name_bytes().map(|t| t.into_owned());
                match target {
                    Some(target) if !target.is_empty() => {
                        self.symlink(&path, &target, meta, &shown)
                    }
                    _ => Err(refused(&shown, Refusal::EmptySymlinkTarget)),
                }
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().map(|t| t.into_owned());
                self.hard_link(&path, target.as_deref().unwrap_or_default(), &shown)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let meta = self.meta(entry, &shown)?;
                let header = entry.header();
                let bad = |source| UnpackError::BadHeader {
                    entry: shown.clone(),
                    source,
                };
                let (file_type, dev) = match kind {
                    EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let major = header.device_major().map_err(bad)?;
                        let minor = header.device_minor().map_err(bad)?;
                        let (Some(major), Some(minor)) = (major, minor) else {
                            return Err(refused(&shown, Refusal::MissingDeviceNumbers));
                        };
                        let file_type = if kind == EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (file_type, rustix::fs::makedev(major, minor))
                    }
                };
                self.special(&path, file_type, dev, meta, &shown)
            }
            EntryType::XGlobalHeader => Ok(()),
            other => Err(refused(
                &shown,
                Refusal::UnsupportedType(char::from(other.as_byte())),
            )),
        }
    }

    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<Meta, UnpackError> {
        let bad = |source| UnpackError::BadHeader {
            entry: shown.to_string(),
            source,
        };
        let header = entry.header();
        let old = header.as_old();
        // Go's archive/tar and GNU tar read an all-NUL/space numeric field as 0; so do we.
        let numeric = |field: &[u8], parsed: io::Result<u64>| match parsed {
            Err(_) if field.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
            result => result.map_err(bad),
        };
        let id =
            |raw: u64| u32::try_from(raw).map_err(|_| refused(shown, Refusal::IdOutOfRange(raw)));
        let uid = Uid::from_raw_unchecked(id(numeric(&old.uid, header.uid())?)?);
        let gid = Gid::from_raw_unchecked(id(numeric(&old.gid, header.gid())?)?);
        let mode = numeric(&old.mode, header.mode().map(u64::from))? as u32 & 0o7777;
        let mode = Mode::from_raw_mode(mode);
        let header_mtime = Timespec {
            tv_sec: i64::try_from(numeric(&old.mtime, header.mtime())?).unwrap_or(i64::MAX),
            tv_nsec: 0,
        };
        let mut mtime = None;
        let mut atime = None;
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(bad)? {
            for extension in extensions {
                let extension = extension.map_err(bad)?;
                let key = extension.key_bytes();
                if let Some(name) = key.strip_prefix(XATTR_PAX_PREFIX) {
                    if name.starts_with(OVERLAY_XATTR_PREFIX) {
                        tracing::debug!(entry = %shown, xattr = %String::from_utf8_lossy(name), "dropping overlay xattr from layer");
                    } else {
                        xattrs.push((name.to_vec(), extension.value_bytes().to_vec()));
                    }
                } else if key == b"mtime" {
                    mtime = parse_pax_time(extension.value_bytes());
                } else if key == b"atime" {
                    atime = parse_pax_time(extension.value_bytes());
                }
            }
        }
        let mtime = mtime.unwrap_or(header_mtime);
        Ok(Meta {
            uid,
            gid,
            mode,
            times: Timestamps {
                last_access: atime.unwrap_or(mtime),
                last_modification: mtime,
            },
            xattrs,
        })
    }

    /// Creates the last component of `path` with `create(parent_dir, name)`, first
    /// creating missing parents, and replacing (once) whatever already has that name.
    fn place<T>(
        &mut self,
        path: &LayerPath,
        shown: &str,
        mut create: impl FnMut(BorrowedFd<'_>, &[u8]) -> Result<T, Errno>,
    ) -> Result<(DirFd<'_>, T), UnpackError> {
        let Some((parent, name)) = path.split_last() else {
            return Err(refused(shown, Refusal::RootNotDirectory));
        };
        let root = self.root.as_fd();
        let mut made_parents = false;
        let mut replaced = false;
        loop {
            let dir = match resolve_dir(root, parent) {
                Ok(dir) => dir,
                Err(err) if is_errno(&err, libc::ENOENT) && !made_parents => {
                    self.inodes += make_dirs(root, parent)
                        .map_err(|e| resolve_error(shown, "creating parent directories", e))?;
                    made_parents = true;
                    continue;
                }
                Err(err) => {
                    return Err(resolve_error(shown, "resolving the parent directory", err));
                }
            };
            match create(dir.as_fd(), name) {
                Ok(value) => return Ok((dir, value)),
                Err(Errno::EXIST) if !replaced => {
                    let was_dir =
                        remove_entry(dir.as_fd(), name).map_err(|source| UnpackError::Io {
                            entry: shown.to_string(),
                            what: "removing the earlier entry it replaces",
                            source,
                        })?;
                    if was_dir {
                        self.dir_times
                            .retain(|dir_path, _| !dir_path.is_within(path));
                    }
                    replaced = true;
                }
                Err(errno) => return Err(io_error(shown, "creating it")(errno)),
            }
        }
    }

    fn file<R: Read>(
        &mut self,
        path: &LayerPath,
        entry: &mut tar::Entry<'_, R>,
        meta: Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let root = self.root.as_fd();
        self.budget.before_file(root, shown, entry.size())?;
        let create_flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW;
        let create_mode = Mode::from_raw_mode(0o600);
        // One openat2 for the common case; the slow path creates parents or replaces.
        let fd = match open_beneath(root, path.as_bytes(), create_flags, create_mode) {
            Ok(fd) => fd,
            Err(_) => {
                self.place(path, shown, |dir, name| {
                    rustix::fs::openat(dir, name, create_flags | OFlags::CLOEXEC, create_mode)
                })?
                .1
            }
        };
        self.dir_times.remove(path);
        self.inodes += 1;
        let mut file = File::from(fd);
        let root = self.root.as_fd();
        self.allowance.set(u64::MAX);
        loop {
            let n = entry.read(&mut self.buf).map_err(UnpackError::Stream)?;
            if n == 0 {
                break;
            }
            self.budget.wrote(root, shown, n as u64)?;
            file.write_all(&self.buf[..n])
                .map_err(|source| UnpackError::Io {
                    entry: shown.to_string(),
                    what: "writing file data",
                    source,
                })?;
        }
        // chown first: it clears setuid/setgid bits that chmod then sets.
        rustix::fs::fchown(&file, Some(meta.uid), Some(meta.gid))
            .map_err(io_error(shown, "chown"))?;
        rustix::fs::fchmod(&file, meta.mode).map_err(io_error(shown, "chmod"))?;
        set_xattrs_fd(file.as_fd(), &meta.xattrs, shown)?;
        rustix::fs::futimens(&file, &meta.times).map_err(io_error(shown, "setting times"))?;
        Ok(())
    }

    fn dir(&mut self, path: &LayerPath, meta: Meta, shown: &str) -> Result<(), UnpackError> {
        if path.is_root() {
            let root = self.root.as_fd();
            rustix::fs::fchown(root, Some(meta.uid), Some(meta.gid))
                .map_err(io_error(shown, "chown"))?;
            rustix::fs::fchmod(root, meta.mode).map_err(io_error(shown, "chmod"))?;
            set_xattrs_fd(root, &meta.xattrs, shown)?;
            self.dir_times.insert(LayerPath::root(), meta.times);
            return Ok(());
        }
        let (dir, created) = self.place(path, shown, |dir, name| {
            match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => Ok(true),
                // A directory over a directory only updates its metadata.
                Err(Errno::EXIST) => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                {
                    Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                        Ok(false)
                    }
                    _ => Err(Errno::EXIST),
                },
                Err(errno) => Err(errno),
            }
        })?;
        let name = path.split_last().map(|(_, name)| name).unwrap_or_default();
        rustix::fs::chownat(
            &dir,
            name,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io_error(shown, "chown"))?;
        // `name` is the directory just made or checked, not a symlink: chmodat cannot follow.
        rustix::fs::chmodat(&dir, name, meta.mode, AtFlags::empty())
            .map_err(io_error(shown, "chmod"))?;
        if !meta.xattrs.is_empty() {
            let fd = rustix::fs::openat(
                &dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_error(shown, "opening it for xattrs"))?;
            set_xattrs_fd(fd.as_fd(), &meta.xattrs, shown)?;
        }
        drop(dir);
        if created {
            self.inodes += 1;
        }
        self.dir_times.insert(path.clone(), meta.times);
        Ok(())
    }

    fn symlink(
        &mut self,
        path: &LayerPath,
        target: &[u8],
        meta: Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let (dir, ()) = self.place(path, shown, |dir, name| {
            rustix::fs::symlinkat(target, dir, name)
        })?;
        set_meta_at(dir.as_fd(), path, &meta, shown, true)?;
        drop(dir);
        self.dir_times.remove(path);
        self.inodes += 1;
        Ok(())
    }

    fn special(
        &mut self,
        path: &LayerPath,
        file_type: FileType,
        dev: rustix::fs::Dev,
        meta: Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let (dir, ()) = self.place(path, shown, |dir, name| {
            rustix::fs::mknodat(dir, name, file_type, Mode::from_raw_mode(0o600), dev)
        })?;
        set_meta_at(dir.as_fd(), path, &meta, shown, false)?;
        drop(dir);
        self.dir_times.remove(path);
        self.inodes += 1;
        Ok(())
    }

    fn hard_link(
        &mut self,
        path: &LayerPath,
        raw_target: &[u8],
        shown: &str,
    ) -> Result<(), UnpackError> {
        let target_shown = String::from_utf8_lossy(raw_target).into_owned();
        let target = LayerPath::parse(raw_target).map_err(|reason| {
            refused(
                shown,
                Refusal::HardLinkTargetPath {
                    target: target_shown.clone(),
                    reason,
                },
            )
        })?;
        if target == *path {
            // A link to itself: the file is already there.
            return Ok(());
        }
        let Some((target_parent, target_name)) = target.split_last() else {
            return Err(refused(
                shown,
                Refusal::HardLinkTargetNotRegular(target_shown),
            ));
        };
        let root = self.root.as_fd();
        let target_dir =
            resolve_dir(root, target_parent).map_err(|err| match err.raw_os_error() {
                Some(libc::EXDEV) => {
                    refused(shown, Refusal::HardLinkTargetEscapes(target_shown.clone()))
                }
                Some(libc::ENOENT) => {
                    refused(shown, Refusal::HardLinkTargetMissing(target_shown.clone()))
                }
                _ => resolve_error(shown, "resolving the hard link target", err),
            })?;
        match rustix::fs::statat(&target_dir, target_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => {}
            Ok(_) => {
                return Err(refused(
                    shown,
                    Refusal::HardLinkTargetNotRegular(target_shown),
                ));
            }
            Err(Errno::NOENT) => {
                return Err(refused(shown, Refusal::HardLinkTargetMissing(target_shown)));
            }
            Err(errno) => return Err(io_error(shown, "inspecting the hard link target")(errno)),
        }
        let target_dir = match target_dir {
            DirFd::Root(_) => None,
            DirFd::Owned(fd) => Some(fd),
        };
        let root_copy = self.root.try_clone().map_err(|source| UnpackError::Io {
            entry: shown.to_string(),
            what: "duplicating the layer root fd",
            source,
        })?;
        self.place(path, shown, |dir, name| {
            let from = target_dir
                .as_ref()
                .map_or(root_copy.as_fd(), |fd| fd.as_fd());
            // No AT_SYMLINK_FOLLOW: the link is to the (checked) regular file itself.
            rustix::fs::linkat(from, target_name, dir, name, AtFlags::empty())
        })?;
        self.dir_times.remove(path);
        Ok(())
    }

    fn whiteout(&mut self, path: &LayerPath, shown: &str) -> Result<(), UnpackError> {
        self.place(path, shown, |dir, name| {
            rustix::fs::mknodat(dir, name, FileType::CharacterDevice, Mode::empty(), 0)
        })?;
        self.dir_times.remove(path);
        self.inodes += 1;
        Ok(())
    }

    fn opaque(&mut self, dir_path: &[u8], shown: &str) -> Result<(), UnpackError> {
        let root = self.root.as_fd();
        let owned;
        let fd = if dir_path.is_empty() {
            root
        } else {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY;
            owned = match open_beneath(root, dir_path, flags, Mode::empty()) {
                Err(err) if is_errno(&err, libc::ENOENT) => {
                    self.inodes += make_dirs(root, dir_path)
                        .map_err(|e| resolve_error(shown, "creating parent directories", e))?;
                    open_beneath(root, dir_path, flags, Mode::empty())
                }
                result => result,
            }
            .map_err(|e| resolve_error(shown, "opening the opaque directory", e))?;
            owned.as_fd()
        };
        rustix::fs::fsetxattr(fd, OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(io_error(shown, "setting trusted.overlay.opaque"))
    }

    /// Directory times, deepest first, once nothing more is created inside them.
    pub(super) fn set_dir_times(&mut self) -> Result<(), UnpackError> {
        let mut dirs: Vec<_> = self.dir_times.drain().collect();
        dirs.sort_by_key(|(path, _)| std::cmp::Reverse(path.depth()));
        let root = self.root.as_fd();
        for (path, times) in dirs {
            let shown = path.to_string();
            match path.split_last() {
                None => {
                    rustix::fs::futimens(root, &times).map_err(io_error(&shown, "setting times"))?
                }
                Some((parent, name)) => {
                    let dir = resolve_dir(root, parent)
                        .map_err(|e| resolve_error(&shown, "resolving the directory", e))?;
                    rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(io_error(&shown, "setting times"))?;
                }
            }
        }
        Ok(())
    }
}

fn xattr_unsupported(errno: Errno) -> bool {
    errno == Errno::OPNOTSUPP
}

fn set_xattrs_fd(
    fd: BorrowedFd<'_>,
    xattrs: &[(Vec<u8>, Vec<u8>)],
    shown: &str,
) -> Result<(), UnpackError> {
    for (name, value) in xattrs {
        match rustix::fs::fsetxattr(fd, name.as_slice(), value, XattrFlags::empty()) {
            Ok(()) => {}
            Err(errno) if xattr_unsupported(errno) => {
                tracing::debug!(entry = %shown, xattr = %String::from_utf8_lossy(name), "xattr not supported by the layer filesystem; skipped");
            }
            Err(errno) => return Err(io_error(shown, "setting an xattr")(errno)),
        }
    }
    Ok(())
}

/// xattrs on something that cannot be opened for them (symlink, device, fifo): through
/// the parent directory's `/proc/self/fd` link, without following the last component.
fn set_xattrs_path(
    dir: BorrowedFd<'_>,
    name: &[u8],
    xattrs: &[(Vec<u8>, Vec<u8>)],
    shown: &str,
    skip_refused: bool,
) -> Result<(), UnpackError> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let path = std::ffi::OsStr::from_bytes(&path);
    for (xattr, value) in xattrs {
        match rustix::fs::lsetxattr(path, xattr.as_slice(), value, XattrFlags::empty()) {
            Ok(()) => {}
            Err(errno) if skip_refused || xattr_unsupported(errno) => {
                tracing::debug!(entry = %shown, xattr = %String::from_utf8_lossy(xattr), %errno, "xattr refused by the layer filesystem; skipped");
            }
            Err(errno) => return Err(io_error(shown, "setting an xattr")(errno)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse_with_fractions_and_sign() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(t("1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(t("12.123456789123"), Some((12, 123_456_789)));
        assert_eq!(t("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(t("x"), None);
        assert_eq!(t("1.2x"), None);
    }

    #[test]
    fn resolution_errors_name_the_trick() {
        let exdev = resolve_error(
            "evil/x",
            "resolving",
            io::Error::from_raw_os_error(libc::EXDEV),
        );
        assert!(matches!(
            exdev,
            UnpackError::Refused {
                reason: Refusal::Escapes,
                ..
            }
        ));
        let eloop = resolve_error(
            "a/x",
            "resolving",
            io::Error::from_raw_os_error(libc::ELOOP),
        );
        assert!(matches!(
            eloop,
            UnpackError::Refused {
                reason: Refusal::SymlinkLoop,
                ..
            }
        ));
        let eio = resolve_error("a/x", "resolving", io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(eio, UnpackError::Io { .. }));
    }
}
