//! Applies the container's filesystem: overlay rootfs, the spec's mounts, /dev, devices,
//! pivot_root, masked and read-only paths. Runs in init's own (new) mount namespace, so
//! everything here disappears with the container.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

use super::error::{InitError, Result, describe_io};
use super::mounts::{
    ATTR_ATIME_MASK, ATTR_NODEV, ATTR_NOEXEC, ATTR_NOSUID, ATTR_RDONLY, BindKind, DEFAULT_DEVICES,
    DEV_SYMLINKS, MountKind, MountStep, OVERLAY_LINK_DIR, RootfsLayers, overlay_classic_options,
    overlay_config, overlay_layer_links,
};

/// Makes the mount that holds `path` private in this (new) mount namespace, so mounts made
/// below it stay here even when the rest of the tree keeps sharing with the host.
pub fn make_parent_mount_private(path: &Path) -> Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| InitError::io("read /proc/self/mountinfo", &e))?;
    let parent = containing_mount(&mountinfo, path).unwrap_or_else(|| PathBuf::from("/"));
    mount(
        None::<&str>,
        &parent,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| InitError::errno(format!("make {} private", parent.display()), e))
}

/// The longest mount point in `mountinfo` that is `path` or one of its ancestors.
pub fn containing_mount(mountinfo: &str, path: &Path) -> Option<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|mount_point| path.starts_with(mount_point))
        .max_by_key(|mount_point| mount_point.as_os_str().len())
}

/// Mounts the overlay described by `<bundle>/rootfs.json` at `root`; without that file,
/// `root` is bound onto itself (pivot_root needs a mount point). With `idmap` (the
/// container's user namespace), file owners are seen through its mapping.
pub fn mount_rootfs(bundle: &Path, root: &Path, idmap: Option<&IdMap>) -> Result<()> {
    let step = format!("mount rootfs {}", root.display());
    let layers_file = bundle.join("rootfs.json");
    let text = match fs::read(&layers_file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(idmap) = idmap {
                return idmapped_bind(root, true, idmap.userns, |m| {
                    rustix::mount::move_mount(
                        m,
                        "",
                        rustix::fs::CWD,
                        root,
                        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
                    )
                    .map_err(io::Error::from)
                })
                .map_err(|e| InitError::io(&step, &e));
            }
            return mount(
                Some(root),
                root,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| InitError::errno(&step, e));
        }
        Err(e) => return Err(InitError::io(format!("read {}", layers_file.display()), &e)),
    };
    let layers: RootfsLayers = serde_json::from_slice(&text)
        .map_err(|e| InitError::new(format!("parse {}", layers_file.display()), e.to_string()))?;
    mount_overlay(&bundle.join(OVERLAY_LINK_DIR), &layers, root, idmap)
        .map_err(|e| InitError::io(&step, &e))
}

/// The user namespace a container will run in, for id-mapped mounts.
pub struct IdMap<'a> {
    pub userns: &'a OwnedFd,
    /// The host ids of the container's root.
    pub root_uid: u32,
    pub root_gid: u32,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Gives a detached mount (and, `recursive`, the mounts below it) the id mapping of the
/// user namespace `userns`: files owned by host uid H show as H's id inside it.
fn set_idmap(detached: &OwnedFd, userns: &OwnedFd, recursive: bool) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    mount_setattr(detached, &attr, recursive)
        .map_err(|e| io::Error::new(e.kind(), format!("id-map the mount: {}", describe_io(&e))))
}

/// A bind of `source` as a detached, id-mapped mount, handed to `attach`.
fn idmapped_bind(
    source: &Path,
    recursive: bool,
    userns: &OwnedFd,
    attach: impl FnOnce(&OwnedFd) -> io::Result<()>,
) -> io::Result<()> {
    use rustix::mount::OpenTreeFlags;
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = rustix::mount::open_tree(rustix::fs::CWD, source, flags)?;
    set_idmap(&tree, userns, recursive)?;
    attach(&tree)
}

