//! The Kubernetes stream protocols: which versions berth speaks, how one is chosen, and what
//! the error channel carries at the end of an exec or attach.

use serde_json::json;

/// Remote command (exec, attach) protocol versions. Later versions only add: v2 an error
/// stream, v3 window resizes, v4 a JSON status on the error stream, v5 (WebSocket) a
/// signal that closes one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V1,
    V2,
    V3,
    V4,
    V5,
}

impl Version {
    pub fn has_resize(self) -> bool {
        self >= Version::V3
    }

    pub fn json_status(self) -> bool {
        self >= Version::V4
    }
}

/// SPDY exec/attach protocols, by name.
const SPDY_REMOTE_COMMAND: &[(&str, Version)] = &[
    ("v5.channel.k8s.io", Version::V5),
    ("v4.channel.k8s.io", Version::V4),
    ("v3.channel.k8s.io", Version::V3),
    ("v2.channel.k8s.io", Version::V2),
    ("channel.k8s.io", Version::V1),
];

pub const PORT_FORWARD: &str = "portforward.k8s.io";
/// Port-forward tunneled through WebSocket: SPDY framing inside binary messages.
pub const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// How WebSocket messages carry channel data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Binary messages: the channel byte, then the data.
    Binary,
    /// Text messages: the channel as an ASCII digit, then the data in base64.
    Base64,
}

/// WebSocket exec/attach protocols. The empty name is a client that asked for none.
const WS_REMOTE_COMMAND: &[(&str, Version, Encoding)] = &[
    ("v5.channel.k8s.io", Version::V5, Encoding::Binary),
    ("v4.channel.k8s.io", Version::V4, Encoding::Binary),
    ("v4.base64.channel.k8s.io", Version::V4, Encoding::Base64),
    ("channel.k8s.io", Version::V1, Encoding::Binary),
    ("base64.channel.k8s.io", Version::V1, Encoding::Base64),
];

/// WebSocket port-forward with channel framing (two channels per port): whether the first
/// message of each channel carries the port number.
const WS_PORT_FORWARD: &[(&str, bool, Encoding)] = &[
    ("v4.portforward.k8s.io", true, Encoding::Binary),
    ("v4.channel.k8s.io", true, Encoding::Binary),
    ("v4.base64.channel.k8s.io", true, Encoding::Base64),
    ("portforward.k8s.io", true, Encoding::Binary),
    ("channel.k8s.io", false, Encoding::Binary),
    ("base64.channel.k8s.io", false, Encoding::Base64),
];

/// The protocols a client offers, from its (possibly repeated, comma-separated) headers.
pub fn offered<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// The client's most preferred protocol that berth speaks (the client's order wins, as in
/// the kubelet).
fn pick<T: Copy>(offered: &[&str], table: &[(&'static str, T)]) -> Option<(&'static str, T)> {
    offered
        .iter()
        .find_map(|name| table.iter().find(|(known, _)| known == name).copied())
}

/// SPDY exec/attach. No protocol header at all means the oldest version.
pub fn spdy_remote_command(offered: &[&str]) -> Option<(&'static str, Version)> {
    if offered.is_empty() {
        return Some(("", Version::V1));
    }
    pick(offered, SPDY_REMOTE_COMMAND)
}

pub fn spdy_port_forward(offered: &[&str]) -> Option<&'static str> {
    (offered.is_empty() || offered.contains(&PORT_FORWARD)).then_some(PORT_FORWARD)
}

/// Every protocol name berth accepts for SPDY exec/attach (for a refusal's header).
pub fn spdy_remote_command_names() -> Vec<&'static str> {
    SPDY_REMOTE_COMMAND.iter().map(|(name, _)| *name).collect()
}

pub fn ws_remote_command(offered: &[&str]) -> Option<(&'static str, Version, Encoding)> {
    if offered.is_empty() {
        return Some(("", Version::V1, Encoding::Binary));
    }
    offered.iter().find_map(|name| {
        WS_REMOTE_COMMAND
            .iter()
            .find(|(known, _, _)| known == name)
            .copied()
    })
}

/// WebSocket port-forward: the SPDY tunnel, or channel framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsPortForward {
    Tunnel,
    Channels {
        port_prefix: bool,
        encoding: Encoding,
    },
}

pub fn ws_port_forward(offered: &[&str]) -> Option<(&'static str, WsPortForward)> {
    if offered.is_empty() {
        return Some((
            "",
            WsPortForward::Channels {
                port_prefix: false,
                encoding: Encoding::Binary,
            },
        ));
    }
    offered.iter().find_map(|name| {
        if *name == PORT_FORWARD_TUNNEL {
            return Some((PORT_FORWARD_TUNNEL, WsPortForward::Tunnel));
        }
        WS_PORT_FORWARD
            .iter()
            .find(|(known, _, _)| known == name)
            .map(|(known, port_prefix, encoding)| {
                (
                    *known,
                    WsPortForward::Channels {
                        port_prefix: *port_prefix,
                        encoding: *encoding,
                    },
                )
            })
    })
}

