//! The CRI container log, as the kubelet reads it: one record per line,
//! `<RFC3339 UTC timestamp with nanoseconds> <stdout|stderr> <F|P> <content>\n`.
//!
//! A line longer than [`MAX_RECORD`] bytes is cut into `P` (partial) records of exactly
//! that size followed by the `F` (full) rest; a trailing `\r` before the newline is
//! dropped (tty output ends lines with `\r\n`); an unterminated line at EOF is written as
//! `P` (as containerd does), and nothing after it. Data that has not reached a newline
//! stays buffered in the stream's [`LineSplitter`], so reopening the file moves no line
//! and loses none: complete records go to whichever file is open when they complete.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The kubelet's (and containerd's default) maximum record content length.
pub const MAX_RECORD: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// `F`: the record ends a line; `P`: the line goes on in the next record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Full,
    Partial,
}

impl Tag {
    fn as_str(self) -> &'static str {
        match self {
            Tag::Full => "F",
            Tag::Partial => "P",
        }
    }
}

/// Cuts one stream's bytes into record contents. Holds at most `max` bytes of an
/// unfinished line between calls.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        LineSplitter {
            pending: Vec::new(),
            max: max.max(1),
        }
    }

    /// Bytes of an unfinished line waiting for more data.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Feeds a chunk as read from the stream; `emit` gets each finished record.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(Tag, &[u8])) {
        while let Some(newline) = data.iter().position(|b| *b == b'\n') {
            let (head, rest) = data.split_at(newline);
            data = &rest[1..];
            if self.pending.is_empty() {
                emit_line(head, self.max, emit);
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(head);
                emit_line(&line, self.max, emit);
                line.clear();
                self.pending = line;
            }
        }
        if !data.is_empty() {
            self.pending.extend_from_slice(data);
            // Never hold more than one record's worth: cut P records at `max` from the
            // start of the line, so the cuts fall where they would with the whole line.
            let mut start = 0;
            while self.pending.len() - start > self.max {
                emit(Tag::Partial, &self.pending[start..start + self.max]);
                start += self.max;
            }
            self.pending.drain(..start);
        }
        // A burst of long lines should not leave its buffer behind in an idle shim.
        if self.pending.is_empty() && self.pending.capacity() > 4096 {
            self.pending = Vec::new();
        }
    }

    /// End of stream: an unfinished line is written as a last `P` record.
    pub fn finish(&mut self, emit: &mut impl FnMut(Tag, &[u8])) {
        if !self.pending.is_empty() {
            emit(Tag::Partial, &self.pending);
        }
        self.pending = Vec::new();
    }
}

/// One whole line (without its `\n`): P records of `max` bytes while more than `max`
/// remain, then F with the rest (possibly empty: an empty line is an empty F record).
fn emit_line(line: &[u8], max: usize, emit: &mut impl FnMut(Tag, &[u8])) {
    let mut line = line.strip_suffix(b"\r").unwrap_or(line);
    while line.len() > max {
        let (head, rest) = line.split_at(max);
        emit(Tag::Partial, head);
        line = rest;
    }
    emit(Tag::Full, line);
}