/// Mounts an overlay of `layers` at `target`: `lowerdir+` where the kernel has it (6.8),
/// the classic option string through short layer links in `links` otherwise.
pub(super) fn mount_overlay(
    links: &Path,
    layers: &RootfsLayers,
    target: &Path,
    idmap: Option<&IdMap>,
) -> io::Result<()> {
    use rustix::mount::{MoveMountFlags, move_mount};
    if let Some(idmap) = idmap {
        // Overlay itself cannot be id-mapped, its layers can: each lower layer dir is
        // covered (in this mount namespace only) by an id-mapped bind of itself, and
        // overlay, mounted from the same paths, shows the mapped owners. The upper layer
        // stays as it is (overlay writes it with init's own ids, which a mapping would
        // not hold): what the container writes there is owned by its mapped ids, and its
        // root directory is given to the container's root.
        for point in &layers.lower {
            if is_mount_root(point)? {
                // Bound and id-mapped already: a layer shared by the rootfs and an image
                // volume (a mapped mount cannot be mapped again).
                continue;
            }
            idmapped_bind(point, false, idmap.userns, |tree| {
                move_mount(
                    tree,
                    "",
                    rustix::fs::CWD,
                    point.as_path(),
                    MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
                )
                .map_err(io::Error::from)
            })
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", point.display())))?;
        }
        if let Some(upper) = &layers.upper {
            std::os::unix::fs::chown(upper, Some(idmap.root_uid), Some(idmap.root_gid))
                .map_err(|e| io::Error::new(e.kind(), format!("chown {}: {e}", upper.display())))?;
        }
    }
    if crate::linux::kernel::overlay_lowerdir_plus() {
        mount_overlay_lowerdir_plus(layers, target)
    } else {
        mount_overlay_classic(links, layers, target)
    }
}

/// Whether `path` is the root of a mount (of this mount namespace).
fn is_mount_root(path: &Path) -> io::Result<bool> {
    use rustix::fs::{AtFlags, StatxAttributes, StatxFlags, statx};
    let st = statx(
        rustix::fs::CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("statx {}", path.display()),
        )
    })?;
    Ok(st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
}

/// The new mount API: one `lowerdir+` per layer, so no option string length limit.
fn mount_overlay_lowerdir_plus(layers: &RootfsLayers, target: &Path) -> io::Result<()> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
        fsconfig_set_string, fsmount, fsopen, move_mount,
    };
    let fs_fd = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for (key, value) in overlay_config(layers) {
        fsconfig_set_string(&fs_fd, key, &value).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("{key} {}: {}", value.display(), describe_io(&e.into())),
            )
        })?;
    }
    fsconfig_create(&fs_fd)?;
    let mnt = fsmount(
        &fs_fd,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// Kernels before 6.8: mount(2) with `lowerdir=0:1:...`, from a directory of the bundle
/// (`links`) holding one short symlink per layer (overlayfs follows them), so any number of
/// layers fits the one-page option limit. Init is single-threaded in its own mount
/// namespace, so changing its working directory for the mount is safe; it is restored after.
fn mount_overlay_classic(links: &Path, layers: &RootfsLayers, target: &Path) -> io::Result<()> {
    let options = overlay_classic_options(layers)?;
    match fs::remove_dir_all(links) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io::Error::new(
                e.kind(),
                format!("remove {}: {e}", links.display()),
            ));
        }
        _ => {}
    }
    fs::create_dir(links)
        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", links.display())))?;
    for (name, layer) in overlay_layer_links(layers) {
        std::os::unix::fs::symlink(&layer, links.join(&name)).map_err(|e| {
            io::Error::new(e.kind(), format!("link {} as {name}: {e}", layer.display()))
        })?;
    }
    let previous = fs::File::open(".")?;
    #[allow(clippy::disallowed_methods)] // init is single-threaded: chdir is its to do
    std::env::set_current_dir(links)?;
    let mounted = mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32));
    nix::unistd::fchdir(&previous).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    mounted.map_err(|e| io::Error::new(e.kind(), format!("overlay {options}: {e}")))
}

