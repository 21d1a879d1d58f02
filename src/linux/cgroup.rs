//! cgroupfs driver for cgroup v1 (including the v1+v2 "hybrid" layout) and v2.
//!
//! Paths given to this module are relative to each hierarchy's root (a leading `/` is
//! accepted and ignored), never to the caller's own cgroup. The module only removes what
//! it is asked to remove, below the given path; parents are left alone because berth
//! may not have created them.
//!
//! Resource limits are planned as data in [`resources`] and written by
//! [`Cgroups::apply_resources`].

pub mod check;
mod kill;
pub mod resources;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("read /proc/self/mountinfo")]
    Mountinfo(#[source] io::Error),
    #[error("no cgroup hierarchy is mounted")]
    NoHierarchy,
    #[error("invalid cgroup path {0:?}: must be relative and without `..`")]
    InvalidPath(String),
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("plan cgroup resources")]
    Resources(#[from] resources::ResourcePlanError),
    #[error("controller {0} is not mounted")]
    NoController(&'static str),
    #[error("processes still in cgroup {path} after {waited:?} of SIGKILL: {remaining}")]
    NotEmpty {
        path: String,
        waited: Duration,
        /// Each one as `pid (command, state X)`.
        remaining: String,
    },
}

impl From<CgroupError> for crate::Error {
    fn from(err: CgroupError) -> Self {
        let kind = match &err {
            CgroupError::InvalidPath(_)
            | CgroupError::Resources(_)
            | CgroupError::NoController(_) => crate::ErrorKind::InvalidArgument,
            _ => crate::ErrorKind::Internal,
        };
        crate::Error::with_source(kind, "cgroup", err)
    }
}

type Result<T, E = CgroupError> = std::result::Result<T, E>;

/// Whether `err` says the cgroup is not there: missing, or removed while it was being read
/// (kernfs answers ENODEV on a file of a cgroup that went away after it was opened, as a
/// systemd scope does once its last process exits).
fn cgroup_gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ENODEV)
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// How the host mounts cgroups. Hybrid (v1 controllers plus a controller-less cgroup2
/// tree) counts as v1 for resource control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    V1,
    Hybrid,
    V2,
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// v1: the controllers (and `name=...`) of this hierarchy; v2: empty.
    pub controllers: Vec<String>,
    pub v2: bool,
}

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// Superblock options of a v1 cgroup mount that are not controllers.
const V1_NON_CONTROLLER_OPTIONS: &[&str] = &[
    "rw",
    "ro",
    "clone_children",
    "noprefix",
    "xattr",
    "cpuset_v2_mode",
    "favordynmods",
];

/// Parses /proc/self/mountinfo text into the cgroup hierarchies it mounts, first mount of
/// each hierarchy only (bind mounts of the same hierarchy are skipped).
pub fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut found: Vec<Hierarchy> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(mount_point), Some(fstype), Some(super_options)) =
            (left.get(4), right.first(), right.get(2))
        else {
            continue;
        };
        let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
        let hierarchy = match *fstype {
            "cgroup2" => Hierarchy {
                mount_point,
                controllers: Vec::new(),
                v2: true,
            },
            "cgroup" => {
                let mut controllers: Vec<String> = super_options
                    .split(',')
                    .filter(|o| {
                        !V1_NON_CONTROLLER_OPTIONS.contains(o) && !o.starts_with("release_agent=")
                    })
                    .map(str::to_string)
                    .collect();
                controllers.sort();
                Hierarchy {
                    mount_point,
                    controllers,
                    v2: false,
                }
            }
            _ => continue,
        };
        let duplicate = found
            .iter()
            .any(|h| h.v2 == hierarchy.v2 && h.controllers == hierarchy.controllers);
        if !duplicate {
            found.push(hierarchy);
        }
    }
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mode implied by a set of hierarchies.
pub fn mode_of(hierarchies: &[Hierarchy]) -> Option<Mode> {
    let v1 = hierarchies.iter().any(|h| !h.v2);
    let v2 = hierarchies.iter().any(|h| h.v2);
    match (v1, v2) {
        (true, true) => Some(Mode::Hybrid),
        (true, false) => Some(Mode::V1),
        (false, true) => Some(Mode::V2),
        (false, false) => None,
    }
}

