//! CNI: berth's own plugin invoker, per the CNI spec (versions 0.1.0 to 1.0.0).
//!
//! - `config`: the network config list, loaded from the conf dir on every call (a config that
//!   appears later makes the network ready without a restart).
//! - `invoke`: one plugin run: environment, stdin, output and errors.
//! - `result`: the ADD result, kept raw for chaining and DEL, plus the pod's IPs.
//!
//! ADD runs each plugin of the list in order, chaining results; a failure runs DEL for the whole
//! list so no lease or veth leaks. DEL runs the list in reverse and keeps going past failures.
//! The pod's loopback is not a plugin run: `linux::netns` brings `lo` up when it makes the netns.
//!
//! A leaf of the domain: called by `sandbox`; calls only `metrics` (its timer) and `error`.

mod config;
mod error;
mod invoke;
mod result;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use config::{NetworkConfigList, load_from_dir};
pub use error::{CniCommand, CniError};
pub use invoke::{
    Attachment, Bandwidth, IpRange, PortMapping, Protocol, cni_args, plugin_stdin, runtime_config,
};
pub use result::{CniInterface, CniResult};

/// How long one plugin may run before it is killed.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// PATH for plugins when the daemon has none (they run iptables, ip, ...).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone)]
pub struct CniManager {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    timeout: Duration,
}

impl CniManager {
    pub fn new(conf_dir: impl Into<PathBuf>, bin_dirs: Vec<PathBuf>) -> Self {
        CniManager {
            conf_dir: conf_dir.into(),
            bin_dirs,
            timeout: DEFAULT_PLUGIN_TIMEOUT,
        }
    }

    /// Sets how long one plugin may run.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    /// The current network config (re-read from the conf dir).
    pub fn load(&self) -> Result<NetworkConfigList, CniError> {
        load_from_dir(&self.conf_dir)
    }

    /// The network's name when it is usable: a config parses and every plugin binary it
    /// names exists. The error is the CRI `NetworkReady=false` message.
    pub fn status(&self) -> Result<String, CniError> {
        let net = self.load()?;
        for plugin in net.plugin_types() {
            invoke::find_plugin(&self.bin_dirs, plugin)?;
        }
        Ok(net.name)
    }

    /// Attaches the pod's netns to `net`. On failure, whatever was set up is torn down again
    /// before the error is returned.
    pub async fn add(
        &self,
        net: &NetworkConfigList,
        att: &Attachment,
    ) -> Result<CniResult, CniError> {
        let _timer = crate::metrics::cni_timer("add");
        let netns = att
            .netns
            .as_deref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let last_plugin = || net.plugin_types().last().unwrap_or_default().to_owned();
        let outcome = match self
            .run_list(CniCommand::Add, net, att, &netns, &att.ifname, None)
            .await
        {
            Ok(Some(raw)) => CniResult::parse(raw.clone()).map_err(|reason| AddFailure {
                error: CniError::InvalidResult {
                    plugin: last_plugin(),
                    reason,
                },
                partial: Some(raw),
            }),
            Ok(None) => Err(AddFailure {
                error: CniError::InvalidResult {
                    plugin: last_plugin(),
                    reason: "no result from any plugin".into(),
                },
                partial: None,
            }),
            Err(failure) => Err(failure),
        };
        match outcome {
            Ok(result) => Ok(result),
            Err(AddFailure { error, partial }) => {
                self.teardown_after_failed_add(net, att, &netns, &att.ifname, partial.as_ref())
                    .await;
                Err(error)
            }
        }
    }

    /// Detaches the pod from `net` (the config ADD used), with the ADD result as `prevResult`.
    /// Works when the netns is already gone: plugins are then run with an empty `CNI_NETNS` and
    /// still release their IP leases and host-side state. Every plugin runs even when one
    /// fails; the first error is returned.
    pub async fn del(
        &self,
        net: &NetworkConfigList,
        att: &Attachment,
        prev_result: Option<&Value>,
    ) -> Result<(), CniError> {
        let _timer = crate::metrics::cni_timer("del");
        let netns = match att.netns.as_deref() {
            Some(path) if crate::linux::netns::is_pinned(path) => {
                path.to_string_lossy().into_owned()
            }
            _ => String::new(),
        };
        self.del_list(net, att, &netns, &att.ifname, prev_result)
            .await
    }

