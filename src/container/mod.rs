//! Containers: the CRI config in berth's types, the OCI spec builder, image users, and
//! the lifecycle (`manager`).

mod cgroup_sweep;
pub mod config;
pub mod manager;
pub mod seccomp;
pub mod seccomp_default;
pub mod spec;
pub mod stats;
pub mod users;
