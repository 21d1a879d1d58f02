//! Small safe wrappers around Linux interfaces.

pub mod netns;
