//! Network configuration: the CNI network config list, loaded from the conf dir the way libcni
//! does (first parsable file by name; a single-plugin `.conf` becomes a one-plugin list).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CniError;

/// File extensions libcni reads from the conf dir.
const CONF_EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// A network config list: the network's name and CNI version, and each plugin's config kept as
/// raw JSON (plugins define their own keys). Persisted with a sandbox, so DEL uses exactly the
/// config ADD used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
    /// The file it was loaded from (for messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
}

impl NetworkConfigList {
    /// Parses a `.conflist` (an object with `plugins`) or a single plugin `.conf`.
    pub fn from_bytes(bytes: &[u8], source: Option<&Path>) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let Value::Object(obj) = &value else {
            return Err("not a JSON object".into());
        };
        let name = match obj.get("name") {
            Some(Value::String(name)) if !name.is_empty() => name.clone(),
            _ => return Err("missing network name (\"name\")".into()),
        };
        let cni_version = match obj.get("cniVersion") {
            Some(Value::String(v)) => v.clone(),
            None => "0.1.0".into(), // libcni's default when the key is absent
            Some(_) => return Err("\"cniVersion\" is not a string".into()),
        };
        if !super::result::is_supported_version(&cni_version) {
            return Err(format!("unsupported cniVersion {cni_version:?}"));
        }
        let plugins = match obj.get("plugins") {
            Some(Value::Array(plugins)) if !plugins.is_empty() => plugins.clone(),
            Some(_) => return Err("\"plugins\" must be a non-empty array".into()),
            None => vec![value.clone()],
        };
        for (i, plugin) in plugins.iter().enumerate() {
            if plugin_type(plugin).is_none() {
                return Err(format!("plugin {i}: missing \"type\""));
            }
        }
        Ok(NetworkConfigList {
            name,
            cni_version,
            plugins,
            source: source.map(Path::to_path_buf),
        })
    }

    /// The `type` of each plugin, in order.
    pub fn plugin_types(&self) -> impl Iterator<Item = &str> {
        self.plugins.iter().filter_map(plugin_type)
    }
}

/// A plugin config's `type`: the binary's name. Refuses path separators, so a config cannot
/// name a binary outside the bin dirs.
pub(crate) fn plugin_type(plugin: &Value) -> Option<&str> {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && !t.contains('/') && *t != "." && *t != "..")
}

/// Loads the first file in `conf_dir` (by name) that parses. Broken files are skipped, with a
/// warning; when every candidate is broken, the first one's error is returned.
pub fn load_from_dir(conf_dir: &Path) -> Result<NetworkConfigList, CniError> {
    let entries = match fs::read_dir(conf_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(CniError::NoConfig {
                dir: conf_dir.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(CniError::ReadConfig {
                path: conf_dir.to_path_buf(),
                source,
            });
        }
    };
    let mut candidates: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| CONF_EXTENSIONS.contains(&e))
        })
        .collect();
    candidates.sort();

    let mut first_error = None;
    for path in candidates {
        let parsed = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| NetworkConfigList::from_bytes(&bytes, Some(&path)));
        match parsed {
            Ok(list) => return Ok(list),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "skipping invalid CNI config");
                first_error.get_or_insert(CniError::InvalidConfig { path, reason });
            }
        }
    }
    Err(first_error.unwrap_or(CniError::NoConfig {
        dir: conf_dir.to_path_buf(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, name: &str, content: &str) {
        fs::write(dir.join(name), content).unwrap();
    }

    const BRIDGE_LIST: &str = r#"{"cniVersion":"1.0.0","name":"podnet","plugins":[
        {"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"10.88.0.0/16"}},
        {"type":"portmap","capabilities":{"portMappings":true}}]}"#;

    #[test]
    fn first_file_by_name_wins() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "20-other.conflist",
            &BRIDGE_LIST.replace("podnet", "other"),
        );
        write(dir.path(), "10-podnet.conflist", BRIDGE_LIST);
        write(dir.path(), "00-readme.txt", "not a config");
        let list = load_from_dir(dir.path()).unwrap();
        assert_eq!(list.name, "podnet");
        assert_eq!(list.cni_version, "1.0.0");
        assert_eq!(
            list.plugin_types().collect::<Vec<_>>(),
            ["bridge", "portmap"]
        );
        assert_eq!(list.source, Some(dir.path().join("10-podnet.conflist")));
    }

    #[test]
    fn a_single_plugin_conf_becomes_a_one_plugin_list() {
        let dir = tempfile::tempdir().unwrap();
        let conf = json!({"cniVersion":"0.3.1","name":"single","type":"bridge","bridge":"cni0"});
        write(dir.path(), "10-single.conf", &conf.to_string());
        let list = load_from_dir(dir.path()).unwrap();
        assert_eq!(list.name, "single");
        assert_eq!(list.cni_version, "0.3.1");
        assert_eq!(list.plugins, vec![conf]);
    }

    #[test]
    fn broken_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "00-broken.conflist", "{not json");
        write(
            dir.path(),
            "05-notype.conflist",
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"bridge":"cni0"}]}"#,
        );
        write(
            dir.path(),
            "07-badversion.json",
            r#"{"cniVersion":"9.9.9","name":"x","type":"bridge"}"#,
        );
        write(dir.path(), "10-good.json", BRIDGE_LIST);
        assert_eq!(load_from_dir(dir.path()).unwrap().name, "podnet");
    }

    #[test]
    fn only_broken_files_report_the_first_error() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "10-noname.conflist",
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
        );
        write(dir.path(), "20-broken.conf", "[]");
        let err = load_from_dir(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CniError::InvalidConfig { .. }));
        assert!(msg.contains("10-noname.conflist"), "{msg}");
        assert!(msg.contains("missing network name"), "{msg}");
    }

    #[test]
    fn no_files_or_no_dir_is_no_config() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_from_dir(dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no network config found in {}", dir.path().display())
        );
        let missing = dir.path().join("missing");
        assert!(matches!(
            load_from_dir(&missing).unwrap_err(),
            CniError::NoConfig { .. }
        ));
    }

    #[test]
    fn plugin_types_cannot_be_paths() {
        for bad in ["../bin/sh", "/bin/sh", "", ".."] {
            assert_eq!(plugin_type(&json!({"type": bad})), None, "{bad}");
        }
        assert_eq!(
            plugin_type(&json!({"type": "host-local"})),
            Some("host-local")
        );
    }

    #[test]
    fn config_list_round_trips_through_json() {
        let list = NetworkConfigList::from_bytes(BRIDGE_LIST.as_bytes(), None).unwrap();
        let json = serde_json::to_string(&list).unwrap();
        let back: NetworkConfigList = serde_json::from_str(&json).unwrap();
        assert_eq!(back, list);
    }
}
