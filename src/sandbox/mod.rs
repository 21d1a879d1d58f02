//! Pod sandbox lifecycle (being built).
