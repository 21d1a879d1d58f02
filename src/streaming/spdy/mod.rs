//! SPDY/3.1 for the streaming server: frames, header compression and sessions.
//!
//! Use: after the HTTP/1.1 upgrade to `SPDY/3.1`, hand the connection to
//! [`Session::server`] (inside a tokio runtime); streams the peer opens arrive on the
//! returned receiver, already answered with SYN_REPLY, each with the headers of its
//! SYN_STREAM and a reader (`AsyncRead`) and writer (`AsyncWrite`). When done, `shutdown` the
//! writers (FIN) and `Session::close` (GOAWAY, flush, TCP FIN). [`Session::client`] is the
//! other side, for tests. Dropping the last `Session` clone closes the connection.
//!
//! Interop notes (the Go peer is k8s.io/apimachinery or k8s.io/streaming httpstream/spdy on
//! moby/spdystream): version 3 on the wire; header blocks zlib-compressed with the SPDY/3
//! dictionary, one context per direction, sync flush per block, lowercase names; the Go side
//! never sends SETTINGS or WINDOW_UPDATE and ignores them, so it does no flow control at all
//! (it relies on TCP and blocks its reader goroutine per frame); it writes one DATA frame per
//! `Write` call (io.Copy: 32 KiB, at most 16 MiB - 1); it closes a stream with an empty DATA
//! frame carrying FIN; its client `Close` resets every stream (RST_STREAM CANCEL) and then
//! sends GOAWAY; it sends PINGs (odd ids) when a ping period is set and echoes ours. An
//! unknown control frame type ends a Go connection, so berth only sends SPDY/3 frame types.
//! Flow control here therefore: our writers honour the peer's windows only once the peer
//! shows it does flow control ([`PeerFlowControl::Auto`]); our receive side advertises its
//! windows and, when a peer ignores them, pauses reading instead of buffering more.

pub mod frame;
pub mod header;

pub use frame::{GoAwayStatus, RstStatus};
pub use header::Headers;
pub mod config;
mod error;
#[cfg(test)]
mod frame_tests;
mod inbound;
mod outbound;
pub mod session;
#[cfg(test)]
mod session_tests;
mod state;
pub mod stream;

pub use config::{PeerFlowControl, Role, SessionConfig};
pub use error::SpdyError;
pub use session::Session;
pub use stream::{Stream, StreamReader, StreamWriter};
