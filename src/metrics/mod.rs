//! berth's own Prometheus metrics, served on `[metrics] address` when enabled: per-RPC
//! latency and errors, image pulls, CNI calls, the stats collector, containers and
//! sandboxes by state, OOM kills and dropped events.
//!
//! A leaf: it knows no domain type. The families are process-wide statics so that a
//! one-line hook (a CNI timer, a pull's bytes) can feed them from the owner of the work
//! without a handle threaded through every constructor; the gauges that describe the
//! domain (objects by state, event counters) are filled at scrape time by callbacks that
//! the composition root registers with [`on_scrape`].

pub mod http;
pub mod registry;
pub mod rpc;

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use registry::{HistogramVec, LATENCY_BUCKETS, ValueVec};

pub struct BerthMetrics {
    pub rpc_duration: HistogramVec,
    pub rpc_errors: ValueVec,
    pub image_pull_duration: HistogramVec,
    pub image_pull_bytes: ValueVec,
    pub cni_duration: HistogramVec,
    pub stats_collection_duration: HistogramVec,
    pub containers: ValueVec,
    pub sandboxes: ValueVec,
    pub oom_kills: ValueVec,
    pub events_published: ValueVec,
    pub events_dropped: ValueVec,
    scrape_hooks: Mutex<Vec<ScrapeHook>>,
}

/// Fills gauges from their owner's state just before each scrape.
pub type ScrapeHook = Box<dyn Fn(&BerthMetrics) + Send + Sync>;

/// Registers `hook` to run before every scrape (the composition root registers the domain
/// gauges this way, so this module depends on nothing).
pub fn on_scrape(hook: impl Fn(&BerthMetrics) + Send + Sync + 'static) {
    METRICS
        .scrape_hooks
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(Box::new(hook));
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
    scrape_hooks: Mutex::new(Vec::new()),
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

/// Series of a by-state gauge: every state in `all` appears, at zero when empty, so a
/// dashboard's series never vanish.
pub fn by_state<S: Copy>(
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
    /// The text exposition of every family, after the scrape hooks have filled the gauges.
    pub fn render(&self) -> String {
        for hook in self
            .scrape_hooks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
        {
            hook(self);
        }
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
        #[derive(Clone, Copy)]
        enum State {
            Ready,
            NotReady,
        }
        let name = |s: State| match s {
            State::Ready => "ready",
            State::NotReady => "notready",
        };
        let series = by_state(
            &[State::Ready, State::NotReady],
            [State::Ready, State::Ready].into_iter(),
            name,
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
