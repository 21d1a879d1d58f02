//! The cAdvisor-compatible metrics of ListMetricDescriptors / ListPodSandboxMetrics: the
//! names, help and labels the kubelet serves on /metrics/cadvisor, with values taken from
//! the collector's samples.
//!
//! CRI metric values are unsigned integers, so `*_seconds_total` counters are whole
//! seconds; the nanosecond-precise figure is in ContainerStats.

use super::{ContainerSample, InterfaceStats, PodSample};
use crate::container::manager::ContainerRecord;
use crate::sandbox::SandboxRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    pub labels: &'static [&'static str],
}

/// The labels cAdvisor puts on every container metric.
pub const CONTAINER_LABELS: &[&str] = &["container", "id", "image", "name", "namespace", "pod"];
/// Network metrics add the interface.
pub const NETWORK_LABELS: &[&str] = &[
    "container",
    "id",
    "image",
    "name",
    "namespace",
    "pod",
    "interface",
];

const fn container(name: &'static str, help: &'static str, kind: MetricKind) -> Descriptor {
    Descriptor {
        name,
        help,
        kind,
        labels: CONTAINER_LABELS,
    }
}

const fn network(name: &'static str, help: &'static str) -> Descriptor {
    Descriptor {
        name,
        help,
        kind: MetricKind::Counter,
        labels: NETWORK_LABELS,
    }
}

pub const CPU_USAGE: Descriptor = container(
    "container_cpu_usage_seconds_total",
    "Cumulative cpu time consumed in seconds.",
    MetricKind::Counter,
);
pub const MEMORY_USAGE: Descriptor = container(
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed",
    MetricKind::Gauge,
);
pub const MEMORY_WORKING_SET: Descriptor = container(
    "container_memory_working_set_bytes",
    "Current working set in bytes.",
    MetricKind::Gauge,
);
pub const MEMORY_RSS: Descriptor = container(
    "container_memory_rss",
    "Size of RSS in bytes.",
    MetricKind::Gauge,
);
pub const MEMORY_SWAP: Descriptor = container(
    "container_memory_swap",
    "Container swap usage in bytes.",
    MetricKind::Gauge,
);
pub const MEMORY_FAILURES: Descriptor = Descriptor {
    name: "container_memory_failures_total",
    help: "Cumulative count of memory allocation failures.",
    kind: MetricKind::Counter,
    labels: &[
        "container",
        "id",
        "image",
        "name",
        "namespace",
        "pod",
        "failure_type",
        "scope",
    ],
};
pub const FS_USAGE: Descriptor = container(
    "container_fs_usage_bytes",
    "Number of bytes that are consumed by the container on this filesystem.",
    MetricKind::Gauge,
);
pub const PROCESSES: Descriptor = container(
    "container_processes",
    "Number of processes running inside the container.",
    MetricKind::Gauge,
);
pub const LAST_SEEN: Descriptor = container(
    "container_last_seen",
    "Last time a container was seen by the exporter",
    MetricKind::Gauge,
);
pub const NETWORK_RX_BYTES: Descriptor = network(
    "container_network_receive_bytes_total",
    "Cumulative count of bytes received",
);
pub const NETWORK_RX_ERRORS: Descriptor = network(
    "container_network_receive_errors_total",
    "Cumulative count of errors encountered while receiving",
);
pub const NETWORK_TX_BYTES: Descriptor = network(
    "container_network_transmit_bytes_total",
    "Cumulative count of bytes transmitted",
);
pub const NETWORK_TX_ERRORS: Descriptor = network(
    "container_network_transmit_errors_total",
    "Cumulative count of errors encountered while transmitting",
);

