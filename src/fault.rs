//! Named fault points for crash tests: `fault::point("sandbox.after_netns_pin")` kills the
//! daemon with SIGKILL right there when it was started with `BERTH_FAULT=<that name>`.
//!
//! Compiled into debug builds (so a plain `cargo test` runs the crash suite) and into
//! release builds only with the Cargo feature `fault-injection`; otherwise `point` is an
//! empty inline function and the environment is never read, so a release build cannot be
//! made to crash by an environment variable.

/// Every fault point the code has, in the order an operation meets them. The crash tests
/// iterate over this list, so a point added here without a test scenario fails them.
pub const POINTS: &[&str] = &[
    "sandbox.run.after_record",
    "sandbox.run.after_netns_pin",
    "sandbox.run.after_cni_add",
    "sandbox.run.after_shim_start",
    "sandbox.run.after_pause_create",
    "sandbox.stop.after_processes_killed",
    "sandbox.stop.after_cni_del",
    "sandbox.remove.after_cgroups_removed",
    "container.create.after_record",
    "container.create.after_shim_create",
    "container.start.after_gate_open",
    "container.stop.after_signal",
    "container.remove.after_shim_delete",
    "image.pull.layer_partly_unpacked",
    "image.pull.after_layers_committed",
];

/// Whether this build honours `BERTH_FAULT`.
pub const ENABLED: bool = cfg!(any(debug_assertions, feature = "fault-injection"));

/// The environment variable naming the point to die at.
pub const ENV: &str = "BERTH_FAULT";

#[cfg(any(debug_assertions, feature = "fault-injection"))]
fn armed() -> Option<&'static str> {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(ENV).ok().filter(|s| !s.is_empty()))
        .as_deref()
}

/// Dies here (SIGKILL, as a crash would) when `BERTH_FAULT` names this point.
#[cfg(any(debug_assertions, feature = "fault-injection"))]
pub fn point(name: &'static str) {
    debug_assert!(
        POINTS.contains(&name),
        "fault point {name} is not in POINTS"
    );
    if armed() == Some(name) {
        // Written straight to stderr (no buffering layer) so tests can see where it died.
        eprintln!("berth: fault injection: killed at {name}");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(not(any(debug_assertions, feature = "fault-injection")))]
#[inline(always)]
pub fn point(_name: &'static str) {}

/// The environment variable naming a point where the daemon pauses, `<point>=<millis>`:
/// for tests that must catch an operation in flight without racing it.
pub const HOLD_ENV: &str = "BERTH_FAULT_HOLD";

#[cfg(any(debug_assertions, feature = "fault-injection"))]
fn held() -> Option<(&'static str, std::time::Duration)> {
    static HELD: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    HELD.get_or_init(|| {
        let value = std::env::var(HOLD_ENV).ok()?;
        let (name, millis) = value.split_once('=')?;
        Some((name.to_string(), millis.parse().ok()?))
    })
    .as_ref()
    .map(|(name, millis)| (name.as_str(), std::time::Duration::from_millis(*millis)))
}

/// Waits here (without blocking the executor) when `BERTH_FAULT_HOLD` names this point.
#[cfg(any(debug_assertions, feature = "fault-injection"))]
pub async fn hold(name: &'static str) {
    debug_assert!(
        POINTS.contains(&name),
        "fault point {name} is not in POINTS"
    );
    if let Some((held, pause)) = held()
        && held == name
    {
        tracing::info!(point = name, ?pause, "fault injection: holding");
        tokio::time::sleep(pause).await;
    }
}

#[cfg(not(any(debug_assertions, feature = "fault-injection")))]
#[inline(always)]
pub async fn hold(_name: &'static str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_names_are_unique_and_scoped() {
        let mut seen = std::collections::HashSet::new();
        for name in POINTS {
            assert!(seen.insert(name), "{name} listed twice");
            let scope = name.split('.').next().unwrap();
            assert!(
                ["sandbox", "container", "image"].contains(&scope),
                "{name}: unknown scope"
            );
        }
    }

    #[test]
    fn an_unarmed_point_returns() {
        // BERTH_FAULT is not set in unit tests: every point is a no-op.
        for name in POINTS {
            point(name);
        }
    }
}
