//! Containers: the CRI config in berth's types, the OCI spec builder, image users, and
//! the lifecycle (`manager`).

pub mod config;
pub mod host;
pub mod manager;
pub mod seccomp;
pub mod spec;
pub mod stats;
pub mod users;
