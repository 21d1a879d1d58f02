//! Collector samples and CRI metrics → CRI messages (lifecycle events: `event_convert`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::cri::api as cri;

use super::Services;
use crate::container::manager::ContainerRecord;
use crate::sandbox::{SandboxRecord, SandboxState};
use crate::stats::cadvisor::{Descriptor, MetricKind, PodMetrics, Sample};
use crate::stats::pod::DEFAULT_INTERFACE;
use crate::stats::{ContainerSample, InterfaceStats, PodSample};

fn value(v: Option<u64>) -> Option<cri::UInt64Value> {
    v.map(|value| cri::UInt64Value { value })
}

fn to_hash_map(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn cpu(
    timestamp: i64,
    usage: &crate::container::usage::Usage,
    nano_cores: Option<u64>,
) -> cri::CpuUsage {
    cri::CpuUsage {
        timestamp,
        usage_core_nano_seconds: value(usage.cpu_usage_ns),
        usage_nano_cores: value(nano_cores),
        psi: usage.cpu_pressure.map(psi),
    }
}

/// PSI as the CRI carries it: totals in microseconds, averages in percent. Absent (cgroup
/// v1, or a kernel without PSI) stays None, never zero.
fn psi(p: crate::container::usage::Pressure) -> cri::PsiStats {
    let data = |total: u64, avgs: [u32; 3]| cri::PsiData {
        total,
        avg10: f64::from(avgs[0]) / 100.0,
        avg60: f64::from(avgs[1]) / 100.0,
        avg300: f64::from(avgs[2]) / 100.0,
    };
    cri::PsiStats {
        some: Some(data(p.some_us, p.some_avgs)),
        full: p.full_us.zip(p.full_avgs).map(|(t, a)| data(t, a)),
    }
}

/// IoUsage exists where the cgroup has io.pressure (v2); its PSI is all the CRI carries.
fn io(timestamp: i64, usage: &crate::container::usage::Usage) -> Option<cri::IoUsage> {
    usage.io_pressure.map(|p| cri::IoUsage {
        timestamp,
        psi: Some(psi(p)),
    })
}

fn memory(timestamp: i64, usage: &crate::container::usage::Usage) -> cri::MemoryUsage {
    cri::MemoryUsage {
        timestamp,
        working_set_bytes: value(usage.memory_working_set_bytes),
        available_bytes: value(usage.memory_available_bytes),
        usage_bytes: value(usage.memory_usage_bytes),
        rss_bytes: value(usage.memory_rss_bytes),
        page_faults: value(usage.page_faults),
        major_page_faults: value(usage.major_page_faults),
        psi: usage.memory_pressure.map(psi),
    }
}

pub fn container_stats(
    record: &ContainerRecord,
    sample: &ContainerSample,
    writable_mountpoint: &Path,
) -> cri::ContainerStats {
    let ts = sample.timestamp;
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: record.id.clone(),
            metadata: Some(cri::ContainerMetadata {
                name: record.config.metadata.name.clone(),
                attempt: record.config.metadata.attempt,
            }),
            labels: to_hash_map(&record.config.labels),
            annotations: to_hash_map(&record.config.annotations),
        }),
        cpu: Some(cpu(ts, &sample.usage, sample.nano_cores)),
        memory: Some(memory(ts, &sample.usage)),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: ts,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: writable_mountpoint.to_string_lossy().to_string(),
            }),
            used_bytes: value(sample.writable_bytes),
            inodes_used: value(sample.writable_inodes),
        }),
        swap: Some(cri::SwapUsage {
            timestamp: ts,
            swap_available_bytes: value(sample.usage.swap_available_bytes),
            swap_usage_bytes: value(sample.usage.swap_usage_bytes),
        }),
        io: io(ts, &sample.usage),
    }
}

fn interface(i: &InterfaceStats) -> cri::NetworkInterfaceUsage {
    cri::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: value(Some(i.rx_bytes)),
        rx_errors: value(Some(i.rx_errors)),
        tx_bytes: value(Some(i.tx_bytes)),
        tx_errors: value(Some(i.tx_errors)),
    }
}

