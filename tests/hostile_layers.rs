//! The layer extractor against hostile and ordinary layers, built byte by byte here.
//!
//! Every hostile case unpacks into `<tmp>/layer` next to `<tmp>/victim`, must fail with an
//! error naming the offending entry, and must leave everything outside `<tmp>/layer`
//! (walked before and after) and the absolute paths it aimed at untouched.
//! Needs root (device nodes, chown, trusted.* xattrs) like the rest of `tests/`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use berth::image::unpack::{
    Compression, UnpackError, UnpackLimits, UnpackStats, remove_layer_dir, unpack_layer,
};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

// ---------------------------------------------------------------------------------------
// A tar writer that writes whatever it is told: names go straight into the header bytes
// (or a PAX record), so `..`, absolute paths and odd link targets reach the extractor.

#[derive(Clone)]
struct Entry {
    path: Vec<u8>,
    kind: EntryType,
    link: Vec<u8>,
    data: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    device: (u32, u32),
    pax: Vec<(String, Vec<u8>)>,
}

fn entry(kind: EntryType, path: &str) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind,
        link: Vec::new(),
        data: Vec::new(),
        mode: if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        },
        uid: 0,
        gid: 0,
        mtime: 1_600_000_000,
        device: (0, 0),
        pax: Vec::new(),
    }
}

fn file(path: &str, data: &[u8]) -> Entry {
    Entry {
        data: data.to_vec(),
        ..entry(EntryType::Regular, path)
    }
}

fn dir(path: &str) -> Entry {
    entry(EntryType::Directory, path)
}

fn symlink(path: &str, target: &str) -> Entry {
    Entry {
        link: target.as_bytes().to_vec(),
        mode: 0o777,
        ..entry(EntryType::Symlink, path)
    }
}

fn hardlink(path: &str, target: &str) -> Entry {
    Entry {
        link: target.as_bytes().to_vec(),
        ..entry(EntryType::Link, path)
    }
}

fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        // "<len> <key>=<value>\n", where <len> counts itself.
        let body = key.len() + value.len() + 3;
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

fn push_padded(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn header_bytes(e: &Entry) -> (Vec<(String, Vec<u8>)>, Header) {
    let mut pax = e.pax.clone();
    let mut header = Header::new_ustar();
    {
        let ustar = header.as_ustar_mut().unwrap();
        if e.path.len() <= 100 {
            ustar.name[..e.path.len()].copy_from_slice(&e.path);
        } else {
            pax.push(("path".into(), e.path.clone()));
            ustar.name[..8].copy_from_slice(b"longname");
        }
        if e.link.len() <= 100 {
            ustar.linkname[..e.link.len()].copy_from_slice(&e.link);
        } else {
            pax.push(("linkpath".into(), e.link.clone()));
        }
    }
    header.set_entry_type(e.kind);
    header.set_mode(e.mode);
    header.set_uid(e.uid);
    header.set_gid(e.gid);
    header.set_mtime(e.mtime);
    header.set_size(e.data.len() as u64);
    header.set_device_major(e.device.0).unwrap();
    header.set_device_minor(e.device.1).unwrap();
    header.set_cksum();
    (pax, header)
}

fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let (pax, header) = header_bytes(e);
        if !pax.is_empty() {
            let records = pax_records(&pax);
            let mut pax_header = Header::new_ustar();
            pax_header.as_ustar_mut().unwrap().name[..9].copy_from_slice(b"PaxHeader");
            pax_header.set_entry_type(EntryType::XHeader);
            pax_header.set_size(records.len() as u64);
            pax_header.set_mode(0o644);
            pax_header.set_cksum();
            out.extend_from_slice(pax_header.as_bytes());
            push_padded(&mut out, &records);
        }
        out.extend_from_slice(header.as_bytes());
        push_padded(&mut out, &e.data);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 1).unwrap()
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

// ---------------------------------------------------------------------------------------
// The sandbox: <tmp>/layer (unpacked into) next to <tmp>/victim (must stay as it is).

