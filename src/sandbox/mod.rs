//! Pod sandbox lifecycle (being built).

pub mod podfiles;
pub mod sysctl;
