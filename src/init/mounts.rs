//! The container's mounts as data: OCI mount options → flags, propagation and fs data;
//! the spec's mounts → steps; the masked and read-only path lists.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::{Mount, Spec};

/// Per-mount attributes that the new mount API sets on a mount after it exists
/// (`mount_setattr`), as `MOUNT_ATTR_*` bits.
pub const ATTR_RDONLY: u64 = 0x1;
pub const ATTR_NOSUID: u64 = 0x2;
pub const ATTR_NODEV: u64 = 0x4;
pub const ATTR_NOEXEC: u64 = 0x8;
pub const ATTR_RELATIME: u64 = 0x0;
pub const ATTR_NOATIME: u64 = 0x10;
pub const ATTR_STRICTATIME: u64 = 0x20;
pub const ATTR_ATIME_MASK: u64 = 0x70;
pub const ATTR_NODIRATIME: u64 = 0x80;

/// Parsed OCI mount options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for mount(2) of a new filesystem (MS_RDONLY, MS_NOSUID, ...).
    pub flags: MsFlags,
    /// One of MS_PRIVATE/MS_SLAVE/MS_SHARED/MS_UNBINDABLE, with MS_REC for the r-forms.
    pub propagation: Option<MsFlags>,
    /// A bind (`bind`) or recursive bind (`rbind`).
    pub bind: Option<BindKind>,
    /// Filesystem-specific options, comma-joined for mount(2)'s data.
    pub data: Vec<String>,
    /// `rro`: read-only all the way down. Plain `ro` on a bind makes only the top mount
    /// read-only (as runc does), so submounts of a volume keep their own flags.
    pub recursive_attrs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindKind {
    Bind,
    Recursive,
}

impl MountOptions {
    pub fn parse(options: &[String]) -> MountOptions {
        let mut parsed = MountOptions {
            flags: MsFlags::empty(),
            propagation: None,
            bind: None,
            data: Vec::new(),
            recursive_attrs: false,
        };
        for option in options {
            let (set, clear) = match option.as_str() {
                "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
                "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
                "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
                "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
                "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
                "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
                "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
                "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
                "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
                "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
                "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
                "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
                "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
                "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
                "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
                "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
                "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
                "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
                "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
                "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
                "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
                "bind" => {
                    parsed.bind.get_or_insert(BindKind::Bind);
                    continue;
                }
                "rbind" => {
                    parsed.bind = Some(BindKind::Recursive);
                    continue;
                }
                "rro" => {
                    parsed.recursive_attrs = true;
                    (MsFlags::MS_RDONLY, MsFlags::empty())
                }
                other => {
                    if let Some(propagation) = propagation_flag(other) {
                        parsed.propagation = Some(propagation);
                    } else {
                        parsed.data.push(other.to_string());
                    }
                    continue;
                }
            };
            parsed.flags = (parsed.flags | set) & !clear;
        }
        parsed
    }

    /// The MOUNT_ATTR_* bits to set on a bind mount for these flags.
    pub fn attrs(&self) -> u64 {
        let f = self.flags;
        let mut attrs = 0;
        for (flag, attr) in [
            (MsFlags::MS_RDONLY, ATTR_RDONLY),
            (MsFlags::MS_NOSUID, ATTR_NOSUID),
            (MsFlags::MS_NODEV, ATTR_NODEV),
            (MsFlags::MS_NOEXEC, ATTR_NOEXEC),
            (MsFlags::MS_NODIRATIME, ATTR_NODIRATIME),
        ] {
            if f.contains(flag) {
                attrs |= attr;
            }
        }
        if f.contains(MsFlags::MS_NOATIME) {
            attrs |= ATTR_NOATIME;
        } else if f.contains(MsFlags::MS_STRICTATIME) {
            attrs |= ATTR_STRICTATIME;
        }
        attrs
    }

