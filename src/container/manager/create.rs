//! CreateContainer: the image resolved, the OCI spec built, the bundle written, the
//! shim's init waiting at the start gate, a record. Each step pushes its undo; the whole
//! creation runs in its own task, so a client that gives up cannot leave half a container.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{ContainerExt, RECORD_VERSION, name_key};
use super::{ContainerManager, ContainerRecord, ContainerState};
use crate::container::config::ContainerConfig;
use crate::error::{Error, Result, blocking, invalid_err, io_err};
use crate::lifecycle::{Durability, Rollback, fingerprint};
use crate::linux::process::now_unix_nanos;
use crate::metrics::{step, timed};
use crate::persist;
use futures_util::FutureExt as _;

/// The operation name its steps are timed under (`berth_operation_step_duration_seconds`).
const OP: &str = "CreateContainer";

/// The options of CreateContainer that are not in the config.
pub struct CreateRequest {
    pub sandbox_id: String,
    pub config: ContainerConfig,
}

impl ContainerManager {
    /// CreateContainer. A retry of the same request (same name, attempt and config) joins
    /// the creation while it runs and gets the same container after; another config under
    /// that name is AlreadyExists naming the container that holds it.
    pub async fn create(self: &Arc<Self>, request: CreateRequest) -> Result<String> {
        let CreateRequest { sandbox_id, config } = request;
        let sandbox = self
            .sandboxes
            .ready(&sandbox_id, "it takes no new containers")?;
        let meta = &config.metadata;
        let key = name_key(&sandbox.id, &meta.name, meta.attempt);
        let (this, fingerprint) = (self.clone(), fingerprint(&config));
        let claim = self.records.create(&key, &fingerprint, move |id, undo| {
            async move { this.create_steps(id, &sandbox, config, undo).await }.boxed()
        })?;
        claim.wait().await
    }

