//! CRI adapters (being built).
