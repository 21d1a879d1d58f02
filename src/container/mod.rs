//! Containers: the CRI config in berth's types, the OCI spec builder, image users, and
//! the lifecycle (`manager`).
//!
//! Owns container records, bundles and exit handling (`manager`), the pure CRI→OCI spec
//! builder (`spec/`), seccomp profiles (`seccomp/`), image users (`users`), host facts
//! (`host`) and cgroup usage readings (`usage`). May call `sandbox` (the pod a container
//! lives in), `image`, `shim` (client), `linux`, `events` (publish) and `persist`; never `cri`.

pub mod apparmor;
mod cgroup_sweep;
pub mod checkpoint;
pub mod config;
pub mod host;
pub mod image_volume;
pub mod manager;
pub mod merged_view;
pub mod seccomp;
pub mod spec;
pub mod usage;
pub mod users;