/// Whether this host runs the unified (v2-only) hierarchy; detected once.
pub fn unified_host() -> bool {
    static UNIFIED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *UNIFIED.get_or_init(|| Cgroups::detect().is_ok_and(|c| c.mode() == Mode::V2))
}

/// One line of /proc/<pid>/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroup {
    pub hierarchy_id: u32,
    /// Empty for the v2 line (`0::/path`).
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parses /proc/<pid>/cgroup (v1 lines `3:cpu,cpuacct:/a`, v2 line `0::/a`).
pub fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let mut controllers: Vec<String> = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            controllers.sort();
            Some(ProcCgroup {
                hierarchy_id: id,
                controllers,
                path: path.to_string(),
            })
        })
        .collect()
}

/// Normalizes a cgroups path to a relative one with only normal components.
pub fn relative_path(path: &str) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(CgroupError::InvalidPath(path.to_string()));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(CgroupError::InvalidPath(path.to_string()));
    }
    Ok(out)
}

/// The controllers a v2 parent must delegate for resource control, when available.
const V2_CONTROLLERS: &[&str] = &["cpuset", "cpu", "io", "memory", "pids", "hugetlb"];

/// Which of the wanted controllers are missing from a `cgroup.subtree_control`, limited to
/// those the cgroup has (`cgroup.controllers`); the `+c` tokens to write.
pub fn controllers_to_enable(available: &str, enabled: &str) -> Vec<String> {
    let available: BTreeSet<&str> = available.split_whitespace().collect();
    let enabled: BTreeSet<&str> = enabled.split_whitespace().collect();
    V2_CONTROLLERS
        .iter()
        .filter(|c| available.contains(*c) && !enabled.contains(*c))
        .map(|c| format!("+{c}"))
        .collect()
}

/// The cgroup hierarchies of this host, detected from /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub struct Cgroups {
    mode: Mode,
    hierarchies: Vec<Hierarchy>,
}

