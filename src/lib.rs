//! berth: a Kubernetes CRI v1 container runtime.
//!
//! One binary, three roles: the daemon (CRI server), the per-pod shim, and init
//! (the single-threaded process that sets up a container and execs it).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cni;
pub mod config;
pub mod container;
pub mod cri;
pub mod daemon;
pub mod error;
pub mod events;
pub mod fault;
pub mod idle_memory;
pub mod image;
pub mod init;
pub mod lifecycle;
pub mod linux;
pub mod metrics;
pub mod persist;
pub mod rpc_deadline;
pub mod sandbox;
pub mod server;
pub mod shim;
pub mod stats;
pub mod store;
pub mod streaming;
pub mod sweep;

pub use error::{Error, ErrorKind, Result};

/// Generated daemon⇄shim API (proto/shim.proto).
pub mod shim_api {
    tonic::include_proto!("berth.shim.v1");
}
