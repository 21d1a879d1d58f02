//! RunPodSandbox: the pod's files, netns, network, cgroup, shim and pause process, each
//! step pushing its undo; the whole run happens in its own task (see `run`).

use std::path::PathBuf;
use std::sync::Arc;

use super::PodSpec;
use super::record::{RECORD_VERSION, SandboxExt, process_start_time};
use super::{
    KILL_WAIT, NetworkRecord, SandboxManager, SandboxRecord, SandboxState, podfiles, sysctl,
};
use crate::error::{Error, Result, blocking, io_err};
use crate::lifecycle::{Claim, Durability, Rollback, fingerprint, remove_cgroup};
use crate::linux::netns;
use crate::linux::process::now_unix_nanos;
use crate::linux::systemd::UnitKind;
use crate::metrics::{step, timed};
use crate::persist;
use crate::shim::{PauseSpec, SpawnOptions};
use crate::store::lock;
use futures_util::FutureExt as _;

/// The operation name its steps are timed under (`berth_operation_step_duration_seconds`).
const OP: &str = "RunPodSandbox";

impl SandboxManager {
    /// RunPodSandbox. The work runs in its own task so that a client that gives up does
    /// not cut it short; its retry (same metadata, same config) joins it while it runs and
    /// gets the same sandbox after.
    pub async fn run(self: &Arc<Self>, spec: PodSpec) -> Result<String> {
        let key = spec.validate()?.reservation_key();
        let host_net = spec.namespaces.host_network();
        let host_ipc = spec.namespaces.host_ipc();
        let mut spec = spec;
        spec.sysctls = sysctl::validate_sysctls(&spec.sysctls, host_net, host_ipc)?;
        if !spec.hostname.is_empty() {
            podfiles::validate_hostname(&spec.hostname)?;
        }
        let (this, fingerprint) = (self.clone(), fingerprint(&spec));
        let claim = self.records.create(&key, &fingerprint, move |id, undo| {
            async move { this.create_steps(id, spec, undo).await }.boxed()
        })?;
        if let Claim::Done(id) = &claim
            && self.ready(id, "").is_err()
        {
            let message = format!("pod sandbox name {key} is reserved by {id}; remove it first");
            return Err(Error::already_exists(message));
        }
        claim.wait().await
    }

    async fn create_steps(
        self: &Arc<Self>,
        id: &str,
        spec: PodSpec,
        undo: &mut Rollback,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let (record_dir, state_dir) = (self.record_dir(id), self.records.dirs().state_dir(id));
        let host_network = spec.namespaces.host_network();
        let metadata = spec.validate()?.clone();
        // Like containerd: a pod that names no hostname gets the node's.
        let hostname = if spec.hostname.is_empty() {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().to_string())
                .map_err(|e| Error::internal("reading the node's hostname", e))?
        } else {
            spec.hostname.clone()
        };
        let state = &self.config.state;
        let netns = (!host_network).then(|| state.join("netns").join(id));
        let mut record = SandboxRecord {
            version: RECORD_VERSION,
            id: id.to_string(),
            spec: spec.clone(),
            state: SandboxState::Creating,
            hostname: hostname.clone(),
            created_at: now_unix_nanos(),
            netns: netns.clone(),
            // Short, so that it stays under the 107-byte limit of a socket path.
            shim_socket: state.join("s").join(format!("{}.sock", &id[..16])),
            ..SandboxRecord::default()
        };
        self.place_cgroups(&mut record)?;
        let placed = record.clone();
        // Both set with the systemd driver: the units of this pod.
        let systemd = self.systemd().cloned().zip(placed.units.clone());
        // Written before any resource is taken: recovery rolls back a Creating record.
        let ext = SandboxExt::default();
        let admitted = self.records.admit(record, ext, Durability::Synced, undo);
        let sandbox = timed(OP, "record_creating", admitted).await?;
        crate::fault::point("sandbox.run.after_record");
        self.undo_run(&sandbox.record(), undo);

        let pod_files_step = step(OP, "pod_files");
        let host_file = |path| std::fs::read_to_string(path).unwrap_or_default();
        let (hosts, resolv_conf) = (host_file("/etc/hosts"), host_file("/etc/resolv.conf"));
        let pod_files = podfiles::PodFiles::render(
            &hostname,
            &[],
            host_network,
            &spec.dns,
            &hosts,
            &resolv_conf,
        )?;
        let files_dir = record_dir.clone();
        persist::off_executor(move || pod_files.write_to(&files_dir))
            .await
            .map_err(io_err("writing the pod's files"))?;
        drop(pod_files_step);

