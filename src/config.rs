//! Daemon configuration: defaults in code, then `/etc/berth/config.toml` (or `--config`),
//! then command-line flags. Unknown keys and bad values are refused at start.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const DEFAULT_CONFIG_FILE: &str = "/etc/berth/config.toml";

/// The default `[image] max_expansion_ratio`. gzip cannot expand more than about 1030:1, so
/// gzip bombs sit near 1000:1 (zstd ones far above); real layers expand 2-10:1 (binaries,
/// text), and even zero-padded files mixed with other content rarely pass 100:1 over 256
/// MiB. 200 leaves real images twice that margin and stops every bomb of the usual kind
/// after 256 MiB.
pub const DEFAULT_MAX_EXPANSION_RATIO: u64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriverSetting {
    Auto,
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub cgroup_driver: CgroupDriverSetting,
    /// Cgroup parent for pods whose request names none (cgroupfs path, relative to each
    /// hierarchy root; with the systemd driver a slice, see [`default_pod_slice`]).
    pub default_cgroup_parent: String,
    pub cni: CniConfig,
    pub streaming: StreamingConfig,
    pub registry: RegistryConfig,
    pub image: ImageConfig,
    pub stats: StatsConfig,
    pub metrics: MetricsConfig,
    pub checkpoint: CheckpointConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    pub address: IpAddr,
    pub port: u16,
    /// An exec, attach or port-forward connection with no bytes either way for this long
    /// is closed (the kubelet's and containerd's default is 4 hours).
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Directories holding `<host>/hosts.toml` (containerd's format), searched in order.
    pub config_path: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// A pull that receives no bytes for this long is cancelled.
    #[serde(with = "duration_text")]
    pub pull_progress_timeout: Duration,
    /// Blobs of one pull downloaded at once.
    pub max_concurrent_downloads: usize,
    /// Bytes that must stay free on the image filesystem while a layer unpacks; 0 = no check.
    pub min_free_space: u64,
    /// Largest unpacked size of one layer in bytes; 0 = unlimited.
    pub max_unpacked_size: u64,
    /// Bytes a layer may write per compressed byte read, once it has written 256 MiB; 0 =
    /// unlimited. Stops decompression bombs early.
    pub max_expansion_ratio: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    /// How often the collector reads every container's and pod's figures; the stats RPCs
    /// answer from what it last read.
    #[serde(with = "duration_text")]
    pub collection_period: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve berth's own Prometheus metrics on `address`.
    pub enabled: bool,
    pub address: std::net::SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// CRIU, which CheckpointContainer runs: a path, or a name looked up in PATH.
    pub criu_path: PathBuf,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            criu_path: PathBuf::from("criu"),
        }
    }
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            collection_period: Duration::from_secs(10),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: false,
            address: std::net::SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from("/run/berth/berth.sock"),
            root: PathBuf::from("/var/lib/berth"),
            state: PathBuf::from("/run/berth"),
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            cgroup_driver: CgroupDriverSetting::Auto,
            default_cgroup_parent: "/berth".to_string(),
            cni: CniConfig::default(),
            streaming: StreamingConfig::default(),
            registry: RegistryConfig::default(),
            image: ImageConfig::default(),
            stats: StatsConfig::default(),
            metrics: MetricsConfig::default(),
            checkpoint: CheckpointConfig::default(),
        }
    }
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
        }
    }
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            idle_timeout: Duration::from_secs(4 * 3600),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            config_path: vec![
                PathBuf::from("/etc/berth/certs.d"),
                PathBuf::from("/etc/containerd/certs.d"),
            ],
        }
    }
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            pull_progress_timeout: Duration::from_secs(300),
            max_concurrent_downloads: 3,
            min_free_space: 1 << 30,
            max_unpacked_size: 0,
            max_expansion_ratio: DEFAULT_MAX_EXPANSION_RATIO,
        }
    }
}

