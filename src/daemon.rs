//! The composition root: builds the managers and services, owns the event bus and wires
//! the metrics gauges, and hands each its collaborators. Only this module (and
//! `server.rs`, which serves what it builds) may know every part; the parts below it do
//! not call back up.
//!
//! Arrows: daemon → cri (adapters) → {sandbox, container, image, stats, streaming} →
//! {events, metrics, linux, shim client, ...}. `events` and `metrics` are leaves the owners
//! publish to.

use std::sync::{Arc, Mutex};

use crate::config::{CgroupDriver, Config};
use crate::container::manager::{
    ContainerFilter, ContainerManager, ContainerState, LifecycleEvents,
};
use crate::cri::Services;
use crate::error::Result;
use crate::image::ImageService;
use crate::metrics::registry::{mirror, set_by_state};
use crate::metrics::{BerthMetrics, by_state};
use crate::sandbox::{SandboxFilter, SandboxManager, SandboxState, ShimNews};
use crate::streaming::StreamingServer;

/// Everything the daemon runs, built once at start.
pub struct Daemon {
    services: Arc<Services>,
}

impl Daemon {
    pub async fn open(config: Arc<Config>) -> Result<Daemon> {
        let cgroup_driver = CgroupDriver::resolve(config.cgroup_driver)?;
        tracing::info!(cgroup_driver = cgroup_driver.name(), "cgroup driver");
        let events = Arc::new(LifecycleEvents::new());
        let sandboxes = Arc::new(SandboxManager::new(
            config.clone(),
            cgroup_driver,
            events.clone(),
        )?);
        let images = ImageService::open(&config).await?;
        let apparmor = crate::container::apparmor::prepare().await;
        let containers = Arc::new(ContainerManager::new(
            config.clone(),
            sandboxes.clone(),
            images.clone(),
            events.clone(),
            apparmor,
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
        // Weak: the image service (which the container manager holds) must not keep it.
        let users = Arc::downgrade(&containers);
        images.set_users(Arc::new(move |image_id: &str| {
            users.upgrade().and_then(|c| c.image_user(image_id))
        }));
        route_container_exits(&sandboxes, &containers);
        register_gauges(&sandboxes, &containers, &events);
        Ok(Daemon {
            services: Arc::new(Services {
                config,
                cgroup_driver,
                sandboxes,
                containers,
                images,
                stats,
                streaming,
                events,
                pod_cidr: Mutex::new(String::new()),
            }),
        })
    }

    pub fn runtime_service(&self) -> crate::cri::runtime::RuntimeCri {
        crate::cri::runtime::RuntimeCri::new(self.services.clone())
    }

    pub fn image_service(&self) -> crate::cri::image::ImageCri {
        crate::cri::image::ImageCri::new(self.services.images.clone())
    }

    /// Before the gate opens: brings back every sandbox and container (rolling back what a
    /// crash interrupted), sweeps what no record points to, then watches the live shims.
    pub async fn recover(&self) -> Result<()> {
        let s = &self.services;
        s.sandboxes.recover().await?;
        s.containers.recover().await?;
        crate::sweep::sweep(&s.config, &s.sandboxes, &s.containers).await;
        s.sandboxes.watch_recovered_shims().await;
        // Background work that reads what recovery loaded.
        s.stats.start();
        Ok(())
    }

    /// The daemon is stopping: pods keep running under their shims.
    pub async fn shutdown(&self) {}
}

/// Hands the exits the shims push (see sandbox/shim_events.rs) and their deaths (see
/// sandbox/shim_watch.rs) to the container manager.
fn route_container_exits(sandboxes: &Arc<SandboxManager>, containers: &Arc<ContainerManager>) {
    // Weak: the sandbox manager must not keep the container manager (which holds it) alive.
    let containers = Arc::downgrade(containers);
    sandboxes.on_container_exit(Arc::new(move |news| {
        let Some(containers) = containers.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            match news {
                ShimNews::Exit(exit) => containers.process_exited(exit).await,
                ShimNews::Lost(sandbox_id) => containers.shim_lost(&sandbox_id).await,
            }
        });
    }));
}

fn container_state_name(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Creating => "creating",
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Exited => "exited",
        ContainerState::Unknown => "unknown",
    }
}

fn sandbox_state_name(state: SandboxState) -> &'static str {
    match state {
        SandboxState::Creating => "creating",
        SandboxState::Ready => "ready",
        SandboxState::NotReady => "notready",
    }
}

/// The domain gauges (objects by state, event counters), read from their owners at scrape.
fn register_gauges(
    sandboxes: &Arc<SandboxManager>,
    containers: &Arc<ContainerManager>,
    events: &Arc<LifecycleEvents>,
) {
    // Weak: the metrics registry is process-wide and must not keep a daemon alive.
    let (sandboxes, containers, events) = (
        Arc::downgrade(sandboxes),
        Arc::downgrade(containers),
        Arc::downgrade(events),
    );
    crate::metrics::on_scrape(move |metrics: &BerthMetrics| {
        if let Some(containers) = containers.upgrade() {
            let all = containers.list(&ContainerFilter::default());
            set_by_state(
                &metrics.containers,
                by_state(
                    &[
                        ContainerState::Created,
                        ContainerState::Running,
                        ContainerState::Exited,
                        ContainerState::Unknown,
                    ],
                    all.iter().map(|c| c.state),
                    container_state_name,
                ),
            );
        }
        if let Some(sandboxes) = sandboxes.upgrade() {
            let all = sandboxes.list(&SandboxFilter::default());
            set_by_state(
                &metrics.sandboxes,
                by_state(
                    &[SandboxState::Ready, SandboxState::NotReady],
                    all.iter().map(|(_, s)| *s),
                    sandbox_state_name,
                ),
            );
        }
        if let Some(events) = events.upgrade() {
            let counts = events.counts();
            mirror(&metrics.oom_kills, counts.oom_kills);
            mirror(&metrics.events_published, counts.published);
            mirror(&metrics.events_dropped, counts.dropped);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_state_gauges_list_every_state_even_at_zero() {
        let series = by_state(
            &[SandboxState::Ready, SandboxState::NotReady],
            [SandboxState::Ready, SandboxState::Ready].into_iter(),
            sandbox_state_name,
        );
        assert_eq!(series, vec![("notready", 0), ("ready", 2)]);
    }
}
