//! `berth init` running real containers (root only): an overlay rootfs made from the
//! host's busybox in two layers, the usual mounts, masked and read-only paths, user,
//! capabilities, cgroup limits, and the exact error texts of a bad program or cwd.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth::linux::cgroup::Cgroups;
use serde_json::{Value, json};

const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "touch", "ls", "test", "wc", "pwd", "grep", "id", "sleep",
];

/// Copies the host's dynamic busybox and the libraries `ldd` names into `layer`.
fn install_busybox(layer: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is needed (Debian's busybox package)"
    );
    let ldd = Command::new("ldd").arg(busybox).output().expect("run ldd");
    assert!(ldd.status.success(), "ldd /bin/busybox failed");
    let mut files = vec![PathBuf::from("/bin/busybox")];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        files.extend(path);
    }
    for file in files {
        let dest = layer.join(file.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&file, &dest).unwrap();
    }
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", layer.join("bin").join(applet)).unwrap();
    }
}

struct Bundle {
    dir: tempfile::TempDir,
    cgroup: String,
}

impl Bundle {
    /// A bundle whose rootfs has `lowers` (top first) plus an upper and work dir.
    fn new(lowers: &[PathBuf], name: &str) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        for d in ["rootfs", "upper", "work"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        let layers = json!({
            "lower": lowers,
            "upper": dir.path().join("upper"),
            "work": dir.path().join("work"),
        });
        fs::write(dir.path().join("rootfs.json"), layers.to_string()).unwrap();
        Bundle {
            dir,
            // One parent per bundle: tests run in parallel and each removes its own tree.
            cgroup: format!("berth-test-init-{}-{name}/ctr", std::process::id()),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write_spec(&self, process: Value, extra_linux: Value, mounts: Value, readonly: bool) {
        let mut linux = json!({
            "namespaces": [{"type": "mount"}, {"type": "ipc"}, {"type": "uts"}],
            "cgroupsPath": self.cgroup,
            "maskedPaths": ["/proc/kcore", "/proc/nonexistent", "/proc/scsi"],
            "readonlyPaths": ["/proc/sys", "/proc/missing"],
        });
        if let (Some(l), Some(e)) = (linux.as_object_mut(), extra_linux.as_object()) {
            for (k, v) in e {
                l.insert(k.clone(), v.clone());
            }
        }
        let spec = json!({
            "ociVersion": "1.0.2",
            "process": process,
            "root": {"path": self.path().join("rootfs"), "readonly": readonly},
            "hostname": "ctr",
            "mounts": mounts,
            "linux": linux,
        });
        fs::write(self.path().join("config.json"), spec.to_string()).unwrap();
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if let Ok(cgroups) = Cgroups::detect() {
            let parent = self.cgroup.split('/').next().unwrap().to_string();
            let _ = cgroups.kill_all(&parent, std::time::Duration::from_secs(2));
            let _ = cgroups.remove(&parent);
        }
    }
}

fn default_mounts(data: &Path) -> Value {
    json!([
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        {"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "ro", "rprivate"]},
    ])
}

fn process(
    args: &[&str],
    cwd: &str,
    uid: u32,
    gid: u32,
    groups: &[u32],
    caps: Option<&[&str]>,
) -> Value {
    let mut p = json!({
        "args": args,
        "env": ["PATH=/usr/bin:/bin", "HOME=/"],
        "cwd": cwd,
        "user": {"uid": uid, "gid": gid, "additionalGids": groups},
        "noNewPrivileges": true,
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024}],
    });
    if let Some(caps) = caps {
        p["capabilities"] = json!({
            "bounding": caps, "effective": caps, "permitted": caps,
        });
    }
    p
}

struct Outcome {
    /// The first line from init: created or error.
    first: String,
    /// What init said after `start` (nothing when the exec worked).
    after_start: String,
    stdout: String,
    stderr: String,
}

/// Runs `berth init` with a socketpair at fd 3; `on_created` runs before `start`.
fn run_init(bundle: &Bundle, on_created: impl FnOnce(i32)) -> Outcome {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let theirs_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("init")
        .arg("--bundle")
        .arg(bundle.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: dup2 only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(theirs_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn berth init");
    drop(theirs);
    let mut reader = BufReader::new(ours.try_clone().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let mut after_start = String::new();
    let created: Value = serde_json::from_str(first.trim()).unwrap_or(Value::Null);
    if let Some(pid) = created["created"]["pid"].as_i64() {
        on_created(pid as i32);
        (&ours).write_all(b"start\n").unwrap();
        reader.read_to_string(&mut after_start).unwrap();
    }
    drop(ours);
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    Outcome {
        first: first.trim().to_string(),
        after_start: after_start.trim().to_string(),
        stdout,
        stderr,
    }
}

fn assert_nothing_mounted(bundle: &Bundle) {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = bundle.path().to_string_lossy().to_string();
    assert!(
        !mountinfo.contains(&path),
        "a mount of the bundle leaked to the host"
    );
}

fn two_layers(root: &Path) -> Vec<PathBuf> {
    let base = root.join("base");
    let top = root.join("top");
    install_busybox(&base);
    fs::create_dir_all(base.join("work/dir")).unwrap();
    fs::write(base.join("base.txt"), "from-base\n").unwrap();
    fs::create_dir_all(&top).unwrap();
    fs::write(top.join("top.txt"), "from-top\n").unwrap();
    vec![top, base]
}

#[test]
fn a_container_gets_its_rootfs_mounts_user_caps_and_limits() {
    let layers_dir = tempfile::tempdir().unwrap();
    let lowers = two_layers(layers_dir.path());
    let data = tempfile::tempdir().unwrap();
    fs::write(data.path().join("hello"), "hello-data\n").unwrap();

    let bundle = Bundle::new(&lowers, "main");
    let script = "cat /top.txt /base.txt; echo w > /written && echo wrote; \
        test -f /proc/self/status && echo proc-ok; \
        test -c /dev/null && test -c /dev/zero && test -c /dev/urandom && test -c /dev/tty && echo dev-ok; \
        test -L /dev/fd && test -L /dev/ptmx && test -c /dev/pts/ptmx && echo devlinks-ok; \
        echo kcore=$(cat /proc/kcore | wc -c); \
        echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null || echo procsys-ro; \
        echo cwd=$(pwd); \
        grep CapEff /proc/self/status; \
        cat /data/hello; touch /data/x 2>/dev/null || echo data-ro; \
        touch /sys/x 2>/dev/null || echo sys-ro; echo pid=$$";
    bundle.write_spec(
        process(
            &["sh", "-c", script],
            "/work/dir",
            0,
            0,
            &[],
            Some(&["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]),
        ),
        json!({
            "resources": {"memory": {"limit": 67108864}, "pids": {"limit": 64}},
            "namespaces": [{"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "pid"}],
        }),
        default_mounts(data.path()),
        false,
    );
    let cgroups = Cgroups::detect().unwrap();
    let memory_root = cgroups
        .hierarchies()
        .iter()
        .find(|h| h.controllers.iter().any(|c| c == "memory") || h.v2)
        .expect("a memory cgroup hierarchy")
        .clone();
    let mut seen_limit = String::new();
    let out = run_init(&bundle, |_pid| {
        let file = if memory_root.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        seen_limit =
            fs::read_to_string(memory_root.mount_point.join(&bundle.cgroup).join(file)).unwrap();
    });
    assert!(
        out.first.starts_with("{\"created\""),
        "init: {} {}",
        out.first,
        out.stderr
    );
    assert_eq!(seen_limit.trim(), "67108864");
    let expected = [
        "from-top",
        "from-base",
        "wrote",
        "proc-ok",
        "dev-ok",
        "devlinks-ok",
        "kcore=0",
        "procsys-ro",
        "cwd=/work/dir",
        // CHOWN (0), KILL (5), NET_BIND_SERVICE (10)
        "CapEff:\t0000000000000421",
        "hello-data",
        "data-ro",
        "sys-ro",
        // Its own PID namespace: init forked the workload into it.
        "pid=1",
    ];
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, expected, "stderr: {}", out.stderr);
    assert_eq!(out.after_start, "");
    // The write landed in the upper dir; the layers are untouched.
    assert_eq!(
        fs::read_to_string(bundle.path().join("upper/written")).unwrap(),
        "w\n"
    );
    assert!(!lowers.iter().any(|l| l.join("written").exists()));
    assert!(!data.path().join("x").exists());
    assert_nothing_mounted(&bundle);
    let cgroup = bundle.cgroup.clone();
    drop(bundle);
    assert!(
        !memory_root.mount_point.join(cgroup).exists(),
        "cgroup left"
    );
}

#[test]
fn user_groups_and_a_read_only_root() {
    let layers_dir = tempfile::tempdir().unwrap();
    let lowers = two_layers(layers_dir.path());
    let data = tempfile::tempdir().unwrap();

    let bundle = Bundle::new(&lowers, "user");
    bundle.write_spec(
        process(&["id"], "/", 1000, 1001, &[2000, 3000], None),
        json!({}),
        default_mounts(data.path()),
        false,
    );
    let out = run_init(&bundle, |_| {});
    assert_eq!(
        out.stdout.trim(),
        "uid=1000 gid=1001 groups=2000,3000",
        "{} {}",
        out.first,
        out.stderr
    );
    assert_nothing_mounted(&bundle);

    let ro = Bundle::new(&lowers, "ro");
    ro.write_spec(
        process(
            &[
                "sh",
                "-c",
                "touch /x 2>/dev/null || echo refused; touch /dev/shm/y && echo shm-ok",
            ],
            "/",
            0,
            0,
            &[],
            None,
        ),
        json!({}),
        default_mounts(data.path()),
        true,
    );
    let out = run_init(&ro, |_| {});
    assert_eq!(
        out.stdout, "refused\nshm-ok\n",
        "{} {}",
        out.first, out.stderr
    );
    assert!(!ro.path().join("upper/x").exists());
    assert_nothing_mounted(&ro);
}

#[test]
fn a_missing_program_or_cwd_fails_the_create_with_the_exact_reason() {
    let layers_dir = tempfile::tempdir().unwrap();
    let lowers = two_layers(layers_dir.path());
    let data = tempfile::tempdir().unwrap();

    let bundle = Bundle::new(&lowers, "nosuch");
    bundle.write_spec(
        process(&["nosuch"], "/", 0, 0, &[], None),
        json!({}),
        default_mounts(data.path()),
        false,
    );
    let out = run_init(&bundle, |_| panic!("created despite a missing program"));
    assert_eq!(
        out.first,
        r#"{"error":"exec: \"nosuch\": executable file not found in $PATH"}"#
    );
    assert_nothing_mounted(&bundle);

    let cwd = Bundle::new(&lowers, "cwd");
    cwd.write_spec(
        process(&["sh", "-c", "true"], "/nonexistent", 0, 0, &[], None),
        json!({}),
        default_mounts(data.path()),
        false,
    );
    let out = run_init(&cwd, |_| panic!("created despite a missing cwd"));
    assert_eq!(
        out.first,
        r#"{"error":"chdir /nonexistent: no such file or directory"}"#
    );

    let mount = Bundle::new(&lowers, "mount");
    mount.write_spec(
        process(&["sh", "-c", "true"], "/", 0, 0, &[], None),
        json!({}),
        json!([{"destination": "/data", "type": "bind", "source": "/nonexistent-berth", "options": ["rbind"]}]),
        false,
    );
    let out = run_init(&mount, |_| panic!("created despite a missing mount source"));
    assert_eq!(
        out.first,
        r#"{"error":"mount /data: no such file or directory"}"#
    );

    // A program that exists but cannot be executed fails at start, over the same socket.
    let noexec = Bundle::new(&lowers, "noexec");
    noexec.write_spec(
        process(&["/base.txt"], "/", 0, 0, &[], None),
        json!({}),
        default_mounts(data.path()),
        false,
    );
    let out = run_init(&noexec, |_| {});
    assert!(out.first.starts_with("{\"created\""), "{}", out.first);
    assert_eq!(
        out.after_start,
        r#"{"error":"exec /base.txt: permission denied"}"#
    );
    assert_nothing_mounted(&noexec);
}

#[test]
fn sixty_layers_of_long_paths_mount() {
    let layers_dir = tempfile::tempdir().unwrap();
    let mut lowers = Vec::new();
    for i in 0..60 {
        let prefix = layers_dir.path().join(format!("layer{i:02}-"));
        let len = prefix.as_os_str().len();
        assert!(len < 100, "temp dir path too long for the test");
        let name = format!("{}{}", prefix.display(), "x".repeat(100 - len));
        let layer = PathBuf::from(name);
        fs::create_dir_all(&layer).unwrap();
        fs::write(layer.join(format!("f{i:02}")), format!("{i}\n")).unwrap();
        lowers.push(layer);
    }
    install_busybox(&lowers[59]);
    lowers.reverse(); // top first
    let total: usize = lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(total > 4096, "the layers must exceed one page of options");
    let bundle = Bundle::new(&lowers, "many");
    bundle.write_spec(
        process(
            &["sh", "-c", "cat /f00 /f59; ls / | grep -c '^f'"],
            "/",
            0,
            0,
            &[],
            None,
        ),
        json!({}),
        json!([{"destination": "/proc", "type": "proc", "source": "proc"}]),
        false,
    );
    let out = run_init(&bundle, |_| {});
    assert_eq!(out.stdout, "0\n59\n60\n", "{} {}", out.first, out.stderr);
    assert_nothing_mounted(&bundle);
}
