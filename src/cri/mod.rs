//! Thin CRI adapters: proto ⇄ domain types, one method per RPC delegating to the managers.
//!
//! Owns no state of its own beyond the pod CIDR the kubelet hands over. May call the domain
//! (sandbox, container, image, stats, streaming, events); nothing in the domain calls it.
//! The composition root (`crate::daemon`) builds [`Services`] and the two gRPC services.

pub mod api;
pub mod container;
pub mod container_convert;
pub mod event_convert;
pub mod image;
pub mod pod_convert;
mod pods;
pub mod runtime;
pub mod stats;
pub mod stream;
#[cfg(test)]
mod wire_golden;

use std::sync::{Arc, Mutex};

use crate::config::{CgroupDriver, Config};
use crate::container::manager::{ContainerManager, LifecycleEvents};
use crate::image::ImageService;
use crate::sandbox::SandboxManager;
use crate::stats::Collector;
use crate::streaming::StreamingServer;

/// What the CRI adapters delegate to, given to them by the composition root.
pub struct Services {
    pub config: Arc<Config>,
    pub cgroup_driver: CgroupDriver,
    pub sandboxes: Arc<SandboxManager>,
    pub containers: Arc<ContainerManager>,
    pub images: ImageService,
    /// Container and pod stats, refreshed once per `[stats] collection_period`.
    pub stats: Arc<Collector>,
    /// Exec, attach and port-forward URLs point here.
    pub streaming: Arc<StreamingServer>,
    /// GetContainerEvents subscribes here.
    pub events: Arc<LifecycleEvents>,
    /// Pod CIDR given by UpdateRuntimeConfig.
    pub pod_cidr: Mutex<String>,
}
