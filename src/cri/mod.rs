//! Thin CRI adapters: proto ⇄ domain types, one method per RPC delegating to the managers.

pub mod container;
pub mod container_convert;
pub mod image;
pub mod runtime;
pub mod stats;

use std::sync::{Arc, Mutex};

use crate::config::{CgroupDriverSetting, Config};
use crate::container::manager::ContainerManager;
use crate::error::{Error, Result};
use crate::image::ImageService;
use crate::sandbox::SandboxManager;
use crate::streaming::StreamingServer;

/// The cgroup driver in use, after `auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

impl CgroupDriver {
    /// `auto` picks systemd only when PID 1 is systemd on a unified (v2) hierarchy.
    pub fn resolve(setting: CgroupDriverSetting) -> Result<CgroupDriver> {
        let pid1_is_systemd = std::fs::read_link("/proc/1/exe")
            .map(|p| p.to_string_lossy().contains("systemd"))
            .unwrap_or(false);
        let unified = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        match setting {
            CgroupDriverSetting::Cgroupfs => Ok(CgroupDriver::Cgroupfs),
            CgroupDriverSetting::Auto if pid1_is_systemd && unified => {
                // berth manages cgroups through cgroupfs only for now; under systemd on v2
                // that still works (delegated subtree), so say which one we really use.
                tracing::info!("systemd on cgroup v2 detected; berth uses the cgroupfs driver");
                Ok(CgroupDriver::Cgroupfs)
            }
            CgroupDriverSetting::Auto => Ok(CgroupDriver::Cgroupfs),
            CgroupDriverSetting::Systemd => Err(Error::invalid_argument(
                "config key `cgroup_driver`: the systemd driver is not supported yet; use cgroupfs or auto",
            )),
        }
    }
}

/// Everything the CRI services share.
pub struct Daemon {
    pub config: Arc<Config>,
    pub cgroup_driver: CgroupDriver,
    pub sandboxes: Arc<SandboxManager>,
    pub containers: Arc<ContainerManager>,
    pub images: ImageService,
    /// Container and pod stats, refreshed once per `[stats] collection_period`.
    pub stats: Arc<crate::stats::Collector>,
    /// Exec, attach and port-forward URLs point here.
    pub streaming: Arc<StreamingServer>,
    /// Pod CIDR given by UpdateRuntimeConfig.
    pub pod_cidr: Mutex<String>,
}

impl Daemon {
    pub async fn open(config: Arc<Config>) -> Result<Arc<Daemon>> {
        let cgroup_driver = CgroupDriver::resolve(config.cgroup_driver)?;
        let sandboxes = Arc::new(SandboxManager::new(config.clone())?);
        let images = ImageService::open(&config).await?;
        let containers = Arc::new(ContainerManager::new(
            config.clone(),
            sandboxes.clone(),
            images.clone(),
        ));
        let stats = crate::stats::Collector::new(
            containers.clone(),
            sandboxes.clone(),
            config.stats.collection_period,
        );
        let streaming = StreamingServer::start(
            config.streaming.address,
            config.streaming.port,
            config.streaming.idle_timeout,
            containers.clone(),
            sandboxes.clone(),
        )
        .await?;
        follow_shim_deaths(&sandboxes, &containers);
        route_container_exits(&sandboxes, &containers);
        Ok(Arc::new(Daemon {
            config,
            cgroup_driver,
            sandboxes,
            containers,
            images,
            stats,
            streaming,
            pod_cidr: Mutex::new(String::new()),
        }))
    }

    pub fn runtime_service(self: &Arc<Self>) -> runtime::RuntimeCri {
        runtime::RuntimeCri::new(self.clone())
    }

    pub fn image_service(self: &Arc<Self>) -> image::ImageCri {
        image::ImageCri::new(self.images.clone())
    }

    /// Before the gate opens: brings back every sandbox and container (rolling back what a
    /// crash interrupted), sweeps what no record points to, then watches the live shims.
    pub async fn recover(&self) -> Result<()> {
        self.sandboxes.recover().await?;
        self.containers.recover().await?;
        crate::sweep::sweep(&self.config, &self.sandboxes, &self.containers).await;
        self.sandboxes.watch_recovered_shims().await;
        // Background work that reads what recovery loaded.
        self.stats.start();
        Ok(())
    }

    /// The daemon is stopping: pods keep running under their shims.
    pub async fn shutdown(&self) {}
}

/// Hands the exits the shims push (see sandbox/shim_events.rs) to the container manager.
fn route_container_exits(sandboxes: &Arc<SandboxManager>, containers: &Arc<ContainerManager>) {
    // Weak: the sandbox manager must not keep the container manager (which holds it) alive.
    let containers = Arc::downgrade(containers);
    sandboxes.on_container_exit(Arc::new(move |exit| {
        if let Some(containers) = containers.upgrade() {
            tokio::spawn(async move { containers.process_exited(exit).await });
        }
    }));
}

/// Marks the containers of every pod whose shim died as exited (see sandbox/shim_watch.rs).
fn follow_shim_deaths(sandboxes: &Arc<SandboxManager>, containers: &Arc<ContainerManager>) {
    let mut lost = sandboxes.subscribe_shim_lost();
    let (sandboxes, containers) = (sandboxes.clone(), containers.clone());
    tokio::spawn(async move {
        loop {
            match lost.recv().await {
                Ok(sandbox_id) => containers.shim_lost(&sandbox_id).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Some deaths were missed: every pod without a shim is checked.
                    let filter = crate::sandbox::SandboxFilter::default();
                    for (record, _) in sandboxes.list(&filter) {
                        if !sandboxes.shim_connected(&record.id) {
                            containers.shim_lost(&record.id).await;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
