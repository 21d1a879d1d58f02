//! The pause process's OCI bundle. Pause has no rootfs: it keeps the host's mount view
//! and only holds the pod's namespaces (and cgroup) for the containers to join.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::init::plan::PAUSE_ANNOTATION;
use crate::persist::write_replace_mode;

/// The OCI runtime spec version berth writes.
pub const OCI_VERSION: &str = "1.2.0";

#[derive(Debug, Clone, Default)]
pub struct PauseSpec {
    pub sandbox_id: String,
    /// The pod network namespace to join; `None` for host network.
    pub netns: Option<PathBuf>,
    pub hostname: Option<String>,
    /// cgroupsPath, relative to each hierarchy root.
    pub cgroup_path: Option<String>,
    pub sysctls: BTreeMap<String, String>,
    /// A new PID namespace shared by the pod's containers (CRI NamespaceMode::POD).
    pub share_pid_ns: bool,
    pub host_ipc: bool,
    pub host_uts: bool,
    pub oom_score_adj: Option<i32>,
}

/// The spec as JSON (pure, for tests).
pub fn pause_spec_json(spec: &PauseSpec) -> serde_json::Value {
    let mut namespaces = Vec::new();
    if let Some(netns) = &spec.netns {
        namespaces.push(json!({"type": "network", "path": netns}));
    }
    if !spec.host_ipc {
        namespaces.push(json!({"type": "ipc"}));
    }
    if !spec.host_uts {
        namespaces.push(json!({"type": "uts"}));
    }
    if spec.share_pid_ns {
        namespaces.push(json!({"type": "pid"}));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "sysctl": spec.sysctls,
    });
    if let Some(cgroup) = &spec.cgroup_path {
        linux["cgroupsPath"] = json!(cgroup);
    }
    let mut process = json!({
        "terminal": false,
        "user": {"uid": 0, "gid": 0},
        "args": ["/pause"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "cwd": "/",
        "noNewPrivileges": true,
    });
    if let Some(adj) = spec.oom_score_adj {
        process["oomScoreAdj"] = json!(adj);
    }
    let mut config = json!({
        "ociVersion": OCI_VERSION,
        "process": process,
        "annotations": {
            PAUSE_ANNOTATION: "true",
            "io.kubernetes.cri.sandbox-id": spec.sandbox_id,
        },
        "linux": linux,
    });
    if let Some(hostname) = spec.hostname.as_deref().filter(|_| !spec.host_uts) {
        config["hostname"] = json!(hostname);
    }
    config
}

/// Writes `<dir>/config.json` for the pause process (creating `dir`).
pub fn write_pause_bundle(dir: &Path, spec: &PauseSpec) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let data = serde_json::to_vec_pretty(&pause_spec_json(spec)).map_err(io::Error::other)?;
    // A runtime file: not synced (see `persist::write_replace`).
    write_replace_mode(&dir.join("config.json"), &data, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::plan::{NamespacePlan, is_pause};
    use oci_spec::runtime::{LinuxNamespaceType, Spec};

    #[test]
    fn pause_bundle_loads_as_an_oci_spec_with_the_asked_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let spec = PauseSpec {
            sandbox_id: "abc".into(),
            netns: Some("/run/berth/netns/abc".into()),
            hostname: Some("pod-a".into()),
            cgroup_path: Some("/kubepods/podabc".into()),
            sysctls: [("kernel.shmmni".to_string(), "1024".to_string())].into(),
            share_pid_ns: true,
            host_ipc: false,
            host_uts: false,
            oom_score_adj: Some(-998),
        };
        write_pause_bundle(dir.path(), &spec).unwrap();
        let loaded = Spec::load(dir.path().join("config.json")).unwrap();
        assert!(is_pause(&loaded));
        assert!(loaded.root().is_none());
        assert_eq!(loaded.hostname().as_deref(), Some("pod-a"));
        let linux = loaded.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/kubepods/podabc"))
        );
        assert_eq!(linux.sysctl().as_ref().unwrap()["kernel.shmmni"], "1024");
        assert_eq!(
            loaded.process().as_ref().unwrap().oom_score_adj(),
            Some(-998)
        );
        let plan = NamespacePlan::from_spec(&loaded);
        assert_eq!(plan.join.len(), 1);
        assert_eq!(plan.join[0].kind, LinuxNamespaceType::Network);
        assert_eq!(
            plan.create,
            vec![
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Pid
            ]
        );
    }

    #[test]
    fn host_namespaces_are_not_created_and_host_uts_drops_the_hostname() {
        let spec = PauseSpec {
            sandbox_id: "x".into(),
            hostname: Some("h".into()),
            host_ipc: true,
            host_uts: true,
            ..PauseSpec::default()
        };
        let json = pause_spec_json(&spec);
        assert_eq!(json["linux"]["namespaces"], json!([]));
        assert!(json.get("hostname").is_none());
        assert!(json["linux"].get("cgroupsPath").is_none());
    }
}
