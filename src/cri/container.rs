//! Container records → CRI messages.

use std::collections::HashMap;

use crate::cri::api as cri;

use crate::container::config::{ContainerResources, MountPropagation};
use crate::container::manager::{ContainerFilter, ContainerRecord, ContainerState};

pub fn state_to_cri(state: ContainerState) -> i32 {
    match state {
        ContainerState::Creating | ContainerState::Created => {
            cri::ContainerState::ContainerCreated as i32
        }
        ContainerState::Running => cri::ContainerState::ContainerRunning as i32,
        ContainerState::Exited => cri::ContainerState::ContainerExited as i32,
        ContainerState::Unknown => cri::ContainerState::ContainerUnknown as i32,
    }
}

pub fn state_from_cri(value: i32) -> Option<ContainerState> {
    match cri::ContainerState::try_from(value).ok()? {
        cri::ContainerState::ContainerCreated => Some(ContainerState::Created),
        cri::ContainerState::ContainerRunning => Some(ContainerState::Running),
        cri::ContainerState::ContainerExited => Some(ContainerState::Exited),
        cri::ContainerState::ContainerUnknown => Some(ContainerState::Unknown),
    }
}

pub fn filter(filter: Option<cri::ContainerFilter>) -> ContainerFilter {
    let filter = filter.unwrap_or_default();
    ContainerFilter {
        id: (!filter.id.is_empty()).then_some(filter.id),
        sandbox_id: (!filter.pod_sandbox_id.is_empty()).then_some(filter.pod_sandbox_id),
        // An unknown state value matches nothing rather than everything.
        state: filter
            .state
            .map(|s| state_from_cri(s.state).unwrap_or(ContainerState::Creating)),
        labels: filter.label_selector,
    }
}

/// ListContainerStats' filter: no state, every container of the selection.
pub fn stats_filter(filter: Option<cri::ContainerStatsFilter>) -> ContainerFilter {
    let filter = filter.unwrap_or_default();
    ContainerFilter {
        id: (!filter.id.is_empty()).then_some(filter.id),
        sandbox_id: (!filter.pod_sandbox_id.is_empty()).then_some(filter.pod_sandbox_id),
        state: None,
        labels: filter.label_selector,
    }
}

fn to_hash_map(map: &std::collections::BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn metadata(record: &ContainerRecord) -> Option<cri::ContainerMetadata> {
    Some(cri::ContainerMetadata {
        name: record.config.metadata.name.clone(),
        attempt: record.config.metadata.attempt,
    })
}

fn image_spec(record: &ContainerRecord) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: record.image_ref.clone(),
        // The resolved image ID (1.36's ImageSpec.image_ref), as ImageStatus reports it.
        image_ref: record.image_id.clone(),
        ..Default::default()
    })
}

pub fn container(record: &ContainerRecord) -> cri::Container {
    cri::Container {
        id: record.id.clone(),
        pod_sandbox_id: record.sandbox_id.clone(),
        metadata: metadata(record),
        image: image_spec(record),
        image_ref: record.image_name.clone(),
        state: state_to_cri(record.state),
        created_at: record.created_at,
        labels: to_hash_map(&record.config.labels),
        annotations: to_hash_map(&record.config.annotations),
        image_id: record.image_id.clone(),
    }
}

pub fn resources(resources: &ContainerResources) -> cri::ContainerResources {
    cri::ContainerResources {
        linux: Some(cri::LinuxContainerResources {
            cpu_period: resources.cpu_period,
            cpu_quota: resources.cpu_quota,
            cpu_shares: resources.cpu_shares,
            memory_limit_in_bytes: resources.memory_limit_in_bytes,
            oom_score_adj: resources.oom_score_adj,
            cpuset_cpus: resources.cpuset_cpus.clone(),
            cpuset_mems: resources.cpuset_mems.clone(),
            hugepage_limits: resources
                .hugepage_limits
                .iter()
                .map(|h| cri::HugepageLimit {
                    page_size: h.page_size.clone(),
                    limit: h.limit,
                })
                .collect(),
            unified: resources
                .unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            memory_swap_limit_in_bytes: resources.memory_swap_limit_in_bytes,
        }),
        windows: None,
    }
}

pub fn status(record: &ContainerRecord) -> cri::ContainerStatus {
    cri::ContainerStatus {
        id: record.id.clone(),
        metadata: metadata(record),
        state: state_to_cri(record.state),
        created_at: record.created_at,
        started_at: record.started_at,
        finished_at: record.finished_at,
        exit_code: record.exit_code,
        image: image_spec(record),
        image_ref: record.image_name.clone(),
        stop_signal: super::container_convert::signal_to_cri(record.stop_signal),
        reason: record.reason.clone(),
        message: record.message.clone(),
        labels: to_hash_map(&record.config.labels),
        annotations: to_hash_map(&record.config.annotations),
        mounts: record
            .config
            .mounts
            .iter()
            .map(|m| cri::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation: match m.propagation {
                    MountPropagation::Private => cri::MountPropagation::PropagationPrivate,
                    MountPropagation::HostToContainer => {
                        cri::MountPropagation::PropagationHostToContainer
                    }
                    MountPropagation::Bidirectional => {
                        cri::MountPropagation::PropagationBidirectional
                    }
                } as i32,
                recursive_read_only: m.recursive_read_only,
                image: m.image.as_ref().map(|i| cri::ImageSpec {
                    image: i.reference.clone(),
                    ..Default::default()
                }),
                image_sub_path: m
                    .image
                    .as_ref()
                    .map(|i| i.sub_path.clone())
                    .unwrap_or_default(),
                ..Default::default()
            })
            .collect(),
        log_path: record
            .log_path
            .as_ref()
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default(),
        resources: Some(resources(&record.config.resources)),
        image_id: record.image_id.clone(),
        user: Some(cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: i64::from(record.uid),
                gid: i64::from(record.gid),
                supplemental_groups: record.groups.iter().map(|g| i64::from(*g)).collect(),
            }),
        }),
    }
}

/// The AppArmor profile the container's processes exec into, "unconfined" when none
/// (asked so, privileged, or a host without AppArmor).
fn applied_apparmor_profile(spec: Option<&serde_json::Value>) -> &str {
    spec.and_then(|s| s.pointer("/process/apparmorProfile"))
        .and_then(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("unconfined")
}

/// The `info` of a verbose ContainerStatus.
pub fn info(record: &ContainerRecord, spec: Option<serde_json::Value>) -> HashMap<String, String> {
    let info = serde_json::json!({
        "apparmorProfile": applied_apparmor_profile(spec.as_ref()),
        "sandboxID": record.sandbox_id,
        "pid": record.pid,
        "bundle": record.bundle,
        "rootfs": record.bundle.join("rootfs"),
        "cgroupPath": record.cgroup_path,
        "config": record.config,
        "runtimeSpec": spec,
    });
    HashMap::from([("info".to_string(), info.to_string())])
}