    /// Whether an atime mode was asked for (otherwise a bind keeps its source's).
    pub fn sets_atime(&self) -> bool {
        self.flags
            .intersects(MsFlags::MS_NOATIME | MsFlags::MS_STRICTATIME | MsFlags::MS_RELATIME)
    }

    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

fn propagation_flag(option: &str) -> Option<MsFlags> {
    let rec = MsFlags::MS_REC;
    Some(match option {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | rec,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | rec,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | rec,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | rec,
        _ => return None,
    })
}

/// What one spec mount does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A bind of a host path.
    Bind { source: PathBuf, kind: BindKind },
    /// A new filesystem of this type (proc, tmpfs, devpts, mqueue, sysfs, cgroup2...).
    Fs { fstype: String, source: String },
    /// A `cgroup` mount: the host's cgroup tree, read-only (bind on v1, cgroup2 on v2).
    Cgroup,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountStep {
    /// Absolute inside the container.
    pub destination: PathBuf,
    pub kind: MountKind,
    pub options: MountOptions,
}

/// The spec's mounts in order.
pub fn plan_mounts(spec: &Spec) -> Vec<MountStep> {
    spec.mounts().iter().flatten().map(plan_mount).collect()
}

pub fn plan_mount(mount: &Mount) -> MountStep {
    let options = MountOptions::parse(mount.options().as_deref().unwrap_or_default());
    let fstype = mount.typ().clone().unwrap_or_default();
    let source = mount.source().clone().unwrap_or_default();
    let kind = if fstype == "bind" || options.bind.is_some() {
        MountKind::Bind {
            source,
            kind: options.bind.unwrap_or(BindKind::Bind),
        }
    } else if fstype == "cgroup" || fstype == "cgroup2" {
        MountKind::Cgroup
    } else {
        MountKind::Fs {
            source: if source.as_os_str().is_empty() {
                fstype.clone()
            } else {
                source.to_string_lossy().into_owned()
            },
            fstype,
        }
    };
    MountStep {
        destination: mount.destination().clone(),
        kind,
        options,
    }
}

/// Device nodes every container gets, bound from the host's /dev.
pub const DEFAULT_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Symlinks in /dev: (link, target).
pub const DEV_SYMLINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// The overlay layout written by the daemon next to config.json.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RootfsLayers {
    /// Top layer first.
    pub lower: Vec<PathBuf>,
    #[serde(default)]
    pub upper: Option<PathBuf>,
    #[serde(default)]
    pub work: Option<PathBuf>,
}

/// The `(key, value)` pairs for fsconfig: one `lowerdir+` per layer (no option string,
/// so no 4096-byte limit), then upper and work.
pub fn overlay_config(layers: &RootfsLayers) -> Vec<(&'static str, PathBuf)> {
    let mut config: Vec<(&'static str, PathBuf)> = layers
        .lower
        .iter()
        .map(|l| ("lowerdir+", l.clone()))
        .collect();
    if let (Some(upper), Some(work)) = (&layers.upper, &layers.work) {
        config.push(("upperdir", upper.clone()));
        config.push(("workdir", work.clone()));
    }
    config
}

/// The image volumes of a container, written by the daemon next to config.json: a list of
/// [`ImageVolumeLayout`]. Init mounts each one read-only at
/// [`image_volume_source`], which the spec binds like any other volume.
pub const IMAGE_VOLUMES_FILE: &str = "image-volumes.json";
/// The bundle directory holding the image volumes' mount points.
pub const IMAGE_VOLUMES_DIR: &str = "image-volumes";

/// One image volume: the image's layers and the part of it the container sees.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageVolumeLayout {
    /// The index of the CRI mount, which names its mount point.
    pub index: usize,
    /// Top layer first.
    pub lower: Vec<PathBuf>,
    /// Relative to the image root, already checked to stay inside it; empty for all of it.
    #[serde(default)]
    pub sub_path: String,
}

/// Where the volume of CRI mount `index` is mounted in the bundle before the spec's mounts.
pub fn image_volume_source(bundle: &Path, index: usize) -> PathBuf {
    bundle.join(IMAGE_VOLUMES_DIR).join(index.to_string())
}

