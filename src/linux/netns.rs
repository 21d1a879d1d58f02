//! Pinned network namespaces: a new netns kept alive by a bind mount of its nsfs file, so it
//! outlives every process in it and can be handed to CNI plugins and to the pause process by path.
//! Its loopback is brought up here, in-process, rather than by exec'ing CNI's `loopback` plugin
//! for every pod (the kubelet needs `lo` up, not the plugin).
//!
//! `unshare(CLONE_NEWNET)` and `setns` change only the calling thread, so each of them runs on a
//! fresh `std::thread` that ends right after: the daemon's other threads never change netns.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::statfs::{NSFS_MAGIC, statfs};

/// Creates a new network namespace with its loopback up and pins it at `path` (a bind mount
/// of its nsfs file).
///
/// The parent directory is created if needed and made a shared mount point, so that mount
/// namespaces cloned later (pods, containers) hold peers of the pin: unpinning then propagates
/// into them instead of leaving the netns alive in a copy nobody unmounts. (The host's root mount
/// may be private, as it is here.)
pub fn pin_netns(path: &Path) -> io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "netns path has no parent"))?;
    fs::create_dir_all(parent)?;
    make_shared_mount_point(parent)?;

    // The mount target: an empty file, refused if something is already there.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)?;

    let target = path.to_path_buf();
    let pinned = std::thread::Builder::new()
        .name("netns-pin".into())
        .spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            bring_up_loopback()?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        })?
        .join()
        .map_err(|_| io::Error::other("netns pinning thread panicked"))?;
    if let Err(err) = pinned {
        let _ = fs::remove_file(path);
        return Err(err);
    }
    Ok(())
}

/// Sets `lo` of the calling thread's netns up (the kernel then gives it 127.0.0.1 and ::1).
fn bring_up_loopback() -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *to = *from as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write only the ifreq passed, which lives
    // across both calls; the union's flags member is the one these requests use.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes `dir` a mount point with shared propagation, bind-mounting it onto itself first when it
/// is not a mount point yet (what `ip netns add` does for /run/netns). Idempotent.
fn make_shared_mount_point(dir: &Path) -> io::Result<()> {
    let make_shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => Ok(()),
        // EINVAL: not a mount point.
        Err(Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            make_shared()?;
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

/// Unmounts and removes a pinned netns. A missing file or a file that is not mounted is fine,
/// so this can be called again after a partial failure.
pub fn unpin_netns(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(err) => return Err(err.into()),
    }
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Whether `path` is a pinned network namespace (an nsfs mount).
pub fn is_pinned(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
}

/// Runs `f` on a throwaway thread that has joined the network namespace pinned at `path`
/// (to dial a port inside a pod, read its network statistics, ...).
pub fn run_in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let netns = File::open(path)?;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("netns-run".into())
            .spawn_scoped(scope, move || -> io::Result<T> {
                setns(&netns, CloneFlags::CLONE_NEWNET)?;
                drop(netns);
                Ok(f())
            })?
            .join()
            .map_err(|_| io::Error::other("thread running in a netns panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "netns tests need root (CAP_SYS_ADMIN) to create namespaces and mounts"
        );
    }

    fn mounted_at(path: &Path) -> Option<String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let target = path.to_str().unwrap();
        mountinfo
            .lines()
            .find(|line| line.split(' ').nth(4) == Some(target))
            .map(str::to_owned)
    }

    /// Unmounts the shared bind mount pin_netns made of the test's temp dir.
    struct DirMount<'a>(&'a Path);
    impl Drop for DirMount<'_> {
        fn drop(&mut self) {
            let _ = umount2(self.0, MntFlags::MNT_DETACH);
        }
    }

    #[test]
    fn pin_run_in_and_unpin_a_netns() {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let netns_dir = dir.path().join("netns");
        let _dir_mount = DirMount(&netns_dir);
        let path = netns_dir.join("pod1");

        pin_netns(&path).unwrap();
        assert!(is_pinned(&path));
        let line = mounted_at(&path).expect("pinned netns is not in /proc/self/mountinfo");
        assert!(line.contains(" - nsfs "), "not an nsfs mount: {line}");
        // Pinning twice at one path is refused rather than stacking mounts.
        assert_eq!(
            pin_netns(&path).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );

        // A thread that joins it sees the pinned namespace, not the host's, with only `lo`.
        let pinned_ino = fs::metadata(&path).unwrap().ino();
        let host_ino = fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
        assert_ne!(pinned_ino, host_ino);
        let (inside_ino, devices) = run_in_netns(&path, || {
            (
                fs::metadata("/proc/thread-self/ns/net").unwrap().ino(),
                fs::read_to_string("/proc/thread-self/net/dev").unwrap(),
            )
        })
        .unwrap();
        assert_eq!(inside_ino, pinned_ino);
        let names: Vec<&str> = devices
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        assert_eq!(names, ["lo"]);
        // The calling thread stayed in the host netns.
        assert_eq!(
            fs::metadata("/proc/thread-self/ns/net").unwrap().ino(),
            host_ino
        );

        // A process started afterwards can join it by path, and finds `lo` already up with
        // its address (no CNI loopback plugin ran).
        let show = Command::new("nsenter")
            .arg(format!("--net={}", path.display()))
            .args(["ip", "-o", "link", "show", "lo"])
            .output()
            .unwrap();
        let show = String::from_utf8_lossy(&show.stdout);
        assert!(show.contains("LOOPBACK,UP"), "lo is not up: {show}");
        let addresses = Command::new("nsenter")
            .arg(format!("--net={}", path.display()))
            .args(["ip", "-o", "addr", "show", "lo"])
            .output()
            .expect("nsenter is needed (util-linux)");
        let addresses = String::from_utf8_lossy(&addresses.stdout);
        assert!(addresses.contains("inet 127.0.0.1/8"), "{addresses}");

        unpin_netns(&path).unwrap();
        assert!(!path.exists());
        assert!(mounted_at(&path).is_none());
        assert!(!is_pinned(&path));
        // Idempotent.
        unpin_netns(&path).unwrap();
    }

    #[test]
    fn unpin_tolerates_a_plain_file_and_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-mounted");
        fs::write(&path, b"").unwrap();
        assert!(!is_pinned(&path));
        unpin_netns(&path).unwrap();
        assert!(!path.exists());
        unpin_netns(&path).unwrap();
    }

    #[test]
    fn run_in_netns_of_a_missing_file_fails() {
        let err = run_in_netns(Path::new("/nonexistent/netns"), || ()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
