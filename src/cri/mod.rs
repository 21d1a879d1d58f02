//! CRI adapters (being built).
pub mod image;