pub const FS_READS_BYTES: Descriptor = container(
    "container_fs_reads_bytes_total",
    "Cumulative count of bytes read",
    MetricKind::Counter,
);
pub const FS_WRITES_BYTES: Descriptor = container(
    "container_fs_writes_bytes_total",
    "Cumulative count of bytes written",
    MetricKind::Counter,
);
pub const PRESSURE_CPU_WAITING: Descriptor = container(
    "container_pressure_cpu_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to CPU congestion.",
    MetricKind::Counter,
);
pub const PRESSURE_CPU_STALLED: Descriptor = container(
    "container_pressure_cpu_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to CPU congestion.",
    MetricKind::Counter,
);
pub const PRESSURE_MEMORY_WAITING: Descriptor = container(
    "container_pressure_memory_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to memory congestion.",
    MetricKind::Counter,
);
pub const PRESSURE_MEMORY_STALLED: Descriptor = container(
    "container_pressure_memory_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to memory congestion.",
    MetricKind::Counter,
);
pub const PRESSURE_IO_WAITING: Descriptor = container(
    "container_pressure_io_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to I/O congestion.",
    MetricKind::Counter,
);
pub const PRESSURE_IO_STALLED: Descriptor = container(
    "container_pressure_io_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to I/O congestion.",
    MetricKind::Counter,
);

pub const DESCRIPTORS: &[Descriptor] = &[
    CPU_USAGE,
    MEMORY_USAGE,
    MEMORY_WORKING_SET,
    MEMORY_RSS,
    MEMORY_SWAP,
    MEMORY_FAILURES,
    FS_USAGE,
    PROCESSES,
    LAST_SEEN,
    NETWORK_RX_BYTES,
    NETWORK_RX_ERRORS,
    NETWORK_TX_BYTES,
    NETWORK_TX_ERRORS,
    FS_READS_BYTES,
    FS_WRITES_BYTES,
    PRESSURE_CPU_WAITING,
    PRESSURE_CPU_STALLED,
    PRESSURE_MEMORY_WAITING,
    PRESSURE_MEMORY_STALLED,
    PRESSURE_IO_WAITING,
    PRESSURE_IO_STALLED,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub name: &'static str,
    pub kind: MetricKind,
    pub timestamp: i64,
    pub label_values: Vec<String>,
    pub value: u64,
}

/// A pod's own samples and each container's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMetrics {
    pub pod_id: String,
    pub metrics: Vec<Sample>,
    pub containers: Vec<(String, Vec<Sample>)>,
}

/// The base label values: the pod's own series have an empty `container` (cAdvisor's
/// convention for the pod cgroup), and the cgroup path as `id`.
fn base_labels(pod: &SandboxRecord, container: Option<&ContainerRecord>) -> Vec<String> {
    let (namespace, pod_name) = pod
        .metadata()
        .map(|m| (m.namespace.clone(), m.name.clone()))
        .unwrap_or_default();
    match container {
        Some(c) => vec![
            c.config.metadata.name.clone(),
            c.cgroup_path.clone(),
            c.image_name.clone(),
            c.id.clone(),
            namespace,
            pod_name,
        ],
        None => vec![
            String::new(),
            pod.pod_cgroup.clone(),
            String::new(),
            pod.id.clone(),
            namespace,
            pod_name,
        ],
    }
}

struct Builder {
    timestamp: i64,
    labels: Vec<String>,
    out: Vec<Sample>,
}

impl Builder {
    fn push(&mut self, d: Descriptor, value: Option<u64>) {
        self.push_with(d, &[], value);
    }

    fn push_with(&mut self, d: Descriptor, extra: &[&str], value: Option<u64>) {
        let Some(value) = value else { return };
        let mut label_values = self.labels.clone();
        label_values.extend(extra.iter().map(|s| s.to_string()));
        debug_assert_eq!(label_values.len(), d.labels.len(), "{}", d.name);
        self.out.push(Sample {
            name: d.name,
            kind: d.kind,
            timestamp: self.timestamp,
            label_values,
            value,
        });
    }

    fn memory(&mut self, usage: &crate::container::usage::Usage) {
        self.push(CPU_USAGE, usage.cpu_usage_ns.map(|ns| ns / 1_000_000_000));
        self.push(MEMORY_USAGE, usage.memory_usage_bytes);
        self.push(MEMORY_WORKING_SET, usage.memory_working_set_bytes);
        self.push(MEMORY_RSS, usage.memory_rss_bytes);
        self.push(MEMORY_SWAP, usage.swap_usage_bytes);
        let minor = usage
            .page_faults
            .zip(usage.major_page_faults)
            .map(|(all, major)| all.saturating_sub(major));
        self.push_with(MEMORY_FAILURES, &["pgfault", "container"], minor);
        self.push_with(
            MEMORY_FAILURES,
            &["pgmajfault", "container"],
            usage.major_page_faults,
        );
    }

