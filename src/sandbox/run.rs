//! RunPodSandbox: the pod's files, netns, network, cgroup, shim and pause process, each
//! step pushing its undo; the whole run happens in its own task (see `run`).

use std::path::PathBuf;
use std::sync::Arc;

use super::PodSpec;
use super::record::{self, RECORD_VERSION};
use super::{
    KILL_WAIT, NetworkRecord, SandboxManager, SandboxRecord, SandboxState, attachment, now_nanos,
    podfiles, process_start_time, sysctl,
};
use crate::cni::{Attachment, CniManager, NetworkConfigList};
use crate::error::{Error, Result, blocking, io_err};
use crate::lifecycle::{Claim, Rollback, fingerprint, remove_cgroup, remove_dir};
use crate::linux::netns;
use crate::metrics::{step, timed};
use crate::persist;
use crate::shim::{PauseSpec, ShimClient, SpawnOptions};
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
        match claim {
            Claim::Running(running) => running.await.map_err(Error::from),
            Claim::Done(id) => {
                let ready = self
                    .get(&id)
                    .map(|sb| self.effective_state(&sb.record()) == SandboxState::Ready)
                    .unwrap_or(false);
                if ready {
                    Ok(id)
                } else {
                    Err(Error::already_exists(format!(
                        "pod sandbox name {key} is reserved by {id}; remove it first"
                    )))
                }
            }
        }
    }

    async fn create_steps(
        self: &Arc<Self>,
        id: &str,
        spec: PodSpec,
        undo: &mut Rollback,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let record_dir = self.record_dir(id);
        let state_dir = self.state_dir(id);
        for dir in [&record_dir, &state_dir] {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
            undo.push(format!("remove {}", dir.display()), remove_dir(dir.clone()));
        }
        let host_network = spec.namespaces.host_network();
        let metadata = spec.validate()?.clone();
        let (pod_cgroup, owns_pod_cgroup) = if spec.cgroup_parent.is_empty() {
            (
                format!(
                    "{}/{}",
                    self.config.default_cgroup_parent.trim_end_matches('/'),
                    id
                ),
                true,
            )
        } else {
            (spec.cgroup_parent.clone(), false)
        };
        let pause_cgroup = format!("{}/{}", pod_cgroup.trim_end_matches('/'), id);
        // Like containerd: a pod that names no hostname gets the node's.
        let hostname = if spec.hostname.is_empty() {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().to_string())
                .map_err(|e| Error::internal("reading the node's hostname", e))?
        } else {
            spec.hostname.clone()
        };
        let netns = (!host_network).then(|| self.netns_path(id));
        let record = SandboxRecord {
            version: RECORD_VERSION,
            id: id.to_string(),
            spec: spec.clone(),
            state: SandboxState::Creating,
            hostname: hostname.clone(),
            created_at: now_nanos(),
            netns: netns.clone(),
            network: None,
            pod_cgroup: pod_cgroup.clone(),
            owns_pod_cgroup,
            pause_cgroup: pause_cgroup.clone(),
            shim_socket: self.shim_socket(id),
            shim_pid: None,
            pause_pid: None,
            pause_start_time: None,
        };
        // Written before any resource is taken: recovery rolls back a Creating record.
        timed(OP, "record_creating", self.records.persist(&record)).await?;
        crate::fault::point("sandbox.run.after_record");
        let sandbox = record::new_sandbox(record, None);
        self.records.insert(sandbox.clone());
        let this = self.clone();
        let forget_id = id.to_string();
        undo.push("forget the record", async move {
            this.records.forget(&forget_id)
        });

        let pod_files_step = step(OP, "pod_files");
        let host_files = read_host_files();
        let pod_files = podfiles::PodFiles::render(
            &hostname,
            &[],
            host_network,
            &spec.dns,
            &host_files.hosts,
            &host_files.resolv_conf,
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
            undo.push(format!("unpin {}", path.display()), unpin(path.clone()));
            crate::fault::point("sandbox.run.after_netns_pin");
        }

        // The network and the processes only meet at the netns, which exists now.
        let network_setup = async {
            let Some(path) = &netns else {
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
            let attachment = attachment(id, path, &metadata, &spec.port_mappings);
            let result = self.cni.add(&network, &attachment).await;
            crate::fault::point("sandbox.run.after_cni_add");
            Ok(Some((network, attachment, result)))
        };
        let process_setup = async {
            let cgroups = self.cgroups.clone();
            let cg = pause_cgroup.clone();
            let create = blocking("cgroup task", move || cgroups.create(&cg));
            if let Err(e) = timed(OP, "cgroup", create).await {
                return Err((e, None));
            }
            let mut options =
                SpawnOptions::new(id, &self.shim_socket(id), &self.shim_state_dir(id));
            options.log = Some(state_dir.join("shim.log"));
            options.log_level = Some(self.config.log_level.as_str().to_string());
            let shim = match timed(OP, "shim_spawn", crate::shim::spawn(options)).await {
                Ok(s) => s,
                Err(e) => return Err((Error::from(e), None)),
            };
            crate::fault::point("sandbox.run.after_shim_start");
            let bundle = state_dir.join("pause");
            let sysctls = &spec.sysctls;
            let pause = PauseSpec {
                sandbox_id: id.to_string(),
                netns: netns.clone(),
                hostname: Some(hostname.clone()),
                cgroup_path: Some(pause_cgroup.clone()),
                sysctls: sysctls.clone(),
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
                shim.clone()
                    .create(
                        id,
                        &bundle,
                        crate::shim::CreateOptions {
                            start: true,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(Error::from)
            })
            .await;
            match created {
                Ok(pid) => Ok((shim, pid)),
                Err(e) => Err((e, Some(shim))),
            }
        };
        let (network, processes) = tokio::join!(network_setup, process_setup);
        undo.push(
            format!("remove cgroup {pause_cgroup}"),
            remove_cgroup(self.cgroups.clone(), pause_cgroup.clone(), KILL_WAIT),
        );
        if owns_pod_cgroup {
            undo.push(
                format!("remove cgroup {pod_cgroup}"),
                remove_cgroup(self.cgroups.clone(), pod_cgroup.clone(), KILL_WAIT),
            );
        }
        let shim_pid = match processes {
            Ok((shim, pid)) => {
                let shim_pid = shim.spawned_pid();
                undo.push("shut the shim down", shutdown_shim(shim.clone()));
                *lock(&sandbox.ext.shim) = Some(shim);
                Some((shim_pid, pid))
            }
            Err((err, shim)) => {
                if let Some(shim) = shim {
                    undo.push("shut the shim down", shutdown_shim(shim));
                }
                // Still undo a network that may have come up meanwhile.
                if let Ok(Some((network, attachment, Ok(result)))) = network {
                    undo.push(
                        "CNI DEL",
                        cni_del(self.cni.clone(), network, attachment, Some(result.raw)),
                    );
                }
                return Err(err.context("starting the pod's pause process"));
            }
        };
        let ips = match network? {
            Some((network, attachment, result)) => match result {
                Ok(result) => {
                    let ips = result.ips.clone();
                    undo.push(
                        "CNI DEL",
                        cni_del(
                            self.cni.clone(),
                            network,
                            attachment,
                            Some(result.raw.clone()),
                        ),
                    );
                    sandbox.update(|r| {
                        if let Some(n) = r.network.as_mut() {
                            n.result = Some(result)
                        }
                    });
                    ips
                }
                Err(err) => {
                    // A failed ADD was already undone by the CNI code (DEL of the whole list).
                    return Err(Error::from(err).context("setting up the pod network"));
                }
            },
            None => Vec::new(),
        };
        if !host_network {
            let hosts = podfiles::render_hosts(&hostname, &ips, false, &host_files.hosts)?;
            let hosts_path = record_dir.join("hosts");
            timed(
                OP,
                "hosts_file",
                persist::save_file(&hosts_path, hosts.into_bytes()),
            )
            .await
            .map_err(io_err("writing the pod's hosts file"))?;
        }
        let (shim_pid, pause_pid) = shim_pid.unwrap_or_default();
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
}

/// The undo steps of a run (recovery uses them too for a run a crash interrupted).
pub(super) async fn unpin(path: PathBuf) {
    let p = path.clone();
    let unpinned = blocking("netns task", move || {
        netns::unpin_netns(&p).map_err(io_err("unpin"))
    });
    if unpinned.await.is_err() {
        tracing::warn!(netns = %path.display(), "rollback: unpinning netns failed");
    }
}

pub(super) async fn cni_del(
    cni: CniManager,
    network: NetworkConfigList,
    attachment: Attachment,
    result: Option<serde_json::Value>,
) {
    if let Err(e) = cni.del(&network, &attachment, result.as_ref()).await {
        tracing::warn!(error = %e, "rollback: CNI DEL failed");
    }
}

pub(super) async fn shutdown_shim(mut shim: ShimClient) {
    if let Err(e) = shim.shutdown().await {
        tracing::warn!(error = %e, "rollback: shim shutdown failed");
    }
}

struct HostFiles {
    hosts: String,
    resolv_conf: String,
}

fn read_host_files() -> HostFiles {
    HostFiles {
        hosts: std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    }
}
