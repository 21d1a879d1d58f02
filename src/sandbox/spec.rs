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
    fn unknown_runtime_handler_is_invalid() {
        let mut s = spec();
        s.runtime_handler = "kata".into();
        let err = s.validate().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("kata"));
    }
}
