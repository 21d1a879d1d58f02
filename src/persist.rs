//! Atomic JSON records (being built).
