//! Small safe wrappers around Linux interfaces.
//!
//! A leaf: knows nothing of pods or containers; every other module may call it.

pub mod cgroup;
pub mod kernel;
pub mod memory;
pub mod netns;
pub mod process;
pub mod seccomp;
pub mod systemd;
