//! One plugin invocation per the CNI spec: what goes in (environment, stdin config with name,
//! version, `prevResult` and `runtimeConfig`) built as pure data, and running the binary.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use super::{CniCommand, CniError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// A host port forwarded to the pod (`portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Empty: every host address.
    #[serde(default, rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// Traffic shaping in bits per second (`bandwidth` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

/// An address range for IPAM (`ipRanges` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// What is attached: one pod's network namespace, and the pod's runtime options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The sandbox ID (CNI_CONTAINERID).
    pub container_id: String,
    /// The pinned netns. For DEL it may be gone (or `None`); plugins then release what they can.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub port_mappings: Vec<PortMapping>,
    pub bandwidth: Option<Bandwidth>,
    /// Range sets, as the `ipRanges` capability expects (`[[range, ...], ...]`).
    pub ip_ranges: Vec<Vec<IpRange>>,
}

impl Attachment {
    /// An `eth0` attachment with no runtime options.
    pub fn new(
        container_id: impl Into<String>,
        netns: Option<PathBuf>,
        pod_namespace: impl Into<String>,
        pod_name: impl Into<String>,
        pod_uid: impl Into<String>,
    ) -> Self {
        Attachment {
            container_id: container_id.into(),
            netns,
            ifname: "eth0".into(),
            pod_namespace: pod_namespace.into(),
            pod_name: pod_name.into(),
            pod_uid: pod_uid.into(),
            ..Attachment::default()
        }
    }
}

/// `CNI_ARGS`: the pod's identity, as the kubelet's network plugins expect it.
pub fn cni_args(att: &Attachment) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        att.pod_namespace, att.pod_name, att.container_id, att.pod_uid
    )
}

/// The `runtimeConfig` for a plugin: only what it declares in `capabilities` and we have.
pub fn runtime_config(plugin: &Value, att: &Attachment) -> Map<String, Value> {
    let mut rc = Map::new();
    let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) else {
        return rc;
    };
    let declared = |name: &str| caps.get(name).and_then(Value::as_bool) == Some(true);
    if declared("portMappings") && !att.port_mappings.is_empty() {
        rc.insert("portMappings".into(), json_of(&att.port_mappings));
    }
    if declared("bandwidth")
        && let Some(bw) = &att.bandwidth
    {
        rc.insert("bandwidth".into(), json_of(bw));
    }
    if declared("ipRanges") && !att.ip_ranges.is_empty() {
        rc.insert("ipRanges".into(), json_of(&att.ip_ranges));
    }
    rc
}