/// Command-line flags; each one overrides the config key of the same name.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ConfigFlags {
    /// Config file (default /etc/berth/config.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// CRI unix socket [socket].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Persistent data: images, records [root].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Runtime state, gone on reboot [state].
    #[arg(long)]
    pub state: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub log_level: Option<LogLevel>,
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    #[arg(long, value_enum)]
    pub cgroup_driver: Option<CgroupDriverSetting>,
    #[arg(long)]
    pub default_cgroup_parent: Option<String>,
    /// CNI network configs [cni.conf_dir].
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// CNI plugin directory, repeatable [cni.bin_dirs].
    #[arg(long = "cni-bin-dir")]
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Streaming server address [streaming.address].
    #[arg(long)]
    pub stream_address: Option<IpAddr>,
    /// Streaming server port, 0 for any free port [streaming.port].
    #[arg(long)]
    pub stream_port: Option<u16>,
    /// e.g. 4h, 30m [streaming.idle_timeout].
    #[arg(long, value_parser = parse_duration_flag)]
    pub stream_idle_timeout: Option<Duration>,
    /// Registry hosts.toml directory, repeatable [registry.config_path].
    #[arg(long = "registry-config-path")]
    pub registry_config_paths: Vec<PathBuf>,
    /// e.g. 5m, 30s [image.pull_progress_timeout].
    #[arg(long, value_parser = parse_duration_flag)]
    pub pull_progress_timeout: Option<Duration>,
    #[arg(long)]
    pub max_concurrent_downloads: Option<usize>,
    /// Bytes kept free while unpacking, 0 for no check [image.min_free_space].
    #[arg(long)]
    pub min_free_space: Option<u64>,
    /// Largest unpacked layer in bytes, 0 for unlimited [image.max_unpacked_size].
    #[arg(long)]
    pub max_unpacked_size: Option<u64>,
    /// Bytes a layer may write per compressed byte once past 256 MiB, 0 for unlimited
    /// [image.max_expansion_ratio].
    #[arg(long)]
    pub max_expansion_ratio: Option<u64>,
    /// e.g. 10s, 1s [stats.collection_period].
    #[arg(long, value_parser = parse_duration_flag)]
    pub stats_collection_period: Option<Duration>,
    /// Serve berth's Prometheus metrics [metrics.enabled].
    #[arg(long)]
    pub enable_metrics: bool,
    /// Metrics endpoint address, e.g. 127.0.0.1:9090; implies --enable-metrics [metrics.address].
    #[arg(long)]
    pub metrics_address: Option<std::net::SocketAddr>,
    /// CRIU for CheckpointContainer, a path or a name in PATH [checkpoint.criu_path].
    #[arg(long)]
    pub criu_path: Option<PathBuf>,
}

