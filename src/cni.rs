//! CNI plugin invocation (being built).