fn json_of<T: Serialize>(value: &T) -> Value {
    // These types are plain structs of strings and numbers: serializing them cannot fail.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The config a plugin reads on stdin: its own config with the list's `name` and `cniVersion`,
/// the previous result when chaining, and its `runtimeConfig`.
pub fn plugin_stdin(
    network_name: &str,
    cni_version: &str,
    plugin: &Value,
    att: &Attachment,
    prev_result: Option<&Value>,
) -> Value {
    let mut conf = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("name".into(), Value::String(network_name.into()));
    conf.insert("cniVersion".into(), Value::String(cni_version.into()));
    conf.remove("prevResult");
    conf.remove("runtimeConfig");
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    let rc = runtime_config(plugin, att);
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Value::Object(conf)
}

/// The environment of a plugin process (nothing of the daemon's leaks in but PATH, which
/// plugins need to find iptables).
pub fn plugin_env(
    command: CniCommand,
    att: &Attachment,
    netns: &str,
    ifname: &str,
    bin_dirs: &[PathBuf],
    path: OsString,
) -> Vec<(&'static str, OsString)> {
    vec![
        ("CNI_COMMAND", command.as_str().into()),
        ("CNI_CONTAINERID", att.container_id.clone().into()),
        ("CNI_NETNS", netns.into()),
        ("CNI_IFNAME", ifname.into()),
        ("CNI_ARGS", cni_args(att).into()),
        ("CNI_PATH", join_paths(bin_dirs)),
        ("PATH", path),
    ]
}

pub(crate) fn join_paths(dirs: &[PathBuf]) -> OsString {
    let mut joined = OsString::new();
    for (i, dir) in dirs.iter().enumerate() {
        if i > 0 {
            joined.push(":");
        }
        joined.push(dir);
    }
    joined
}

/// The plugin binary: the first `bin_dirs` entry that has it.
pub fn find_plugin(bin_dirs: &[PathBuf], plugin_type: &str) -> Result<PathBuf, CniError> {
    bin_dirs
        .iter()
        .map(|dir| dir.join(plugin_type))
        .find(|path| path.is_file())
        .ok_or_else(|| CniError::PluginNotFound {
            plugin: plugin_type.to_owned(),
            dirs: join_paths(bin_dirs).to_string_lossy().into_owned(),
        })
}

/// The error a plugin reported: the spec's `{"code", "msg", "details"}` on stdout, else
/// whatever it printed.
pub fn plugin_error(
    plugin: &str,
    command: CniCommand,
    status: std::process::ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
) -> CniError {
    #[derive(Deserialize)]
    struct SpecError {
        code: Option<u32>,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    let (code, msg, details) = match serde_json::from_slice::<SpecError>(stdout) {
        Ok(err) if !err.msg.is_empty() => (err.code, err.msg, err.details),
        _ => {
            let text = [stdout, stderr]
                .iter()
                .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            let msg = if text.is_empty() {
                format!("exited with {status}")
            } else {
                text
            };
            (None, msg, String::new())
        }
    };
    CniError::Plugin {
        plugin: plugin.to_owned(),
        command,
        code,
        msg,
        details,
    }
}

/// Runs one plugin binary; returns what it printed on success (a result for ADD, usually
/// nothing for DEL). Killed after `timeout`.
pub async fn exec_plugin(
    binary: &Path,
    plugin: &str,
    command: CniCommand,
    env: Vec<(&'static str, OsString)>,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Option<Value>, CniError> {
    let mut child = tokio::process::Command::new(binary)
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CniError::Spawn {
            plugin: plugin.to_owned(),
            source,
        })?;
    let mut child_stdin = child.stdin.take();
    let run = async move {
        let write = async {
            if let Some(pipe) = child_stdin.as_mut() {
                // A plugin that exits early closes the pipe; its exit status says why.
                let _ = pipe.write_all(stdin).await;
            }
            drop(child_stdin);
        };
        let ((), output) = tokio::join!(write, child.wait_with_output());
        output
    };
    // On timeout the future, and with it the child, is dropped: kill_on_drop kills it.
    let output = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| CniError::Timeout {
            plugin: plugin.to_owned(),
            command,
            after: timeout,
        })?
        .map_err(|source| CniError::Spawn {
            plugin: plugin.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(plugin_error(
            plugin,
            command,
            output.status,
            &output.stdout,
            &output.stderr,
        ));
    }
    if output.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&output.stdout)
        .map(Some)
        .map_err(|e| CniError::InvalidResult {
            plugin: plugin.to_owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::process::ExitStatusExt;

    fn attachment() -> Attachment {
        let mut att = Attachment::new(
            "abc123",
            Some("/run/berth/netns/abc123".into()),
            "default",
            "web-0",
            "uid-1",
        );
        att.port_mappings = vec![PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: String::new(),
        }];
        att
    }

    #[test]
    fn cni_args_carry_the_pod_identity() {
        assert_eq!(
            cni_args(&attachment()),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=uid-1"
        );
    }

    #[test]
    fn stdin_injects_name_version_and_declared_capabilities_only() {
        let att = attachment();
        let bridge = json!({"type": "bridge", "name": "ignored", "bridge": "cni0"});
        assert_eq!(
            plugin_stdin("podnet", "1.0.0", &bridge, &att, None),
            json!({"type": "bridge", "name": "podnet", "cniVersion": "1.0.0", "bridge": "cni0"})
        );

        let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": true}, "snat": true});
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/16"}]});
        assert_eq!(
            plugin_stdin("podnet", "1.0.0", &portmap, &att, Some(&prev)),
            json!({
                "type": "portmap", "name": "podnet", "cniVersion": "1.0.0", "snat": true,
                "capabilities": {"portMappings": true, "bandwidth": true},
                "prevResult": prev,
                "runtimeConfig": {"portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}
                ]}
            })
        );
    }

    #[test]
    fn capabilities_declared_false_or_without_data_are_left_out() {
        let mut att = attachment();
        let plugin =
            json!({"type": "x", "capabilities": {"portMappings": false, "ipRanges": true}});
        assert!(runtime_config(&plugin, &att).is_empty());

        att.ip_ranges = vec![vec![IpRange {
            subnet: "10.1.0.0/16".into(),
            range_start: None,
            range_end: None,
            gateway: Some("10.1.0.1".into()),
        }]];
        att.bandwidth = Some(Bandwidth {
            ingress_rate: 1000,
            ingress_burst: 10,
            egress_rate: 2000,
            egress_burst: 20,
        });
        att.port_mappings[0].host_ip = "127.0.0.1".into();
        att.port_mappings[0].protocol = Protocol::Sctp;
        let plugin = json!({"type": "x", "capabilities": {"portMappings": true, "ipRanges": true, "bandwidth": true}});
        assert_eq!(
            Value::Object(runtime_config(&plugin, &att)),
            json!({
                "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "sctp", "hostIP": "127.0.0.1"}],
                "ipRanges": [[{"subnet": "10.1.0.0/16", "gateway": "10.1.0.1"}]],
                "bandwidth": {"ingressRate": 1000, "ingressBurst": 10, "egressRate": 2000, "egressBurst": 20}
            })
        );
    }

    #[test]
    fn stale_prev_result_and_runtime_config_in_a_file_are_not_passed_on() {
        let plugin =
            json!({"type": "x", "prevResult": {"stale": 1}, "runtimeConfig": {"stale": 2}});
        let stdin = plugin_stdin("n", "0.4.0", &plugin, &Attachment::default(), None);
        assert_eq!(
            stdin,
            json!({"type": "x", "name": "n", "cniVersion": "0.4.0"})
        );
    }

    #[test]
    fn env_has_the_cni_variables() {
        let env = plugin_env(
            CniCommand::Del,
            &attachment(),
            "",
            "eth0",
            &["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            "/usr/bin".into(),
        );
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("CNI_COMMAND").unwrap(), "DEL");
        assert_eq!(get("CNI_CONTAINERID").unwrap(), "abc123");
        assert_eq!(get("CNI_NETNS").unwrap(), "");
        assert_eq!(get("CNI_IFNAME").unwrap(), "eth0");
        assert_eq!(get("CNI_PATH").unwrap(), "/opt/cni/bin:/usr/lib/cni");
        assert!(
            get("CNI_ARGS")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("IgnoreUnknown=1;")
        );
        assert_eq!(get("PATH").unwrap(), "/usr/bin");
    }

    #[test]
    fn spec_errors_are_parsed_with_the_plugins_message() {
        let err = plugin_error(
            "bridge",
            CniCommand::Add,
            std::process::ExitStatus::from_raw(1 << 8),
            br#"{"code":11,"msg":"failed to allocate for range 0: no IP addresses available in range set: 10.99.0.2-10.99.0.2","details":""}"#,
            b"",
        );
        let CniError::Plugin { code, ref msg, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(code, Some(11));
        assert!(msg.starts_with("failed to allocate"));
        assert_eq!(
            err.to_string(),
            "CNI plugin bridge ADD failed: failed to allocate for range 0: \
             no IP addresses available in range set: 10.99.0.2-10.99.0.2"
        );

        let with_details = plugin_error(
            "portmap",
            CniCommand::Del,
            std::process::ExitStatus::from_raw(1 << 8),
            br#"{"cniVersion":"1.0.0","code":999,"msg":"iptables failed","details":"exit status 4"}"#,
            b"",
        );
        assert_eq!(
            with_details.to_string(),
            "CNI plugin portmap DEL failed: iptables failed (exit status 4)"
        );
    }

    #[test]
    fn non_json_errors_fall_back_to_the_output() {
        let err = plugin_error(
            "weird",
            CniCommand::Add,
            std::process::ExitStatus::from_raw(2 << 8),
            b"",
            b"panic: boom\n",
        );
        assert_eq!(err.to_string(), "CNI plugin weird ADD failed: panic: boom");
        let silent = plugin_error(
            "quiet",
            CniCommand::Add,
            std::process::ExitStatus::from_raw(3 << 8),
            b"",
            b"",
        );
        assert_eq!(
            silent.to_string(),
            "CNI plugin quiet ADD failed: exited with exit status: 3"
        );
    }

    #[test]
    fn missing_plugin_names_the_type_and_the_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_plugin(&[dir.path().into(), "/nonexistent".into()], "bridge").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "CNI plugin \"bridge\" not found in {}:/nonexistent",
                dir.path().display()
            )
        );
    }
}
