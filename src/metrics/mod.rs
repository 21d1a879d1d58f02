//! berth's own Prometheus metrics, served on `[metrics] address` when enabled: per-RPC
//! latency and errors, the steps of each lifecycle call, image pulls, CNI calls, the stats
//! collector, containers and sandboxes by state, OOM kills and dropped events.
//!
//! A leaf: it knows no domain type. The families are process-wide statics so that a
//! one-line hook (a CNI timer, a pull's bytes) can feed them from the owner of the work
//! without a handle threaded through every constructor; the gauges that describe the
//! domain (objects by state, event counters) are filled at scrape time by callbacks that
//! the composition root registers with [`on_scrape`].
//!
//! The types and the exposition come from `prometheus-client`, served in the classic
//! Prometheus text format (see [`registry`] for why that format).

pub mod http;
pub mod registry;
pub mod rpc;

use std::future::Future;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use registry::{CounterFamily, HistogramFamily, StateGauge, histogram_family, register};

pub struct BerthMetrics {
    pub rpc_duration: HistogramFamily<1>,
    pub rpc_errors: CounterFamily<2>,
    pub step_duration: HistogramFamily<2>,
    pub image_pull_duration: HistogramFamily<1>,
    pub image_pull_bytes: Counter,
    pub cni_duration: HistogramFamily<1>,
    pub stats_collection_duration: Histogram,
    pub containers: StateGauge,
    pub sandboxes: StateGauge,
    pub oom_kills: Counter,
    pub events_published: Counter,
    pub events_dropped: Counter,
    registry: Registry,
    /// Held through a whole scrape, so two scrapes never interleave their hooks.
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

pub static METRICS: LazyLock<BerthMetrics> = LazyLock::new(BerthMetrics::new);

impl BerthMetrics {
    fn new() -> BerthMetrics {
        let mut registry = Registry::default();
        let r = &mut registry;
        // Counters are named without `_total`: the encoder appends it.
        let rpc_duration = histogram_family();
        register(
            r,
            "berth_cri_request_duration_seconds",
            "Time to answer a CRI request (to the first response message for streams).",
            &rpc_duration,
        );
        let rpc_errors = Family::default();
        register(
            r,
            "berth_cri_request_errors",
            "CRI requests answered with an error, by gRPC code.",
            &rpc_errors,
        );
        let step_duration = histogram_family();
        register(
            r,
            "berth_operation_step_duration_seconds",
            "Time spent in each step of a lifecycle call (steps of one call may overlap), by operation and step.",
            &step_duration,
        );
        let image_pull_duration = histogram_family();
        register(
            r,
            "berth_image_pull_duration_seconds",
            "Duration of image pulls that went to a registry, by outcome.",
            &image_pull_duration,
        );
        let image_pull_bytes = Counter::default();
        register(
            r,
            "berth_image_pull_bytes",
            "Bytes downloaded from registries (manifests excluded).",
            &image_pull_bytes,
        );
        let cni_duration = histogram_family();
        register(
            r,
            "berth_cni_duration_seconds",
            "Duration of CNI operations on a pod's network, by operation.",
            &cni_duration,
        );
        let stats_collection_duration = registry::latency_histogram();
        register(
            r,
            "berth_stats_collection_duration_seconds",
            "Duration of one pass of the stats collector over every container and pod.",
            &stats_collection_duration,
        );
        let containers = Family::default();
        register(r, "berth_containers", "Containers by state.", &containers);
        let sandboxes = Family::default();
        register(
            r,
            "berth_pod_sandboxes",
            "Pod sandboxes by state.",
            &sandboxes,
        );
        let oom_kills = Counter::default();
        register(
            r,
            "berth_container_oom_kills",
            "Containers the kernel's OOM killer ended, as learned from their exits.",
            &oom_kills,
        );
        let events_published = Counter::default();
        register(
            r,
            "berth_container_events",
            "Container and sandbox lifecycle events published to GetContainerEvents.",
            &events_published,
        );
        let events_dropped = Counter::default();
        register(
            r,
            "berth_container_events_dropped",
            "Events dropped for GetContainerEvents subscribers whose queue was full.",
            &events_dropped,
        );
        BerthMetrics {
            rpc_duration,
            rpc_errors,
            step_duration,
            image_pull_duration,
            image_pull_bytes,
            cni_duration,
            stats_collection_duration,
            containers,
            sandboxes,
            oom_kills,
            events_published,
            events_dropped,
            registry,
            scrape_hooks: Mutex::new(Vec::new()),
        }
    }

    /// The text exposition of every family, after the scrape hooks have filled the gauges.
    pub fn render(&self) -> String {
        let hooks = self
            .scrape_hooks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for hook in hooks.iter() {
            hook(self);
        }
        registry::encode(&self.registry)
    }
}

/// Records the time from its creation to its drop in a histogram series.
pub struct Timer {
    histogram: &'static HistogramFamily<1>,
    labels: registry::Labels<1>,
    started: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed().as_secs_f64();
        self.histogram.get_or_create(&self.labels).observe(elapsed);
    }
}

