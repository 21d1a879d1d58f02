//! A small Prometheus registry: counters, gauges and fixed-bucket histograms with labels,
//! written in the text exposition format (version 0.0.4). berth needs nothing more, and
//! this avoids a dependency for a few hundred lines.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::store::lock;

/// Latency buckets in seconds: from a cached List (sub-millisecond) to a slow image pull.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes HELP text: backslash and newline.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Prometheus float formatting: integers without a fraction, infinities spelled out.
pub fn format_value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn label_set(names: &[&str], values: &[String], extra: Option<(&str, &str)>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape_label(v)))
        .collect();
    if let Some((n, v)) = extra {
        pairs.push(format!("{n}=\"{}\"", escape_label(v)));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A counter or gauge family: one value per label combination.
pub struct ValueVec {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl ValueVec {
    pub const fn counter(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> ValueVec {
        ValueVec {
            name,
            help,
            kind: "counter",
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub const fn gauge(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> ValueVec {
        ValueVec {
            name,
            help,
            kind: "gauge",
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    fn key(&self, values: &[&str]) -> Vec<String> {
        // A wrong label count is a programming error; pad or cut rather than panic.
        (0..self.labels.len())
            .map(|i| values.get(i).copied().unwrap_or_default().to_string())
            .collect()
    }

    pub fn add(&self, values: &[&str], delta: f64) {
        let key = self.key(values);
        *lock(&self.values).entry(key).or_insert(0.0) += delta;
    }

    pub fn inc(&self, values: &[&str]) {
        self.add(values, 1.0);
    }

    pub fn set(&self, values: &[&str], value: f64) {
        let key = self.key(values);
        lock(&self.values).insert(key, value);
    }

    /// Replaces every series (gauges computed at scrape time).
    pub fn replace(&self, series: Vec<(Vec<String>, f64)>) {
        let mut values = lock(&self.values);
        values.clear();
        values.extend(series);
    }

    pub fn get(&self, values: &[&str]) -> f64 {
        let key = self.key(values);
        lock(&self.values).get(&key).copied().unwrap_or(0.0)
    }

    pub fn encode(&self, out: &mut String) {
        header(out, self.name, self.help, self.kind);
        let values = lock(&self.values);
        if values.is_empty() && self.labels.is_empty() {
            let _ = writeln!(out, "{} 0", self.name);
        }
        for (labels, value) in values.iter() {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.name,
                label_set(self.labels, labels, None),
                format_value(*value)
            );
        }
    }
}

#[derive(Clone)]
struct HistogramSeries {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

pub struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
    series: Mutex<BTreeMap<Vec<String>, HistogramSeries>>,
}

impl HistogramVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> HistogramVec {
        HistogramVec {
            name,
            help,
            labels,
            buckets,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, values: &[&str], v: f64) {
        let key: Vec<String> = (0..self.labels.len())
            .map(|i| values.get(i).copied().unwrap_or_default().to_string())
            .collect();
        let mut series = lock(&self.series);
        let s = series.entry(key).or_insert_with(|| HistogramSeries {
            counts: vec![0; self.buckets.len()],
            sum: 0.0,
            count: 0,
        });
        // Counts per bucket are kept non-cumulative and summed when written.
        if let Some(i) = self.buckets.iter().position(|b| v <= *b) {
            s.counts[i] += 1;
        }
        s.sum += v;
        s.count += 1;
    }

    /// (count, sum) of one series, for tests and the bench.
    pub fn count_and_sum(&self, values: &[&str]) -> (u64, f64) {
        let key: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        lock(&self.series)
            .get(&key)
            .map(|s| (s.count, s.sum))
            .unwrap_or((0, 0.0))
    }

    pub fn encode(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let series = lock(&self.series);
        for (labels, s) in series.iter() {
            let mut cumulative = 0;
            for (bound, n) in self.buckets.iter().zip(&s.counts) {
                cumulative += n;
                let le = format_value(*bound);
                let _ = writeln!(
                    out,
                    "{}_bucket{} {cumulative}",
                    self.name,
                    label_set(self.labels, labels, Some(("le", &le)))
                );
            }
            let _ = writeln!(
                out,
                "{}_bucket{} {}",
                self.name,
                label_set(self.labels, labels, Some(("le", "+Inf"))),
                s.count
            );
            let set = label_set(self.labels, labels, None);
            let _ = writeln!(out, "{}_sum{set} {}", self.name, format_value(s.sum));
            let _ = writeln!(out, "{}_count{set} {}", self.name, s.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_write_help_type_and_series() {
        let c = ValueVec::counter("berth_x_total", "Things.\nMore", &["method", "code"]);
        c.inc(&["Version", "OK"]);
        c.add(&["Version", "OK"], 2.0);
        c.inc(&["Pull\"Image", "Unknown"]);
        let mut out = String::new();
        c.encode(&mut out);
        assert_eq!(
            out,
            "# HELP berth_x_total Things.\\nMore\n# TYPE berth_x_total counter\n\
             berth_x_total{method=\"Pull\\\"Image\",code=\"Unknown\"} 1\n\
             berth_x_total{method=\"Version\",code=\"OK\"} 3\n"
        );
        let g = ValueVec::gauge("berth_g", "G", &[]);
        let mut out = String::new();
        g.encode(&mut out);
        assert!(out.ends_with("berth_g 0\n"), "{out}");
        g.set(&[], 2.5);
        let mut out = String::new();
        g.encode(&mut out);
        assert!(out.ends_with("berth_g 2.5\n"), "{out}");
    }

    #[test]
    fn histograms_are_cumulative_with_inf_sum_and_count() {
        let h = HistogramVec::new("berth_h_seconds", "H", &["m"], &[0.1, 1.0]);
        h.observe(&["a"], 0.05);
        h.observe(&["a"], 0.5);
        h.observe(&["a"], 7.0);
        let mut out = String::new();
        h.encode(&mut out);
        assert_eq!(
            out,
            "# HELP berth_h_seconds H\n# TYPE berth_h_seconds histogram\n\
             berth_h_seconds_bucket{m=\"a\",le=\"0.1\"} 1\n\
             berth_h_seconds_bucket{m=\"a\",le=\"1\"} 2\n\
             berth_h_seconds_bucket{m=\"a\",le=\"+Inf\"} 3\n\
             berth_h_seconds_sum{m=\"a\"} 7.55\n\
             berth_h_seconds_count{m=\"a\"} 3\n"
        );
        assert_eq!(h.count_and_sum(&["a"]).0, 3);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.25), "0.25");
    }
}
