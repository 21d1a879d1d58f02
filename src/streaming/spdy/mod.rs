//! SPDY/3.1 for the streaming server: frames, header compression and sessions.
//!
//! Interop notes (the Go peer is k8s.io/apimachinery httpstream/spdy on moby/spdystream):
//! version 3 on the wire; header blocks zlib-compressed with the SPDY/3 dictionary, one
//! context per direction, sync flush per block; the Go side never sends SETTINGS or
//! WINDOW_UPDATE and ignores them, so it does no flow control at all (it relies on TCP);
//! it writes one DATA frame per `Write` call (up to 16 MiB - 1); it closes a stream with an
//! empty DATA frame carrying FIN, and on `Close` resets every stream (RST_STREAM CANCEL) and
//! then sends GOAWAY. An unknown control frame type ends a Go connection, so berth only ever
//! sends the frame types of SPDY/3.

pub mod frame;
pub mod header;

pub use frame::{GoAwayStatus, RstStatus};
pub use header::Headers;
#[cfg(test)]
mod frame_tests;
mod inbound;
mod outbound;
pub mod session;
#[cfg(test)]
mod session_tests;
mod state;
pub mod stream;

pub use session::{PeerFlowControl, Role, Session, SessionConfig};
pub use stream::{Stream, StreamReader, StreamWriter};

use std::sync::Arc;

/// Errors of SPDY sessions and streams.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("malformed SPDY frame")]
    Frame(#[from] frame::FrameError),
    #[error("bad SPDY header block")]
    Header(#[from] header::HeaderError),
    #[error("I/O on the SPDY connection")]
    Io(#[source] std::io::Error),
    #[error("the SPDY connection was closed by us")]
    Closed,
    #[error("the peer closed the SPDY connection")]
    PeerClosed,
    #[error("the SPDY connection is gone")]
    ConnectionLost(#[source] Arc<SpdyError>),
    #[error("the peer sent GOAWAY: no new streams")]
    GoneAway,
    #[error("no stream ids left on this connection")]
    StreamIdsExhausted,
    #[error("stream {id} was reset by the peer ({status})")]
    StreamReset { id: u32, status: RstStatus },
    #[error("stream {id} was reset")]
    StreamResetLocally { id: u32 },
    #[error("stream {id} is closed for writing")]
    StreamClosed { id: u32 },
}

impl From<SpdyError> for crate::Error {
    fn from(err: SpdyError) -> Self {
        crate::Error::with_source(crate::ErrorKind::Unavailable, "SPDY streaming", err)
    }
}