/// How a remote command ended, as the client is told on the error channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    /// It could not run, or the stream broke: the message says why.
    Failed(String),
}

/// The error channel's content for `outcome`, or nothing (success before v4, where
/// silence means success).
pub fn error_channel_message(version: Version, outcome: &Outcome) -> Option<Vec<u8>> {
    let text = match outcome {
        Outcome::Exited(0) => None,
        Outcome::Exited(code) => Some(format!(
            "command terminated with non-zero exit code: exit status {code}"
        )),
        Outcome::Failed(message) => Some(message.clone()),
    };
    if !version.json_status() {
        return text.map(String::into_bytes);
    }
    // A metav1.Status, as the kubelet writes it; clients take the exit code from the
    // ExitCode cause.
    let status = match outcome {
        Outcome::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": text,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(message) => json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "details": {"causes": [{"message": message}]},
            "code": 500,
        }),
    };
    serde_json::to_vec(&status).ok()
}

/// Window sizes as clients send them on the resize channel: a stream of JSON objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Splits the resize channel's bytes into sizes; keeps an incomplete object for later.
/// Garbage is dropped (a bad size must not end the session).
#[derive(Debug, Default)]
pub struct ResizeDecoder {
    pending: Vec<u8>,
}

/// Longest resize message kept while incomplete.
const MAX_RESIZE_MESSAGE: usize = 4096;

impl ResizeDecoder {
    pub fn feed(&mut self, data: &[u8]) -> Vec<TerminalSize> {
        self.pending.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut consumed = 0;
        let mut stream =
            serde_json::Deserializer::from_slice(&self.pending).into_iter::<serde_json::Value>();
        loop {
            match stream.next() {
                Some(Ok(value)) => {
                    consumed = stream.byte_offset();
                    if let Ok(size) = serde_json::from_value(value) {
                        sizes.push(size);
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    consumed = self.pending.len();
                    break;
                }
                None => {
                    consumed = self.pending.len();
                    break;
                }
            }
        }
        self.pending.drain(..consumed);
        if self.pending.len() > MAX_RESIZE_MESSAGE {
            self.pending.clear();
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_preference_wins() {
        let offered = offered(["v4.channel.k8s.io, v3.channel.k8s.io", "channel.k8s.io"]);
        assert_eq!(
            spdy_remote_command(&offered),
            Some(("v4.channel.k8s.io", Version::V4))
        );
        assert_eq!(
            spdy_remote_command(&["v2.channel.k8s.io", "v4.channel.k8s.io"]),
            Some(("v2.channel.k8s.io", Version::V2))
        );
        assert_eq!(spdy_remote_command(&["v9.channel.k8s.io"]), None);
        assert_eq!(spdy_remote_command(&[]), Some(("", Version::V1)));
    }

    #[test]
    fn websocket_protocols_carry_their_encoding() {
        assert_eq!(
            ws_remote_command(&["v5.channel.k8s.io", "v4.channel.k8s.io"]),
            Some(("v5.channel.k8s.io", Version::V5, Encoding::Binary))
        );
        assert_eq!(
            ws_remote_command(&["v4.base64.channel.k8s.io"]),
            Some(("v4.base64.channel.k8s.io", Version::V4, Encoding::Base64))
        );
        assert_eq!(
            ws_port_forward(&["SPDY/3.1+portforward.k8s.io"]),
            Some((PORT_FORWARD_TUNNEL, WsPortForward::Tunnel))
        );
        assert_eq!(
            ws_port_forward(&["v4.channel.k8s.io"]),
            Some((
                "v4.channel.k8s.io",
                WsPortForward::Channels {
                    port_prefix: true,
                    encoding: Encoding::Binary
                }
            ))
        );
        assert_eq!(spdy_port_forward(&["v4.channel.k8s.io"]), None);
    }

    #[test]
    fn v4_reports_exit_codes_as_status() {
        let failure = error_channel_message(Version::V4, &Outcome::Exited(3)).unwrap();
        let status: serde_json::Value = serde_json::from_slice(&failure).unwrap();
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        let success = error_channel_message(Version::V5, &Outcome::Exited(0)).unwrap();
        assert_eq!(success, br#"{"metadata":{},"status":"Success"}"#);
    }

    #[test]
    fn before_v4_errors_are_text_and_success_is_silent() {
        assert_eq!(
            error_channel_message(Version::V3, &Outcome::Exited(0)),
            None
        );
        let text = error_channel_message(Version::V2, &Outcome::Failed("boom".into())).unwrap();
        assert_eq!(text, b"boom");
    }

    #[test]
    fn resize_messages_split_across_reads() {
        let mut decoder = ResizeDecoder::default();
        assert_eq!(decoder.feed(br#"{"Width":80,"Hei"#), vec![]);
        assert_eq!(
            decoder.feed(br#"ght":24}{"Width":100,"Height":50}"#),
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 50
                }
            ]
        );
        assert_eq!(decoder.feed(b"garbage"), vec![]);
        assert_eq!(
            decoder.feed(br#"{"Width":1,"Height":2}"#),
            vec![TerminalSize {
                width: 1,
                height: 2
            }]
        );
    }
}
