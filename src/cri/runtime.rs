//! CRI RuntimeService: one method per RPC, delegating to the managers; the pod sandbox
//! RPCs are answered in `pods.rs` (the container conversions are in `container_convert`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use crate::cri::api as cri;
use crate::cri::api::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::Services;
use super::pods;
use super::stream::{self, ResponseStream};
use crate::config::CgroupDriver;
use crate::error::Error;
use crate::streaming::token::{StreamRequest, Streams};

pub struct RuntimeCri {
    daemon: Arc<Services>,
}

impl RuntimeCri {
    pub fn new(daemon: Arc<Services>) -> Self {
        RuntimeCri { daemon }
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

fn answer<T>(result: Result<T, Error>) -> RpcResult<T> {
    Ok(Response::new(result?))
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
        answer(pods::run_pod_sandbox(&self.daemon, request.into_inner()).await)
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> RpcResult<cri::StopPodSandboxResponse> {
        let id = request.into_inner().pod_sandbox_id;
        pods::stop_pod_sandbox(&self.daemon, id).await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> RpcResult<cri::RemovePodSandboxResponse> {
        let id = request.into_inner().pod_sandbox_id;
        pods::remove_pod_sandbox(&self.daemon, id).await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> RpcResult<cri::PodSandboxStatusResponse> {
        answer(pods::pod_sandbox_status(&self.daemon, request.into_inner()))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> RpcResult<cri::ListPodSandboxResponse> {
        let filter = request.into_inner().filter;
        Ok(Response::new(pods::list_pod_sandbox(&self.daemon, filter)))
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
            let spec = tokio::fs::read(record.bundle.join("config.json"))
                .await
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
        let container_id = self.daemon.containers.running(&request.container_id)?.id;
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
        let container_id = self.daemon.containers.running(&request.container_id)?.id;
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
        let needs = "a port forward needs it ready";
        let record = self
            .daemon
            .sandboxes
            .ready(&request.pod_sandbox_id, needs)?;
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
        let stats = super::stats::containers_stats(&self.daemon, vec![record]).await;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: stats.into_iter().next(),
        }))
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> RpcResult<cri::ListContainerStatsResponse> {
        let filter = super::container::stats_filter(request.into_inner().filter);
        let records = self.daemon.containers.list(&filter);
        Ok(Response::new(cri::ListContainerStatsResponse {
            stats: super::stats::containers_stats(&self.daemon, records).await,
        }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> RpcResult<cri::PodSandboxStatsResponse> {
        let id = request.into_inner().pod_sandbox_id;
        answer(pods::pod_sandbox_stats(&self.daemon, id).await)
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> RpcResult<cri::ListPodSandboxStatsResponse> {
        let filter = request.into_inner().filter;
        Ok(Response::new(
            pods::list_pod_sandbox_stats(&self.daemon, filter).await,
        ))
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
            // The driver in use, not the setting (`auto` is resolved at start).
            let mut config = serde_json::to_value(&*self.daemon.config)
                .map_err(|e| Error::internal("encoding the config", e))?;
            config["cgroup_driver"] = self.daemon.cgroup_driver.name().into();
            info.insert("config".to_string(), config.to_string());
            let cidr = self
                .daemon
                .pod_cidr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            info.insert("podCIDR".to_string(), cidr);
            info.insert(
                "apparmor".to_string(),
                apparmor_info(self.daemon.containers.apparmor()).to_string(),
            );
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
                // A pod in its own user namespace cannot use the host network here
                // (PodSpec::validate refuses it), so the kubelet must not ask.
                user_namespaces_host_network: false,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        request: Request<cri::CheckpointContainerRequest>,
    ) -> RpcResult<cri::CheckpointContainerResponse> {
        let request = request.into_inner();
        let checkpoint = crate::container::checkpoint::CheckpointRequest {
            container_id: request.container_id,
            location: request.location.into(),
            timeout: (request.timeout > 0)
                .then(|| std::time::Duration::from_secs(request.timeout.unsigned_abs())),
        };
        let daemon = self.daemon.clone();
        // Its own task: a client that gives up must not leave a half-written archive.
        tokio::spawn(async move {
            crate::container::checkpoint::checkpoint(
                &daemon.containers,
                &daemon.config.checkpoint.criu_path,
                checkpoint,
            )
            .await
        })
        .await
        .map_err(|e| Error::internal("checkpoint task", e))??;
        Ok(Response::new(cri::CheckpointContainerResponse {}))
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
        let mut events = self.daemon.events.subscribe();
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
                let statuses = super::event_convert::event_containers(&event, current);
                if tx
                    .send(Ok(super::event_convert::event(&event, &statuses)))
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
            descriptors: crate::stats::cadvisor::DESCRIPTORS
                .iter()
                .map(super::stats::descriptor)
                .collect(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> RpcResult<cri::ListPodSandboxMetricsResponse> {
        Ok(Response::new(
            pods::list_pod_sandbox_metrics(&self.daemon).await,
        ))
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
    type StreamPodSandboxesStream = ResponseStream<cri::StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        request: Request<cri::StreamPodSandboxesRequest>,
    ) -> RpcResult<Self::StreamPodSandboxesStream> {
        let filter = request.into_inner().filter;
        Ok(Response::new(pods::stream_pod_sandboxes(
            &self.daemon,
            filter,
        )))
    }

    type StreamContainersStream = ResponseStream<cri::StreamContainersResponse>;

    async fn stream_containers(
        &self,
        request: Request<cri::StreamContainersRequest>,
    ) -> RpcResult<Self::StreamContainersStream> {
        let filter = super::container::filter(request.into_inner().filter);
        let records = self.daemon.containers.list(&filter);
        Ok(Response::new(stream::converted(
            records,
            |record| super::container::container(&record),
            |containers| cri::StreamContainersResponse { containers },
        )))
    }

    type StreamContainerStatsStream = ResponseStream<cri::StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        request: Request<cri::StreamContainerStatsRequest>,
    ) -> RpcResult<Self::StreamContainerStatsStream> {
        let filter = super::container::stats_filter(request.into_inner().filter);
        let records = self.daemon.containers.list(&filter);
        let daemon = self.daemon.clone();
        Ok(Response::new(stream::batched(
            records,
            move |batch| {
                let daemon = daemon.clone();
                async move { super::stats::containers_stats(&daemon, batch).await }
            },
            |container_stats| cri::StreamContainerStatsResponse { container_stats },
        )))
    }

    type StreamPodSandboxStatsStream = ResponseStream<cri::StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        request: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> RpcResult<Self::StreamPodSandboxStatsStream> {
        let filter = request.into_inner().filter;
        Ok(Response::new(pods::stream_pod_sandbox_stats(
            &self.daemon,
            filter,
        )))
    }

    type StreamPodSandboxMetricsStream = ResponseStream<cri::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> RpcResult<Self::StreamPodSandboxMetricsStream> {
        Ok(Response::new(pods::stream_pod_sandbox_metrics(
            &self.daemon,
        )))
    }

    async fn update_pod_sandbox_resources(
        &self,
        request: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> RpcResult<cri::UpdatePodSandboxResourcesResponse> {
        pods::update_pod_sandbox_resources(&self.daemon, request.into_inner()).await?;
        Ok(Response::new(cri::UpdatePodSandboxResourcesResponse {}))
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

/// AppArmor in the verbose Status: whether the host enforces it and whether berth's
/// default profile is loaded (or why not).
fn apparmor_info(host: &crate::container::spec::AppArmorHost) -> serde_json::Value {
    use crate::container::spec::AppArmorHost;
    match host {
        AppArmorHost::Disabled => serde_json::json!({ "enabled": false }),
        AppArmorHost::Enabled { default_profile } => serde_json::json!({
            "enabled": true,
            "defaultProfile": default_profile.as_ref().ok(),
            "defaultProfileError": default_profile.as_ref().err(),
        }),
    }
}