pub fn pod_stats(
    record: &SandboxRecord,
    sample: &PodSample,
    containers: Vec<cri::ContainerStats>,
) -> cri::PodSandboxStats {
    let ts = sample.timestamp;
    let network = sample.network.as_ref().map(|interfaces| cri::NetworkUsage {
        timestamp: ts,
        default_interface: interfaces
            .iter()
            .find(|i| i.name == DEFAULT_INTERFACE)
            .map(interface),
        interfaces: interfaces.iter().map(interface).collect(),
    });
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: record.id.clone(),
            metadata: record.metadata().map(|m| cri::PodSandboxMetadata {
                name: m.name.clone(),
                uid: m.uid.clone(),
                namespace: m.namespace.clone(),
                attempt: m.attempt,
            }),
            labels: to_hash_map(&record.spec.labels),
            annotations: to_hash_map(&record.spec.annotations),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cpu(ts, &sample.usage, sample.nano_cores)),
            memory: Some(memory(ts, &sample.usage)),
            network,
            process: Some(cri::ProcessUsage {
                timestamp: ts,
                process_count: value(sample.processes),
            }),
            containers,
            io: io(ts, &sample.usage),
        }),
        windows: None,
    }
}

fn metric_type(kind: MetricKind) -> i32 {
    match kind {
        MetricKind::Counter => cri::MetricType::Counter as i32,
        MetricKind::Gauge => cri::MetricType::Gauge as i32,
    }
}

pub fn descriptor(d: &Descriptor) -> cri::MetricDescriptor {
    cri::MetricDescriptor {
        name: d.name.to_string(),
        help: d.help.to_string(),
        label_keys: d.labels.iter().map(|l| l.to_string()).collect(),
    }
}

fn metric(s: Sample) -> cri::Metric {
    cri::Metric {
        name: s.name.to_string(),
        timestamp: s.timestamp,
        metric_type: metric_type(s.kind),
        label_values: s.label_values,
        value: value(Some(s.value)),
    }
}

pub fn pod_metrics(m: PodMetrics) -> cri::PodSandboxMetrics {
    cri::PodSandboxMetrics {
        pod_sandbox_id: m.pod_id,
        metrics: m.metrics.into_iter().map(metric).collect(),
        container_metrics: m
            .containers
            .into_iter()
            .map(|(container_id, metrics)| cri::ContainerMetrics {
                container_id,
                metrics: metrics.into_iter().map(metric).collect(),
            })
            .collect(),
    }
}

// The stats RPCs' shared halves: records → cached samples → CRI messages.

pub async fn containers_stats(
    daemon: &Services,
    records: Vec<crate::container::manager::ContainerRecord>,
) -> Vec<cri::ContainerStats> {
    let mountpoint = daemon.stats.writable_mountpoint();
    daemon
        .stats
        .containers(records)
        .await
        .iter()
        .map(|(record, sample)| container_stats(record, sample, &mountpoint))
        .collect()
}

pub async fn pods_stats(
    daemon: &Services,
    sandboxes: Vec<(SandboxRecord, SandboxState)>,
) -> Vec<cri::PodSandboxStats> {
    let mountpoint = daemon.stats.writable_mountpoint();
    pods_with_containers(daemon, sandboxes)
        .await
        .into_iter()
        .map(|(record, sample, containers)| {
            let containers = containers
                .iter()
                .map(|(c, s)| container_stats(c, s, &mountpoint))
                .collect();
            pod_stats(&record, &sample, containers)
        })
        .collect()
}

pub async fn pods_metrics(
    daemon: &Services,
    sandboxes: Vec<(SandboxRecord, SandboxState)>,
) -> Vec<cri::PodSandboxMetrics> {
    pods_with_containers(daemon, sandboxes)
        .await
        .into_iter()
        .map(|(record, sample, containers)| {
            pod_metrics(crate::stats::cadvisor::pod_metrics(
                &record,
                &sample,
                &containers,
            ))
        })
        .collect()
}