    /// cgroup v2 only: I/O bytes and the PSI stall totals (whole seconds, like the CPU).
    fn io_and_pressure(&mut self, usage: &crate::container::usage::Usage) {
        self.push(FS_READS_BYTES, usage.io_read_bytes);
        self.push(FS_WRITES_BYTES, usage.io_write_bytes);
        let seconds = |us: u64| us / 1_000_000;
        for (pressure, waiting, stalled) in [
            (
                usage.cpu_pressure,
                PRESSURE_CPU_WAITING,
                PRESSURE_CPU_STALLED,
            ),
            (
                usage.memory_pressure,
                PRESSURE_MEMORY_WAITING,
                PRESSURE_MEMORY_STALLED,
            ),
            (usage.io_pressure, PRESSURE_IO_WAITING, PRESSURE_IO_STALLED),
        ] {
            self.push(waiting, pressure.map(|p| seconds(p.some_us)));
            self.push(stalled, pressure.and_then(|p| p.full_us).map(seconds));
        }
    }

    fn network(&mut self, interfaces: &[InterfaceStats]) {
        for i in interfaces {
            self.push_with(NETWORK_RX_BYTES, &[&i.name], Some(i.rx_bytes));
            self.push_with(NETWORK_RX_ERRORS, &[&i.name], Some(i.rx_errors));
            self.push_with(NETWORK_TX_BYTES, &[&i.name], Some(i.tx_bytes));
            self.push_with(NETWORK_TX_ERRORS, &[&i.name], Some(i.tx_errors));
        }
    }
}

pub fn container_samples(
    pod: &SandboxRecord,
    record: &ContainerRecord,
    sample: &ContainerSample,
) -> Vec<Sample> {
    let mut b = Builder {
        timestamp: sample.timestamp,
        labels: base_labels(pod, Some(record)),
        out: Vec::new(),
    };
    b.memory(&sample.usage);
    b.io_and_pressure(&sample.usage);
    b.push(FS_USAGE, sample.writable_bytes);
    b.push(PROCESSES, sample.usage.pids);
    b.push(
        LAST_SEEN,
        u64::try_from(sample.timestamp / 1_000_000_000).ok(),
    );
    b.out
}

