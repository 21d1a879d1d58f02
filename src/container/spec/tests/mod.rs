//! Spec building: CRI config in, expected OCI spec out.

use std::collections::BTreeMap;
use std::path::Path;

use nix::sys::signal::Signal;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxDeviceType, LinuxNamespaceType, Mount, PosixRlimitType, Spec,
};

use super::process::*;
use super::resources::*;
use super::security::*;
use super::*;
use crate::container::config::{
    Capabilities as CriCaps, ContainerMetadata, Device, HugepageLimit, Mount as CriMount,
};
use crate::container::config::{
    ContainerConfig, ContainerResources, MountPropagation, NamespaceMode,
};
use crate::error::{Error, ErrorKind};
use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

mod devices_resources;
mod mounts;
mod namespaces;
mod process;
mod security;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nwww-data:x:33:\nstaff:x:50:www-data\n";

struct Fixture {
    config: ContainerConfig,
    image: ImageConfiguration,
    sandbox: SandboxInfo,
    target_pid: Option<u32>,
    host_devices: BTreeMap<String, HostDevice>,
    defaults: RuntimeDefaults,
    seccomp_localhost: Option<String>,
}

fn image(build: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> ImageConfiguration {
    ImageConfigurationBuilder::default()
        .config(build(ConfigBuilder::default()).build().unwrap())
        .build()
        .unwrap()
}

fn fixture() -> Fixture {
    Fixture {
        config: ContainerConfig {
            metadata: ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            },
            image: "busybox:latest".into(),
            ..Default::default()
        },
        image: image(|c| c.cmd(vec!["sh".to_string()])),
        sandbox: SandboxInfo {
            id: "sb1".into(),
            hostname: "pod-host".into(),
            pause_pid: 42,
            netns_path: Some("/run/berth/netns/sb1".into()),
            host_ipc: false,
            pod_files_dir: "/var/lib/berth/sandboxes/sb1".into(),
            pod_cgroup: "/berth/pod-sb1/".into(),
            scope_prefix: None,
            shm_path: None,
            runtime_handler: String::new(),
            userns: None,
        },
        target_pid: None,
        host_devices: BTreeMap::new(),
        defaults: RuntimeDefaults::default(),
        seccomp_localhost: None,
    }
}

impl Fixture {
    fn build(&self) -> Result<Spec, SpecError> {
        build_spec(&SpecInput {
            container_id: "c1",
            config: &self.config,
            image: &self.image,
            sandbox: &self.sandbox,
            bundle_dir: Path::new("/run/berth/containers/c1/bundle"),
            passwd: Some(PASSWD),
            group: Some(GROUP),
            target_pid: self.target_pid,
            host_devices: &self.host_devices,
            defaults: &self.defaults,
            seccomp_localhost: self.seccomp_localhost.as_deref(),
        })
    }
    fn spec(&self) -> Spec {
        self.build().expect("spec builds")
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn args(spec: &Spec) -> Vec<String> {
    spec.process().as_ref().unwrap().args().clone().unwrap()
}

fn env(spec: &Spec) -> Vec<String> {
    spec.process().as_ref().unwrap().env().clone().unwrap()
}

fn user(spec: &Spec) -> (u32, u32, Vec<u32>) {
    let u = spec.process().as_ref().unwrap().user();
    (
        u.uid(),
        u.gid(),
        u.additional_gids().clone().unwrap_or_default(),
    )
}

fn caps(spec: &Spec) -> oci_spec::runtime::LinuxCapabilities {
    spec.process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap()
}

fn linux(spec: &Spec) -> &oci_spec::runtime::Linux {
    spec.linux().as_ref().unwrap()
}

fn mount_at<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(dest))
}

fn options(m: &Mount) -> Vec<String> {
    m.options().clone().unwrap_or_default()
}

#[test]
fn annotations_copied_and_added() {
    let mut f = fixture();
    f.config.annotations.insert("user/key".into(), "v".into());
    let spec = f.spec();
    let a = spec.annotations().as_ref().unwrap();
    assert_eq!(a["user/key"], "v");
    assert_eq!(a[ANNOTATION_CONTAINER_TYPE], "container");
    assert_eq!(a[ANNOTATION_SANDBOX_ID], "sb1");
    assert_eq!(a[ANNOTATION_CONTAINER_NAME], "app");
    assert_eq!(a[ANNOTATION_IMAGE_NAME], "busybox:latest");
}

#[test]
fn oci_version_and_json_shape() {
    let spec = fixture().spec();
    assert_eq!(spec.version(), OCI_VERSION);
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["ociVersion"], "1.2.0");
    assert!(json.get("hostname").is_none());
    assert_eq!(json["linux"]["cgroupsPath"], "/berth/pod-sb1/c1");
    let back: Spec = serde_json::from_value(json).unwrap();
    assert_eq!(back, spec);
}
