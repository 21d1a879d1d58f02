//! Small safe wrappers around Linux interfaces.

pub mod cgroup;
pub mod kernel;
pub mod memory;
pub mod netns;
pub mod process;
pub mod seccomp;
