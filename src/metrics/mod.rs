//! berth's own Prometheus metrics, served on `[metrics] address` when enabled: per-RPC
//! latency and errors, image pulls, CNI calls, the stats collector, containers and
//! sandboxes by state, OOM kills and dropped events.
//!
//! The families are process-wide statics so that a one-line hook can feed them from
//! anywhere; the state gauges are computed at scrape time from the daemon.

pub mod http;
pub mod registry;
pub mod rpc;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use registry::{HistogramVec, LATENCY_BUCKETS, ValueVec};

use crate::container::manager::{ContainerFilter, ContainerState};
use crate::cri::Daemon;
use crate::sandbox::{SandboxFilter, SandboxState};

pub struct BerthMetrics {
    pub rpc_duration: HistogramVec,
    pub rpc_errors: ValueVec,
    pub image_pull_duration: HistogramVec,
    pub image_pull_bytes: ValueVec,
    pub cni_duration: HistogramVec,
    pub stats_collection_duration: HistogramVec,
    containers: ValueVec,
    sandboxes: ValueVec,
    oom_kills: ValueVec,
    events_published: ValueVec,
    events_dropped: ValueVec,
}

pub static METRICS: LazyLock<BerthMetrics> = LazyLock::new(|| BerthMetrics {
    rpc_duration: HistogramVec::new(
        "berth_cri_request_duration_seconds",
        "Time to answer a CRI request (to the first response message for streams).",
        &["method"],
        LATENCY_BUCKETS,
    ),
    rpc_errors: ValueVec::counter(
        "berth_cri_request_errors_total",
        "CRI requests answered with an error, by gRPC code.",
        &["method", "code"],
    ),
    image_pull_duration: HistogramVec::new(
        "berth_image_pull_duration_seconds",
        "Duration of image pulls that went to a registry, by outcome.",
        &["result"],
        LATENCY_BUCKETS,
    ),
    image_pull_bytes: ValueVec::counter(
        "berth_image_pull_bytes_total",
        "Bytes downloaded from registries (manifests excluded).",
        &[],
    ),
    cni_duration: HistogramVec::new(
        "berth_cni_duration_seconds",
        "Duration of CNI operations on a pod's network, by operation.",
        &["operation"],
        LATENCY_BUCKETS,
    ),
    stats_collection_duration: HistogramVec::new(
        "berth_stats_collection_duration_seconds",
        "Duration of one pass of the stats collector over every container and pod.",
        &[],
        LATENCY_BUCKETS,
    ),
    containers: ValueVec::gauge("berth_containers", "Containers by state.", &["state"]),
    sandboxes: ValueVec::gauge("berth_pod_sandboxes", "Pod sandboxes by state.", &["state"]),
    oom_kills: ValueVec::counter(
        "berth_container_oom_kills_total",
        "Containers the kernel's OOM killer ended, as learned from their exits.",
        &[],
    ),
    events_published: ValueVec::counter(
        "berth_container_events_total",
        "Container and sandbox lifecycle events published to GetContainerEvents.",
        &[],
    ),
    events_dropped: ValueVec::counter(
        "berth_container_events_dropped_total",
        "Events dropped for GetContainerEvents subscribers whose queue was full.",
        &[],
    ),
});

/// Records the time from its creation to its drop in a histogram series.
pub struct Timer {
    histogram: &'static HistogramVec,
    label: &'static str,
    started: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed().as_secs_f64();
        self.histogram.observe(&[self.label], elapsed);
    }
}

/// `let _timer = metrics::cni_timer("add");` times the rest of the scope.
pub fn cni_timer(operation: &'static str) -> Timer {
    Timer {
        histogram: &METRICS.cni_duration,
        label: operation,
        started: Instant::now(),
    }
}

pub fn observe_pull(elapsed: Duration, ok: bool) {
    let result = if ok { "success" } else { "failure" };
    METRICS
        .image_pull_duration
        .observe(&[result], elapsed.as_secs_f64());
}

pub fn add_pulled_bytes(bytes: usize) {
    METRICS.image_pull_bytes.add(&[], bytes as f64);
}

fn container_state_name(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Creating => "creating",
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Exited => "exited",
        ContainerState::Unknown => "unknown",
    }
}

fn sandbox_state_name(state: SandboxState) -> &'static str {
    match state {
        SandboxState::Creating => "creating",
        SandboxState::Ready => "ready",
        SandboxState::NotReady => "notready",
    }
}

/// Every state appears, at zero when empty, so a dashboard's series never vanish.
fn by_state<S: Copy>(
    all: &[S],
    states: impl Iterator<Item = S>,
    name: fn(S) -> &'static str,
) -> Vec<(Vec<String>, f64)> {
    let mut counts: std::collections::BTreeMap<&'static str, f64> =
        all.iter().map(|s| (name(*s), 0.0)).collect();
    for s in states {
        *counts.entry(name(s)).or_default() += 1.0;
    }
    counts
        .into_iter()
        .map(|(k, v)| (vec![k.to_string()], v))
        .collect()
}

impl BerthMetrics {
    /// The text exposition of every family, with the state gauges taken from `daemon` now.
    pub fn render(&self, daemon: &Daemon) -> String {
        let containers = daemon.containers.list(&ContainerFilter::default());
        self.containers.replace(by_state(
            &[
                ContainerState::Created,
                ContainerState::Running,
                ContainerState::Exited,
                ContainerState::Unknown,
            ],
            containers.iter().map(|c| c.state),
            container_state_name,
        ));
        let sandboxes = daemon.sandboxes.list(&SandboxFilter::default());
        self.sandboxes.replace(by_state(
            &[SandboxState::Ready, SandboxState::NotReady],
            sandboxes.iter().map(|(_, s)| *s),
            sandbox_state_name,
        ));
        let counts = daemon.sandboxes.events().counts();
        self.oom_kills.set(&[], counts.oom_kills as f64);
        self.events_published.set(&[], counts.published as f64);
        self.events_dropped.set(&[], counts.dropped as f64);

        let mut out = String::with_capacity(8192);
        self.rpc_duration.encode(&mut out);
        self.rpc_errors.encode(&mut out);
        self.image_pull_duration.encode(&mut out);
        self.image_pull_bytes.encode(&mut out);
        self.cni_duration.encode(&mut out);
        self.stats_collection_duration.encode(&mut out);
        self.containers.encode(&mut out);
        self.sandboxes.encode(&mut out);
        self.oom_kills.encode(&mut out);
        self.events_published.encode(&mut out);
        self.events_dropped.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_gauges_list_every_state_even_at_zero() {
        let series = by_state(
            &[SandboxState::Ready, SandboxState::NotReady],
            [SandboxState::Ready, SandboxState::Ready].into_iter(),
            sandbox_state_name,
        );
        assert_eq!(
            series,
            vec![
                (vec!["notready".to_string()], 0.0),
                (vec!["ready".to_string()], 2.0)
            ]
        );
    }

    #[test]
    fn a_timer_observes_on_drop() {
        let before = METRICS.cni_duration.count_and_sum(&["test-op"]).0;
        drop(cni_timer("test-op"));
        assert_eq!(
            METRICS.cni_duration.count_and_sum(&["test-op"]).0,
            before + 1
        );
    }
}
