//! Facts about the host that a container spec needs, looked up with I/O: device nodes
//! (AppArmor's are in `apparmor`). Kept apart from `spec/`, which is pure. Blocking calls: run
//! them off the async executor.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::container::spec::{CONTAINER_OWN_DEVICES, HostDevice};

/// Stats a device node on the host (following symlinks, as /dev/disk/by-* links need).
/// Blocking: call it off the async executor.
pub fn host_device(path: &Path) -> io::Result<HostDevice> {
    let meta = std::fs::metadata(path)?;
    let ft = meta.file_type();
    if !ft.is_char_device() && !ft.is_block_device() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a character or block device",
        ));
    }
    let rdev = meta.rdev();
    Ok(HostDevice {
        block: ft.is_block_device(),
        major: i64::from(rustix::fs::major(rdev)),
        minor: i64::from(rustix::fs::minor(rdev)),
        file_mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// Directories of /dev that hold no device of the host's own (per-mount-namespace
/// filesystems and udev's state).
const SKIPPED_DEV_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Every device node under the host's /dev, by path: what a privileged container gets.
/// Blocking: call it off the async executor.
pub fn all_host_devices() -> io::Result<BTreeMap<String, HostDevice>> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![PathBuf::from("/dev")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let ft = entry.file_type()?;
            if ft.is_dir() {
                let name = entry.file_name();
                if !SKIPPED_DEV_DIRS.iter().any(|s| name == *s) {
                    dirs.push(path);
                }
            } else if ft.is_char_device() || ft.is_block_device() {
                let key = path.to_string_lossy().to_string();
                if !CONTAINER_OWN_DEVICES.contains(&key.as_str()) {
                    // A node that vanished while walking is not the container's business.
                    if let Ok(device) = host_device(&path) {
                        found.insert(key, device);
                    }
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_devices_are_found_under_dev() {
        let all = all_host_devices().expect("walk /dev");
        assert!(!all.contains_key("/dev/null"));
        assert!(
            all.keys()
                .all(|k| k.starts_with("/dev/") && !k.starts_with("/dev/pts/"))
        );
    }

    #[test]
    fn host_device_stats_dev_null() {
        let null = host_device(Path::new("/dev/null")).unwrap();
        assert_eq!((null.block, null.major, null.minor), (false, 1, 3));
        assert!(host_device(Path::new("/etc/hostname")).is_err());
    }
}
