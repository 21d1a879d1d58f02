//! CRI RuntimeService: proto ⇄ domain conversions and delegation.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::{CgroupDriver, Daemon};
use crate::error::Error;
use crate::sandbox::podfiles::DnsConfig;
use crate::sandbox::{
    NamespaceMode, NamespaceOptions, PodMetadata, PodSpec, PortMapping, Protocol, SandboxFilter,
    SandboxRecord, SandboxState,
};
use crate::streaming::token::{StreamRequest, Streams};

pub struct RuntimeCri {
    daemon: Arc<Daemon>,
}

impl RuntimeCri {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        RuntimeCri { daemon }
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

/// The full id of a running container; NotFound or FailedPrecondition otherwise.
fn running_container(daemon: &Daemon, id: &str) -> Result<String, Error> {
    let record = daemon.containers.status(id)?;
    if record.state != crate::container::manager::ContainerState::Running {
        return Err(Error::failed_precondition(format!(
            "container {} is not running",
            record.id
        )));
    }
    Ok(record.id)
}

/// A stream request must ask for some stream, and a terminal has no separate stderr (the
/// kubelet's own rules).
fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), Error> {
    if tty && stderr {
        return Err(Error::invalid_argument(
            "tty and stderr cannot both be true: a terminal merges stderr into stdout",
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(Error::invalid_argument(
            "one of stdin, stdout or stderr must be set",
        ));
    }
    Ok(())
}

fn unimplemented<T>(rpc: &str) -> RpcResult<T> {
    Err(Error::unimplemented(format!("{rpc} is not implemented by berth yet")).into())
}

fn namespace_mode(value: i32) -> Result<NamespaceMode, Error> {
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

fn namespace_mode_to_cri(mode: NamespaceMode) -> i32 {
    match mode {
        NamespaceMode::Pod => cri::NamespaceMode::Pod as i32,
        NamespaceMode::Container => cri::NamespaceMode::Container as i32,
        NamespaceMode::Node => cri::NamespaceMode::Node as i32,
        NamespaceMode::Target => cri::NamespaceMode::Target as i32,
    }
}

fn port_mapping(p: &cri::PortMapping) -> Result<PortMapping, Error> {
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

fn state_to_cri(state: SandboxState) -> i32 {
    match state {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady as i32,
        SandboxState::Creating | SandboxState::NotReady => {
            cri::PodSandboxState::SandboxNotready as i32
        }
    }
}

fn metadata_to_cri(record: &SandboxRecord) -> Option<cri::PodSandboxMetadata> {
    record.metadata().map(|m| cri::PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    })
}

fn to_hash_map(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(crate) fn sandbox_status(record: &SandboxRecord, state: SandboxState) -> cri::PodSandboxStatus {
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

fn userns_to_cri(userns: &crate::sandbox::spec::UserNamespace) -> cri::UserNamespace {
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
fn sandbox_info(record: &SandboxRecord) -> HashMap<String, String> {
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

#[tonic::async_trait]
impl RuntimeService for RuntimeCri {
    async fn version(&self, _: Request<cri::VersionRequest>) -> RpcResult<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "berth".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> RpcResult<cri::RunPodSandboxResponse> {
        let request = request.into_inner();
        let config = request
            .config
            .ok_or_else(|| Error::invalid_argument("config is required"))?;
        let spec = pod_spec(config, request.runtime_handler)?;
        let id = self.daemon.sandboxes.run(spec).await?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> RpcResult<cri::StopPodSandboxResponse> {
        let id = request.into_inner().pod_sandbox_id;
        self.daemon.sandboxes.stop(&id).await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> RpcResult<cri::RemovePodSandboxResponse> {
        let id = request.into_inner().pod_sandbox_id;
        // The pod's containers go first: their cgroups sit inside the pod's.
        if let Ok(sandbox) = self.daemon.sandboxes.get(&id) {
            self.daemon.containers.remove_all_of(&sandbox.id).await?;
        }
        self.daemon.sandboxes.remove(&id).await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> RpcResult<cri::PodSandboxStatusResponse> {
        let request = request.into_inner();
        let (record, state) = self.daemon.sandboxes.status(&request.pod_sandbox_id)?;
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(sandbox_status(&record, state)),
            info: if request.verbose {
                sandbox_info(&record)
            } else {
                HashMap::new()
            },
            containers_statuses: Vec::new(),
            timestamp: crate::sandbox::now_nanos(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> RpcResult<cri::ListPodSandboxResponse> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let filter = SandboxFilter {
            id: (!filter.id.is_empty()).then_some(filter.id),
            state: filter.state.map(|s| {
                if s.state == cri::PodSandboxState::SandboxReady as i32 {
                    SandboxState::Ready
                } else {
                    SandboxState::NotReady
                }
            }),
            labels: filter.label_selector,
        };
        let items = self
            .daemon
            .sandboxes
            .list(&filter)
            .into_iter()
            .map(|(record, state)| cri::PodSandbox {
                id: record.id.clone(),
                metadata: metadata_to_cri(&record),
                state: state_to_cri(state),
                created_at: record.created_at,
                labels: to_hash_map(&record.spec.labels),
                annotations: to_hash_map(&record.spec.annotations),
                runtime_handler: record.spec.runtime_handler.clone(),
            })
            .collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> RpcResult<cri::CreateContainerResponse> {
        let request = request.into_inner();
        let config = request
            .config
            .ok_or_else(|| Error::invalid_argument("config is required"))?;
        let config = super::container_convert::container_config(config)?;
        let id = self
            .daemon
            .containers
            .create(crate::container::manager::CreateRequest {
                sandbox_id: request.pod_sandbox_id,
                config,
            })
            .await?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> RpcResult<cri::StartContainerResponse> {
        let id = request.into_inner().container_id;
        self.daemon.containers.start(&id).await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> RpcResult<cri::StopContainerResponse> {
        let request = request.into_inner();
        let timeout = std::time::Duration::from_secs(request.timeout.max(0) as u64);
        self.daemon
            .containers
            .stop(&request.container_id, timeout)
            .await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> RpcResult<cri::RemoveContainerResponse> {
        let id = request.into_inner().container_id;
        self.daemon.containers.remove(&id).await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> RpcResult<cri::ListContainersResponse> {
        let filter = super::container::filter(request.into_inner().filter);
        let containers = self
            .daemon
            .containers
            .list(&filter)
            .iter()
            .map(super::container::container)
            .collect();
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> RpcResult<cri::ContainerStatusResponse> {
        let request = request.into_inner();
        let record = self.daemon.containers.status(&request.container_id)?;
        let info = if request.verbose {
            let spec = std::fs::read(record.bundle.join("config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            super::container::info(&record, spec)
        } else {
            HashMap::new()
        };
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(super::container::status(&record)),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> RpcResult<cri::UpdateContainerResourcesResponse> {
        let request = request.into_inner();
        let linux = request
            .linux
            .ok_or_else(|| Error::invalid_argument("linux resources are required"))?;
        let resources = super::container_convert::resources(&linux);
        self.daemon
            .containers
            .update_resources(&request.container_id, resources)
            .await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> RpcResult<cri::ReopenContainerLogResponse> {
        let id = request.into_inner().container_id;
        self.daemon.containers.reopen_log(&id).await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> RpcResult<cri::ExecSyncResponse> {
        let request = request.into_inner();
        let timeout = std::time::Duration::from_secs(u64::try_from(request.timeout).unwrap_or(0));
        let output = self
            .daemon
            .containers
            .exec_sync(&request.container_id, request.cmd, timeout)
            .await?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: output.stdout,
            stderr: output.stderr,
            exit_code: output.exit_code,
        }))
    }

    async fn exec(&self, request: Request<cri::ExecRequest>) -> RpcResult<cri::ExecResponse> {
        let request = request.into_inner();
        if request.cmd.is_empty() {
            return Err(Error::invalid_argument("cmd is required").into());
        }
        check_streams(request.stdin, request.stdout, request.stderr, request.tty)?;
        let container_id = running_container(&self.daemon, &request.container_id)?;
        let streams = Streams {
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
            tty: request.tty,
        };
        let url = self.daemon.streaming.url_for(StreamRequest::Exec {
            container_id,
            cmd: request.cmd,
            streams,
        });
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(&self, request: Request<cri::AttachRequest>) -> RpcResult<cri::AttachResponse> {
        let request = request.into_inner();
        check_streams(request.stdin, request.stdout, request.stderr, request.tty)?;
        let container_id = running_container(&self.daemon, &request.container_id)?;
        let streams = Streams {
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
            tty: request.tty,
        };
        let url = self.daemon.streaming.url_for(StreamRequest::Attach {
            container_id,
            streams,
        });
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> RpcResult<cri::PortForwardResponse> {
        let request = request.into_inner();
        if let Some(port) = request.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Error::invalid_argument(format!("invalid port {port}")).into());
        }
        let (record, state) = self.daemon.sandboxes.status(&request.pod_sandbox_id)?;
        if state != SandboxState::Ready {
            return Err(Error::failed_precondition(format!(
                "pod sandbox {} is not ready",
                record.id
            ))
            .into());
        }
        let url = self.daemon.streaming.url_for(StreamRequest::PortForward {
            sandbox_id: record.id,
        });
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> RpcResult<cri::ContainerStatsResponse> {
        let id = request.into_inner().container_id;
        let record = self.daemon.containers.status(&id)?;
        let stats = self.container_stats(vec![record]).await;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: stats.into_iter().next(),
        }))
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> RpcResult<cri::ListContainerStatsResponse> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let filter = crate::container::manager::ContainerFilter {
            id: (!filter.id.is_empty()).then_some(filter.id),
            sandbox_id: (!filter.pod_sandbox_id.is_empty()).then_some(filter.pod_sandbox_id),
            state: None,
            labels: filter.label_selector,
        };
        let records = self.daemon.containers.list(&filter);
        Ok(Response::new(cri::ListContainerStatsResponse {
            stats: self.container_stats(records).await,
        }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> RpcResult<cri::PodSandboxStatsResponse> {
        let id = request.into_inner().pod_sandbox_id;
        let sandbox = self.daemon.sandboxes.status(&id)?;
        let stats = self.pod_stats(vec![sandbox]).await;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: stats.into_iter().next(),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> RpcResult<cri::ListPodSandboxStatsResponse> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let filter = SandboxFilter {
            id: (!filter.id.is_empty()).then_some(filter.id),
            state: None,
            labels: filter.label_selector,
        };
        let sandboxes = self.daemon.sandboxes.list(&filter);
        Ok(Response::new(cri::ListPodSandboxStatsResponse {
            stats: self.pod_stats(sandboxes).await,
        }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> RpcResult<cri::UpdateRuntimeConfigResponse> {
        let cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if !cidr.is_empty() {
            tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
            *self
                .daemon
                .pod_cidr
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = cidr;
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, request: Request<cri::StatusRequest>) -> RpcResult<cri::StatusResponse> {
        let verbose = request.into_inner().verbose;
        let network = self.daemon.sandboxes.cni().status();
        let network_condition = match network {
            Ok(_) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            Err(e) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message: format!("Network plugin returns error: {e}"),
            },
        };
        let mut info = HashMap::new();
        if verbose {
            let config = serde_json::to_string(&*self.daemon.config)
                .map_err(|e| Error::internal("encoding the config", e))?;
            info.insert("config".to_string(), config);
            let cidr = self
                .daemon
                .pod_cidr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            info.insert("podCIDR".to_string(), cidr);
        }
        let features = cri::RuntimeHandlerFeatures {
            // Init applies `rro` with mount_setattr(AT_RECURSIVE).
            recursive_read_only_mounts: true,
            // Pods in their own user namespace, with id-mapped rootfs and volumes, where
            // overlayfs takes id-mapped layers.
            user_namespaces: crate::linux::kernel::userns_pods_unsupported().is_none(),
        };
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![
                    cri::RuntimeCondition {
                        r#type: "RuntimeReady".into(),
                        status: true,
                        reason: String::new(),
                        message: String::new(),
                    },
                    network_condition,
                ],
            }),
            info,
            runtime_handlers: crate::sandbox::spec::RUNTIME_HANDLERS
                .iter()
                .map(|name| cri::RuntimeHandler {
                    name: name.to_string(),
                    features: Some(features),
                })
                .collect(),
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> RpcResult<cri::CheckpointContainerResponse> {
        unimplemented("CheckpointContainer")
    }

    type GetContainerEventsStream = Pin<
        Box<
            dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn get_container_events(
        &self,
        _: Request<cri::GetEventsRequest>,
    ) -> RpcResult<Self::GetContainerEventsStream> {
        let mut events = self.daemon.sandboxes.events().subscribe();
        let containers = self.daemon.containers.clone();
        // The statuses are looked up as each event is sent, off the publisher's path.
        let stream = async_stream_of(move |tx| async move {
            loop {
                let event = tokio::select! {
                    event = events.recv() => event,
                    // A client that went away stops counting as a subscriber at once.
                    _ = tx.closed() => None,
                };
                let Some(event) = event else { break };
                let current = containers.containers_of(&event.sandbox_id);
                let statuses = super::stats::event_containers(&event, current);
                if tx
                    .send(Ok(super::stats::event(&event, &statuses)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> RpcResult<cri::ListMetricDescriptorsResponse> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: crate::stats::metrics::DESCRIPTORS
                .iter()
                .map(super::stats::descriptor)
                .collect(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> RpcResult<cri::ListPodSandboxMetricsResponse> {
        let sandboxes = self.daemon.sandboxes.list(&SandboxFilter::default());
        let pod_metrics = self
            .pods_with_containers(sandboxes)
            .await
            .into_iter()
            .map(|(record, sample, containers)| {
                let metrics = crate::stats::metrics::pod_metrics(&record, &sample, &containers);
                super::stats::pod_metrics(metrics)
            })
            .collect();
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics,
        }))
    }

    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> RpcResult<cri::RuntimeConfigResponse> {
        let driver = match self.daemon.cgroup_driver {
            CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
            CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
        };
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }
}

/// The stats RPCs' shared halves: records → cached samples → CRI messages.
impl RuntimeCri {
    async fn container_stats(
        &self,
        records: Vec<crate::container::manager::ContainerRecord>,
    ) -> Vec<cri::ContainerStats> {
        let mountpoint = self.daemon.stats.writable_mountpoint();
        self.daemon
            .stats
            .containers(records)
            .await
            .iter()
            .map(|(record, sample)| super::stats::container_stats(record, sample, &mountpoint))
            .collect()
    }

    async fn pod_stats(
        &self,
        sandboxes: Vec<(SandboxRecord, SandboxState)>,
    ) -> Vec<cri::PodSandboxStats> {
        let mountpoint = self.daemon.stats.writable_mountpoint();
        self.pods_with_containers(sandboxes)
            .await
            .into_iter()
            .map(|(record, sample, containers)| {
                let containers = containers
                    .iter()
                    .map(|(c, s)| super::stats::container_stats(c, s, &mountpoint))
                    .collect();
                super::stats::pod_stats(&record, &sample, containers)
            })
            .collect()
    }

    /// Each pod's sample with its containers' samples, from one pass over the containers.
    #[allow(clippy::type_complexity)]
    async fn pods_with_containers(
        &self,
        sandboxes: Vec<(SandboxRecord, SandboxState)>,
    ) -> Vec<(
        SandboxRecord,
        crate::stats::PodSample,
        Vec<(
            crate::container::manager::ContainerRecord,
            crate::stats::ContainerSample,
        )>,
    )> {
        let pods = self.daemon.stats.pods(sandboxes).await;
        let filter = crate::container::manager::ContainerFilter {
            // One pod: only its containers are looked at.
            sandbox_id: match pods.as_slice() {
                [(only, _)] => Some(only.id.clone()),
                _ => None,
            },
            ..Default::default()
        };
        let wanted: std::collections::HashSet<&str> =
            pods.iter().map(|(r, _)| r.id.as_str()).collect();
        let records = self
            .daemon
            .containers
            .list(&filter)
            .into_iter()
            .filter(|c| wanted.contains(c.sandbox_id.as_str()))
            .collect();
        let mut by_pod: HashMap<String, Vec<_>> = HashMap::new();
        for (record, sample) in self.daemon.stats.containers(records).await {
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
}

/// A response stream fed by `producer` through a small channel (the producer stops when
/// the client goes away and a send fails).
fn async_stream_of<F, Fut>(
    producer: F,
) -> Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<cri::ContainerEventResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(producer(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
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