pub fn pod_metrics(
    pod: &SandboxRecord,
    sample: &PodSample,
    containers: &[(ContainerRecord, ContainerSample)],
) -> PodMetrics {
    let mut b = Builder {
        timestamp: sample.timestamp,
        labels: base_labels(pod, None),
        out: Vec::new(),
    };
    b.memory(&sample.usage);
    // The pod cgroup's own pressure and I/O, as cAdvisor reports them for a pod's cgroup.
    b.io_and_pressure(&sample.usage);
    b.push(PROCESSES, sample.processes);
    if let Some(interfaces) = &sample.network {
        b.network(interfaces);
    }
    PodMetrics {
        pod_id: pod.id.clone(),
        metrics: b.out,
        containers: containers
            .iter()
            .map(|(r, s)| (r.id.clone(), container_samples(pod, r, s)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        for d in DESCRIPTORS {
            assert!(d.name.starts_with("container_"), "{}", d.name);
            assert!(
                d.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                d.name
            );
            // Counters end in _total, gauges do not.
            assert_eq!(
                d.kind == MetricKind::Counter,
                d.name.ends_with("_total"),
                "{}",
                d.name
            );
            assert!(!d.help.is_empty());
            assert_eq!(&d.labels[..6], CONTAINER_LABELS);
        }
        let mut names: Vec<_> = DESCRIPTORS.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DESCRIPTORS.len(), "names are unique");
    }

    fn pod_record() -> SandboxRecord {
        SandboxRecord {
            version: 1,
            id: "p1".into(),
            spec: crate::sandbox::PodSpec {
                metadata: Some(crate::sandbox::PodMetadata {
                    name: "web".into(),
                    uid: "u".into(),
                    namespace: "ns".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            state: crate::sandbox::SandboxState::Ready,
            hostname: String::new(),
            created_at: 1,
            netns: None,
            network: None,
            pod_cgroup: "/kubepods/p1".into(),
            owns_pod_cgroup: false,
            pause_cgroup: "/kubepods/p1/p1".into(),
            shim_socket: "/x".into(),
            shim_pid: None,
            pause_pid: None,
            pause_start_time: None,
            units: None,
        }
    }

    #[test]
    fn pod_samples_carry_labels_of_the_right_length() {
        let pod = pod_record();
        let sample = PodSample {
            timestamp: 5_000_000_000,
            usage: crate::container::usage::Usage {
                cpu_usage_ns: Some(3_500_000_000),
                memory_working_set_bytes: Some(1024),
                page_faults: Some(10),
                major_page_faults: Some(2),
                ..Default::default()
            },
            network: Some(vec![InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 7,
                ..Default::default()
            }]),
            processes: Some(2),
            ..Default::default()
        };
        let metrics = pod_metrics(&pod, &sample, &[]);
        let find = |name: &str| {
            metrics
                .metrics
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert_eq!(find("container_cpu_usage_seconds_total").value, 3);
        assert_eq!(find("container_memory_working_set_bytes").value, 1024);
        assert_eq!(find("container_processes").value, 2);
        let rx = find("container_network_receive_bytes_total");
        assert_eq!(rx.value, 7);
        assert_eq!(
            rx.label_values,
            ["", "/kubepods/p1", "", "p1", "ns", "web", "eth0"]
        );
        let faults: Vec<_> = metrics
            .metrics
            .iter()
            .filter(|s| s.name == "container_memory_failures_total")
            .map(|s| (s.label_values[6].clone(), s.value))
            .collect();
        assert_eq!(
            faults,
            [("pgfault".to_string(), 8), ("pgmajfault".to_string(), 2)]
        );
        for s in &metrics.metrics {
            let d = DESCRIPTORS.iter().find(|d| d.name == s.name).unwrap();
            assert_eq!(s.label_values.len(), d.labels.len(), "{}", s.name);
            assert_eq!(s.kind, d.kind);
        }
        // Nothing is made up for what was not read.
        assert!(
            metrics
                .metrics
                .iter()
                .all(|s| s.name != "container_memory_rss")
        );
        assert!(
            metrics
                .metrics
                .iter()
                .all(|s| !s.name.starts_with("container_pressure_")),
            "no pressure files (cgroup v1), no PSI series"
        );
    }

    #[test]
    fn psi_totals_are_reported_under_cadvisors_names_for_pods_and_containers() {
        use crate::container::usage::{Pressure, Usage};
        let pressure = |some_us, full_us| {
            Some(Pressure {
                some_us,
                full_us,
                some_avgs: [0; 3],
                full_avgs: full_us.map(|_| [0; 3]),
            })
        };
        let usage = Usage {
            cpu_pressure: pressure(2_500_000, Some(1_000_000)),
            memory_pressure: pressure(7_000_000, Some(3_000_000)),
            // io.pressure without a `full` line: only the waiting series.
            io_pressure: pressure(4_000_000, None),
            io_read_bytes: Some(10),
            io_write_bytes: Some(20),
            ..Default::default()
        };
        let pod = pod_record();
        let sample = PodSample {
            timestamp: 1,
            usage: usage.clone(),
            ..Default::default()
        };
        let container = crate::cri::stats::tests::record(
            "c1",
            crate::container::manager::ContainerState::Running,
            1,
        );
        let container_sample = ContainerSample {
            timestamp: 1,
            usage,
            ..Default::default()
        };
        let metrics = pod_metrics(&pod, &sample, &[(container, container_sample)]);
        let expected = [
            ("container_pressure_cpu_waiting_seconds_total", 2),
            ("container_pressure_cpu_stalled_seconds_total", 1),
            ("container_pressure_memory_waiting_seconds_total", 7),
            ("container_pressure_memory_stalled_seconds_total", 3),
            ("container_pressure_io_waiting_seconds_total", 4),
            ("container_fs_reads_bytes_total", 10),
            ("container_fs_writes_bytes_total", 20),
        ];
        for series in [&metrics.metrics, &metrics.containers[0].1] {
            for (name, value) in expected {
                let found: Vec<u64> = series
                    .iter()
                    .filter(|s| s.name == name)
                    .map(|s| s.value)
                    .collect();
                assert_eq!(found, [value], "{name}");
            }
            assert!(
                series
                    .iter()
                    .all(|s| s.name != "container_pressure_io_stalled_seconds_total"),
                "no `full` line, no stalled series"
            );
        }
    }
}