struct Sandbox {
    tmp: tempfile::TempDir,
    layer: PathBuf,
    victim: PathBuf,
}

fn sandbox() -> Sandbox {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    let victim = tmp.path().join("victim");
    fs::create_dir(&layer).unwrap();
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("file"), b"victim data").unwrap();
    Sandbox { tmp, layer, victim }
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (mknod, chown, trusted.* xattrs)"
    );
}

/// Everything under `root` except the layer dir: path -> (type, size, mode, content hash).
fn outside_layer(sandbox: &Sandbox) -> BTreeMap<PathBuf, String> {
    fn walk(path: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for child in fs::read_dir(path).unwrap() {
            let child = child.unwrap().path();
            if child == skip {
                continue;
            }
            let meta = fs::symlink_metadata(&child).unwrap();
            let content = if meta.is_file() {
                hex::encode(Sha256::digest(fs::read(&child).unwrap()))
            } else {
                String::new()
            };
            out.insert(
                child.clone(),
                format!("{:o} {} {content}", meta.mode(), meta.len()),
            );
            if meta.is_dir() {
                walk(&child, skip, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(sandbox.tmp.path(), &sandbox.layer, &mut out);
    out
}

fn limits() -> UnpackLimits {
    UnpackLimits {
        max_unpacked_size: None,
        min_free_space: None,
        max_expansion_ratio: None,
    }
}

/// Unpacks a hostile layer and checks that it fails naming `bad_entry`, that nothing outside
/// the layer dir changed, that none of `aimed_at` appeared, and that the layer dir can be
/// removed afterwards.
fn assert_refused(sandbox: &Sandbox, entries: &[Entry], bad_entry: &str, aimed_at: &[&Path]) {
    let before = outside_layer(sandbox);
    let err = unpack_layer(
        Cursor::new(tar(entries)),
        Compression::None,
        &sandbox.layer,
        &limits(),
    )
    .expect_err("a hostile layer must fail");
    let message = err.to_string();
    assert!(
        matches!(err, UnpackError::Refused { .. }),
        "expected a refusal, got: {message}"
    );
    assert!(
        message.contains(&format!("{bad_entry:?}")),
        "error must name {bad_entry:?}: {message}"
    );
    println!("{bad_entry}: {message}");
    assert_eq!(
        before,
        outside_layer(sandbox),
        "something changed outside the layer"
    );
    for path in aimed_at {
        assert!(
            fs::symlink_metadata(path).is_err(),
            "{} was created outside the layer",
            path.display()
        );
    }
    remove_layer_dir(&sandbox.layer).unwrap();
    assert!(!sandbox.layer.exists());
    assert_eq!(
        before,
        outside_layer(sandbox),
        "removal touched something outside"
    );
}

fn unique(name: &str) -> String {
    format!("berth-hostile-{}-{name}", std::process::id())
}

// ---------------------------------------------------------------------------------------
// Hostile layers.

#[test]
fn dot_dot_path_is_refused() {
    let sb = sandbox();
    let aim = sb.tmp.path().join("escape");
    assert_refused(&sb, &[file("../escape", b"x")], "../escape", &[&aim]);
}

#[test]
fn absolute_path_is_refused() {
    let sb = sandbox();
    let aim = sb.victim.join("abs-escape");
    let path = aim.to_str().unwrap().to_string();
    assert_refused(&sb, &[file(&path, b"x")], &path, &[&aim]);
}

#[test]
fn dot_dot_in_the_middle_is_refused() {
    let sb = sandbox();
    let aim = sb.tmp.path().join("escape");
    assert_refused(
        &sb,
        &[dir("a/"), file("a/../../escape", b"x")],
        "a/../../escape",
        &[&aim],
    );
}

#[test]
fn writing_through_a_symlink_to_root_is_refused() {
    let sb = sandbox();
    let name = unique("etc-x");
    let aim = PathBuf::from("/etc").join(&name);
    let bad = format!("evil/etc/{name}");
    assert_refused(
        &sb,
        &[symlink("evil", "/"), file(&bad, b"x")],
        &bad,
        &[&aim],
    );
}

#[test]
fn writing_through_a_climbing_symlink_is_refused() {
    let sb = sandbox();
    let aim = sb.tmp.path().parent().unwrap().join(unique("x"));
    let bad = format!("evil/{}", unique("x"));
    assert_refused(
        &sb,
        &[symlink("evil", "../.."), file(&bad, b"x")],
        &bad,
        &[&aim],
    );
}

#[test]
fn writing_through_a_symlink_to_an_absolute_dir_outside_is_refused() {
    let sb = sandbox();
    let victim = sb.victim.to_str().unwrap().to_string();
    let aim = sb.victim.join("planted");
    assert_refused(
        &sb,
        &[symlink("out", &victim), file("out/planted", b"x")],
        "out/planted",
        &[&aim],
    );
    // The same with a directory, a fifo and a symlink as the planted entry.
    for planted in [
        dir("out/planted"),
        entry(EntryType::Fifo, "out/planted"),
        symlink("out/planted", "/etc/passwd"),
    ] {
        fs::create_dir(&sb.layer).unwrap();
        assert_refused(
            &sb,
            &[symlink("out", &victim), planted],
            "out/planted",
            &[&aim],
        );
    }
}

#[test]
fn symlinked_parent_dir_made_by_an_earlier_entry_is_refused() {
    let sb = sandbox();
    let aim = sb.victim.join("sub");
    assert_refused(
        &sb,
        &[
            dir("d/"),
            file("d/ok", b"fine"),
            symlink("d/link", "../../victim"),
            file("d/link/sub/x", b"x"),
        ],
        "d/link/sub/x",
        &[&aim],
    );
}

#[test]
fn hard_link_climbing_out_is_refused() {
    let sb = sandbox();
    assert_refused(&sb, &[hardlink("hl", "../../victim/file")], "hl", &[]);
}

#[test]
fn hard_link_to_an_absolute_path_is_refused() {
    let sb = sandbox();
    assert_refused(&sb, &[hardlink("hl", "/etc/passwd")], "hl", &[]);
}

#[test]
fn hard_link_through_a_symlink_outside_is_refused() {
    let sb = sandbox();
    let victim = sb.victim.to_str().unwrap().to_string();
    assert_refused(
        &sb,
        &[symlink("lnk", &victim), hardlink("hl", "lnk/file")],
        "hl",
        &[],
    );
    // The victim file keeps a single link.
    assert_eq!(fs::metadata(sb.victim.join("file")).unwrap().nlink(), 1);
}

#[test]
fn hard_link_to_a_later_or_missing_target_is_refused() {
    let sb = sandbox();
    assert_refused(
        &sb,
        &[hardlink("hl", "later"), file("later", b"x")],
        "hl",
        &[],
    );
    fs::create_dir(&sb.layer).unwrap();
    assert_refused(&sb, &[dir("d/"), hardlink("hl", "d")], "hl", &[]);
}

#[test]
fn symlink_loop_is_refused() {
    let sb = sandbox();
    let before = outside_layer(&sb);
    let entries = [symlink("a", "b"), symlink("b", "a"), file("a/x", b"x")];
    let err = unpack_layer(
        Cursor::new(tar(&entries)),
        Compression::None,
        &sb.layer,
        &limits(),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("\"a/x\"") && message.contains("loop"),
        "{message}"
    );
    assert_eq!(before, outside_layer(&sb));
    remove_layer_dir(&sb.layer).unwrap();
}

#[test]
fn whiteout_climbing_out_is_refused() {
    let sb = sandbox();
    let aim = sb.tmp.path().join("x");
    assert_refused(&sb, &[file("../.wh.x", b"")], "../.wh.x", &[&aim]);
    fs::create_dir(&sb.layer).unwrap();
    let victim = sb.victim.to_str().unwrap().to_string();
    // A whiteout through a symlink outside would delete the victim's file.
    assert_refused(
        &sb,
        &[symlink("out", &victim), file("out/.wh.file", b"")],
        "out/.wh.file",
        &[],
    );
    fs::create_dir(&sb.layer).unwrap();
    assert_refused(
        &sb,
        &[symlink("out", &victim), file("out/.wh..wh..opq", b"")],
        "out/.wh..wh..opq",
        &[],
    );
}

// ---------------------------------------------------------------------------------------
// Ordinary layers.

const CAP_NET_BIND_SERVICE_V2: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    0x00, 0x04, 0x00, 0x00, // permitted[0]: bit 10
    0x00, 0x00, 0x00, 0x00, // inheritable[0]
    0x00, 0x00, 0x00, 0x00, // permitted[1]
    0x00, 0x00, 0x00, 0x00, // inheritable[1]
];

fn normal_layer() -> Vec<Entry> {
    let long_dir = "l".repeat(120);
    vec![
        Entry {
            mode: 0o755,
            mtime: 1_500_000_000,
            ..dir("./")
        },
        Entry {
            mtime: 1_500_000_001,
            ..dir("etc/")
        },
        Entry {
            mtime: 1_500_000_002,
            ..file("./etc/hosts", b"127.0.0.1 localhost\n")
        },
        hardlink("etc/hosts.link", "./etc/hosts"),
        Entry {
            uid: 1000,
            gid: 1000,
            mode: 0o700,
            mtime: 1_500_000_003,
            ..dir("home/user/")
        },
        Entry {
            uid: 1000,
            gid: 1000,
            mode: 0o600,
            ..file("home/user/notes", b"hello")
        },
        Entry {
            mode: 0o4755,
            ..file("usr/bin/su", b"#!/bin/true\n")
        },
        Entry {
            mode: 0o2755,
            gid: 42,
            ..file("usr/bin/wall", b"")
        },
        Entry {
            mode: 0o1777,
            ..dir("tmp/")
        },
        symlink("bin/sh", "/bin/busybox"),
        symlink("rel", "../../outside/is/fine/as/a/target"),
        symlink("lib", "usr/lib"),
        dir("usr/lib/"),
        file("lib/through-inner-symlink", b"lands in usr/lib"),
        Entry {
            mode: 0o600,
            ..entry(EntryType::Fifo, "run/fifo")
        },
        Entry {
            mode: 0o666,
            device: (1, 3),
            ..entry(EntryType::Char, "dev/null")
        },
        Entry {
            mode: 0o660,
            device: (7, 0),
            ..entry(EntryType::Block, "dev/loop0")
        },
        file("etc/.wh.removed", b""),
        dir("var/opaque/"),
        file("var/opaque/.wh..wh..opq", b""),
        file("var/opaque/.wh..wh.plnk", b""),
        Entry {
            pax: vec![
                ("SCHILY.xattr.user.test".into(), b"hello".to_vec()),
                (
                    "SCHILY.xattr.security.capability".into(),
                    CAP_NET_BIND_SERVICE_V2.to_vec(),
                ),
                (
                    "SCHILY.xattr.trusted.overlay.redirect".into(),
                    b"/etc".to_vec(),
                ),
                ("mtime".into(), b"1500000004.25".to_vec()),
            ],
            ..file("usr/bin/ping", b"ping")
        },
        // The same path again: later entries win.
        Entry {
            mode: 0o750,
            mtime: 1_500_000_005,
            ..dir("etc/")
        },
        file("x", b"file first"),
        dir("x/"),
        file("x/y", b"then a dir"),
        dir("z/"),
        file("z/child", b"gone"),
        file("z", b"a file replaces the dir"),
        file("dup", b"first"),
        file("dup", b"second"),
        symlink("dup-link", "first"),
        symlink("dup-link", "second"),
        file(&format!("{long_dir}/{}", "f".repeat(150)), b"long"),
    ]
}

fn check_normal_layer(root: &Path, stats: &UnpackStats, tar_bytes: &[u8]) {
    let meta = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(stats.diff_id, sha256(tar_bytes));

    assert_eq!(
        fs::read(root.join("etc/hosts")).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    assert_eq!(meta("etc/hosts").mtime(), 1_500_000_002);
    assert_eq!(meta("etc/hosts").mode() & 0o7777, 0o644);
    assert_eq!(meta("etc/hosts").ino(), meta("etc/hosts.link").ino());
    assert_eq!(meta("etc/hosts").nlink(), 2);

    let home = meta("home/user");
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o7777),
        (1000, 1000, 0o700)
    );
    assert_eq!(home.mtime(), 1_500_000_003);
    let notes = meta("home/user/notes");
    assert_eq!(
        (notes.uid(), notes.gid(), notes.mode() & 0o7777),
        (1000, 1000, 0o600)
    );

    assert_eq!(meta("usr/bin/su").mode() & 0o7777, 0o4755);
    assert_eq!(meta("usr/bin/wall").mode() & 0o7777, 0o2755);
    assert_eq!(meta("usr/bin/wall").gid(), 42);
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    // Implicit parents: 0755 root.
    let usr = meta("usr");
    assert_eq!((usr.uid(), usr.gid(), usr.mode() & 0o7777), (0, 0, 0o755));

    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        fs::read_link(root.join("rel")).unwrap(),
        Path::new("../../outside/is/fine/as/a/target")
    );
    assert_eq!(
        fs::read(root.join("usr/lib/through-inner-symlink")).unwrap(),
        b"lands in usr/lib"
    );

    assert!(meta("run/fifo").file_type().is_fifo());
    let null = meta("dev/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    assert!(meta("dev/loop0").file_type().is_block_device());
    assert_eq!(meta("dev/loop0").rdev(), rustix::fs::makedev(7, 0));

    let whiteout = meta("etc/removed");
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    assert!(!root.join("etc/.wh.removed").exists());

    assert_eq!(
        xattr(root, "var/opaque", "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(fs::symlink_metadata(root.join("var/opaque/.wh..wh..opq")).is_err());
    assert!(fs::symlink_metadata(root.join("var/opaque/.wh..wh.plnk")).is_err());

    assert_eq!(
        xattr(root, "usr/bin/ping", "user.test").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        xattr(root, "usr/bin/ping", "security.capability").as_deref(),
        Some(&CAP_NET_BIND_SERVICE_V2[..])
    );
    assert_eq!(
        xattr(root, "usr/bin/ping", "trusted.overlay.redirect"),
        None
    );
    let ping = meta("usr/bin/ping");
    assert_eq!(
        (ping.mtime(), ping.mtime_nsec()),
        (1_500_000_004, 250_000_000)
    );

    let etc = meta("etc");
    assert_eq!((etc.mode() & 0o7777, etc.mtime()), (0o750, 1_500_000_005));
    assert_eq!(meta(".").mtime(), 1_500_000_000);

    assert!(meta("x").is_dir());
    assert_eq!(fs::read(root.join("x/y")).unwrap(), b"then a dir");
    assert_eq!(
        fs::read(root.join("z")).unwrap(),
        b"a file replaces the dir"
    );
    assert_eq!(fs::read(root.join("dup")).unwrap(), b"second");
    assert_eq!(
        fs::read_link(root.join("dup-link")).unwrap(),
        Path::new("second")
    );
    let long = format!("{}/{}", "l".repeat(120), "f".repeat(150));
    assert_eq!(fs::read(root.join(long)).unwrap(), b"long");

    let file_bytes: u64 = normal_layer()
        .iter()
        .filter(|e| e.kind == EntryType::Regular)
        .map(|e| e.data.len() as u64)
        .sum();
    assert_eq!(stats.bytes, file_bytes);
    assert!(stats.inodes > 30, "inodes: {}", stats.inodes);
}

fn xattr(root: &Path, path: &str, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(root.join(path), name, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[test]
fn normal_layer_plain_gzip_and_zstd() {
    let layer = tar(&normal_layer());
    for (compression, blob) in [
        (Compression::None, layer.clone()),
        (Compression::Gzip, gzip(&layer)),
        (Compression::Zstd, zstd(&layer)),
    ] {
        let sb = sandbox();
        let before = outside_layer(&sb);
        let stats = unpack_layer(Cursor::new(blob), compression, &sb.layer, &limits())
            .unwrap_or_else(|e| panic!("{compression:?}: {e}"));
        check_normal_layer(&sb.layer, &stats, &layer);
        assert_eq!(before, outside_layer(&sb));
        remove_layer_dir(&sb.layer).unwrap();
        assert!(!sb.layer.exists());
    }
}

#[test]
fn gnu_long_names_from_the_tar_builder() {
    let sb = sandbox();
    let long_path = format!("{}/{}", "d".repeat(90), "n".repeat(110));
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(EntryType::Regular);
    builder
        .append_data(&mut header, &long_path, &b"data"[..])
        .unwrap();
    let mut header = Header::new_gnu();
    header.set_size(0);
    header.set_mode(0o777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(EntryType::Symlink);
    let long_target = format!("/{}", "t".repeat(200));
    builder
        .append_link(&mut header, "link", &long_target)
        .unwrap();
    let layer = builder.into_inner().unwrap();
    let stats = unpack_layer(Cursor::new(&layer), Compression::None, &sb.layer, &limits()).unwrap();
    assert_eq!(fs::read(sb.layer.join(&long_path)).unwrap(), b"data");
    assert_eq!(
        fs::read_link(sb.layer.join("link")).unwrap(),
        Path::new(&long_target)
    );
    assert_eq!(stats.diff_id, sha256(&layer));
    remove_layer_dir(&sb.layer).unwrap();
}

#[test]
fn ten_thousand_entries() {
    let sb = sandbox();
    let mut entries = Vec::new();
    for d in 0..100 {
        entries.push(dir(&format!("d{d:03}/")));
        for f in 0..99 {
            entries.push(file(
                &format!("d{d:03}/f{f:03}"),
                format!("{d}-{f}").as_bytes(),
            ));
        }
    }
    assert_eq!(entries.len(), 10_000);
    let blob = gzip(&tar(&entries));
    let started = Instant::now();
    let stats = unpack_layer(Cursor::new(blob), Compression::Gzip, &sb.layer, &limits()).unwrap();
    let took = started.elapsed();
    println!("10,000-entry layer unpacked in {took:?} (debug build)");
    assert_eq!(stats.inodes, 10_000);
    let mut files = 0;
    for d in fs::read_dir(&sb.layer).unwrap() {
        files += fs::read_dir(d.unwrap().path()).unwrap().count();
    }
    assert_eq!(files, 9_900);
    assert_eq!(fs::read(sb.layer.join("d042/f017")).unwrap(), b"42-17");
    remove_layer_dir(&sb.layer).unwrap();
    assert!(!sb.layer.exists());
}

/// One gzip member holding `size` zero bytes, compressed once and repeated by the caller:
/// gzip streams may be concatenated, so a huge bomb costs the test almost nothing to make.
fn gzip_member_of_zeros(size: usize) -> Vec<u8> {
    gzip(&vec![0; size])
}

const MIB: usize = 1 << 20;

#[test]
fn one_gib_single_file_bomb_fails_before_writing() {
    let sb = sandbox();
    let mut header = header_bytes(&file("bomb", b"")).1;
    header.set_size(1 << 30);
    header.set_cksum();
    let zeros = gzip_member_of_zeros(MIB);
    let mut blob = gzip(header.as_bytes());
    for _ in 0..1024 {
        blob.extend_from_slice(&zeros);
    }
    blob.extend_from_slice(&gzip(&[0; 1024]));
    println!("1 GiB single-file bomb: {} bytes compressed", blob.len());
    let started = Instant::now();
    let err = unpack_layer(
        Cursor::new(blob),
        Compression::Gzip,
        &sb.layer,
        &UnpackLimits {
            max_unpacked_size: Some(10 * MIB as u64),
            min_free_space: None,
            max_expansion_ratio: None,
        },
    )
    .unwrap_err();
    assert!(
        started.elapsed().as_secs() < 5,
        "took {:?}",
        started.elapsed()
    );
    assert!(
        err.to_string()
            .contains("layer exceeds max_unpacked_size (10485760 bytes)"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&sb.layer).unwrap().count(),
        0,
        "nothing written"
    );
    remove_layer_dir(&sb.layer).unwrap();
    assert!(!sb.layer.exists());
}

#[test]
fn one_gib_many_files_bomb_stops_at_the_limit() {
    let sb = sandbox();
    let zeros = gzip_member_of_zeros(MIB);
    let mut blob = Vec::new();
    for i in 0..1024 {
        let mut header = header_bytes(&file(&format!("bomb{i:04}"), b"")).1;
        header.set_size(MIB as u64);
        header.set_cksum();
        blob.extend_from_slice(&gzip(header.as_bytes()));
        blob.extend_from_slice(&zeros);
    }
    blob.extend_from_slice(&gzip(&[0; 1024]));
    println!("1 GiB many-files bomb: {} bytes compressed", blob.len());
    let started = Instant::now();
    let err = unpack_layer(
        Cursor::new(blob),
        Compression::Gzip,
        &sb.layer,
        &UnpackLimits {
            max_unpacked_size: Some(10 * MIB as u64),
            min_free_space: None,
            max_expansion_ratio: None,
        },
    )
    .unwrap_err();
    println!("bomb refused after {:?}: {err}", started.elapsed());
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("\"bomb0010\""), "{err}");
    let written: u64 = fs::read_dir(&sb.layer)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(written, 10 * MIB as u64);
    remove_layer_dir(&sb.layer).unwrap();
    assert!(!sb.layer.exists());
    assert!(sb.victim.join("file").exists());
}

/// A stream of `count` files of `size` zero bytes, made on the fly.
struct ZeroFiles {
    count: usize,
    size: u64,
    next: usize,
    pending: Box<dyn Read>,
}

impl Read for ZeroFiles {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.pending.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            if self.next > self.count {
                return Ok(0);
            }
            if self.next == self.count {
                self.pending = Box::new(Cursor::new(vec![0u8; 1024]));
            } else {
                let mut header = header_bytes(&file(&format!("f{:05}", self.next), b"")).1;
                header.set_size(self.size);
                header.set_cksum();
                self.pending = Box::new(
                    Cursor::new(header.as_bytes().to_vec()).chain(io::repeat(0).take(self.size)),
                );
            }
            self.next += 1;
        }
    }
}

#[test]
fn min_free_space_stops_the_unpack() {
    let sb = sandbox();
    let vfs = rustix::fs::statvfs(&sb.layer).unwrap();
    let available = vfs.f_bavail * vfs.f_frsize;

    // Already below the minimum: fails before anything is written.
    let err = unpack_layer(
        ZeroFiles {
            count: 4,
            size: MIB as u64,
            next: 0,
            pending: Box::new(io::empty()),
        },
        Compression::None,
        &sb.layer,
        &UnpackLimits {
            max_unpacked_size: None,
            min_free_space: Some(available * 2),
            max_expansion_ratio: None,
        },
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::LowSpace { .. }), "{err}");
    assert!(err.to_string().contains("min_free_space"), "{err}");
    assert_eq!(fs::read_dir(&sb.layer).unwrap().count(), 0);

    // 16 MiB of headroom, 256 MiB of files: stops at the first check after crossing it
    // (every 64 MiB), not at the end.
    let err = unpack_layer(
        ZeroFiles {
            count: 256,
            size: MIB as u64,
            next: 0,
            pending: Box::new(io::empty()),
        },
        Compression::None,
        &sb.layer,
        &UnpackLimits {
            max_unpacked_size: None,
            min_free_space: Some(available - 16 * MIB as u64),
            max_expansion_ratio: None,
        },
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::LowSpace { .. }), "{err}");
    let written = fs::read_dir(&sb.layer).unwrap().count();
    println!("min_free_space stopped the unpack after {written} files: {err}");
    assert!(written <= 65, "{written} files written");

    // A single file that would cross the minimum fails before it is written.
    remove_layer_dir(&sb.layer).unwrap();
    fs::create_dir(&sb.layer).unwrap();
    let err = unpack_layer(
        ZeroFiles {
            count: 1,
            size: 128 * MIB as u64,
            next: 0,
            pending: Box::new(io::empty()),
        },
        Compression::None,
        &sb.layer,
        &UnpackLimits {
            max_unpacked_size: None,
            min_free_space: Some(available - 16 * MIB as u64),
            max_expansion_ratio: None,
        },
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::LowSpace { .. }), "{err}");
    assert_eq!(fs::read_dir(&sb.layer).unwrap().count(), 0);
    remove_layer_dir(&sb.layer).unwrap();
}

#[test]
fn remove_layer_dir_handles_read_only_dirs_and_symlinks() {
    let sb = sandbox();
    let victim = sb.victim.to_str().unwrap().to_string();
    let entries = [
        Entry {
            mode: 0o500,
            ..dir("ro/")
        },
        Entry {
            mode: 0o000,
            ..dir("ro/none/")
        },
        Entry {
            mode: 0o400,
            ..file("ro/none/f", b"x")
        },
        symlink("ro/to-victim", &victim),
        Entry {
            mode: 0o500,
            ..dir("./")
        },
    ];
    let before = outside_layer(&sb);
    unpack_layer(
        Cursor::new(tar(&entries)),
        Compression::None,
        &sb.layer,
        &limits(),
    )
    .unwrap();
    assert_eq!(fs::metadata(&sb.layer).unwrap().mode() & 0o777, 0o500);
    remove_layer_dir(&sb.layer).unwrap();
    assert!(!sb.layer.exists());
    assert_eq!(before, outside_layer(&sb));
    // Missing is fine.
    remove_layer_dir(&sb.layer).unwrap();
}

#[test]
fn corrupt_streams_fail_cleanly() {
    let sb = sandbox();
    let layer = tar(&[file("a", b"data")]);
    let mut truncated = gzip(&layer);
    truncated.truncate(truncated.len() / 2);
    let err = unpack_layer(
        Cursor::new(truncated),
        Compression::Gzip,
        &sb.layer,
        &limits(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::Stream(_)), "{err}");
    let err = unpack_layer(
        Cursor::new(b"not zstd at all".to_vec()),
        Compression::Zstd,
        &sb.layer,
        &limits(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::Stream(_)), "{err}");
    remove_layer_dir(&sb.layer).unwrap();
}

#[test]
fn empty_numeric_header_fields_read_as_zero() {
    // tar::Builder leaves uid/gid/mtime empty unless told; Go and GNU tar read them as 0.
    let sb = sandbox();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = Header::new_ustar();
    header.set_entry_type(EntryType::Regular);
    header.set_size(2);
    header.set_mode(0o640);
    builder.append_data(&mut header, "f", &b"ok"[..]).unwrap();
    let layer = builder.into_inner().unwrap();
    let stats = unpack_layer(Cursor::new(&layer), Compression::None, &sb.layer, &limits()).unwrap();
    let meta = fs::metadata(sb.layer.join("f")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777, meta.mtime()),
        (0, 0, 0o640, 0)
    );
    assert_eq!(stats.diff_id, sha256(&layer));
    remove_layer_dir(&sb.layer).unwrap();
}
