//! Errors of SPDY sessions and streams.

use std::sync::Arc;

use super::frame::{self, RstStatus};
use super::header;

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