    /// Runs every plugin of `net` for ADD, chaining results. Returns the last result.
    async fn run_list(
        &self,
        command: CniCommand,
        net: &NetworkConfigList,
        att: &Attachment,
        netns: &str,
        ifname: &str,
        prev_result: Option<&Value>,
    ) -> Result<Option<Value>, AddFailure> {
        let chains = result::version_chains(&net.cni_version);
        let mut prev = prev_result.cloned();
        for plugin in &net.plugins {
            let prev_for_plugin = if chains { prev.as_ref() } else { None };
            match self
                .run_plugin(command, net, plugin, att, netns, ifname, prev_for_plugin)
                .await
            {
                Ok(Some(out)) => prev = Some(out),
                Ok(None) => {}
                Err(error) => {
                    return Err(AddFailure {
                        error,
                        partial: prev,
                    });
                }
            }
        }
        Ok(prev)
    }

    /// DEL for every plugin of `net`, in reverse order.
    async fn del_list(
        &self,
        net: &NetworkConfigList,
        att: &Attachment,
        netns: &str,
        ifname: &str,
        prev_result: Option<&Value>,
    ) -> Result<(), CniError> {
        let prev = prev_result.filter(|_| result::version_has_del_prev_result(&net.cni_version));
        let mut first_error = None;
        for plugin in net.plugins.iter().rev() {
            if let Err(err) = self
                .run_plugin(CniCommand::Del, net, plugin, att, netns, ifname, prev)
                .await
            {
                tracing::warn!(container_id = %att.container_id, error = %err, "CNI DEL failed");
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn teardown_after_failed_add(
        &self,
        net: &NetworkConfigList,
        att: &Attachment,
        netns: &str,
        ifname: &str,
        partial: Option<&Value>,
    ) {
        if let Err(err) = self.del_list(net, att, netns, ifname, partial).await {
            tracing::warn!(
                container_id = %att.container_id, network = %net.name, error = %err,
                "cleanup after failed CNI ADD failed"
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_plugin(
        &self,
        command: CniCommand,
        net: &NetworkConfigList,
        plugin: &Value,
        att: &Attachment,
        netns: &str,
        ifname: &str,
        prev_result: Option<&Value>,
    ) -> Result<Option<Value>, CniError> {
        let plugin_type = config::plugin_type(plugin).ok_or_else(|| CniError::InvalidConfig {
            path: net.source.clone().unwrap_or_default(),
            reason: "a plugin has no valid \"type\"".into(),
        })?;
        let binary = invoke::find_plugin(&self.bin_dirs, plugin_type)?;
        let stdin = plugin_stdin(&net.name, &net.cni_version, plugin, att, prev_result);
        let stdin = serde_json::to_vec(&stdin).map_err(|e| CniError::InvalidConfig {
            path: net.source.clone().unwrap_or_default(),
            reason: e.to_string(),
        })?;
        let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from(DEFAULT_PATH));
        let env = invoke::plugin_env(command, att, netns, ifname, &self.bin_dirs, path);
        let started = Instant::now();
        let out =
            invoke::exec_plugin(&binary, plugin_type, command, env, &stdin, self.timeout).await;
        tracing::debug!(
            container_id = %att.container_id, plugin = plugin_type, %command,
            ok = out.is_ok(), elapsed_ms = started.elapsed().as_millis() as u64,
            "CNI plugin ran"
        );
        out
    }
}

struct AddFailure {
    error: CniError,
    /// The last result obtained before the failure, for the cleanup DEL.
    partial: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, ErrorKind};
    use serde_json::json;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A fake plugin: a shell script that appends "<COMMAND> <type> <ifname> <netns>" and its
    /// stdin to a log, then runs `body`.
    fn fake_plugin(bin: &Path, name: &str, log: &Path, body: &str) {
        let script = format!(
            "#!/bin/sh\nin=$(cat)\nprintf '%s %s %s %s [%s]\\n' \"$CNI_COMMAND\" {name} \"$CNI_IFNAME\" \"$CNI_NETNS\" \"$in\" >> {log}\n{body}\n",
            log = log.display()
        );
        let path = bin.join(name);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    const OK_RESULT: &str = r#"if [ "$CNI_COMMAND" = ADD ]; then echo '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/ns"}],"ips":[{"address":"10.9.0.2/24","interface":0}]}'; fi"#;

    struct Fixture {
        _dir: tempfile::TempDir,
        bin: PathBuf,
        log: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let log = dir.path().join("log");
        // Present, as on a node with Debian's plugins, but never run: the log proves it.
        fake_plugin(&bin, "loopback", &log, "");
        Fixture {
            bin,
            log,
            _dir: dir,
        }
    }

    fn list(plugins: &[&str]) -> NetworkConfigList {
        NetworkConfigList {
            name: "testnet".into(),
            cni_version: "1.0.0".into(),
            plugins: plugins.iter().map(|t| json!({"type": t})).collect(),
            source: None,
        }
    }

    fn log_lines(log: &Path) -> Vec<String> {
        fs::read_to_string(log)
            .unwrap()
            .lines()
            .map(|l| l.split(" [").next().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn add_chains_results_and_del_runs_in_reverse() {
        let f = fixture();
        fake_plugin(&f.bin, "main", &f.log, OK_RESULT);
        // The last plugin's result is the list's result.
        fake_plugin(
            &f.bin,
            "chained",
            &f.log,
            &OK_RESULT.replace("10.9.0.2", "10.9.0.3"),
        );
        let cni = CniManager::new("/nonexistent", vec!["/nonexistent".into(), f.bin.clone()]);
        let att = Attachment::new("c1", Some("/ns".into()), "ns", "pod", "uid");
        let net = list(&["main", "chained"]);
        let result = cni.add(&net, &att).await.unwrap();
        assert_eq!(
            result.ips,
            ["10.9.0.3".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(
            log_lines(&f.log),
            ["ADD main eth0 /ns", "ADD chained eth0 /ns"]
        );
        let logged = fs::read_to_string(&f.log).unwrap();
        let chained_stdin = logged.lines().nth(1).unwrap();
        assert!(
            chained_stdin.contains(r#""prevResult":{"cniVersion":"1.0.0""#)
                && chained_stdin.contains("10.9.0.2/24"),
            "the chained plugin gets the previous result: {chained_stdin}"
        );
        assert!(!logged.lines().next().unwrap().contains("prevResult"));

        fs::write(&f.log, "").unwrap();
        // The netns file is not a pinned netns: DEL runs with an empty CNI_NETNS.
        cni.del(&net, &att, Some(&result.raw)).await.unwrap();
        assert_eq!(log_lines(&f.log), ["DEL chained eth0 ", "DEL main eth0 "]);
        assert!(fs::read_to_string(&f.log).unwrap().contains("10.9.0.3/24"));
    }

    #[tokio::test]
    async fn failed_add_deletes_the_whole_list_and_returns_the_plugins_message() {
        let f = fixture();
        fake_plugin(&f.bin, "main", &f.log, OK_RESULT);
        fake_plugin(
            &f.bin,
            "broken",
            &f.log,
            r#"if [ "$CNI_COMMAND" = ADD ]; then echo '{"code":7,"msg":"no IP addresses available"}'; exit 1; fi"#,
        );
        fake_plugin(&f.bin, "after", &f.log, OK_RESULT);
        let cni = CniManager::new("/nonexistent", vec![f.bin.clone()]);
        let att = Attachment::new("c2", Some("/ns".into()), "ns", "pod", "uid");
        let err = cni
            .add(&list(&["main", "broken", "after"]), &att)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CNI plugin broken ADD failed: no IP addresses available"
        );
        assert_eq!(
            log_lines(&f.log),
            [
                "ADD main eth0 /ns",
                "ADD broken eth0 /ns",
                "DEL after eth0 /ns",
                "DEL broken eth0 /ns",
                "DEL main eth0 /ns",
            ]
        );
        let crate_err: Error = err.into();
        assert_eq!(crate_err.kind(), ErrorKind::Internal);
        assert!(crate_err.to_string().ends_with("no IP addresses available"));
    }

    #[tokio::test]
    async fn an_unparsable_result_is_an_error_and_is_torn_down() {
        let f = fixture();
        fake_plugin(
            &f.bin,
            "garbled",
            &f.log,
            r#"[ "$CNI_COMMAND" = ADD ] && echo '{"ips":[{"address":"banana/24"}]}'; true"#,
        );
        let cni = CniManager::new("/nonexistent", vec![f.bin.clone()]);
        let att = Attachment::new("c6", Some("/ns".into()), "ns", "pod", "uid");
        let err = cni.add(&list(&["garbled"]), &att).await.unwrap_err();
        assert!(matches!(err, CniError::InvalidResult { .. }), "{err}");
        assert_eq!(
            log_lines(&f.log),
            ["ADD garbled eth0 /ns", "DEL garbled eth0 /ns"]
        );
    }

    #[tokio::test]
    async fn del_continues_past_a_failing_plugin() {
        let f = fixture();
        fake_plugin(&f.bin, "first", &f.log, "");
        fake_plugin(&f.bin, "second", &f.log, "echo oops >&2; exit 1");
        let cni = CniManager::new("/nonexistent", vec![f.bin.clone()]);
        let att = Attachment::new("c3", None, "ns", "pod", "uid");
        let err = cni
            .del(&list(&["first", "second"]), &att, None)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "CNI plugin second DEL failed: oops");
        assert_eq!(log_lines(&f.log), ["DEL second eth0 ", "DEL first eth0 "]);
    }

    #[tokio::test]
    async fn a_hanging_plugin_is_killed_after_the_timeout() {
        let f = fixture();
        fake_plugin(&f.bin, "hang", &f.log, "exec sleep 30");
        let cni = CniManager::new("/nonexistent", vec![f.bin.clone()])
            .with_timeout(Duration::from_millis(300));
        let att = Attachment::new("c4", Some("/ns".into()), "ns", "pod", "uid");
        let started = Instant::now();
        let err = cni.add(&list(&["hang"]), &att).await.unwrap_err();
        assert!(matches!(err, CniError::Timeout { .. }), "{err}");
        // ADD and the cleanup DEL each time out once.
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_missing_plugin_binary_fails_add_and_status() {
        let f = fixture();
        let conf = f.bin.parent().unwrap().join("net.d");
        fs::create_dir(&conf).unwrap();
        let cni = CniManager::new(&conf, vec![f.bin.clone()]);
        let status = cni.status().unwrap_err();
        assert_eq!(
            status.to_string(),
            format!("no network config found in {}", conf.display())
        );
        assert_eq!(Error::from(status).kind(), ErrorKind::FailedPrecondition);

        fs::write(
            conf.join("10-net.conflist"),
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"nosuch"}]}"#,
        )
        .unwrap();
        let status = cni.status().unwrap_err();
        assert!(
            status.to_string().contains("\"nosuch\" not found"),
            "{status}"
        );
        fake_plugin(&f.bin, "nosuch", &f.log, "");
        assert_eq!(cni.status().unwrap(), "n");

        let att = Attachment::new("c5", Some("/ns".into()), "ns", "pod", "uid");
        let err = cni.add(&list(&["gone"]), &att).await.unwrap_err();
        assert!(matches!(err, CniError::PluginNotFound { .. }), "{err}");
    }
}
