//! Keeping the long-lived per-pod processes (shim, pause) small.
//!
//! They run the same large binary as the daemon. The kernel maps file pages around every
//! page fault ("fault-around", 64 KiB at a time), so a process that ran a little of the
//! binary shows most of it as resident. Once such a process is idle, dropping the clean file
//! pages it has mapped (MADV_DONTNEED) leaves only what it touches again. Only pages that
//! are exact copies of the file are dropped: relocated data (private, dirty, anonymous
//! copies) is kept, since dropping it would lose the relocations.

use std::io;

/// One line of /proc/self/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    pub perms: String,
    pub inode: u64,
    pub path: String,
}

impl Mapping {
    fn file_backed(&self) -> bool {
        self.inode != 0
    }

    /// Code: executable and never writable, so all its pages are clean copies of the file.
    fn clean_code(&self) -> bool {
        self.file_backed() && self.perms.starts_with("r-x")
    }

    /// Read-only file data: clean except where the loader relocated it (RELRO).
    fn read_only_data(&self) -> bool {
        self.file_backed() && self.perms.starts_with("r--")
    }
}

pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?.to_string();
            let _offset = fields.next()?;
            let _dev = fields.next()?;
            let inode = fields.next()?.parse().ok()?;
            let path = fields.collect::<Vec<_>>().join(" ");
            Some(Mapping {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
                perms,
                inode,
                path,
            })
        })
        .collect()
}

/// The mappings `trim_idle_pages` drops whole (code), and those it drops page by page,
/// keeping the private copies (read-only data).
pub fn trim_plan(maps: &[Mapping]) -> (Vec<&Mapping>, Vec<&Mapping>) {
    let whole = maps.iter().filter(|m| m.clean_code()).collect();
    let by_page = maps.iter().filter(|m| m.read_only_data()).collect();
    (whole, by_page)
}

const PAGEMAP_PRESENT: u64 = 1 << 63;
const PAGEMAP_SWAPPED: u64 = 1 << 62;
const PAGEMAP_FILE_OR_SHARED: u64 = 1 << 61;

/// Runs of pages (first index, count) that may be dropped: every page but the private
/// anonymous copies (present and not file-backed, or swapped out).
pub fn droppable_runs(pagemap: &[u64]) -> Vec<(usize, usize)> {
    let keep = |e: u64| {
        e & PAGEMAP_SWAPPED != 0 || (e & PAGEMAP_PRESENT != 0 && e & PAGEMAP_FILE_OR_SHARED == 0)
    };
    let mut runs = Vec::new();
    let mut start = None;
    for (i, &entry) in pagemap.iter().enumerate() {
        match (keep(entry), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                runs.push((s, i - s));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, pagemap.len() - s));
    }
    runs
}

fn drop_range(start: usize, len: usize) {
    // SAFETY: the caller passes only clean file pages of our own mappings: dropping them
    // loses nothing, the next access reads them back from the page cache.
    unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
}

/// Drops the resident clean file pages of this process (code and unrelocated read-only
/// data). Best effort: what cannot be read or advised is left as it is.
pub fn trim_idle_pages() -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let maps = parse_maps(&std::fs::read_to_string("/proc/self/maps")?);
    let (whole, by_page) = trim_plan(&maps);
    for m in whole {
        drop_range(m.start, m.end - m.start);
    }
    let page = 4096usize;
    let pagemap = std::fs::File::open("/proc/self/pagemap")?;
    for m in by_page {
        let pages = (m.end - m.start) / page;
        let mut raw = vec![0u8; pages * 8];
        if pagemap
            .read_exact_at(&mut raw, (m.start / page * 8) as u64)
            .is_err()
        {
            continue;
        }
        let entries: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        for (first, count) in droppable_runs(&entries) {
            drop_range(m.start + first * page, count * page);
        }
    }
    Ok(())
}