/// Where init links the layers under short names for the classic option string, inside
/// the bundle.
pub const OVERLAY_LINK_DIR: &str = "overlay-layers";
/// One page: the most a mount(2) option string may hold.
pub const MOUNT_DATA_MAX: usize = 4096;

/// The symlinks the classic option string names, as `(name, layer)`: top layer first,
/// each by its index, so 500 layers (overlayfs's own maximum) take under 2000 bytes.
pub fn overlay_layer_links(layers: &RootfsLayers) -> Vec<(String, PathBuf)> {
    layers
        .lower
        .iter()
        .enumerate()
        .map(|(i, layer)| (i.to_string(), layer.clone()))
        .collect()
}

/// The classic overlay option string for kernels without `lowerdir+` (before 6.8), to be
/// mounted from [`OVERLAY_LINK_DIR`] as the working directory: the layers by their short
/// link names, upper and work by their absolute paths.
pub fn overlay_classic_options(layers: &RootfsLayers) -> std::io::Result<String> {
    let lower: Vec<String> = overlay_layer_links(layers)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let mut options = format!("lowerdir={}", lower.join(":"));
    if let (Some(upper), Some(work)) = (&layers.upper, &layers.work) {
        options.push_str(",upperdir=");
        options.push_str(&escape_overlay_path(upper)?);
        options.push_str(",workdir=");
        options.push_str(&escape_overlay_path(work)?);
    }
    if options.len() >= MOUNT_DATA_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "overlay options for {} layers take {} bytes, more than the {MOUNT_DATA_MAX} a mount takes",
                layers.lower.len(),
                options.len()
            ),
        ));
    }
    Ok(options)
}

