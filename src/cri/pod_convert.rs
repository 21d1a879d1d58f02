//! Pod sandboxes: CRI config → the domain's `PodSpec`, and records → CRI statuses.

use std::collections::{BTreeMap, HashMap};

use crate::cri::api as cri;

use crate::error::Error;
use crate::sandbox::podfiles::DnsConfig;
use crate::sandbox::{
    NamespaceMode, NamespaceOptions, PodMetadata, PodSpec, PortMapping, Protocol, SandboxFilter,
    SandboxRecord, SandboxState,
};

pub(super) fn sandbox_filter(filter: Option<cri::PodSandboxFilter>) -> SandboxFilter {
    let filter = filter.unwrap_or_default();
    SandboxFilter {
        id: (!filter.id.is_empty()).then_some(filter.id),
        sandbox_id: None,
        state: filter.state.map(|s| {
            if s.state == cri::PodSandboxState::SandboxReady as i32 {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            }
        }),
        labels: filter.label_selector,
    }
}

pub(super) fn stats_sandbox_filter(filter: Option<cri::PodSandboxStatsFilter>) -> SandboxFilter {
    let filter = filter.unwrap_or_default();
    SandboxFilter {
        id: (!filter.id.is_empty()).then_some(filter.id),
        sandbox_id: None,
        state: None,
        labels: filter.label_selector,
    }
}

pub(super) fn pod_sandbox((record, state): (SandboxRecord, SandboxState)) -> cri::PodSandbox {
    cri::PodSandbox {
        id: record.id.clone(),
        metadata: metadata_to_cri(&record),
        state: state_to_cri(state),
        created_at: record.created_at,
        labels: to_hash_map(&record.spec.labels),
        annotations: to_hash_map(&record.spec.annotations),
        runtime_handler: record.spec.runtime_handler.clone(),
    }
}

/// UpdatePodSandboxResources: the pod's limits are its containers' sum plus the overhead
/// (the kubelet sends both). Limits add up where both are set; a side that is unset (0)
/// leaves the other unchanged, as an unlimited pod stays unlimited.
pub(super) fn pod_resources(
    resources: Option<cri::LinuxContainerResources>,
    overhead: Option<cri::LinuxContainerResources>,
) -> Result<cri::LinuxContainerResources, Error> {
    let mut pod = resources
        .ok_or_else(|| Error::invalid_argument("resources: required (the pod-level limits)"))?;
    let Some(overhead) = overhead else {
        return Ok(pod);
    };
    let add = |a: i64, b: i64| {
        if a > 0 && b > 0 {
            a.saturating_add(b)
        } else {
            a
        }
    };
    if overhead.cpu_quota > 0
        && pod.cpu_quota > 0
        && overhead.cpu_period != 0
        && overhead.cpu_period != pod.cpu_period
    {
        return Err(Error::invalid_argument(format!(
            "overhead.cpu_period {} differs from resources.cpu_period {}",
            overhead.cpu_period, pod.cpu_period
        )));
    }
    pod.cpu_quota = add(pod.cpu_quota, overhead.cpu_quota);
    pod.cpu_shares = if pod.cpu_shares > 0 {
        pod.cpu_shares.saturating_add(overhead.cpu_shares.max(0))
    } else {
        0
    };
    pod.memory_limit_in_bytes = add(pod.memory_limit_in_bytes, overhead.memory_limit_in_bytes);
    pod.memory_swap_limit_in_bytes = add(
        pod.memory_swap_limit_in_bytes,
        overhead.memory_swap_limit_in_bytes,
    );
    for extra in overhead.hugepage_limits {
        if let Some(limit) = pod
            .hugepage_limits
            .iter_mut()
            .find(|h| h.page_size == extra.page_size)
        {
            limit.limit = limit.limit.saturating_add(extra.limit);
        }
    }
    Ok(pod)
}

pub(super) fn namespace_mode(value: i32) -> Result<NamespaceMode, Error> {
    match cri::NamespaceMode::try_from(value) {
        Ok(cri::NamespaceMode::Pod) => Ok(NamespaceMode::Pod),
        Ok(cri::NamespaceMode::Container) => Ok(NamespaceMode::Container),
        Ok(cri::NamespaceMode::Node) => Ok(NamespaceMode::Node),
        Ok(cri::NamespaceMode::Target) => Ok(NamespaceMode::Target),
        Err(_) => Err(Error::invalid_argument(format!(
            "unknown namespace mode {value}"
        ))),
    }
}

pub(super) fn namespace_mode_to_cri(mode: NamespaceMode) -> i32 {
    match mode {
        NamespaceMode::Pod => cri::NamespaceMode::Pod as i32,
        NamespaceMode::Container => cri::NamespaceMode::Container as i32,
        NamespaceMode::Node => cri::NamespaceMode::Node as i32,
        NamespaceMode::Target => cri::NamespaceMode::Target as i32,
    }
}

pub(super) fn port_mapping(p: &cri::PortMapping) -> Result<PortMapping, Error> {
    let protocol = match cri::Protocol::try_from(p.protocol) {
        Ok(cri::Protocol::Tcp) => Protocol::Tcp,
        Ok(cri::Protocol::Udp) => Protocol::Udp,
        Ok(cri::Protocol::Sctp) => Protocol::Sctp,
        Err(_) => {
            return Err(Error::invalid_argument(format!(
                "port_mappings: unknown protocol {}",
                p.protocol
            )));
        }
    };
    let port = |value: i32, field: &str| {
        u16::try_from(value).map_err(|_| {
            Error::invalid_argument(format!("port_mappings: {field} {value} is out of range"))
        })
    };
    Ok(PortMapping {
        protocol,
        container_port: port(p.container_port, "container_port")?,
        host_port: port(p.host_port, "host_port")?,
        host_ip: p.host_ip.clone(),
    })
}

