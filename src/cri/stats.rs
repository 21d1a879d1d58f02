//! Collector samples and CRI metrics → CRI messages (lifecycle events: `event_convert`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::cri::api as cri;

use crate::container::manager::ContainerRecord;
use crate::sandbox::SandboxRecord;
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
        psi: None,
    }
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
        psi: None,
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
        io: None,
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
            io: None,
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::container::manager::ContainerState;
    use crate::sandbox::{PodMetadata, PodSpec, SandboxState};

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