/// Each pod's sample with its containers' samples, from one pass over the containers.
#[allow(clippy::type_complexity)]
pub async fn pods_with_containers(
    daemon: &Services,
    sandboxes: Vec<(SandboxRecord, SandboxState)>,
) -> Vec<(
    SandboxRecord,
    crate::stats::PodSample,
    Vec<(
        crate::container::manager::ContainerRecord,
        crate::stats::ContainerSample,
    )>,
)> {
    let pods = daemon.stats.pods(sandboxes).await;
    let filter = crate::container::manager::ContainerFilter {
        // One pod: only its containers are looked at.
        sandbox_id: match pods.as_slice() {
            [(only, _)] => Some(only.id.clone()),
            _ => None,
        },
        ..Default::default()
    };
    let wanted: std::collections::HashSet<&str> = pods.iter().map(|(r, _)| r.id.as_str()).collect();
    let records = daemon
        .containers
        .list(&filter)
        .into_iter()
        .filter(|c| wanted.contains(c.sandbox_id.as_str()))
        .collect();
    let mut by_pod: HashMap<String, Vec<_>> = HashMap::new();
    for (record, sample) in daemon.stats.containers(records).await {
        by_pod
            .entry(record.sandbox_id.clone())
            .or_default()
            .push((record, sample));
    }
    pods.into_iter()
        .map(|(record, sample)| {
            let containers = by_pod.remove(&record.id).unwrap_or_default();
            (record, sample, containers)
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::container::manager::ContainerState;
    use crate::sandbox::{PodMetadata, PodSpec, SandboxState};

    #[test]
    fn psi_carries_totals_and_averages_and_io_exists_only_with_io_pressure() {
        use crate::container::usage::{Pressure, Usage};
        let pressure = Pressure {
            some_us: 42,
            full_us: Some(7),
            some_avgs: [150, 20, 0],
            full_avgs: Some([1, 0, 0]),
        };
        let converted = psi(pressure);
        let some = converted.some.unwrap();
        assert_eq!(
            (some.total, some.avg10, some.avg60, some.avg300),
            (42, 1.5, 0.2, 0.0)
        );
        assert_eq!(converted.full.unwrap().avg10, 0.01);
        let without_full = psi(Pressure {
            full_us: None,
            full_avgs: None,
            ..pressure
        });
        assert_eq!(without_full.full, None, "no full line: absent, not zero");

        let mut usage = Usage::default();
        assert_eq!(io(5, &usage), None);
        assert_eq!(cpu(5, &usage, None).psi, None);
        usage.io_pressure = Some(pressure);
        usage.cpu_pressure = Some(pressure);
        assert_eq!(io(5, &usage).unwrap().psi.unwrap().some.unwrap().total, 42);
        assert!(cpu(5, &usage, None).psi.is_some());
    }

    pub(crate) fn record(id: &str, state: ContainerState, created_at: i64) -> ContainerRecord {
        ContainerRecord {
            version: 1,
            id: id.into(),
            sandbox_id: "pod".into(),
            config: Default::default(),
            image_ref: String::new(),
            image_id: String::new(),
            image_name: String::new(),
            state,
            created_at,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid: 0,
            log_path: None,
            bundle: "/b".into(),
            cgroup_path: "/c".into(),
            stop_signal: 15,
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            volume_image_ids: Vec::new(),
        }
    }

    pub(crate) fn sandbox() -> SandboxRecord {
        SandboxRecord {
            version: 1,
            id: "pod".into(),
            spec: PodSpec {
                metadata: Some(PodMetadata {
                    name: "web".into(),
                    uid: "u".into(),
                    namespace: "ns".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            state: SandboxState::Ready,
            hostname: String::new(),
            created_at: 1,
            netns: None,
            network: None,
            pod_cgroup: "/p".into(),
            owns_pod_cgroup: true,
            pause_cgroup: "/p/p".into(),
            shim_socket: "/s".into(),
            shim_pid: None,
            pause_pid: None,
            pause_start_time: None,
            units: None,
        }
    }

    #[test]
    fn pod_stats_name_eth0_the_default_interface() {
        let sample = PodSample {
            timestamp: 9,
            network: Some(vec![
                InterfaceStats {
                    name: "net1".into(),
                    ..Default::default()
                },
                InterfaceStats {
                    name: "eth0".into(),
                    rx_bytes: 5,
                    ..Default::default()
                },
            ]),
            processes: Some(2),
            ..Default::default()
        };
        let stats = pod_stats(&sandbox(), &sample, Vec::new());
        let linux = stats.linux.unwrap();
        let network = linux.network.unwrap();
        assert_eq!(
            network.default_interface.unwrap().rx_bytes.unwrap().value,
            5
        );
        assert_eq!(network.interfaces.len(), 2);
        assert_eq!(linux.process.unwrap().process_count.unwrap().value, 2);
        // A host-network pod has no network figures of its own.
        let host = pod_stats(&sandbox(), &PodSample::default(), Vec::new());
        assert!(host.linux.unwrap().network.is_none());
    }
}