/// CRI PodSandboxConfig → berth's PodSpec.
pub fn pod_spec(config: cri::PodSandboxConfig, runtime_handler: String) -> Result<PodSpec, Error> {
    let linux = config.linux.unwrap_or_default();
    let security = linux.security_context.unwrap_or_default();
    let ns = security.namespace_options.unwrap_or_default();
    Ok(PodSpec {
        metadata: config.metadata.map(|m| PodMetadata {
            name: m.name,
            uid: m.uid,
            namespace: m.namespace,
            attempt: m.attempt,
        }),
        hostname: config.hostname,
        log_directory: config.log_directory,
        dns: config
            .dns_config
            .map(|d| DnsConfig {
                servers: d.servers,
                searches: d.searches,
                options: d.options,
            })
            .unwrap_or_default(),
        port_mappings: config
            .port_mappings
            .iter()
            .map(port_mapping)
            .collect::<Result<_, _>>()?,
        labels: config.labels.into_iter().collect(),
        annotations: config.annotations.into_iter().collect(),
        cgroup_parent: linux.cgroup_parent,
        namespaces: NamespaceOptions {
            network: namespace_mode(ns.network)?,
            pid: namespace_mode(ns.pid)?,
            ipc: namespace_mode(ns.ipc)?,
        },
        sysctls: linux.sysctls.into_iter().collect(),
        privileged: security.privileged,
        runtime_handler,
        userns: crate::cri::container_convert::pod_userns(ns.userns_options.as_ref())?,
    })
}

pub(super) fn state_to_cri(state: SandboxState) -> i32 {
    match state {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady as i32,
        SandboxState::Creating | SandboxState::NotReady => {
            cri::PodSandboxState::SandboxNotready as i32
        }
    }
}

pub(super) fn metadata_to_cri(record: &SandboxRecord) -> Option<cri::PodSandboxMetadata> {
    record.metadata().map(|m| cri::PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    })
}

pub(super) fn to_hash_map(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn sandbox_status(record: &SandboxRecord, state: SandboxState) -> cri::PodSandboxStatus {
    let ips = record.ips();
    let ns = &record.spec.namespaces;
    cri::PodSandboxStatus {
        id: record.id.clone(),
        metadata: metadata_to_cri(record),
        state: state_to_cri(state),
        created_at: record.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: ips.first().map(|ip| ip.to_string()).unwrap_or_default(),
            additional_ips: ips
                .iter()
                .skip(1)
                .map(|ip| cri::PodIp { ip: ip.to_string() })
                .collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: namespace_mode_to_cri(ns.network),
                    pid: namespace_mode_to_cri(ns.pid),
                    ipc: namespace_mode_to_cri(ns.ipc),
                    target_id: String::new(),
                    userns_options: record.spec.userns.as_ref().map(userns_to_cri),
                }),
            }),
        }),
        labels: to_hash_map(&record.spec.labels),
        annotations: to_hash_map(&record.spec.annotations),
        runtime_handler: record.spec.runtime_handler.clone(),
    }
}

pub(super) fn userns_to_cri(userns: &crate::sandbox::spec::UserNamespace) -> cri::UserNamespace {
    let maps = |m: &[crate::sandbox::spec::IdMapping]| {
        m.iter()
            .map(|m| cri::IdMapping {
                host_id: m.host_id,
                container_id: m.container_id,
                length: m.length,
            })
            .collect()
    };
    cri::UserNamespace {
        mode: cri::NamespaceMode::Pod as i32,
        uids: maps(&userns.uids),
        gids: maps(&userns.gids),
    }
}

/// The `info` of a verbose PodSandboxStatus: what an operator debugging a pod wants.
pub(super) fn sandbox_info(record: &SandboxRecord) -> HashMap<String, String> {
    let info = serde_json::json!({
        "pid": record.pause_pid,
        "shimPid": record.shim_pid,
        "netNamespacePath": record.netns,
        "cgroupPath": record.pause_cgroup,
        "cniResult": record.network.as_ref().and_then(|n| n.result.as_ref()).map(|r| &r.raw),
        "cniNetwork": record.network.as_ref().map(|n| &n.config),
        "config": &record.spec,
    });
    HashMap::from([("info".to_string(), info.to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_spec_converts_namespaces_ports_and_sysctls() {
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "p".into(),
                uid: "u".into(),
                namespace: "n".into(),
                attempt: 1,
            }),
            port_mappings: vec![cri::PortMapping {
                protocol: cri::Protocol::Udp as i32,
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into(),
            }],
            linux: Some(cri::LinuxPodSandboxConfig {
                sysctls: HashMap::from([("net.ipv4.ip_forward".into(), "1".into())]),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Node as i32,
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = pod_spec(config, String::new()).unwrap();
        assert!(spec.namespaces.host_network());
        assert_eq!(spec.namespaces.pid, NamespaceMode::Container);
        assert_eq!(spec.port_mappings[0].protocol, Protocol::Udp);
        assert_eq!(spec.port_mappings[0].host_port, 5353);
        assert_eq!(spec.sysctls["net.ipv4.ip_forward"], "1");
    }

    #[test]
    fn out_of_range_port_is_invalid_argument() {
        let config = cri::PodSandboxConfig {
            port_mappings: vec![cri::PortMapping {
                container_port: 70000,
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = pod_spec(config, String::new()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("container_port"));
    }
}
