//! The sync channel between the shim and init: a socketpair, init's end at fd 3.
//!
//! init → shim: one JSON line, `{"created":{"pid":N}}` or `{"error":"step: reason"}`.
//! shim → init: `start\n` opens the start gate. init's end is close-on-exec, so after
//! `start` the shim sees EOF once the workload was exec'd, or an error line if the exec
//! failed.

use serde::{Deserialize, Serialize};

/// The fd number init finds its end of the sync socket at.
pub const SYNC_FD: i32 = 3;

/// The line the shim sends to open the start gate.
pub const START: &[u8] = b"start\n";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitMessage {
    Created { pid: i32 },
    Error(String),
}

impl InitMessage {
    /// One JSON line.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line =
            serde_json::to_vec(self).unwrap_or_else(|_| b"{\"error\":\"encode\"}".to_vec());
        line.push(b'\n');
        line
    }

    pub fn parse(line: &str) -> Result<InitMessage, serde_json::Error> {
        serde_json::from_str(line.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_wire_form() {
        assert_eq!(
            InitMessage::Created { pid: 42 }.to_line(),
            b"{\"created\":{\"pid\":42}}\n"
        );
        assert_eq!(
            InitMessage::Error("mount /proc: permission denied".into()).to_line(),
            b"{\"error\":\"mount /proc: permission denied\"}\n"
        );
        assert_eq!(
            InitMessage::parse("{\"created\":{\"pid\":7}}\n").unwrap(),
            InitMessage::Created { pid: 7 }
        );
    }
}
