//! Small safe wrappers around Linux interfaces.
