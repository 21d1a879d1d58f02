//! The streaming server behind Exec, Attach and PortForward: single-use URLs, the HTTP
//! upgrade to SPDY/3.1 or WebSocket, and the Kubernetes stream protocols on top.
//!
//! Owns the tokens and connections. May call `container` and `sandbox` (to find the
//! process and the netns), `shim` (client) and `linux`; `spdy/` is a leaf it uses.

pub mod idle;
mod over_spdy;
pub mod portforward;
pub mod protocol;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod token;
pub mod websocket;

pub use server::StreamingServer;
pub use token::StreamRequest;
