//! The lifecycle core shared by the sandbox and container managers: what every object
//! with a name, a state and a multi-step creation needs, written once.
//!
//! - [`Registry`]: the records in memory, found by id or unique prefix, and their names;
//!   a name is reserved by a [`Reservation`] that releases itself when dropped unless
//!   committed, and a retry of the same request (same name, same config) while the first
//!   runs waits for it, after it finished gets the same object.
//! - [`Rollback`]: the undo steps of a creation, run in reverse when the guard is dropped
//!   without commit (an error, an early return and a dropped future unwind alike).
//! - [`Lifecycle`] and [`Registry::transition`]: a state table per object kind; a state
//!   changes only through `transition`, which refuses an illegal move with
//!   FailedPrecondition and is the one place that persists the record and publishes the
//!   event.
//! - [`detach`] and [`Calls`]: a mutating call runs in its own task, so a client that gives
//!   up cannot cut it short; identical calls in flight share one run.
//! - [`Dirs`]: each kind's record and runtime directories, and the one way records are
//!   written, loaded at recovery and removed; [`Filter`]: the List calls' filter.
//!
//! The managers keep what is specific to them (CNI, shims, bundles, cgroups).

mod calls;
mod files;
mod filter;
mod registry;
mod rollback;
mod transition;

pub use calls::{Calls, Failure, Running, detach};
pub use files::{Dirs, Durability};
pub use filter::Filter;
pub use registry::{Claim, Registry, Reservation, fingerprint};
pub use rollback::{Rollback, remove_cgroup, remove_dir};
pub(crate) use transition::record_fields;
pub use transition::{Entry, Lifecycle, Moved, Publish, Record};