/// `dest` relative to the root, `.` and `..` resolved lexically (`..` stops at the root,
/// as it does inside the container).
fn relative(dest: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in dest.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Opens `dest` as an O_PATH fd, resolved inside `root` (symlinks and `..` cannot leave it).
fn open_in_root(root: &OwnedFd, dest: &Path) -> io::Result<OwnedFd> {
    let rel = relative(dest);
    let rel = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    };
    Ok(rustix::fs::openat2(
        root,
        &rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Opens `dest` inside `root`, creating it (and missing parents) first: a directory, or
/// an empty file when `file` is set.
fn ensure_in_root(root: &OwnedFd, dest: &Path, file: bool) -> io::Result<OwnedFd> {
    let dest = relative(dest);
    match open_in_root(root, &dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let parent = dest.parent().unwrap_or(Path::new(""));
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let parent_fd = ensure_in_root(root, parent, false)?;
    let created = if file {
        rustix::fs::openat(
            &parent_fd,
            name,
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o644),
        )
        .map(drop)
    } else {
        rustix::fs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o755))
    };
    match created {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    open_in_root(root, &dest)
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const AT_RECURSIVE: libc::c_int = 0x8000;

/// mount_setattr(2) on the mount `fd` is the root of.
pub(super) fn set_mount_attrs(
    fd: &OwnedFd,
    set: u64,
    clear: u64,
    propagation: u64,
    recursive: bool,
) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation,
        userns_fd: 0,
    };
    mount_setattr(fd, &attr, recursive)
}

fn mount_setattr(fd: &OwnedFd, attr: &MountAttr, recursive: bool) -> io::Result<()> {
    let flags = libc::AT_EMPTY_PATH | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: a valid fd, a NUL-terminated empty path and a mount_attr of the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_propagation(fd: &OwnedFd, propagation: MsFlags) -> io::Result<()> {
    let recursive = propagation.contains(MsFlags::MS_REC);
    let kind = (propagation & !MsFlags::MS_REC).bits();
    set_mount_attrs(fd, 0, 0, kind, recursive)
}

/// Performs one spec mount below `root` (an O_PATH fd of the rootfs).
/// `idmap`: the container's user namespace, whose mapping bind mounts get.
pub fn apply_mount(
    root: &OwnedFd,
    step: &MountStep,
    cgroup_v2: bool,
    idmap: Option<&IdMap>,
) -> Result<()> {
    let name = format!("mount {}", step.destination.display());
    let err = |e: io::Error| InitError::io(&name, &e);
    let errno = |e: nix::errno::Errno| InitError::errno(&name, e);
    let options = &step.options;
    let target = match &step.kind {
        MountKind::Bind { source, kind } => {
            let meta = fs::metadata(source).map_err(err)?;
            let target = ensure_in_root(root, &step.destination, !meta.is_dir()).map_err(err)?;
            let recursive = *kind == BindKind::Recursive;
            if let Some(idmap) = idmap {
                idmapped_bind(source, recursive, idmap.userns, |tree| {
                    rustix::mount::move_mount(
                        tree,
                        "",
                        &target,
                        "",
                        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
                            | rustix::mount::MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
                    )
                    .map_err(io::Error::from)
                })
                .map_err(err)?;
            } else {
                let mut flags = MsFlags::MS_BIND;
                if recursive {
                    flags |= MsFlags::MS_REC;
                }
                mount(
                    Some(source.as_path()),
                    fd_path(&target).as_str(),
                    None::<&str>,
                    flags,
                    None::<&str>,
                )
                .map_err(errno)?;
            }
            // A bind ignores flags: set them on the new mount (and, for rbind, below it).
            let attrs = options.attrs();
            let clear = if options.sets_atime() {
                ATTR_ATIME_MASK
            } else {
                0
            };
            let mounted = open_in_root(root, &step.destination).map_err(err)?;
            if attrs != 0 || clear != 0 {
                set_mount_attrs(&mounted, attrs, clear, 0, options.recursive_attrs).map_err(err)?;
            }
            mounted
        }
        MountKind::Cgroup => {
            let target = ensure_in_root(root, &step.destination, false).map_err(err)?;
            if cgroup_v2 {
                mount(
                    Some("cgroup"),
                    fd_path(&target).as_str(),
                    Some("cgroup2"),
                    options.flags,
                    None::<&str>,
                )
                .map_err(errno)?;
            } else {
                // v1: the host's hierarchies, read-only (runc builds a tmpfs with only the
                // container's own cgroups; the whole tree read-only is the simple form).
                mount(
                    Some("/sys/fs/cgroup"),
                    fd_path(&target).as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(errno)?;
                let mounted = open_in_root(root, &step.destination).map_err(err)?;
                set_mount_attrs(
                    &mounted,
                    ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC,
                    0,
                    0,
                    true,
                )
                .map_err(err)?;
            }
            open_in_root(root, &step.destination).map_err(err)?
        }
        MountKind::Fs { fstype, source } => {
            let target = ensure_in_root(root, &step.destination, false).map_err(err)?;
            let data = options.data_string();
            mount(
                Some(source.as_str()),
                fd_path(&target).as_str(),
                Some(fstype.as_str()),
                options.flags,
                data.as_deref(),
            )
            .map_err(errno)?;
            open_in_root(root, &step.destination).map_err(err)?
        }
    };
    if let Some(propagation) = options.propagation {
        set_propagation(&target, propagation).map_err(err)?;
    }
    Ok(())
}

/// The standard /dev nodes (bound from the host's, which also works without the right
/// to mknod) and the /dev symlinks.
pub fn setup_dev(root: &OwnedFd) -> Result<()> {
    for name in DEFAULT_DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let dest = Path::new("/dev").join(name);
        let step = format!("mount {}", dest.display());
        let target = ensure_in_root(root, &dest, true).map_err(|e| InitError::io(&step, &e))?;
        mount(
            Some(host.as_path()),
            fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| InitError::errno(&step, e))?;
    }
    let dev = ensure_in_root(root, Path::new("/dev"), false)
        .map_err(|e| InitError::io("create /dev", &e))?;
    for (link, target) in DEV_SYMLINKS {
        match rustix::fs::symlinkat(*target, &dev, *link) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(InitError::io(format!("symlink /dev/{link}"), &e.into())),
        }
    }
    Ok(())
}

/// `linux.devices`: created with mknod, with the given mode, uid and gid.
pub fn create_device(root: &OwnedFd, device: &LinuxDevice) -> Result<()> {
    let path = device.path();
    let step = format!("create device {}", path.display());
    let err = |e: io::Error| InitError::io(&step, &e);
    let parent =
        ensure_in_root(root, path.parent().unwrap_or(Path::new("/")), false).map_err(err)?;
    let name = path
        .file_name()
        .ok_or_else(|| InitError::new(&step, "not a file path"))?;
    let file_type = match device.typ() {
        LinuxDeviceType::B => rustix::fs::FileType::BlockDevice,
        LinuxDeviceType::C | LinuxDeviceType::U => rustix::fs::FileType::CharacterDevice,
        LinuxDeviceType::P => rustix::fs::FileType::Fifo,
        LinuxDeviceType::A => return Err(InitError::new(&step, "type `a` is not a device")),
    };
    let mode = device.file_mode().unwrap_or(0o666) & 0o7777;
    let major = u32::try_from(device.major()).map_err(|_| InitError::new(&step, "bad major"))?;
    let minor = u32::try_from(device.minor()).map_err(|_| InitError::new(&step, "bad minor"))?;
    match rustix::fs::unlinkat(&parent, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(err(e.into())),
    }
    rustix::fs::mknodat(
        &parent,
        name,
        file_type,
        Mode::from_raw_mode(mode),
        rustix::fs::makedev(major, minor),
    )
    .map_err(|e| err(e.into()))?;
    rustix::fs::chmodat(&parent, name, Mode::from_raw_mode(mode), AtFlags::empty())
        .map_err(|e| err(e.into()))?;
    rustix::fs::chownat(
        &parent,
        name,
        Some(rustix::fs::Uid::from_raw(device.uid().unwrap_or(0))),
        Some(rustix::fs::Gid::from_raw(device.gid().unwrap_or(0))),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| err(e.into()))
}

/// Makes `root` the process's root: pivot_root(".", ".") stacks the old root on top of
/// the new one, and the lazy unmount of "." removes it.
pub fn pivot_root(root: &Path) -> Result<()> {
    let step = format!("pivot_root {}", root.display());
    // Held so that "." can name the old root after the pivot: there, "." would otherwise
    // be the new root, and making it a slave would cut the container's shared volumes
    // off from the host.
    let old_root = open_path(Path::new("/")).map_err(|e| InitError::io(&step, &e))?;
    #[allow(clippy::disallowed_methods)] // init is single-threaded: its cwd is its own
    std::env::set_current_dir(root).map_err(|e| InitError::io(&step, &e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| InitError::errno(&step, e))?;
    nix::unistd::fchdir(&old_root).map_err(|e| InitError::errno(&step, e))?;
    // The old root is now the top of "/": no unmount of it may reach the host.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| InitError::errno("make the old root a slave", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| InitError::errno("unmount the old root", e))?;
    #[allow(clippy::disallowed_methods)]
    std::env::set_current_dir("/").map_err(|e| InitError::io(&step, &e))
}

fn open_path(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Hides `path` (after pivot_root): /dev/null over a file, a read-only tmpfs over a
/// directory. A missing path is skipped.
pub fn mask_path(path: &Path) -> Result<()> {
    let step = format!("mask {}", path.display());
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(());
        }
        Err(e) => return Err(InitError::io(&step, &e)),
    };
    let result = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    result.map_err(|e| InitError::errno(&step, e))
}

/// Makes `path` (and everything mounted below it) read-only, after pivot_root. A missing
/// path is skipped.
pub fn readonly_path(path: &Path) -> Result<()> {
    let step = format!("make {} read-only", path.display());
    match fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(());
        }
        Err(e) => return Err(InitError::io(&step, &e)),
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| InitError::errno(&step, e))?;
    let fd = open_path(path).map_err(|e| InitError::io(&step, &e))?;
    set_mount_attrs(&fd, ATTR_RDONLY, 0, 0, true).map_err(|e| InitError::io(&step, &e))
}

