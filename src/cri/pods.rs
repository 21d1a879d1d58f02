//! RuntimeService's pod sandbox RPCs, from RunPodSandbox to the pods' stats and metrics
//! and UpdatePodSandboxResources; `runtime.rs` hands each request here. The pod
//! conversions are in `pod_convert`.

use std::collections::HashMap;

use super::Services;
use super::pod_convert::*;
use super::stream::{self, ResponseStream};
use crate::cri::api as cri;
use crate::error::{Error, Result};
use crate::sandbox::SandboxFilter;

pub(super) async fn run_pod_sandbox(
    daemon: &Services,
    request: cri::RunPodSandboxRequest,
) -> Result<cri::RunPodSandboxResponse> {
    let config = request
        .config
        .ok_or_else(|| Error::invalid_argument("config is required"))?;
    let spec = pod_spec(config, request.runtime_handler)?;
    let id = daemon.sandboxes.run(spec).await?;
    Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
}

pub(super) async fn stop_pod_sandbox(daemon: &Services, id: String) -> Result<()> {
    // The containers first, through StopContainer's path (as containerd does): their
    // exits are recorded and whatever they left in their cgroups is killed.
    // The pod itself is stopped even if one of them would not die; that error follows.
    let containers = daemon.containers.stop_all_of(&id).await;
    daemon.sandboxes.stop(&id).await?;
    // The shim's last exits may still be on their way: its exit files say them now.
    if let Ok(sandbox) = daemon.sandboxes.get(&id) {
        daemon.containers.settle_exits_of(&sandbox.id).await;
    }
    containers
}

pub(super) async fn remove_pod_sandbox(daemon: &Services, id: String) -> Result<()> {
    // The pod's containers go first: their cgroups sit inside the pod's.
    if let Ok(sandbox) = daemon.sandboxes.get(&id) {
        daemon.containers.remove_all_of(&sandbox.id).await?;
    }
    daemon.sandboxes.remove(&id).await
}

pub(super) fn pod_sandbox_status(
    daemon: &Services,
    request: cri::PodSandboxStatusRequest,
) -> Result<cri::PodSandboxStatusResponse> {
    let (record, state) = daemon.sandboxes.status(&request.pod_sandbox_id)?;
    Ok(cri::PodSandboxStatusResponse {
        status: Some(sandbox_status(&record, state)),
        info: if request.verbose {
            sandbox_info(&record)
        } else {
            HashMap::new()
        },
        containers_statuses: Vec::new(),
        timestamp: crate::linux::process::now_unix_nanos(),
    })
}

pub(super) fn list_pod_sandbox(
    daemon: &Services,
    filter: Option<cri::PodSandboxFilter>,
) -> cri::ListPodSandboxResponse {
    let filter = sandbox_filter(filter);
    let items = daemon.sandboxes.list(&filter).into_iter();
    cri::ListPodSandboxResponse {
        items: items.map(pod_sandbox).collect(),
    }
}

pub(super) async fn pod_sandbox_stats(
    daemon: &Services,
    id: String,
) -> Result<cri::PodSandboxStatsResponse> {
    let sandbox = daemon.sandboxes.status(&id)?;
    let stats = super::stats::pods_stats(daemon, vec![sandbox]).await;
    Ok(cri::PodSandboxStatsResponse {
        stats: stats.into_iter().next(),
    })
}

pub(super) async fn list_pod_sandbox_stats(
    daemon: &Services,
    filter: Option<cri::PodSandboxStatsFilter>,
) -> cri::ListPodSandboxStatsResponse {
    let sandboxes = daemon.sandboxes.list(&stats_sandbox_filter(filter));
    cri::ListPodSandboxStatsResponse {
        stats: super::stats::pods_stats(daemon, sandboxes).await,
    }
}

pub(super) async fn list_pod_sandbox_metrics(
    daemon: &Services,
) -> cri::ListPodSandboxMetricsResponse {
    let sandboxes = daemon.sandboxes.list(&SandboxFilter::default());
    let pod_metrics = super::stats::pods_metrics(daemon, sandboxes).await;
    cri::ListPodSandboxMetricsResponse { pod_metrics }
}

pub(super) fn stream_pod_sandboxes(
    daemon: &Services,
    filter: Option<cri::PodSandboxFilter>,
) -> ResponseStream<cri::StreamPodSandboxesResponse> {
    let sandboxes = daemon.sandboxes.list(&sandbox_filter(filter));
    stream::converted(sandboxes, pod_sandbox, |pod_sandboxes| {
        cri::StreamPodSandboxesResponse { pod_sandboxes }
    })
}

pub(super) fn stream_pod_sandbox_stats(
    daemon: &std::sync::Arc<Services>,
    filter: Option<cri::PodSandboxStatsFilter>,
) -> ResponseStream<cri::StreamPodSandboxStatsResponse> {
    let sandboxes = daemon.sandboxes.list(&stats_sandbox_filter(filter));
    let daemon = daemon.clone();
    stream::batched(
        sandboxes,
        move |batch| {
            let daemon = daemon.clone();
            async move { super::stats::pods_stats(&daemon, batch).await }
        },
        |pod_sandbox_stats| cri::StreamPodSandboxStatsResponse { pod_sandbox_stats },
    )
}

pub(super) fn stream_pod_sandbox_metrics(
    daemon: &std::sync::Arc<Services>,
) -> ResponseStream<cri::StreamPodSandboxMetricsResponse> {
    let sandboxes = daemon.sandboxes.list(&SandboxFilter::default());
    let daemon = daemon.clone();
    stream::batched(
        sandboxes,
        move |batch| {
            let daemon = daemon.clone();
            async move { super::stats::pods_metrics(&daemon, batch).await }
        },
        |pod_sandbox_metrics| cri::StreamPodSandboxMetricsResponse {
            pod_sandbox_metrics,
        },
    )
}

pub(super) async fn update_pod_sandbox_resources(
    daemon: &Services,
    request: cri::UpdatePodSandboxResourcesRequest,
) -> Result<()> {
    let combined = pod_resources(request.resources, request.overhead)?;
    let resources = super::container_convert::resources(&combined);
    let linux = crate::container::spec::linux_resources(&resources).map_err(Error::from)?;
    let id = &request.pod_sandbox_id;
    daemon.sandboxes.update_resources(id, linux).await
}