impl Cgroups {
    pub fn detect() -> Result<Cgroups> {
        let text = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mountinfo)?;
        Cgroups::from_hierarchies(parse_mountinfo(&text))
    }

    pub fn from_hierarchies(hierarchies: Vec<Hierarchy>) -> Result<Cgroups> {
        let mode = mode_of(&hierarchies).ok_or(CgroupError::NoHierarchy)?;
        Ok(Cgroups { mode, hierarchies })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether `controller` can be used: v1, a hierarchy has it; v2, the root offers it.
    pub fn has_controller(&self, controller: &str) -> bool {
        match self.mode {
            Mode::V2 => self.hierarchies.iter().filter(|h| h.v2).any(|h| {
                fs::read_to_string(h.mount_point.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == controller))
            }),
            _ => self.hierarchies.iter().any(|h| !h.v2 && h.has(controller)),
        }
    }

    pub fn hierarchies(&self) -> &[Hierarchy] {
        &self.hierarchies
    }

    /// Whether `path` exists in every hierarchy.
    pub fn exists(&self, path: &str) -> bool {
        let Ok(relative) = relative_path(path) else {
            return false;
        };
        !self.hierarchies.is_empty()
            && self
                .hierarchies
                .iter()
                .all(|h| h.mount_point.join(&relative).is_dir())
    }

    /// Creates `path` in every hierarchy (`mkdir -p`), preparing each new level so that
    /// processes can join it (v1 cpuset: cpus/mems copied from the parent; v2: controllers
    /// delegated from the parents).
    pub fn create(&self, path: &str) -> Result<()> {
        let relative = relative_path(path)?;
        for hierarchy in &self.hierarchies {
            let mut current = hierarchy.mount_point.clone();
            for part in relative.components() {
                let parent = current.clone();
                current.push(part);
                if hierarchy.v2 && self.mode == Mode::V2 {
                    delegate_controllers(&parent)?;
                }
                match fs::create_dir(&current) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("mkdir", &current)(e)),
                }
                if hierarchy.has("cpuset") {
                    copy_if_empty(&parent, &current, "cpuset.cpus")?;
                    copy_if_empty(&parent, &current, "cpuset.mems")?;
                }
            }
        }
        Ok(())
    }

    /// Writes the resource limits of `resources` into the cgroup `path` (which must
    /// exist). On v1 an absent `memory.memsw.limit_in_bytes` (no swap accounting) is
    /// skipped; so are hugepage limits on a node without the hugetlb controller (the
    /// resource check has refused those that would not hold); any other missing
    /// controller is an error.
    pub fn apply_resources(
        &self,
        path: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<()> {
        let relative = relative_path(path)?;
        let hugetlb = self.has_controller("hugetlb");
        let usable = |w: &resources::ResourceWrite| hugetlb || w.controller != "hugetlb";
        if self.mode == Mode::V2 {
            let Some(tree) = self.hierarchies.iter().find(|h| h.v2) else {
                return Err(CgroupError::NoHierarchy);
            };
            for w in resources::plan_v2(resources)?.into_iter().filter(usable) {
                let file = tree.mount_point.join(&relative).join(&w.file);
                fs::write(&file, &w.value).map_err(io_err("write", &file))?;
            }
            return Ok(());
        }
        let mut writes = resources::plan_v1(resources)?;
        resources::order_memsw_write(&mut writes, self.current_memsw(&relative));
        for w in writes.into_iter().filter(usable) {
            let hierarchy = self
                .hierarchies
                .iter()
                .find(|h| !h.v2 && h.has(w.controller))
                .ok_or(CgroupError::NoController(w.controller))?;
            let file = hierarchy.mount_point.join(&relative).join(&w.file);
            match fs::write(&file, &w.value) {
                Ok(()) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && w.file == "memory.memsw.limit_in_bytes" => {}
                Err(e) => return Err(io_err("write", &file)(e)),
            }
        }
        Ok(())
    }

    /// Writes planned `writes` into the cgroup `path`: on v2 into the one tree, on v1 into
    /// the hierarchy of each write's controller.
    pub fn apply_writes(&self, path: &str, writes: &[resources::ResourceWrite]) -> Result<()> {
        let relative = relative_path(path)?;
        for w in writes {
            let hierarchy = if self.mode == Mode::V2 {
                self.hierarchies.iter().find(|h| h.v2)
            } else {
                self.hierarchies
                    .iter()
                    .find(|h| !h.v2 && h.has(w.controller))
            };
            let hierarchy = hierarchy.ok_or(CgroupError::NoController(w.controller))?;
            let file = hierarchy.mount_point.join(&relative).join(&w.file);
            fs::write(&file, &w.value).map_err(io_err("write", &file))?;
        }
        Ok(())
    }

    /// v1: the memory+swap limit `relative` has now (none without swap accounting).
    fn current_memsw(&self, relative: &Path) -> Option<u64> {
        let memory = self.hierarchies.iter().find(|h| !h.v2 && h.has("memory"))?;
        let file = memory
            .mount_point
            .join(relative)
            .join("memory.memsw.limit_in_bytes");
        fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// On a cgroup v2 host, `path`'s directory, opened so that a process can be started in
    /// it (clone3's CLONE_INTO_CGROUP). Joining by a cgroup.procs write migrates the
    /// process, and a migration waits for an RCU grace period (the writer side of the
    /// kernel's cgroup_threadgroup_rwsem): milliseconds per container. A process born in
    /// its cgroup never migrates. None on v1 and hybrid hosts, whose v1 hierarchies can
    /// only be joined by a write.
    pub fn open_for_clone(&self, path: &str) -> Result<Option<std::os::fd::OwnedFd>> {
        if self.mode != Mode::V2 {
            return Ok(None);
        }
        let relative = relative_path(path)?;
        let Some(unified) = self.hierarchies.iter().find(|h| h.v2) else {
            return Ok(None);
        };
        let dir = unified.mount_point.join(relative);
        let opened = fs::File::open(&dir).map_err(io_err("open", &dir))?;
        Ok(Some(opened.into()))
    }

    /// Moves `pid` into `path` in every hierarchy.
    pub fn add_process(&self, path: &str, pid: i32) -> Result<()> {
        let relative = relative_path(path)?;
        for hierarchy in &self.hierarchies {
            let procs = hierarchy.mount_point.join(&relative).join("cgroup.procs");
            fs::write(&procs, pid.to_string()).map_err(io_err("write", &procs))?;
        }
        Ok(())
    }

    /// Every pid in `path` or below, over all hierarchies, sorted and deduplicated.
    pub fn procs(&self, path: &str) -> Result<Vec<i32>> {
        let relative = relative_path(path)?;
        let mut pids = BTreeSet::new();
        for hierarchy in &self.hierarchies {
            collect_procs(&hierarchy.mount_point.join(&relative), &mut pids)?;
        }
        Ok(pids.into_iter().collect())
    }

    /// Removes `path` and every cgroup below it, deepest first, in every hierarchy.
    /// A missing cgroup is fine; a busy one is retried for a short while.
    pub fn remove(&self, path: &str) -> Result<()> {
        let relative = relative_path(path)?;
        for hierarchy in &self.hierarchies {
            remove_tree(&hierarchy.mount_point.join(&relative))?;
        }
        Ok(())
    }
}

fn delegate_controllers(parent: &Path) -> Result<()> {
    let available = parent.join("cgroup.controllers");
    let available = fs::read_to_string(&available).map_err(io_err("read", &available))?;
    let subtree = parent.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&subtree).map_err(io_err("read", &subtree))?;
    let missing = controllers_to_enable(&available, &enabled);
    if !missing.is_empty() {
        fs::write(&subtree, missing.join(" ")).map_err(io_err("write", &subtree))?;
    }
    Ok(())
}

