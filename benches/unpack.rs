//! Layer unpack throughput: berth's `unpack_layer` (gunzip + sha256 diff_id + confined
//! extraction + syncfs) against `gzip -dc L | tar -x -C DIR` on the same generated layer.
//! Run: `cargo bench --bench unpack` (root, for chown). Prints the median of RUNS runs.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth::image::unpack::{Compression, UnpackLimits, remove_layer_dir, unpack_layer};

const RUNS: usize = 5;
const FILES: usize = 2400;

/// xorshift64*: deterministic content without a rand dependency on the hot path.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A layer shaped like a distro image: many small files, some medium, a few large ones,
/// with content that gzip shrinks to roughly 55%.
fn make_layer(path: &Path) -> u64 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let out = BufWriter::new(File::create(path).unwrap());
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    let mut total = 0u64;
    const ALPHABET: &[u8; 16] = b"etaoinshrdlucmf ";
    for d in 0..60 {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(1_600_000_000);
        builder
            .append_data(&mut header, format!("usr/share/d{d:02}/"), std::io::empty())
            .unwrap();
    }
    for f in 0..FILES {
        let size = match rng.below(100) {
            0..60 => 512 + rng.below(8 << 10),
            60..95 => (8 << 10) + rng.below(56 << 10),
            _ => (128 << 10) + rng.below(896 << 10),
        } as usize;
        let mut data = vec![0u8; size];
        for chunk in data.chunks_mut(16) {
            let mut bits = rng.next();
            for byte in chunk {
                *byte = ALPHABET[(bits & 15) as usize];
                bits >>= 4;
            }
        }
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(size as u64);
        header.set_mtime(1_600_000_000);
        builder
            .append_data(
                &mut header,
                format!("usr/share/d{:02}/file{f:05}", f % 60),
                &data[..],
            )
            .unwrap();
        total += size as u64;
    }
    let gz = builder.into_inner().unwrap();
    gz.finish().unwrap().flush().unwrap();
    total
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn sync() {
    assert!(Command::new("sync").status().unwrap().success());
}

fn main() {
    let work =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or("/var/tmp".into())).unwrap();
    let layer = work.path().join("layer.tar.gz");
    let bytes = make_layer(&layer);
    let blob = fs::metadata(&layer).unwrap().len();
    println!(
        "layer: {FILES} files + 60 dirs, {:.1} MiB uncompressed, {:.1} MiB gzip",
        bytes as f64 / 1048576.0,
        blob as f64 / 1048576.0
    );

    let (mut berth, mut tar, mut tar_sync) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        let dest = work.path().join(format!("berth{run}"));
        fs::create_dir(&dest).unwrap();
        sync();
        let started = Instant::now();
        let stats = unpack_layer(
            File::open(&layer).unwrap(),
            Compression::Gzip,
            &dest,
            &UnpackLimits::default(),
        )
        .unwrap();
        berth.push(started.elapsed());
        assert_eq!(stats.bytes, bytes);
        remove_layer_dir(&dest).unwrap();

        let dest = work.path().join(format!("tar{run}"));
        fs::create_dir(&dest).unwrap();
        sync();
        let started = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(r#"gzip -dc "$1" | tar -x -C "$2""#)
            .arg("sh")
            .arg(&layer)
            .arg(&dest)
            .status()
            .unwrap();
        assert!(status.success());
        tar.push(started.elapsed());
        let dir = File::open(&dest).unwrap();
        rustix::fs::syncfs(&dir).unwrap();
        tar_sync.push(started.elapsed());
        remove_layer_dir(&dest).unwrap();
    }
    let report = |name: &str, runs: Vec<Duration>| {
        let m = median(runs);
        println!(
            "{name:<34} median {:>7.1} ms  {:>6.0} MiB/s (uncompressed)",
            m.as_secs_f64() * 1000.0,
            bytes as f64 / 1048576.0 / m.as_secs_f64()
        );
    };
    report("berth unpack_layer (+sha256, syncfs)", berth);
    report("gzip -dc | tar -x", tar);
    report("gzip -dc | tar -x, then syncfs", tar_sync);
}