/// Appends one record to `out`.
pub fn append_record(out: &mut Vec<u8>, timestamp: &str, stream: Stream, tag: Tag, content: &[u8]) {
    out.reserve(timestamp.len() + content.len() + 12);
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(tag.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// `2016-10-06T00:17:09.669794202Z`: UTC, always nine fraction digits (the kubelet
/// parses RFC3339Nano, which takes any number; a fixed width keeps records sortable).
pub fn rfc3339_nano(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (counting in 400-year eras that start on March 1st, so leap days fall at era ends).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The open log file of one process, shared by its stdout and stderr readers.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    /// A failed write is reported once per opened file, not once per line.
    write_failed: bool,
}

impl LogFile {
    /// Opens `path` for appending (mode 0640), creating it and its parent directory.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: open_append(path)?,
            write_failed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the path again (the kubelet renamed the old file away). The old file is
    /// kept if the new one cannot be opened.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = open_append(&self.path)?;
        self.write_failed = false;
        Ok(())
    }

    /// Writes whole records. Inline and blocking: the file is local and the writes are
    /// small, and a blocking pool would cost every pod threads (see shared.rs).
    pub fn write_records(&mut self, records: &[u8]) {
        if let Err(e) = self.file.write_all(records)
            && !self.write_failed
        {
            self.write_failed = true;
            tracing::warn!(path = %self.path.display(), error = %e, "write container log");
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(splitter: &mut LineSplitter, chunks: &[&[u8]], eof: bool) -> Vec<(Tag, Vec<u8>)> {
        let mut out = Vec::new();
        let mut emit = |tag: Tag, content: &[u8]| out.push((tag, content.to_vec()));
        for chunk in chunks {
            splitter.feed(chunk, &mut emit);
        }
        if eof {
            splitter.finish(&mut emit);
        }
        out
    }

    fn full(s: &str) -> (Tag, Vec<u8>) {
        (Tag::Full, s.as_bytes().to_vec())
    }

    fn partial(s: &str) -> (Tag, Vec<u8>) {
        (Tag::Partial, s.as_bytes().to_vec())
    }

    #[test]
    fn lines_become_full_records_across_chunk_boundaries() {
        let mut splitter = LineSplitter::new(MAX_RECORD);
        let got = records(&mut splitter, &[b"one\ntw", b"o\n\nthr", b"ee\n"], false);
        assert_eq!(got, vec![full("one"), full("two"), full(""), full("three")]);
        assert!(splitter.pending().is_empty());
    }

    #[test]
    fn an_unterminated_line_is_held_until_eof_then_written_as_partial() {
        let mut splitter = LineSplitter::new(MAX_RECORD);
        assert_eq!(
            records(&mut splitter, &[b"out\npart"], false),
            vec![full("out")]
        );
        assert_eq!(splitter.pending(), b"part");
        assert_eq!(
            records(&mut splitter, &[b"ial"], true),
            vec![partial("partial")]
        );
        assert_eq!(records(&mut splitter, &[], true), vec![]);
    }

    #[test]
    fn long_lines_split_into_partials_of_the_maximum_then_full() {
        let line = "a".repeat(40 * 1024);
        let mut splitter = LineSplitter::new(MAX_RECORD);
        let got = records(&mut splitter, &[format!("{line}\n").as_bytes()], false);
        let sizes: Vec<(Tag, usize)> = got.iter().map(|(t, c)| (*t, c.len())).collect();
        assert_eq!(
            sizes,
            vec![
                (Tag::Partial, MAX_RECORD),
                (Tag::Partial, MAX_RECORD),
                (Tag::Full, 40 * 1024 - 2 * MAX_RECORD)
            ]
        );
    }

    #[test]
    fn splits_fall_at_the_same_places_whatever_the_chunking() {
        let text = format!("{}\n{}\nend", "x".repeat(10), "y".repeat(7));
        let whole = records(&mut LineSplitter::new(4), &[text.as_bytes()], true);
        assert_eq!(
            whole,
            vec![
                partial("xxxx"),
                partial("xxxx"),
                full("xx"),
                partial("yyyy"),
                full("yyy"),
                partial("end")
            ]
        );
        for size in 1..text.len() {
            let chunks: Vec<&[u8]> = text.as_bytes().chunks(size).collect();
            let got = records(&mut LineSplitter::new(4), &chunks, true);
            assert_eq!(got, whole, "chunk size {size}");
        }
    }

    #[test]
    fn a_line_of_exactly_the_maximum_is_one_full_record() {
        let got = records(&mut LineSplitter::new(4), &[b"abcd\nabcdefgh\n"], false);
        assert_eq!(got, vec![full("abcd"), partial("abcd"), full("efgh")]);
    }

    #[test]
    fn carriage_returns_before_newlines_are_dropped() {
        let got = records(
            &mut LineSplitter::new(MAX_RECORD),
            &[b"tty\r\nin\rside\r\n"],
            false,
        );
        assert_eq!(got, vec![full("tty"), full("in\rside")]);
    }

    #[test]
    fn records_have_the_kubelet_format() {
        let mut out = Vec::new();
        let ts = rfc3339_nano(1_475_713_029_669_794_202);
        append_record(&mut out, &ts, Stream::Stdout, Tag::Full, b"log content");
        append_record(&mut out, &ts, Stream::Stderr, Tag::Partial, b"");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2016-10-06T00:17:09.669794202Z stdout F log content\n\
             2016-10-06T00:17:09.669794202Z stderr P \n"
        );
    }

    #[test]
    fn timestamps_are_utc_with_nine_fraction_digits() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nano(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(
            rfc3339_nano(4_107_542_400 * 1_000_000_000 - 1),
            "2100-02-28T23:59:59.999999999Z"
        );
        assert_eq!(rfc3339_nano(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn reopen_starts_a_new_file_and_keeps_the_pending_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/0.log");
        let mut log = LogFile::open(&path).unwrap();
        let mut splitter = LineSplitter::new(MAX_RECORD);
        let write = |log: &mut LogFile, splitter: &mut LineSplitter, data: &[u8]| {
            let mut out = Vec::new();
            splitter.feed(data, &mut |tag, content| {
                append_record(&mut out, "T", Stream::Stdout, tag, content)
            });
            log.write_records(&out);
        };
        write(&mut log, &mut splitter, b"first\nsec");
        std::fs::rename(&path, dir.path().join("sub/0.log.1")).unwrap();
        log.reopen().unwrap();
        write(&mut log, &mut splitter, b"ond\nthird\n");
        let old = std::fs::read_to_string(dir.path().join("sub/0.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old, "T stdout F first\n");
        assert_eq!(new, "T stdout F second\nT stdout F third\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640 & !current_umask());
    }

    fn current_umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
            .unwrap_or(0o022)
    }
}