fn parse_duration_flag(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

impl Config {
    /// Parses TOML text; unknown keys and bad values name the key.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Defaults, then the config file, then the flags.
    pub fn load(flags: &ConfigFlags) -> Result<Config, ConfigError> {
        let explicit = flags.config.clone();
        let path = explicit
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => Config::from_toml(&text, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
                Config::default()
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        config.apply_flags(flags);
        config.validate()?;
        Ok(config)
    }

    fn apply_flags(&mut self, f: &ConfigFlags) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *target = v.clone();
            }
        }
        set(&mut self.socket, &f.socket);
        set(&mut self.root, &f.root);
        set(&mut self.state, &f.state);
        set(&mut self.log_level, &f.log_level);
        set(&mut self.log_format, &f.log_format);
        set(&mut self.cgroup_driver, &f.cgroup_driver);
        set(&mut self.default_cgroup_parent, &f.default_cgroup_parent);
        set(&mut self.cni.conf_dir, &f.cni_conf_dir);
        if !f.cni_bin_dirs.is_empty() {
            self.cni.bin_dirs = f.cni_bin_dirs.clone();
        }
        set(&mut self.streaming.address, &f.stream_address);
        set(&mut self.streaming.port, &f.stream_port);
        set(&mut self.streaming.idle_timeout, &f.stream_idle_timeout);
        if !f.registry_config_paths.is_empty() {
            self.registry.config_path = f.registry_config_paths.clone();
        }
        set(
            &mut self.image.pull_progress_timeout,
            &f.pull_progress_timeout,
        );
        set(
            &mut self.image.max_concurrent_downloads,
            &f.max_concurrent_downloads,
        );
        set(&mut self.image.min_free_space, &f.min_free_space);
        set(&mut self.image.max_unpacked_size, &f.max_unpacked_size);
        set(&mut self.image.max_expansion_ratio, &f.max_expansion_ratio);
        set(
            &mut self.stats.collection_period,
            &f.stats_collection_period,
        );
        if f.enable_metrics || f.metrics_address.is_some() {
            self.metrics.enabled = true;
        }
        set(&mut self.metrics.address, &f.metrics_address);
        set(&mut self.checkpoint.criu_path, &f.criu_path);
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        fn absolute(key: &'static str, path: &Path) -> Result<(), ConfigError> {
            if path.is_absolute() {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key,
                    message: format!("{} is not an absolute path", path.display()),
                })
            }
        }
        absolute("socket", &self.socket)?;
        absolute("root", &self.root)?;
        absolute("state", &self.state)?;
        absolute("cni.conf_dir", &self.cni.conf_dir)?;
        for dir in &self.cni.bin_dirs {
            absolute("cni.bin_dirs", dir)?;
        }
        for dir in &self.registry.config_path {
            absolute("registry.config_path", dir)?;
        }
        // sockaddr_un holds 108 bytes including the terminating NUL.
        if self.socket.as_os_str().len() > 107 {
            return Err(ConfigError::Invalid {
                key: "socket",
                message: "longer than the 107 bytes a unix socket path can hold".into(),
            });
        }
        if self.image.max_concurrent_downloads == 0 {
            return Err(ConfigError::Invalid {
                key: "image.max_concurrent_downloads",
                message: "must be at least 1".into(),
            });
        }
        if self.streaming.idle_timeout < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                key: "streaming.idle_timeout",
                message: "must be at least 1s".into(),
            });
        }
        if self.stats.collection_period < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                key: "stats.collection_period",
                message: "must be at least 100ms".into(),
            });
        }
        if self.image.pull_progress_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "image.pull_progress_timeout",
                message: "must be longer than zero".into(),
            });
        }
        Ok(())
    }

    /// The full default config as commented TOML (`berth config default`).
    pub fn default_toml() -> String {
        let d = Config::default();
        let list = |paths: &[PathBuf]| {
            paths
                .iter()
                .map(|p| format!("\"{}\"", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            r#"# berth configuration. Every key can also be given as a command-line flag.

# CRI gRPC unix socket (--socket).
socket = "{socket}"
# Persistent data: images, sandbox and container records (--root).
root = "{root}"
# Runtime state that is gone on reboot: netns pins, shim sockets, bundles (--state).
state = "{state}"
# error, warn, info, debug or trace (--log-level).
log_level = "info"
# text or json, on stderr (--log-format).
log_format = "text"
# auto, cgroupfs or systemd; auto picks systemd when PID 1 is systemd (--cgroup-driver).
cgroup_driver = "auto"
# Cgroup parent of pods whose request names none (--default-cgroup-parent): a cgroupfs
# path, or a slice with the systemd driver (the default path then means berth.slice).
default_cgroup_parent = "{cgroup_parent}"

[cni]
# The first .conflist, .conf or .json file here (in name order) is the pod network (--cni-conf-dir).
conf_dir = "{conf_dir}"
# Where plugin binaries are looked up, in order (--cni-bin-dir, repeatable).
bin_dirs = [{bin_dirs}]

[streaming]
# exec/attach/port-forward server; keep it on loopback unless the node needs otherwise (--stream-address).
address = "{stream_address}"
# 0 picks a free port (--stream-port).
port = {stream_port}
# Close an exec/attach/port-forward connection idle this long (--stream-idle-timeout).
idle_timeout = "{stream_idle}"

[registry]
# Directories of <host>/hosts.toml files in containerd's format, searched in order (--registry-config-path).
config_path = [{registry_paths}]

[image]
# Cancel a pull that receives no bytes for this long (--pull-progress-timeout).
pull_progress_timeout = "{pull_timeout}"
# Blobs of one pull downloaded at once (--max-concurrent-downloads).
max_concurrent_downloads = {downloads}
# Bytes that must stay free on the image filesystem while a layer unpacks; 0 = no check (--min-free-space).
min_free_space = {min_free}
# Largest unpacked size of one layer in bytes; 0 = unlimited (--max-unpacked-size).
max_unpacked_size = {max_unpacked}
# Once a layer has written 256 MiB, the most bytes it may write per compressed byte read;
# stops decompression bombs early. 0 = unlimited (--max-expansion-ratio).
max_expansion_ratio = {max_ratio}

[stats]
# How often container and pod stats are read; the stats RPCs answer from the last read
# (--stats-collection-period).
collection_period = "{stats_period}"

[metrics]
# Serve berth's own Prometheus metrics on http://<address>/metrics (--enable-metrics).
enabled = false
# (--metrics-address, which also enables them).
address = "{metrics_address}"

[checkpoint]
# CRIU for CheckpointContainer: a path, or a name looked up in PATH (--criu-path).
criu_path = "{criu_path}"
"#,
            socket = d.socket.display(),
            root = d.root.display(),
            state = d.state.display(),
            cgroup_parent = d.default_cgroup_parent,
            conf_dir = d.cni.conf_dir.display(),
            bin_dirs = list(&d.cni.bin_dirs),
            stream_address = d.streaming.address,
            stream_port = d.streaming.port,
            stream_idle = humantime::format_duration(d.streaming.idle_timeout),
            registry_paths = list(&d.registry.config_path),
            pull_timeout = humantime::format_duration(d.image.pull_progress_timeout),
            downloads = d.image.max_concurrent_downloads,
            min_free = d.image.min_free_space,
            max_unpacked = d.image.max_unpacked_size,
            max_ratio = d.image.max_expansion_ratio,
            stats_period = humantime::format_duration(d.stats.collection_period),
            metrics_address = d.metrics.address,
            criu_path = d.checkpoint.criu_path.display(),
        )
    }
}

/// The cgroup driver in use, after `auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

impl CgroupDriver {
    /// `auto` picks systemd when PID 1 is systemd (`/run/systemd/system` exists, as
    /// sd_booted() checks), cgroupfs otherwise; `systemd` is refused where PID 1 is not.
    pub fn resolve(setting: CgroupDriverSetting) -> Result<CgroupDriver, ConfigError> {
        Self::resolve_on(
            setting,
            std::path::Path::new("/run/systemd/system").is_dir(),
        )
    }

    fn resolve_on(
        setting: CgroupDriverSetting,
        systemd_booted: bool,
    ) -> Result<CgroupDriver, ConfigError> {
        match setting {
            CgroupDriverSetting::Cgroupfs => Ok(CgroupDriver::Cgroupfs),
            CgroupDriverSetting::Auto if systemd_booted => Ok(CgroupDriver::Systemd),
            CgroupDriverSetting::Auto => Ok(CgroupDriver::Cgroupfs),
            CgroupDriverSetting::Systemd if systemd_booted => Ok(CgroupDriver::Systemd),
            CgroupDriverSetting::Systemd => Err(ConfigError::Invalid {
                key: "cgroup_driver",
                message: "systemd was asked for, but PID 1 is not systemd (/run/systemd/system does not exist); use cgroupfs or auto".into(),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CgroupDriver::Cgroupfs => "cgroupfs",
            CgroupDriver::Systemd => "systemd",
        }
    }
}

/// The slice pods without a `cgroup_parent` go under with the systemd driver: the
/// configured `default_cgroup_parent` when it is a slice, `berth.slice` when it is the
/// built-in cgroupfs default; any other path is a configuration error.
pub fn default_pod_slice(config: &Config) -> Result<String, ConfigError> {
    let parent = config.default_cgroup_parent.as_str();
    if parent.ends_with(".slice") {
        return Ok(parent.to_string());
    }
    if parent == Config::default().default_cgroup_parent {
        return Ok("berth.slice".to_string());
    }
    Err(ConfigError::Invalid {
        key: "default_cgroup_parent",
        message: format!(
            "{parent:?} is a cgroupfs path; the systemd cgroup driver needs a slice name such as berth.slice"
        ),
    })
}

/// Durations as human text ("5m", "30s") in TOML and JSON.
mod duration_text {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_parses_back_to_the_defaults() {
        let parsed = Config::from_toml(&Config::default_toml(), Path::new("x")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_key_is_refused_naming_it() {
        let err = Config::from_toml("sockett = \"/x\"\n", Path::new("c.toml")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sockett"), "{text}");
        assert!(text.contains("c.toml"), "{text}");
    }

    #[test]
    fn unknown_nested_key_is_refused_naming_it() {
        let err = Config::from_toml("[cni]\nconfdir = \"/x\"\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("confdir"), "{err}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Config::from_toml("log_level = \"loud\"\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("log_level"), "{err}");
        let err = Config::from_toml("[streaming]\nport = 70000\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
        let err = Config::from_toml(
            "[image]\npull_progress_timeout = \"soon\"\n",
            Path::new("c"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("pull_progress_timeout"), "{err}");
    }

    #[test]
    fn relative_paths_are_refused() {
        let err = Config::from_toml("root = \"var/lib\"\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("`root`"), "{err}");
    }

    #[test]
    fn flags_override_file_values() {
        let mut config = Config::from_toml(
            "socket = \"/a.sock\"\n[cni]\nbin_dirs = [\"/b\"]\n",
            Path::new("c"),
        )
        .unwrap();
        let flags = ConfigFlags {
            socket: Some("/flag.sock".into()),
            cni_bin_dirs: vec!["/x".into(), "/y".into()],
            pull_progress_timeout: Some(Duration::from_secs(7)),
            ..Default::default()
        };
        config.apply_flags(&flags);
        assert_eq!(config.socket, PathBuf::from("/flag.sock"));
        assert_eq!(
            config.cni.bin_dirs,
            vec![PathBuf::from("/x"), PathBuf::from("/y")]
        );
        assert_eq!(config.image.pull_progress_timeout, Duration::from_secs(7));
        // Untouched keys keep the defaults.
        assert_eq!(config.root, PathBuf::from("/var/lib/berth"));
    }

    #[test]
    fn max_expansion_ratio_defaults_on_and_is_set_by_key_or_flag() {
        let defaults = Config::default();
        assert_eq!(defaults.image.max_expansion_ratio, 200);
        assert!(
            Config::default_toml().contains("max_expansion_ratio = 200"),
            "`berth config default` shows it"
        );
        let mut config =
            Config::from_toml("[image]\nmax_expansion_ratio = 0\n", Path::new("c")).unwrap();
        assert_eq!(config.image.max_expansion_ratio, 0);
        config.apply_flags(&ConfigFlags {
            max_expansion_ratio: Some(1000),
            ..Default::default()
        });
        assert_eq!(config.image.max_expansion_ratio, 1000);
    }

    #[test]
    fn stats_and_metrics_keys_parse_and_flags_enable_metrics() {
        let mut config = Config::from_toml(
            "[stats]\ncollection_period = \"2s\"\n[metrics]\nenabled = true\naddress = \"127.0.0.1:9191\"\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(config.stats.collection_period, Duration::from_secs(2));
        assert!(config.metrics.enabled);
        assert_eq!(config.metrics.address.port(), 9191);
        assert!(!Config::default().metrics.enabled, "off by default");
        let mut flagged = Config::default();
        flagged.apply_flags(&ConfigFlags {
            metrics_address: Some("127.0.0.1:9300".parse().unwrap()),
            ..Default::default()
        });
        assert!(flagged.metrics.enabled);
        config.stats.collection_period = Duration::from_millis(1);
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("collection_period")
        );
        let err =
            Config::from_toml("[metrics]\naddress = \"nowhere\"\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("address"), "{err}");
    }

    #[test]
    fn explicit_missing_config_file_is_an_error() {
        let flags = ConfigFlags {
            config: Some("/nonexistent/berth.toml".into()),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&flags),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn auto_picks_systemd_only_where_pid_1_is_systemd() {
        use CgroupDriverSetting as S;
        assert_eq!(
            CgroupDriver::resolve_on(S::Auto, true).unwrap(),
            CgroupDriver::Systemd
        );
        assert_eq!(
            CgroupDriver::resolve_on(S::Auto, false).unwrap(),
            CgroupDriver::Cgroupfs
        );
        assert_eq!(
            CgroupDriver::resolve_on(S::Cgroupfs, true).unwrap(),
            CgroupDriver::Cgroupfs
        );
        assert_eq!(
            CgroupDriver::resolve_on(S::Systemd, true).unwrap(),
            CgroupDriver::Systemd
        );
        let err = CgroupDriver::resolve_on(S::Systemd, false).unwrap_err();
        assert!(err.to_string().contains("PID 1 is not systemd"), "{err}");
    }

    #[test]
    fn the_default_parent_under_systemd_is_a_slice() {
        let mut config = Config::default();
        assert_eq!(default_pod_slice(&config).unwrap(), "berth.slice");
        config.default_cgroup_parent = "k8s.slice".into();
        assert_eq!(default_pod_slice(&config).unwrap(), "k8s.slice");
        config.default_cgroup_parent = "/custom".into();
        let err = default_pod_slice(&config).unwrap_err();
        assert!(err.to_string().contains("default_cgroup_parent"), "{err}");
    }
}
