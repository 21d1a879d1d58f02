//! Collector samples, CRI metrics and lifecycle events → CRI messages.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use k8s_cri::v1 as cri;

use crate::container::manager::ContainerRecord;
use crate::events::{Event, EventKind};
use crate::sandbox::SandboxRecord;
use crate::stats::metrics::{Descriptor, MetricKind, PodMetrics, Sample};
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
    usage: &crate::container::stats::Usage,
    nano_cores: Option<u64>,
) -> cri::CpuUsage {
    cri::CpuUsage {
        timestamp,
        usage_core_nano_seconds: value(usage.cpu_usage_ns),
        usage_nano_cores: value(nano_cores),
    }
}

fn memory(timestamp: i64, usage: &crate::container::stats::Usage) -> cri::MemoryUsage {
    cri::MemoryUsage {
        timestamp,
        working_set_bytes: value(usage.memory_working_set_bytes),
        available_bytes: value(usage.memory_available_bytes),
        usage_bytes: value(usage.memory_usage_bytes),
        rss_bytes: value(usage.memory_rss_bytes),
        page_faults: value(usage.page_faults),
        major_page_faults: value(usage.major_page_faults),
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

fn event_type(kind: EventKind) -> i32 {
    match kind {
        EventKind::Created => cri::ContainerEventType::ContainerCreatedEvent as i32,
        EventKind::Started => cri::ContainerEventType::ContainerStartedEvent as i32,
        EventKind::Stopped => cri::ContainerEventType::ContainerStoppedEvent as i32,
        EventKind::Deleted => cri::ContainerEventType::ContainerDeletedEvent as i32,
    }
}

/// The statuses an event carries: the pod's containers now, with the event's own container
/// as it was at the transition (and without it once deleted).
pub fn event_containers(event: &Event, current: Vec<ContainerRecord>) -> Vec<ContainerRecord> {
    let mut out: Vec<ContainerRecord> = current.into_iter().filter(|c| c.id != event.id).collect();
    if let Some(own) = &event.container
        && event.kind != EventKind::Deleted
    {
        out.push(own.clone());
    }
    out.sort_by_key(|c| c.created_at);
    out
}

pub fn event(event: &Event, containers: &[ContainerRecord]) -> cri::ContainerEventResponse {
    cri::ContainerEventResponse {
        container_id: event.id.clone(),
        container_event_type: event_type(event.kind),
        created_at: event.created_at,
        pod_sandbox_status: event
            .sandbox
            .as_ref()
            .map(|(record, state)| super::runtime::sandbox_status(record, *state)),
        containers_statuses: containers.iter().map(super::container::status).collect(),
    }
}
