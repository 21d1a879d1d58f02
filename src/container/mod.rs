//! Containers: the CRI config in berth's types, the OCI spec builder, image users.

pub mod config;
pub mod spec;
pub mod users;
