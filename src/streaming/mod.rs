//! The streaming server behind Exec, Attach and PortForward: single-use URLs, the HTTP
//! upgrade to SPDY/3.1 or WebSocket, and the Kubernetes stream protocols on top.

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
