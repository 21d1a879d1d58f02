//! Small safe wrappers around Linux interfaces.
pub mod cgroup;
pub mod process;
