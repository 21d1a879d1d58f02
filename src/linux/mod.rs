//! Small safe wrappers around Linux interfaces.

pub mod cgroup;
pub mod netns;
pub mod process;