fn copy_if_empty(parent: &Path, child: &Path, file: &str) -> Result<()> {
    let target = child.join(file);
    let current = fs::read_to_string(&target).map_err(io_err("read", &target))?;
    if !current.trim().is_empty() {
        return Ok(());
    }
    let source = parent.join(file);
    let value = fs::read_to_string(&source).map_err(io_err("read", &source))?;
    fs::write(&target, value.trim()).map_err(io_err("write", &target))
}

fn collect_procs(dir: &Path, pids: &mut BTreeSet<i32>) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    match fs::read_to_string(&procs) {
        Ok(text) => pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
        Err(e) if cgroup_gone(&e) => return Ok(()),
        Err(e) => return Err(io_err("read", &procs)(e)),
    }
    for child in subdirectories(dir)? {
        collect_procs(&child, pids)?;
    }
    Ok(())
}

fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if cgroup_gone(&e) => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read dir", dir)(e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("read dir", dir))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

fn remove_tree(dir: &Path) -> Result<()> {
    for child in subdirectories(dir)? {
        remove_tree(&child)?;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // EBUSY while the last exiting tasks leave the cgroup.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io_err("rmdir", dir)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines from a hybrid host (this machine's layout) and from a pure v2 host.
    const HYBRID: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
90 80 0:32 / /var/lib/x/memory rw,relatime - cgroup cgroup rw,memory
";

    const V2: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_mountinfo_gives_v1_hierarchies_and_the_unified_tree() {
        let found = parse_mountinfo(HYBRID);
        let summary: Vec<(String, Vec<String>, bool)> = found
            .iter()
            .map(|h| {
                (
                    h.mount_point.display().to_string(),
                    h.controllers.clone(),
                    h.v2,
                )
            })
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            summary,
            vec![
                (
                    "/sys/fs/cgroup/cpu,cpuacct".into(),
                    s(&["cpu", "cpuacct"]),
                    false
                ),
                ("/sys/fs/cgroup/cpuset".into(), s(&["cpuset"]), false),
                ("/sys/fs/cgroup/memory".into(), s(&["memory"]), false),
                ("/sys/fs/cgroup/systemd".into(), s(&["name=systemd"]), false),
                ("/sys/fs/cgroup/unified".into(), vec![], true),
            ]
        );
        assert_eq!(mode_of(&found), Some(Mode::Hybrid));
    }

    #[test]
    fn v2_mountinfo_gives_one_tree() {
        let found = parse_mountinfo(V2);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].mount_point, PathBuf::from("/sys/fs/cgroup"));
        assert!(found[0].v2);
        assert_eq!(mode_of(&found), Some(Mode::V2));
        assert_eq!(mode_of(&[]), None);
    }

    #[test]
    fn mountinfo_octal_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
    }

    #[test]
    fn proc_cgroup_v1_and_v2() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/bb1e\n1:cpu,cpuacct:/k/p\n0::/\n";
        let parsed = parse_proc_cgroup(v1);
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[1].controllers, vec!["memory".to_string()]);
        assert_eq!(parsed[1].path, "/process_api/bb1e");
        assert_eq!(parsed[2].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(parsed[3].hierarchy_id, 0);
        assert!(parsed[3].controllers.is_empty());

        let v2 = parse_proc_cgroup("0::/kubepods/burstable/pod1/abc\n");
        assert_eq!(
            v2,
            vec![ProcCgroup {
                hierarchy_id: 0,
                controllers: vec![],
                path: "/kubepods/burstable/pod1/abc".into()
            }]
        );
    }

    #[test]
    fn cgroup_paths_stay_below_the_root() {
        assert_eq!(
            relative_path("/kubepods/pod1").unwrap(),
            PathBuf::from("kubepods/pod1")
        );
        assert_eq!(relative_path("a/./b").unwrap(), PathBuf::from("a/b"));
        assert!(relative_path("/a/../../etc").is_err());
        assert!(relative_path("/").is_err());
        assert!(relative_path("").is_err());
    }

    #[test]
    fn v2_delegation_enables_only_missing_available_controllers() {
        assert_eq!(
            controllers_to_enable("cpuset cpu io memory hugetlb pids rdma misc", "cpu memory"),
            vec!["+cpuset", "+io", "+pids", "+hugetlb"]
        );
        assert!(controllers_to_enable("cpu", "cpu").is_empty());
        assert!(controllers_to_enable("", "").is_empty());
    }

    #[test]
    fn a_cgroup_removed_while_read_counts_as_gone() {
        assert!(cgroup_gone(&io::Error::from_raw_os_error(libc::ENODEV)));
        assert!(cgroup_gone(&io::Error::from(io::ErrorKind::NotFound)));
        assert!(!cgroup_gone(&io::Error::from_raw_os_error(libc::EACCES)));
    }

    #[test]
    fn create_add_procs_remove_on_a_fake_v1_tree() {
        // A plain directory tree stands in for a v1 cpuset hierarchy: files are ordinary.
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cpuset.cpus"), "0-1\n").unwrap();
        fs::write(root.path().join("cpuset.mems"), "0\n").unwrap();
        let cgroups = Cgroups::from_hierarchies(vec![Hierarchy {
            mount_point: root.path().to_path_buf(),
            controllers: vec!["cpuset".into()],
            v2: false,
        }])
        .unwrap();
        // Real cpuset cgroups get these files from the kernel; pre-create them empty.
        for level in ["a", "a/b"] {
            fs::create_dir(root.path().join(level)).unwrap();
            fs::write(root.path().join(level).join("cpuset.cpus"), "").unwrap();
            fs::write(root.path().join(level).join("cpuset.mems"), "").unwrap();
        }
        cgroups.create("/a/b").unwrap();
        let cpus = fs::read_to_string(root.path().join("a/b/cpuset.cpus")).unwrap();
        assert_eq!(cpus, "0-1");
        fs::write(root.path().join("a/cgroup.procs"), "7\n3\n").unwrap();
        fs::write(root.path().join("a/b/cgroup.procs"), "5\n3\n").unwrap();
        assert_eq!(cgroups.procs("a").unwrap(), vec![3, 5, 7]);
        assert_eq!(cgroups.procs("missing").unwrap(), Vec::<i32>::new());
    }
}
