//! The OCI runtime spec of a container, built as a pure function of the CRI config, the image
//! config, the pod sandbox and a few facts the caller looked up (the image's /etc/passwd and
//! /etc/group, host device numbers, a target container's pid). `berth init` applies it.
//!
//! One file per part of the spec: `process`, `security`, `namespaces`, `mounts`, `devices`,
//! `resources`; `input` and `error` are the types they share. No I/O here: the host facts
//! come from `container::host`. May call `container::{config, users, seccomp}` only.

mod devices;
mod error;
mod input;
mod mounts;
mod namespaces;
mod process;
mod resources;
mod security;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::{
    LinuxBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

pub use devices::CONTAINER_OWN_DEVICES;
use devices::devices;
pub use error::SpecError;
pub use input::{AppArmorHost, HostDevice, RuntimeDefaults, SandboxInfo, SpecInput};
use mounts::{mounts, rootfs_propagation};
use namespaces::namespaces;
pub use process::{
    DEFAULT_PATH, parse_signal, process_args, process_env, stop_signal, working_dir,
};
use process::{oom_score_adj, resolve_user};
pub use resources::linux_resources;
pub use security::{
    ALL_CAPABILITIES, DEFAULT_CAPABILITIES, DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS,
    is_profile_name,
};
use security::{apparmor_profile, capabilities};

/// The container's cgroup path: below the pod's, a scope with the systemd driver.
fn container_cgroup(input: &SpecInput) -> String {
    let pod = input.sandbox.pod_cgroup.trim_end_matches('/');
    match &input.sandbox.scope_prefix {
        Some(prefix) => format!("{pod}/{prefix}-{}.scope", input.container_id),
        None => format!("{pod}/{}", input.container_id),
    }
}

/// The OCI runtime spec version berth writes.
pub const OCI_VERSION: &str = "1.2.0";

pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const ANNOTATION_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
pub const ANNOTATION_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// Builds the container's OCI runtime spec.
pub fn build_spec(input: &SpecInput) -> Result<Spec, SpecError> {
    let config = input.config;
    let security = &config.security;
    let image = input.image.config().clone().unwrap_or_default();

    let args = process_args(
        &config.command,
        &config.args,
        image.entrypoint().as_deref().unwrap_or_default(),
        image.cmd().as_deref().unwrap_or_default(),
    )?;
    let user = resolve_user(input, image.user().as_deref().unwrap_or_default())?;
    let env = process_env(
        &input.sandbox.hostname,
        image.env().as_deref().unwrap_or_default(),
        &config.envs,
        user.home.as_deref(),
    );
    let cwd = working_dir(&config.working_dir, image.working_dir().as_deref());
    let capabilities = capabilities(security)?;
    let seccomp = crate::container::seccomp::container_seccomp(
        security.seccomp.as_ref(),
        security.privileged,
        &capabilities.bounding().clone().unwrap_or_default(),
        input.seccomp_localhost,
    )?;

    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build()?,
        )
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(input.defaults.nofile)
                .hard(input.defaults.nofile)
                .build()?,
        ])
        .no_new_privileges(security.no_new_privs)
        .build()?;
    process.set_apparmor_profile(apparmor_profile(security, &input.defaults.apparmor)?);
    process.set_oom_score_adj(Some(oom_score_adj(
        config.resources.oom_score_adj,
        input.defaults.min_oom_score_adj,
    )));

    let (masked, readonly) = if security.privileged {
        (Vec::new(), Vec::new())
    } else {
        (
            security
                .masked_paths
                .clone()
                .unwrap_or_else(|| DEFAULT_MASKED_PATHS.map(String::from).to_vec()),
            security
                .readonly_paths
                .clone()
                .unwrap_or_else(|| DEFAULT_READONLY_PATHS.map(String::from).to_vec()),
        )
    };

    let mut resources = linux_resources(&config.resources)?;
    let (devices, device_rules) = devices(input)?;
    resources.set_devices(Some(device_rules));

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(input)?)
        .cgroups_path(PathBuf::from(container_cgroup(input)))
        .resources(resources)
        .devices(devices)
        .masked_paths(masked)
        .readonly_paths(readonly)
        .build()?;
    if let Some(propagation) = rootfs_propagation(config) {
        linux.set_rootfs_propagation(Some(propagation.to_owned()));
    }
    linux.set_seccomp(seccomp);
    if let Some(userns) = &input.sandbox.userns {
        if security.privileged {
            return Err(SpecError::PrivilegedInUserNamespace);
        }
        use crate::sandbox::spec::UserNamespace;
        linux.set_uid_mappings(Some(UserNamespace::oci_mappings(&userns.uids)));
        linux.set_gid_mappings(Some(UserNamespace::oci_mappings(&userns.gids)));
    }

    let mut annotations: HashMap<String, String> = config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(ANNOTATION_CONTAINER_TYPE.into(), "container".into());
    annotations.insert(ANNOTATION_SANDBOX_ID.into(), input.sandbox.id.clone());
    annotations.insert(
        ANNOTATION_CONTAINER_NAME.into(),
        config.metadata.name.clone(),
    );
    annotations.insert(ANNOTATION_IMAGE_NAME.into(), config.image.clone());

    let mut spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path(input.bundle_dir.join("rootfs"))
                .readonly(security.readonly_rootfs)
                .build()?,
        )
        .mounts(mounts(input)?)
        .process(process)
        .annotations(annotations)
        .linux(linux)
        .build()?;
    // The container joins the pause process's UTS namespace, which already has the pod's
    // hostname; oci-spec's builder default would set one of its own.
    spec.set_hostname(None);
    Ok(spec)
}