/// `let _timer = metrics::cni_timer("add");` times the rest of the scope.
pub fn cni_timer(operation: &'static str) -> Timer {
    Timer {
        histogram: &METRICS.cni_duration,
        labels: [("operation", operation.to_string())],
        started: Instant::now(),
    }
}

/// The time of one step of a lifecycle call, recorded when dropped (an early return or a
/// dropped future counts too), in the step histogram and as a debug trace line.
pub struct StepTimer {
    operation: &'static str,
    step: &'static str,
    started: Instant,
}

impl Drop for StepTimer {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        METRICS
            .step_duration
            .get_or_create(&[
                ("operation", self.operation.to_string()),
                ("step", self.step.to_string()),
            ])
            .observe(elapsed.as_secs_f64());
        tracing::debug!(
            operation = self.operation,
            step = self.step,
            elapsed_us = elapsed.as_micros() as u64,
            "step"
        );
    }
}

/// `let _step = metrics::step("run_pod_sandbox", "netns");` times the rest of the scope.
pub fn step(operation: &'static str, step: &'static str) -> StepTimer {
    StepTimer {
        operation,
        step,
        started: Instant::now(),
    }
}

/// Runs `work` as one timed step of `operation`.
pub async fn timed<T>(
    operation: &'static str,
    step_name: &'static str,
    work: impl Future<Output = T>,
) -> T {
    let _step = step(operation, step_name);
    work.await
}

pub fn observe_pull(elapsed: Duration, ok: bool) {
    let result = if ok { "success" } else { "failure" };
    METRICS
        .image_pull_duration
        .get_or_create(&[("result", result.to_string())])
        .observe(elapsed.as_secs_f64());
}

pub fn add_pulled_bytes(bytes: usize) {
    METRICS.image_pull_bytes.inc_by(bytes as u64);
}

/// Series of a by-state gauge: every state in `all` appears, at zero when empty, so a
/// dashboard's series never vanish.
pub fn by_state<S: Copy>(
    all: &[S],
    states: impl Iterator<Item = S>,
    name: fn(S) -> &'static str,
) -> Vec<(&'static str, i64)> {
    let mut counts: std::collections::BTreeMap<&'static str, i64> =
        all.iter().map(|s| (name(*s), 0)).collect();
    for s in states {
        *counts.entry(name(s)).or_default() += 1;
    }
    counts.into_iter().collect()
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
        assert_eq!(series, vec![("notready", 0), ("ready", 2)]);
    }

    #[test]
    fn a_timer_observes_on_drop() {
        let series = [("operation", "test-op".to_string())];
        let before = METRICS.cni_duration.get_or_create(&series).count();
        drop(cni_timer("test-op"));
        assert_eq!(
            METRICS.cni_duration.get_or_create(&series).count(),
            before + 1
        );
    }

    #[tokio::test]
    async fn a_step_is_recorded_under_its_operation_and_name_even_when_it_fails() {
        let series = [
            ("operation", "test_op".to_string()),
            ("step", "flaky".to_string()),
        ];
        let before = METRICS.step_duration.get_or_create(&series).count();
        let failed: Result<(), &str> = timed("test_op", "flaky", async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Err("no")
        })
        .await;
        assert!(failed.is_err());
        let histogram = METRICS.step_duration.get_or_create(&series);
        assert_eq!(histogram.count(), before + 1);
        assert!(histogram.sum() >= 0.002, "{}", histogram.sum());
    }

    #[test]
    fn every_family_keeps_its_exposed_name_and_labels() {
        METRICS
            .rpc_errors
            .get_or_create(&[("method", "TestNames".into()), ("code", "NotFound".into())])
            .inc();
        // A family shows once it has a series.
        observe_pull(Duration::from_millis(1), true);
        drop(cni_timer("test-names"));
        drop(step("test_names", "step"));
        registry::set_by_state(&METRICS.containers, vec![("running", 0)]);
        registry::set_by_state(&METRICS.sandboxes, vec![("ready", 0)]);
        let out = METRICS.render();
        let mut types: Vec<&str> = out.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        types.sort();
        assert_eq!(
            types,
            [
                "# TYPE berth_cni_duration_seconds histogram",
                "# TYPE berth_container_events_dropped_total counter",
                "# TYPE berth_container_events_total counter",
                "# TYPE berth_container_oom_kills_total counter",
                "# TYPE berth_containers gauge",
                "# TYPE berth_cri_request_duration_seconds histogram",
                "# TYPE berth_cri_request_errors_total counter",
                "# TYPE berth_image_pull_bytes_total counter",
                "# TYPE berth_image_pull_duration_seconds histogram",
                "# TYPE berth_operation_step_duration_seconds histogram",
                "# TYPE berth_pod_sandboxes gauge",
                "# TYPE berth_stats_collection_duration_seconds histogram",
            ]
        );
        assert!(
            out.contains(
                "berth_cri_request_errors_total{method=\"TestNames\",code=\"NotFound\"} 1\n"
            ),
            "{out}"
        );
    }
}