/// Gives the heap's free memory back to the kernel (glibc keeps freed chunks mapped, so a
/// burst of pods that came and went stays in RSS), then drops the clean file pages as
/// [`trim_idle_pages`] does. For a process that has just gone quiet.
pub fn release_idle_memory() -> io::Result<()> {
    // SAFETY: malloc_trim takes the allocator's own locks; any thread may call it.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
    trim_idle_pages()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0aa4000 r--p 00000000 fe:00 1311 /usr/bin/berth
55d0c0aa4000-55d0c127b000 r-xp 000a4000 fe:00 1311 /usr/bin/berth
55d0c127b000-55d0c1400000 r--p 0087b000 fe:00 1311 /usr/bin/berth
55d0c1400000-55d0c1480000 rw-p 00a00000 fe:00 1311 /usr/bin/berth
55d0c2000000-55d0c2021000 rw-p 00000000 00:00 0 [heap]
7f1a2c000000-7f1a2c028000 r--p 00000000 fe:00 2000 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1a2c028000-7f1a2c1bd000 r-xp 00028000 fe:00 2000 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd7e9d4000-7ffd7e9f5000 rw-p 00000000 00:00 0 [stack]
7ffd7e9f9000-7ffd7e9fb000 r-xp 00000000 00:00 0 [vdso]
7f1a2c300000-7f1a2c301000 r--p 00000000 00:1a 77 /memfd:x (deleted)
";

    #[test]
    fn parses_every_field_including_paths_with_spaces() {
        let maps = parse_maps(MAPS);
        assert_eq!(maps.len(), 10);
        assert_eq!(maps[1].start, 0x55d0c0aa4000);
        assert_eq!(maps[1].perms, "r-xp");
        assert_eq!(maps[1].inode, 1311);
        assert_eq!(maps[9].path, "/memfd:x (deleted)");
    }

    #[test]
    fn code_is_dropped_whole_read_only_data_by_page_and_anonymous_memory_never() {
        let maps = parse_maps(MAPS);
        let (whole, by_page) = trim_plan(&maps);
        let whole: Vec<_> = whole.iter().map(|m| (m.path.as_str(), m.start)).collect();
        assert_eq!(
            whole,
            vec![
                ("/usr/bin/berth", 0x55d0c0aa4000),
                ("/usr/lib/x86_64-linux-gnu/libc.so.6", 0x7f1a2c028000)
            ]
        );
        assert_eq!(by_page.len(), 4);
        assert!(by_page.iter().all(|m| m.perms == "r--p" && m.inode != 0));
    }

    #[test]
    fn relocated_and_swapped_pages_are_kept() {
        let file = PAGEMAP_PRESENT | PAGEMAP_FILE_OR_SHARED;
        let anon = PAGEMAP_PRESENT;
        let absent = 0;
        let swapped = PAGEMAP_SWAPPED;
        let pagemap = [file, file, anon, absent, file, swapped, file, absent];
        assert_eq!(droppable_runs(&pagemap), vec![(0, 2), (3, 2), (6, 2)]);
        assert_eq!(droppable_runs(&[anon, anon]), vec![]);
        assert_eq!(droppable_runs(&[file]), vec![(0, 1)]);
    }

    #[test]
    fn trimming_ourselves_keeps_the_process_working() {
        // Relocated read-only data (vtables, string tables) must survive: formatting and
        // dynamic dispatch use them right after.
        trim_idle_pages().unwrap();
        let boxed: Box<dyn Fn(u32) -> String> = Box::new(|x| format!("{}", x + 2));
        assert_eq!(boxed(40), "42");
        trim_idle_pages().unwrap();
        assert_eq!(
            std::fs::read_to_string("/proc/self/comm")
                .map(|s| !s.is_empty())
                .ok(),
            Some(true)
        );
    }

    fn anonymous_kib() -> u64 {
        let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
        rollup
            .lines()
            .find_map(|l| l.strip_prefix("Anonymous:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn freed_heap_kept_by_the_allocator_is_given_back() {
        // The measure is of the whole process: it runs alone, in a fresh copy of this test
        // binary, so other tests' allocations cannot blur it.
        const ALONE: &str = "BERTH_TEST_MEMORY_ALONE";
        if std::env::var_os(ALONE).is_none() {
            let name = "linux::memory::tests::freed_heap_kept_by_the_allocator_is_given_back";
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([name, "--exact", "--test-threads=1", "--nocapture"])
                .env(ALONE, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
            return;
        }
        // 64 MiB in chunks below the mmap threshold, then a live chunk after them so that
        // freeing them leaves a hole the allocator keeps rather than a top it trims.
        let chunks: Vec<Vec<u8>> = (0..1024).map(|i| vec![i as u8; 64 * 1024]).collect();
        let guard = vec![1u8; 1024];
        drop(chunks);
        let kept = anonymous_kib();
        release_idle_memory().unwrap();
        let released = anonymous_kib();
        assert!(
            kept.saturating_sub(released) > 32 * 1024,
            "anonymous memory {kept} kB before, {released} kB after"
        );
        assert_eq!(guard[0], 1);
    }
}
