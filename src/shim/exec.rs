//! ExecSync's pure parts: the exec's `process` JSON (the container's, with other args),
//! output capped per stream, and the processes an exec started (to kill at its deadline).

use serde_json::Value;

/// The most ExecSync output (stdout and stderr together) one answer carries: the kubelet
/// takes CRI messages up to 16 MiB, less room for the rest of the message.
pub const EXEC_SYNC_OUTPUT_LIMIT: usize = 16 * 1024 * 1024 - 4096;

/// Output kept per stream; the rest is read (so the writer never blocks), counted and
/// dropped. Past it the answer cannot fit anyway.
pub(super) const MAX_OUTPUT: usize = EXEC_SYNC_OUTPUT_LIMIT;

/// ExecSync output that does not fit one CRI answer. It is refused whole rather than cut,
/// so a caller never mistakes part of the output for all of it (containerd refuses too).
#[derive(Debug, thiserror::Error)]
#[error(
    "the command wrote {} bytes of output (stdout {stdout}, stderr {stderr}), more than \
     the {limit} bytes an ExecSync answer can carry (the CRI's 16 MiB message limit); a \
     streaming exec has no limit",
    stdout + stderr
)]
pub struct ExecOutputTooLarge {
    pub stdout: u64,
    pub stderr: u64,
    pub limit: usize,
}

/// Whether `stdout` + `stderr` bytes of output fit one ExecSync answer.
pub fn check_exec_sync_output(stdout: u64, stderr: u64) -> Result<(), ExecOutputTooLarge> {
    let limit = EXEC_SYNC_OUTPUT_LIMIT;
    if stdout.saturating_add(stderr) > limit as u64 {
        return Err(ExecOutputTooLarge {
            stdout,
            stderr,
            limit,
        });
    }
    Ok(())
}

/// The OCI `process` of an exec: the container's own (env, cwd, user, capabilities,
/// rlimits, no_new_privileges ...) with `args` replaced, with or without a terminal.
pub(super) fn exec_process(config: &Value, args: &[String], tty: bool) -> Result<Value, String> {
    let mut process = config
        .get("process")
        .filter(|p| p.is_object())
        .cloned()
        .ok_or_else(|| "the container's config.json has no process".to_string())?;
    if let Some(fields) = process.as_object_mut() {
        fields.insert("args".into(), Value::from(args.to_vec()));
        fields.insert("terminal".into(), Value::Bool(tty));
        fields.remove("consoleSize");
        // Only one process of a container holds the command line of the container.
        fields.remove("commandLine");
    }
    Ok(process)
}

/// A stream's output, at most `cap` bytes of it; whether more came, and how much in all.
#[derive(Debug, Default)]
pub(super) struct CappedOutput {
    pub data: Vec<u8>,
    pub truncated: bool,
    /// Every byte the stream carried, kept or not.
    pub written: u64,
    cap: usize,
}

impl CappedOutput {
    pub fn new(cap: usize) -> Self {
        CappedOutput {
            data: Vec::new(),
            truncated: false,
            written: 0,
            cap,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.written += chunk.len() as u64;
        let room = self.cap.saturating_sub(self.data.len());
        let keep = chunk.len().min(room);
        self.data.extend_from_slice(&chunk[..keep]);
        if keep < chunk.len() {
            self.truncated = true;
        }
    }
}

/// Every descendant of `pid` (children first found through
/// /proc/<pid>/task/*/children), not `pid` itself.
pub(super) fn descendants(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for child in children(parent) {
            // A pid cycle cannot happen, but a reused pid could confuse the walk.
            if child != pid && !found.contains(&child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| parse_pids(&text))
        .collect()
}

fn parse_pids(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exec_runs_as_the_container_process_with_other_args() {
        let config: Value = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","process":{"terminal":true,"consoleSize":{"height":1,"width":2},
                "user":{"uid":1000,"gid":1000,"additionalGids":[10]},"args":["/bin/server","-x"],
                "env":["PATH=/bin","A=b"],"cwd":"/work","capabilities":{"bounding":["CAP_KILL"]},
                "noNewPrivileges":true},"root":{"path":"rootfs"}}"#,
        )
        .unwrap();
        let process =
            exec_process(&config, &["sh".into(), "-c".into(), "id".into()], false).unwrap();
        let expected: Value = serde_json::from_str(
            r#"{"terminal":false,"user":{"uid":1000,"gid":1000,"additionalGids":[10]},
                "args":["sh","-c","id"],"env":["PATH=/bin","A=b"],"cwd":"/work",
                "capabilities":{"bounding":["CAP_KILL"]},"noNewPrivileges":true}"#,
        )
        .unwrap();
        assert_eq!(process, expected);
        // It is a valid OCI process.
        let parsed: oci_spec::runtime::Process = serde_json::from_value(process).unwrap();
        assert_eq!(parsed.cwd().to_str(), Some("/work"));
        assert_eq!(parsed.user().uid(), 1000);
    }

    #[test]
    fn a_config_without_process_is_an_error() {
        let config: Value = serde_json::from_str(r#"{"ociVersion":"1.0.2"}"#).unwrap();
        assert!(exec_process(&config, &["true".into()], false).is_err());
    }

    #[test]
    fn output_is_capped_and_the_overflow_flagged() {
        let mut out = CappedOutput::new(10);
        out.push(b"hello");
        assert!(!out.truncated);
        out.push(b"world");
        assert_eq!(out.data, b"helloworld");
        assert!(!out.truncated, "exactly at the cap is not truncated");
        out.push(b"!");
        assert_eq!(out.data, b"helloworld");
        assert!(out.truncated);

        let mut big = CappedOutput::new(4);
        big.push(b"abcdef");
        assert_eq!(big.data, b"abcd");
        assert!(big.truncated);
        assert_eq!(big.written, 6, "dropped bytes are still counted");
    }

    #[test]
    fn exec_sync_output_over_the_cri_limit_is_refused_with_its_size() {
        let limit = EXEC_SYNC_OUTPUT_LIMIT as u64;
        assert!(check_exec_sync_output(limit, 0).is_ok());
        assert!(check_exec_sync_output(limit - 10, 10).is_ok());
        assert!(check_exec_sync_output(15 << 20, 0).is_ok());
        let err = check_exec_sync_output(10 << 20, 10 << 20).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("wrote 20971520 bytes"), "{text}");
        assert!(text.contains("stdout 10485760, stderr 10485760"), "{text}");
        assert!(text.contains(&format!("the {limit} bytes")), "{text}");
        assert!(check_exec_sync_output(limit, 1).is_err(), "one byte over");
        assert!(check_exec_sync_output(u64::MAX, u64::MAX).is_err());
    }

    #[test]
    fn descendants_are_found_through_proc() {
        assert_eq!(parse_pids("12 13 \n"), vec![12, 13]);
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut found = Vec::new();
        for _ in 0..200 {
            found = descendants(pid);
            if found.len() >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for p in &found {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.len(), 2, "both sleeps: {found:?}");
    }
}
