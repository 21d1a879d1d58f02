//! What a pod sandbox is asked to be, in berth's own types (the CRI proto stays in `cri/`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::cni::{PortMapping, Protocol};
use crate::error::{Error, Result};
use crate::sandbox::podfiles::DnsConfig;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMetadata {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
}

impl PodMetadata {
    /// The key under which a pod's name is reserved: one sandbox per name and attempt.
    pub fn reservation_key(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.name, self.namespace, self.uid, self.attempt
        )
    }
}

/// CRI NamespaceMode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceMode {
    #[default]
    Pod,
    Container,
    Node,
    Target,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NamespaceOptions {
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
}

impl NamespaceOptions {
    pub fn host_network(&self) -> bool {
        self.network == NamespaceMode::Node
    }
    pub fn host_ipc(&self) -> bool {
        self.ipc == NamespaceMode::Node
    }
    pub fn host_pid(&self) -> bool {
        self.pid == NamespaceMode::Node
    }
    /// The pause process owns a PID namespace the containers join.
    pub fn shared_pid(&self) -> bool {
        self.pid == NamespaceMode::Pod
    }
}

/// One range of a user namespace's id mapping (CRI IDMapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

/// The pod's own user namespace (CRI userns_options with mode POD): the pause process
/// creates it with these mappings and every container of the pod joins it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespace {
    pub uids: Vec<IdMapping>,
    pub gids: Vec<IdMapping>,
}

