//! The metric types berth uses, on `prometheus-client` (the Prometheus project's Rust
//! client), and the exposition.
//!
//! The exposition is the classic Prometheus text format (version 0.0.4,
//! `text/plain; version=0.0.4`), not OpenMetrics: every Prometheus server and every tool
//! that scrapes kubelet-style endpoints reads it, it keeps the sample names berth has
//! always exposed, and it needs no `# EOF` or `_created` handling from simple parsers.
//! The crate writes the `_total` of counters itself, so counters are registered without
//! it (the exposed names do not change).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Latency buckets in seconds: from a cached List (sub-millisecond) to a slow image pull.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// A label set: name and value pairs, in the order they are written.
pub type Labels<const N: usize> = [(&'static str, String); N];

/// Histograms of durations in [`LATENCY_BUCKETS`], one per label set.
pub type HistogramFamily<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// Counters, one per label set.
pub type CounterFamily<const N: usize> = Family<Labels<N>, Counter>;

/// Gauges by state (one `state` label), recomputed at every scrape.
pub type StateGauge = Family<Labels<1>, Gauge>;

pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

pub fn histogram_family<const N: usize>() -> HistogramFamily<N> {
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}

/// Replaces every series of a by-state gauge (the states that vanished go with it).
pub fn set_by_state(gauge: &StateGauge, series: Vec<(&'static str, i64)>) {
    gauge.clear();
    for (state, value) in series {
        gauge
            .get_or_create(&[("state", state.to_string())])
            .set(value);
    }
}

/// Makes a counter show a count its owner keeps (events, OOM kills): the owner's count
/// only grows, so the counter's meaning holds.
pub fn mirror(counter: &Counter, count: u64) {
    counter
        .inner()
        .store(count, std::sync::atomic::Ordering::Relaxed);
}

/// Registers a metric under `name` (a counter without its `_total`).
pub fn register<M>(registry: &mut Registry, name: &str, help: &str, metric: &M)
where
    M: prometheus_client::registry::Metric + Clone,
{
    // The crate ends every HELP with a period of its own.
    let help = help.strip_suffix('.').unwrap_or(help);
    registry.register(name, help, metric.clone());
}

/// The text exposition (version 0.0.4) of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(8192);
    // Writing to a String cannot fail; an encoder error would be a bug in a metric.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "encoding the metrics failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_and_labels_keep_their_order_and_escapes() {
        let mut registry = Registry::default();
        let errors: CounterFamily<2> = Family::default();
        register(&mut registry, "berth_x", "Things.", &errors);
        errors
            .get_or_create(&[("method", "Version".into()), ("code", "OK".into())])
            .inc_by(3);
        errors
            .get_or_create(&[("method", "Pull\"Image".into()), ("code", "Unknown".into())])
            .inc();
        let out = encode(&registry);
        assert!(
            out.starts_with("# HELP berth_x_total Things.\n# TYPE berth_x_total counter\n"),
            "{out}"
        );
        assert!(
            out.contains("berth_x_total{method=\"Version\",code=\"OK\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("berth_x_total{method=\"Pull\\\"Image\",code=\"Unknown\"} 1\n"),
            "{out}"
        );
    }

    #[test]
    fn histograms_keep_the_latency_buckets_cumulative_with_inf_sum_and_count() {
        let mut registry = Registry::default();
        let h: HistogramFamily<1> = histogram_family();
        register(&mut registry, "berth_h_seconds", "H.", &h);
        for v in [0.0002, 0.3, 700.0] {
            h.get_or_create(&[("m", "a".into())]).observe(v);
        }
        let out = encode(&registry);
        let buckets: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("berth_h_seconds_bucket"))
            .collect();
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1, "{out}");
        assert!(buckets[0].ends_with("{m=\"a\",le=\"0.0005\"} 1"), "{out}");
        assert!(out.contains("{m=\"a\",le=\"0.5\"} 2\n"), "{out}");
        assert!(out.contains("{m=\"a\",le=\"120\"} 2\n"), "{out}");
        assert!(out.contains("{m=\"a\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("berth_h_seconds_count{m=\"a\"} 3\n"), "{out}");
        assert_eq!(h.get_or_create(&[("m", "a".into())]).count(), 3);
    }

    #[test]
    fn state_gauges_are_replaced_and_mirrored_counters_show_the_owners_count() {
        let mut registry = Registry::default();
        let g: StateGauge = Family::default();
        let c: Counter = Counter::default();
        register(&mut registry, "berth_g", "G.", &g);
        register(&mut registry, "berth_c", "C.", &c);
        set_by_state(&g, vec![("gone", 1)]);
        set_by_state(&g, vec![("ready", 2)]);
        mirror(&c, 7);
        let out = encode(&registry);
        assert!(out.contains("berth_g{state=\"ready\"} 2\n"), "{out}");
        assert!(!out.contains("gone"), "{out}");
        assert!(out.contains("berth_c_total 7\n"), "{out}");
    }
}
