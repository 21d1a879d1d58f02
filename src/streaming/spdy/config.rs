//! The settings of a SPDY session: its role, flow control and buffer sizes.

use std::time::Duration;

use super::frame::Limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// Whether our writers wait for the peer's flow-control windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerFlowControl {
    /// Honour the peer's windows once it shows it does flow control (sends a WINDOW_UPDATE or
    /// SETTINGS_INITIAL_WINDOW_SIZE). The Go client never does, and would stall after 64 KiB
    /// if we waited for it; TCP bounds what we send it instead.
    Auto,
    /// Always honour them (peers known to send WINDOW_UPDATE).
    Enforce,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Per-stream receive window we advertise (SETTINGS_INITIAL_WINDOW_SIZE); also what a
    /// stream buffers at most before reading from the connection pauses.
    pub stream_receive_window: u32,
    /// Session receive window we advertise; also what the session buffers at most.
    pub session_receive_window: u32,
    /// Largest DATA payload we write.
    pub max_data_frame: usize,
    /// Outgoing bytes queued before writers wait for the connection.
    pub write_buffer: usize,
    /// Cap on the decompressed size of one header block.
    pub max_header_block: usize,
    /// Size limits of incoming frames.
    pub limits: Limits,
    pub peer_flow_control: PeerFlowControl,
    /// Accepted streams waiting for the application before reading pauses.
    pub accept_backlog: usize,
    /// After our GOAWAY, how long we keep reading (and discarding) so that closing the socket
    /// with unread input does not make the kernel reset the connection and drop what the peer
    /// has not read yet.
    pub close_linger: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            stream_receive_window: 1024 * 1024,
            session_receive_window: 8 * 1024 * 1024,
            max_data_frame: 64 * 1024,
            write_buffer: 512 * 1024,
            max_header_block: 64 * 1024,
            limits: Limits::default(),
            peer_flow_control: PeerFlowControl::Auto,
            accept_backlog: 32,
            close_linger: Duration::from_secs(2),
        }
    }
}