    async fn create_steps(
        self: &Arc<Self>,
        id: &str,
        sandbox: &crate::sandbox::SandboxRecord,
        config: ContainerConfig,
        undo: &mut Rollback,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        if config.image.is_empty() {
            return Err(Error::invalid_argument("config.image.image is required"));
        }
        // What the node cannot apply is refused before anything exists.
        let checked = self.check_resources(&config.resources);
        timed(OP, "resource_check", checked).await?;
        // Held until the record is admitted: a RemoveImage waits for it and then sees
        // this container among the image's users.
        let image_lease = self.images.lease().await;
        let resolved = self.images.resolve_for_container(&config.image);
        let (image, layers, image_config) = timed(OP, "image", resolved)
            .await
            .map_err(|e| e.context(format!("image {}", config.image)))?;
        // Resolved and checked (see container/image_volume.rs); none without image mounts.
        let volumes = crate::container::image_volume::resolve(&self.images, &config.mounts);
        let volumes = timed(OP, "image_volumes", volumes).await?;
        let layers_top_first: Vec<PathBuf> = layers.iter().rev().cloned().collect();
        let record_dir = self.records.dirs().record_dir(id);
        let bundle = self.records.dirs().state_dir(id).join("bundle");
        let (upper, work, rootfs) = (
            record_dir.join("upper"),
            record_dir.join("work"),
            bundle.join("rootfs"),
        );
        for dir in [&upper, &work, &rootfs] {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let namespaces = &config.security.namespaces;
        let target_pid = match namespaces.pid {
            crate::sandbox::NamespaceMode::Target => {
                let target = self.running(&namespaces.target_id);
                Some(target.map_err(|e| e.context("target container"))?.pid)
            }
            _ => None,
        };
        let spec_config = config.clone();
        let sandbox_info = crate::container::spec::SandboxInfo {
            id: sandbox.id.clone(),
            hostname: sandbox.hostname.clone(),
            pause_pid: sandbox.pause_pid.unwrap_or_default(),
            netns_path: sandbox.netns.clone(),
            host_ipc: sandbox.spec.namespaces.host_ipc(),
            pod_files_dir: self.sandboxes.record_dir(&sandbox.id),
            pod_cgroup: sandbox.pod_cgroup.clone(),
            scope_prefix: sandbox.units.as_ref().map(|u| u.scope_prefix.clone()),
            shm_path: None,
            runtime_handler: sandbox.spec.runtime_handler.clone(),
            userns: sandbox.spec.userns.clone(),
        };
        let bundle_dir = bundle.clone();
        let container_id = id.to_string();
        let lower = layers_top_first.clone();
        let apparmor = self.apparmor().clone();
        // Reading the image's user database and the host devices is file I/O.
        let spec_step = step(OP, "spec");
        let spec = blocking("spec task", move || {
            let passwd = crate::container::users::read_image_file(&lower, "/etc/passwd")
                .map_err(io_err("reading the image's /etc/passwd"))?;
            let group = crate::container::users::read_image_file(&lower, "/etc/group")
                .map_err(io_err("reading the image's /etc/group"))?;
            let seccomp_localhost =
                crate::container::seccomp::read_localhost(spec_config.security.seccomp.as_ref())?;
            // The kubelet expects a missing host path to be made as a directory.
            for mount in spec_config.mounts.iter().filter(|m| m.image.is_none()) {
                let source = Path::new(&mount.host_path);
                if !source.exists() {
                    let what = format!("creating the mount source {}", mount.host_path);
                    std::fs::create_dir_all(source).map_err(invalid_err(what))?;
                }
            }
            let mut host_devices = BTreeMap::new();
            for device in &spec_config.devices {
                let found = crate::container::host::host_device(Path::new(&device.host_path))
                    .map_err(invalid_err(format!("device {}", device.host_path)))?;
                host_devices.insert(device.host_path.clone(), found);
            }
            if spec_config.security.privileged {
                let all = crate::container::host::all_host_devices()
                    .map_err(io_err("listing the host's devices"))?;
                for (path, device) in all {
                    host_devices.entry(path).or_insert(device);
                }
            }
            // Without CAP_SYS_RESOURCE neither can go past what the daemon itself has.
            let nofile_hard =
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                    .map(|(_, hard)| hard)
                    .unwrap_or(1_048_576);
            let defaults = crate::container::spec::RuntimeDefaults {
                min_oom_score_adj: crate::linux::process::read_oom_score_adj("self").unwrap_or(0),
                nofile: nofile_hard.min(crate::container::spec::RuntimeDefaults::default().nofile),
                apparmor,
            };
            let spec = crate::container::spec::build_spec(&crate::container::spec::SpecInput {
                container_id: &container_id,
                config: &spec_config,
                image: &image_config,
                sandbox: &sandbox_info,
                bundle_dir: &bundle_dir,
                passwd: passwd.as_deref(),
                group: group.as_deref(),
                target_pid,
                host_devices: &host_devices,
                defaults: &defaults,
                seccomp_localhost: seccomp_localhost.as_deref(),
            })?;
            // A profile the kernel does not have would fail only at exec, in init.
            if let Some(profile) = spec
                .process()
                .as_ref()
                .and_then(|p| p.apparmor_profile().as_deref())
            {
                crate::container::apparmor::require_loaded(profile)?;
            }
            let stop_signal = spec_config
                .stop_signal
                .unwrap_or_else(|| crate::container::spec::stop_signal(&image_config, None) as i32);
            // Compiled here, once per profile, so that init only loads it.
            let seccomp_program = spec
                .linux()
                .as_ref()
                .and_then(|l| l.seccomp().as_ref())
                .map(crate::linux::seccomp::compiled)
                .transpose()
                .map_err(invalid_err("seccomp profile"))?;
            Ok::<_, Error>((spec, stop_signal, seccomp_program))
        })
        .await?;
        let (spec, stop_signal, seccomp_program) = spec;
        drop(spec_step);
        let cgroup_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default();
        let user = spec
            .process()
            .as_ref()
            .map(|p| p.user().clone())
            .unwrap_or_default();
        let rootfs_json = serde_json::json!({
            "lower": layers_top_first,
            "upper": upper,
            "work": work,
        });
        let spec_json =
            serde_json::to_vec(&spec).map_err(|e| Error::internal("encoding the spec", e))?;
        let bundle_dir = bundle.clone();
        // Runtime files, not synced (see `persist::write_replace`): a reboot ends the
        // process they describe. Synced, they cost six fsyncs, queued behind other calls'.
        let volume_layouts = volumes.layouts;
        let bundle_step = step(OP, "bundle");
        persist::off_executor(move || {
            let write = |name: &str, bytes: &[u8]| {
                persist::write_replace_mode(&bundle_dir.join(name), bytes, 0o644)
            };
            write("config.json", &spec_json)?;
            write("rootfs.json", rootfs_json.to_string().as_bytes())?;
            if !volume_layouts.is_empty() {
                let text = serde_json::to_vec(&volume_layouts)
                    .map_err(|e| std::io::Error::other(format!("encoding image volumes: {e}")))?;
                write(crate::init::mounts::IMAGE_VOLUMES_FILE, &text)?;
            }
            if let Some(program) = seccomp_program {
                write(crate::linux::seccomp::BPF_FILE, &program)?;
            }
            Ok(())
        })
        .await
        .map_err(io_err("writing the bundle"))?;
        drop(bundle_step);

        // The pod's log directory joined with the container's log path, when both are set.
        let (log_dir, log_file) = (&sandbox.spec.log_directory, &config.log_path);
        let log_path = (!log_dir.is_empty() && !log_file.is_empty())
            .then(|| Path::new(log_dir).join(log_file));
        // For ContainerStatus.image_ref: a repo digest or tag of the image, else its ID.
        let image_name = image.repo_digests.first().or(image.repo_tags.first());
        let record = ContainerRecord {
            version: RECORD_VERSION,
            id: id.to_string(),
            sandbox_id: sandbox.id.clone(),
            image_ref: config.image.clone(),
            image_id: image.id.clone(),
            image_name: image_name.unwrap_or(&image.id).clone(),
            config: config.clone(),
            state: ContainerState::Creating,
            created_at: now_unix_nanos(),
            log_path: log_path.clone(),
            bundle: bundle.clone(),
            cgroup_path: cgroup_path.clone(),
            stop_signal,
            uid: user.uid(),
            gid: user.gid(),
            groups: user.additional_gids().clone().unwrap_or_default(),
            volume_image_ids: volumes.image_ids,
            ..ContainerRecord::default()
        };
        // Written before the shim is asked, so recovery can roll back a daemon crash
        // mid-create; not synced: after a power cut the processes are gone too, and
        // recovery removes container dirs that have no record.
        let ext = ContainerExt::default();
        let admitted = self.records.admit(record, ext, Durability::Cached, undo);
        let container = timed(OP, "record_creating", admitted).await?;
        crate::fault::point("container.create.after_record");
        drop(image_lease);
        // Tests hold a creation here to catch it in flight (a no-op otherwise).
        crate::fault::hold("container.create.after_record").await;

        self.undo_process(&container.record(), undo);
        let shim_step = step(OP, "shim_create");
        let mut shim = self.sandboxes.shim(&sandbox.id).await?;
        let options = crate::shim::CreateOptions {
            start: false,
            log_path: log_path.clone(),
            tty: config.tty,
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            cgroup_path: Some(cgroup_path.clone()),
        };
        let created = shim.create(id, &bundle, options).await;
        let pid = created.map_err(|e| Error::from(e).context("creating the container"))?;
        drop(shim_step);
        let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
        let kind = crate::linux::systemd::UnitKind::Container;
        let units = sandbox.units.as_ref();
        let scope =
            self.sandboxes
                .start_scope(units, kind, id, pid, &cgroup_path, resources.as_ref());
        scope.await?;
        crate::fault::point("container.create.after_shim_create");
        let created = self
            .records
            .transition(&container, ContainerState::Created, |r| r.pid = pid);
        timed(OP, "record_created", created).await?;
        tracing::info!(
            container_id = %id,
            sandbox_id = %sandbox.id,
            name = %config.metadata.name,
            pid,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "container created"
        );
        Ok(())
    }

    /// A container that uses image `image_id`, as its own image or as a volume, in words
    /// for RemoveImage's refusal; every record counts, whatever its state.
    pub fn image_user(&self, image_id: &str) -> Option<String> {
        self.records.all().into_iter().find_map(|c| {
            let r = c.record();
            let how = if r.image_id == image_id {
                "runs"
            } else if r.volume_image_ids.iter().any(|id| id == image_id) {
                "mounts as an image volume"
            } else {
                return None;
            };
            Some(format!(
                "container {} ({:?} in pod {}) {how} it",
                r.id, r.config.metadata.name, r.sandbox_id
            ))
        })
    }
}
