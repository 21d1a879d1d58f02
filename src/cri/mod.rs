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
        Ok(Arc::new(Daemon {
            config,
            cgroup_driver,
            sandboxes,
            containers,
            images,
            stats,
            pod_cidr: Mutex::new(String::new()),
        }))
    }

    pub fn runtime_service(self: &Arc<Self>) -> runtime::RuntimeCri {
        runtime::RuntimeCri::new(self.clone())
    }

    pub fn image_service(self: &Arc<Self>) -> image::ImageCri {
        image::ImageCri::new(self.images.clone())
    }

    /// Brings back every sandbox (and, later, container) before the gate opens.
    pub async fn recover(&self) -> Result<()> {
        self.sandboxes.recover().await?;
        self.containers.recover().await?;
        // Background work that reads what recovery loaded.
        self.stats.start();
        crate::events::spawn_exit_watch(
            self.containers.clone(),
            self.sandboxes.events().clone(),
            crate::events::EXIT_WATCH_PERIOD,
        );
        Ok(())
    }

    /// The daemon is stopping: pods keep running under their shims.
    pub async fn shutdown(&self) {}
}