        if let Some(path) = &netns {
            let (pin_path, what) = (
                path.clone(),
                format!("pinning network namespace {}", path.display()),
            );
            let pin = blocking("netns task", move || {
                netns::pin_netns(&pin_path).map_err(io_err(what))
            });
            timed(OP, "netns", pin).await?;
            crate::fault::point("sandbox.run.after_netns_pin");
        }

        // The network and the processes only meet at the netns, which exists now.
        let network_setup = async {
            let Some(attachment) = sandbox.record().attachment() else {
                return Ok::<_, Error>(None);
            };
            let _step = step(OP, "network");
            let network = self.cni.load()?;
            // The config is on disk before ADD, so a crash mid-ADD can replay DEL.
            self.records
                .save(&sandbox, |r| {
                    r.network = Some(NetworkRecord {
                        config: network.clone(),
                        result: None,
                        torn_down: false,
                    })
                })
                .await?;
            let result = self.cni.add(&network, &attachment).await;
            crate::fault::point("sandbox.run.after_cni_add");
            // A failed ADD was already undone by the CNI code (DEL of the whole list).
            let result =
                result.map_err(|e| Error::from(e).context("setting up the pod network"))?;
            Ok(Some(result))
        };
        let process_setup = async {
            if let Some((driver, units)) = &systemd {
                let slice = driver.start_pod_slice(units, id, placed.owns_pod_cgroup);
                timed(OP, "slice", slice).await?;
            }
            let cgroups = self.cgroups.clone();
            let cg = placed.pause_cgroup.clone();
            let create = blocking("cgroup task", move || cgroups.create(&cg));
            timed(OP, "cgroup", create).await?;
            let mut options = SpawnOptions::new(id, &placed.shim_socket, &self.shim_state_dir(id));
            options.log = Some(state_dir.join("shim.log"));
            options.log_level = Some(self.config.log_level.as_str().to_string());
            let shim = timed(OP, "shim_spawn", crate::shim::spawn(options)).await?;
            crate::fault::point("sandbox.run.after_shim_start");
            let units = placed.units.as_ref();
            self.move_shim(id, &placed.pod_cgroup, units, shim.spawned_pid())
                .await
                .map_err(|e| e.context("moving the shim into the pod's cgroup"))?;
            let bundle = state_dir.join("pause");
            let pause = PauseSpec {
                sandbox_id: id.to_string(),
                netns: netns.clone(),
                hostname: Some(hostname.clone()),
                cgroup_path: Some(placed.pause_cgroup.clone()),
                sysctls: spec.sysctls.clone(),
                // The pause owns a PID namespace unless the pod uses the host's.
                share_pid_ns: !spec.namespaces.host_pid(),
                host_ipc: spec.namespaces.host_ipc(),
                host_uts: false,
                // What the kubelet asks for pause; init clamps it to what it may set.
                oom_score_adj: Some(-998),
            };
            let created = timed(OP, "pause_create", async {
                let (userns, pause_bundle) = (spec.userns.clone(), bundle.clone());
                persist::off_executor(move || match &userns {
                    Some(userns) => userns.write_pause_bundle(&pause_bundle, &pause),
                    None => crate::shim::write_pause_bundle(&pause_bundle, &pause),
                })
                .await
                .map_err(io_err("writing the pause bundle"))?;
                let start = crate::shim::CreateOptions {
                    start: true,
                    ..Default::default()
                };
                Ok::<_, Error>(shim.clone().create(id, &bundle, start).await?)
            });
            let pause_pid = created.await?;
            let (units, kind) = (placed.units.as_ref(), UnitKind::Pause);
            self.start_scope(units, kind, id, pause_pid, &placed.pause_cgroup, None)
                .await?;
            let shim_pid = shim.spawned_pid();
            *lock(&sandbox.ext.shim) = Some(shim);
            Ok::<_, Error>((shim_pid, pause_pid))
        };
        let (network, processes) = tokio::join!(network_setup, process_setup);
        // A network that came up is undone even when the processes failed.
        if let Ok(Some(result)) = &network {
            let answered = |n: &mut NetworkRecord| n.result = Some(result.clone());
            sandbox.update(|r| r.network.as_mut().map_or((), answered));
            self.undo_network(&sandbox.record(), undo);
        }
        let (shim_pid, pause_pid) =
            processes.map_err(|e| e.context("starting the pod's pause process"))?;
        let ips = network?.map(|result| result.ips).unwrap_or_default();
        if !host_network {
            let hosts = podfiles::render_hosts(&hostname, &ips, false, &hosts)?;
            let hosts_path = record_dir.join("hosts");
            let saved = persist::save_file(&hosts_path, hosts.into_bytes());
            let saved = timed(OP, "hosts_file", saved).await;
            saved.map_err(io_err("writing the pod's hosts file"))?;
        }
        crate::fault::point("sandbox.run.after_pause_create");
        let ready = self.records.transition(&sandbox, SandboxState::Ready, |r| {
            r.shim_pid = Some(shim_pid);
            r.pause_pid = Some(pause_pid);
            r.pause_start_time = process_start_time(pause_pid);
        });
        timed(OP, "record_ready", ready).await?;
        tracing::info!(
            sandbox_id = %id,
            pod = %metadata.name,
            namespace = %metadata.namespace,
            pause_pid,
            ip = ?ips.first(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "pod sandbox ready"
        );
        self.watch_shim(id);
        Ok(())
    }