impl UserNamespace {
    /// The OCI `linux.uidMappings` / `gidMappings` form.
    pub fn oci_mappings(mappings: &[IdMapping]) -> Vec<oci_spec::runtime::LinuxIdMapping> {
        mappings
            .iter()
            .map(|m| {
                oci_spec::runtime::LinuxIdMappingBuilder::default()
                    .container_id(m.container_id)
                    .host_id(m.host_id)
                    .size(m.length)
                    .build()
                    // Every field is given: building cannot fail.
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Writes the pause bundle (`crate::shim::write_pause_bundle`) with this user
    /// namespace in it.
    pub fn write_pause_bundle(
        &self,
        dir: &std::path::Path,
        pause: &crate::shim::PauseSpec,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut config = crate::shim::bundle::pause_spec_json(pause);
        self.add_to_pause_spec(&mut config);
        let data = serde_json::to_vec_pretty(&config).map_err(std::io::Error::other)?;
        crate::persist::write_replace_mode(&dir.join("config.json"), &data, 0o644)
    }

    /// Adds the user namespace to the pause process's spec (JSON, as the shim writes it).
    pub fn add_to_pause_spec(&self, config: &mut serde_json::Value) {
        let json = |maps: &[IdMapping]| {
            serde_json::Value::Array(
                maps.iter()
                    .map(|m| {
                        serde_json::json!({
                            "containerID": m.container_id,
                            "hostID": m.host_id,
                            "size": m.length,
                        })
                    })
                    .collect(),
            )
        };
        let linux = &mut config["linux"];
        if let Some(namespaces) = linux["namespaces"].as_array_mut() {
            namespaces.push(serde_json::json!({"type": "user"}));
        } else {
            linux["namespaces"] = serde_json::json!([{"type": "user"}]);
        }
        linux["uidMappings"] = json(&self.uids);
        linux["gidMappings"] = json(&self.gids);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PodSpec {
    pub metadata: Option<PodMetadata>,
    pub hostname: String,
    pub log_directory: String,
    pub dns: DnsConfig,
    pub port_mappings: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub cgroup_parent: String,
    pub namespaces: NamespaceOptions,
    pub sysctls: BTreeMap<String, String>,
    pub privileged: bool,
    pub runtime_handler: String,
    /// None: the host's user namespace (mode NODE). Absent in older records.
    #[serde(default)]
    pub userns: Option<UserNamespace>,
}

/// Runtime handlers berth answers to: the default one and its own name.
pub const RUNTIME_HANDLERS: [&str; 2] = ["", "berth"];

impl PodSpec {
    /// Checks what the request must carry; returns the metadata.
    pub fn validate(&self) -> Result<&PodMetadata> {
        let metadata = self
            .metadata
            .as_ref()
            .ok_or_else(|| Error::invalid_argument("config.metadata is required"))?;
        if metadata.name.is_empty() {
            return Err(Error::invalid_argument("config.metadata.name is required"));
        }
        if metadata.namespace.is_empty() {
            return Err(Error::invalid_argument(
                "config.metadata.namespace is required",
            ));
        }
        if !RUNTIME_HANDLERS.contains(&self.runtime_handler.as_str()) {
            return Err(Error::invalid_argument(format!(
                "unknown runtime handler {:?}; berth serves \"\" and \"berth\"",
                self.runtime_handler
            )));
        }
        if self.namespaces.network == NamespaceMode::Target
            || self.namespaces.ipc == NamespaceMode::Target
        {
            return Err(Error::invalid_argument(
                "namespace mode TARGET is only valid for the PID namespace of a container",
            ));
        }
        if self.userns.is_some() {
            if let Some(why) = crate::linux::kernel::userns_pods_unsupported() {
                return Err(Error::failed_precondition(why));
            }
            // A pod in its own user namespace cannot also use the host's namespaces or be
            // privileged (the kubelet refuses these combinations too).
            if self.privileged {
                return Err(Error::invalid_argument(
                    "userns_options: mode POD cannot be combined with a privileged pod",
                ));
            }
            if self.namespaces.host_network()
                || self.namespaces.host_pid()
                || self.namespaces.host_ipc()
            {
                return Err(Error::invalid_argument(
                    "userns_options: mode POD cannot be combined with host network, PID or IPC namespaces",
                ));
            }
        }
        for mapping in &self.port_mappings {
            if mapping.container_port == 0 {
                return Err(Error::invalid_argument(
                    "port_mappings: container_port must be set",
                ));
            }
        }
        Ok(metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PodSpec {
        PodSpec {
            metadata: Some(PodMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 2,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn valid_spec_passes_and_reservation_key_holds_every_field() {
        let s = spec();
        assert_eq!(s.validate().unwrap().reservation_key(), "web_default_u1_2");
    }

    #[test]
    fn missing_metadata_fields_are_named() {
        let mut s = spec();
        s.metadata = None;
        assert!(s.validate().unwrap_err().to_string().contains("metadata"));
        let mut s = spec();
        s.metadata.as_mut().unwrap().name.clear();
        assert!(s.validate().unwrap_err().to_string().contains("name"));
        let mut s = spec();
        s.metadata.as_mut().unwrap().namespace.clear();
        assert!(s.validate().unwrap_err().to_string().contains("namespace"));
    }

    #[test]
    fn user_namespace_goes_into_the_pause_spec_and_refuses_host_namespaces() {
        let userns = UserNamespace {
            uids: vec![IdMapping {
                container_id: 0,
                host_id: 1000,
                length: 65536,
            }],
            gids: vec![IdMapping {
                container_id: 0,
                host_id: 2000,
                length: 65536,
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        let pause = crate::shim::PauseSpec {
            sandbox_id: "abc".into(),
            netns: Some("/run/berth/netns/abc".into()),
            hostname: None,
            cgroup_path: None,
            sysctls: Default::default(),
            share_pid_ns: true,
            host_ipc: false,
            host_uts: false,
            oom_score_adj: None,
        };
        userns.write_pause_bundle(dir.path(), &pause).unwrap();
        let loaded = oci_spec::runtime::Spec::load(dir.path().join("config.json")).unwrap();
        let linux = loaded.linux().as_ref().unwrap();
        let user = linux
            .namespaces()
            .iter()
            .flatten()
            .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
            .expect("a user namespace");
        assert!(user.path().is_none());
        let uid = &linux.uid_mappings().as_ref().unwrap()[0];
        assert_eq!(
            (uid.container_id(), uid.host_id(), uid.size()),
            (0, 1000, 65536)
        );
        assert_eq!(linux.gid_mappings().as_ref().unwrap()[0].host_id(), 2000);

        let mut s = spec();
        s.userns = Some(userns);
        assert!(s.validate().is_ok());
        s.namespaces.network = NamespaceMode::Node;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("userns_options")
        );
        s.namespaces.network = NamespaceMode::Pod;
        s.privileged = true;
        assert!(s.validate().unwrap_err().to_string().contains("privileged"));
    }

    #[test]
    fn unknown_runtime_handler_is_invalid() {
        let mut s = spec();
        s.runtime_handler = "kata".into();
        let err = s.validate().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("kata"));
    }
}