/// overlayfs splits options on `,` and layers on `:`; a backslash keeps either literal.
fn escape_overlay_path(path: &Path) -> std::io::Result<String> {
    let text = path.to_str().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("overlay path {} is not UTF-8", path.display()),
        )
    })?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | ',' | ':') {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ro_is_the_top_mount_only_and_rro_goes_all_the_way_down() {
        let opts =
            |o: &[&str]| MountOptions::parse(&o.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let ro = opts(&["rbind", "ro"]);
        assert!(ro.flags.contains(MsFlags::MS_RDONLY));
        assert!(!ro.recursive_attrs);
        let rro = opts(&["rbind", "ro", "rro"]);
        assert!(rro.flags.contains(MsFlags::MS_RDONLY));
        assert!(rro.recursive_attrs);
        assert!(rro.data.is_empty(), "rro is not passed on as fs data");
    }

    fn opts(list: &[&str]) -> MountOptions {
        MountOptions::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = opts(&[
            "nosuid",
            "noexec",
            "nodev",
            "relatime",
            "ro",
            "rslave",
            "mode=755",
            "size=65536k",
        ]);
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_NODEV
                | MsFlags::MS_RELATIME
                | MsFlags::MS_RDONLY
        );
        assert_eq!(o.propagation, Some(MsFlags::MS_SLAVE | MsFlags::MS_REC));
        assert_eq!(o.data_string().as_deref(), Some("mode=755,size=65536k"));
        assert_eq!(o.bind, None);
        assert_eq!(
            o.attrs(),
            ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC
        );
        assert!(o.sets_atime());
        // Later options win.
        let o = opts(&["ro", "rw", "bind", "rbind", "strictatime", "private"]);
        assert_eq!(o.flags, MsFlags::MS_STRICTATIME);
        assert_eq!(o.bind, Some(BindKind::Recursive));
        assert_eq!(o.propagation, Some(MsFlags::MS_PRIVATE));
        assert_eq!(o.attrs(), ATTR_STRICTATIME);
        assert_eq!(o.data_string(), None);
    }

    #[test]
    fn the_usual_container_mounts_plan() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","mounts":[
              {"destination":"/proc","type":"proc","source":"proc","options":["nosuid","noexec","nodev"]},
              {"destination":"/dev/pts","type":"devpts","source":"devpts",
               "options":["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620","gid=5"]},
              {"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["ro"]},
              {"destination":"/etc/hosts","type":"bind","source":"/var/lib/x/hosts","options":["rbind","ro","rprivate"]},
              {"destination":"/data","source":"/srv","options":["bind"]}]}"#,
        )
        .unwrap();
        let plan = plan_mounts(&spec);
        assert_eq!(plan.len(), 5);
        assert_eq!(
            plan[0].kind,
            MountKind::Fs {
                fstype: "proc".into(),
                source: "proc".into()
            }
        );
        assert_eq!(
            plan[1].options.data_string().as_deref(),
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5")
        );
        assert_eq!(plan[2].kind, MountKind::Cgroup);
        assert_eq!(
            plan[3].kind,
            MountKind::Bind {
                source: "/var/lib/x/hosts".into(),
                kind: BindKind::Recursive
            }
        );
        assert!(plan[3].options.flags.contains(MsFlags::MS_RDONLY));
        assert_eq!(
            plan[4].kind,
            MountKind::Bind {
                source: "/srv".into(),
                kind: BindKind::Bind
            }
        );
        assert_eq!(plan[4].destination, PathBuf::from("/data"));
    }

    #[test]
    fn overlay_layers_become_one_fsconfig_key_each() {
        let layers: RootfsLayers = serde_json::from_str(
            r#"{"lower":["/l/top","/l/base"],"upper":"/c/upper","work":"/c/work"}"#,
        )
        .unwrap();
        let config = overlay_config(&layers);
        let keys: Vec<_> = config
            .iter()
            .map(|(k, v)| format!("{k}={}", v.display()))
            .collect();
        assert_eq!(
            keys,
            vec![
                "lowerdir+=/l/top",
                "lowerdir+=/l/base",
                "upperdir=/c/upper",
                "workdir=/c/work"
            ]
        );
        let read_only: RootfsLayers = serde_json::from_str(r#"{"lower":["/a","/b"]}"#).unwrap();
        assert_eq!(overlay_config(&read_only).len(), 2);
    }

    #[test]
    fn classic_overlay_options_fit_a_page_with_a_hundred_long_layer_paths() {
        let layers = RootfsLayers {
            lower: (0..100)
                .map(|i| PathBuf::from(format!("/var/lib/berth/layers/{i:064x}/fs")))
                .collect(),
            upper: Some("/var/lib/berth/containers/upper,with:odd\\chars".into()),
            work: Some("/var/lib/berth/containers/work".into()),
        };
        let options = overlay_classic_options(&layers).unwrap();
        assert!(options.len() < MOUNT_DATA_MAX, "{} bytes", options.len());
        let lower = (0..100)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            options,
            format!(
                "lowerdir={lower},upperdir=/var/lib/berth/containers/upper\\,with\\:odd\\\\chars,workdir=/var/lib/berth/containers/work"
            )
        );
        let links = overlay_layer_links(&layers);
        assert_eq!(links.len(), 100);
        assert_eq!(links[0], ("0".to_string(), layers.lower[0].clone()));
        assert_eq!(links[99], ("99".to_string(), layers.lower[99].clone()));
        // The paths themselves would not have fitted.
        let long: usize = layers.lower.iter().map(|l| l.as_os_str().len() + 1).sum();
        assert!(long > MOUNT_DATA_MAX);
    }

    #[test]
    fn classic_overlay_options_of_the_overlayfs_maximum_fit_and_more_is_refused() {
        let layers = |n: usize| RootfsLayers {
            lower: (0..n).map(|i| PathBuf::from(format!("/l/{i}"))).collect(),
            upper: None,
            work: None,
        };
        assert!(overlay_classic_options(&layers(500)).is_ok());
        let err = overlay_classic_options(&layers(2000)).unwrap_err();
        assert!(err.to_string().contains("2000 layers"), "{err}");
    }
}