/// `root.readonly`: the root mount (only it, like other runtimes) becomes read-only.
pub fn readonly_root() -> Result<()> {
    let fd = open_path(Path::new("/")).map_err(|e| InitError::io("make / read-only", &e))?;
    set_mount_attrs(&fd, ATTR_RDONLY, 0, 0, false)
        .map_err(|e| InitError::io("make / read-only", &e))
}

/// An O_PATH fd of the rootfs directory (after the overlay is mounted on it).
pub fn open_root(root: &Path) -> Result<OwnedFd> {
    let fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| InitError::io(format!("open rootfs {}", root.display()), &e.into()))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_containing_mount_is_the_longest_ancestor_mount_point() {
        let mountinfo = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:25 / /run rw,nosuid - tmpfs tmpfs rw
41 30 0:26 / /run/berth/netns rw - tmpfs tmpfs rw
42 30 0:27 / /run/berthx rw - tmpfs tmpfs rw
";
        let at = |p: &str| containing_mount(mountinfo, Path::new(p));
        assert_eq!(
            at("/run/berth/containers/a/bundle/rootfs"),
            Some("/run".into())
        );
        assert_eq!(at("/run/berth/netns/x"), Some("/run/berth/netns".into()));
        assert_eq!(at("/var/lib/berth"), Some("/".into()));
    }

    #[test]
    fn destinations_are_made_relative() {
        assert_eq!(
            relative(Path::new("/etc/hosts")),
            PathBuf::from("etc/hosts")
        );
        assert_eq!(relative(Path::new("/./a/../b")), PathBuf::from("b"));
        assert_eq!(relative(Path::new("/../../x")), PathBuf::from("x"));
        assert_eq!(relative(Path::new("/")), PathBuf::new());
    }

    #[test]
    fn symlinks_cannot_lead_a_mount_point_out_of_the_root() {
        let root_dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root_dir.path().join("escape")).unwrap();
        let root = open_root(root_dir.path()).unwrap();
        // The absolute symlink is resolved inside the root, where its target is missing:
        // refused, and nothing is created in `outside`.
        assert!(ensure_in_root(&root, Path::new("/escape/x"), false).is_err());
        assert!(!outside.path().join("x").exists());
        // A symlink to a directory of the root is followed inside the root.
        fs::create_dir(root_dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("/real", root_dir.path().join("link")).unwrap();
        ensure_in_root(&root, Path::new("/link/x"), false).unwrap();
        assert!(root_dir.path().join("real/x").is_dir());
        ensure_in_root(&root, Path::new("/a/b/file"), true).unwrap();
        assert!(root_dir.path().join("a/b/file").is_file());
        ensure_in_root(&root, Path::new("/../../up"), false).unwrap();
        assert!(root_dir.path().join("up").is_dir());
    }
}
