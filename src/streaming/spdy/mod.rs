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