    /// What a run may take, given back; each step copes with what it never got, so a run
    /// pushes them before it takes anything, and recovery for a run a crash interrupted.
    pub(super) fn undo_run(&self, record: &SandboxRecord, undo: &mut Rollback) {
        if let Some(path) = &record.netns {
            undo.push_try(format!("unpin {}", path.display()), unpin(path.clone()));
        }
        self.undo_network(record, undo);
        self.undo_cgroups(record, undo);
        let (socket, id) = (record.shim_socket.clone(), record.id.clone());
        undo.push_try("shut the shim down", async move {
            let shim = super::recover::reachable_shim(&socket, &id).await;
            let _ = persist::remove_file_if_exists(&socket);
            match shim {
                Some(mut shim) => Ok(shim.shutdown().await?),
                None => Ok(()),
            }
        });
    }

    /// CNI DEL with the config recorded before ADD (and its answer, once there is one).
    fn undo_network(&self, record: &SandboxRecord, undo: &mut Rollback) {
        if let (Some(network), Some(attachment)) = (&record.network, record.attachment()) {
            let result = network.result.as_ref().map(|r| r.raw.clone());
            let (cni, config) = (self.cni.clone(), network.config.clone());
            let del = async move { Ok(cni.del(&config, &attachment, result.as_ref()).await?) };
            undo.push_try("CNI DEL", del);
        }
    }

    /// The pod's cgroups removed (the pod cgroup only when berth made it), the shim's
    /// too, and with the systemd driver the pod's units once their processes are gone.
    pub(super) fn undo_cgroups(&self, record: &SandboxRecord, undo: &mut Rollback) {
        // Pushed first so that they run last (undo steps run in reverse).
        if let (Some(driver), Some(units)) = (self.systemd(), &record.units) {
            let id = &record.id;
            let mut owned = vec![
                (units.scope(id), UnitKind::Pause),
                (units.scope(&format!("shim-{id}")), UnitKind::Shim),
            ];
            if record.owns_pod_cgroup {
                owned.insert(0, (units.slice.clone(), UnitKind::Pod));
            }
            for (unit, kind) in owned {
                let (driver, id, what) = (driver.clone(), id.clone(), format!("stop {unit}"));
                undo.push_try(what, async move { driver.release(&unit, kind, &id).await });
            }
        }
        let shim_cgroup = super::shim_cgroup(&record.pod_cgroup, record.units.as_ref(), &record.id);
        let pod_cgroup = record.owns_pod_cgroup.then_some(&record.pod_cgroup);
        for cg in [Some(&shim_cgroup), Some(&record.pause_cgroup), pod_cgroup]
            .into_iter()
            .flatten()
        {
            let remove = remove_cgroup(self.cgroups.clone(), cg.clone(), KILL_WAIT);
            undo.push_try(format!("remove cgroup {cg}"), remove);
        }
    }
}

/// Unpins the pod's network namespace (StopPodSandbox, and the undo of a run).
pub(super) async fn unpin(path: PathBuf) -> Result<()> {
    let what = format!("unpinning {}", path.display());
    blocking("netns task", move || {
        netns::unpin_netns(&path).map_err(io_err(what))
    })
    .await
}
