//! Registry hosts configuration in containerd's `hosts.toml` format.
//!
//! For a registry host `H`, the first of `<dir>/H/hosts.toml` over the configured directories
//! (in order) applies, else the first `<dir>/_default/hosts.toml`, else the built-in default.
//! The file's `[host."…"]` entries are mirrors tried in file order, then the upstream (`server`,
//! defaulting to `https://H`, or `https://registry-1.docker.io` for docker.io). A host URL gets
//! `/v2` appended unless `override_path = true` says it already holds the API path. Files are
//! read at every pull, so edits apply without a restart.

use std::path::{Path, PathBuf};

use serde::Deserialize;

const DOCKER_HUB_DOMAIN: &str = "docker.io";
const DEFAULT_DIR: &str = "_default";

#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{path}: bad host URL {url:?}")]
    BadUrl { path: PathBuf, url: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Serves content by digest (blobs, manifests by digest).
    pub pull: bool,
    /// Resolves tags to manifests.
    pub resolve: bool,
}

/// One place to fetch from, in the order it is to be tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https` or `http`.
    pub scheme: String,
    /// `host[:port]`.
    pub host: String,
    /// The API base path, e.g. `/v2` or `/mirror/v2` (no trailing slash).
    pub path: String,
    pub capabilities: Capabilities,
    pub skip_verify: bool,
    /// CA certificate files (absolute).
    pub ca: Vec<PathBuf>,
    /// A mirror from a `[host]` entry, as opposed to the upstream server.
    pub is_mirror: bool,
    /// Try plain http when https cannot connect (loopback registries with no config,
    /// as containerd does).
    pub http_fallback: bool,
}

impl Endpoint {
    /// `https://host/v2`.
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.path)
    }

    /// The same endpoint over plain http.
    pub fn as_http(&self) -> Endpoint {
        Endpoint {
            scheme: "http".into(),
            http_fallback: false,
            ..self.clone()
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct HostsFile {
    server: Option<String>,
    capabilities: Option<Vec<String>>,
    skip_verify: Option<bool>,
    ca: Option<StringOrList>,
    override_path: Option<bool>,
    #[serde(default)]
    host: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
struct HostEntry {
    capabilities: Option<Vec<String>>,
    skip_verify: Option<bool>,
    ca: Option<StringOrList>,
    override_path: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

/// The endpoints for registry `domain`, from the first matching hosts.toml in `config_dirs`.
pub fn resolve(domain: &str, config_dirs: &[PathBuf]) -> Result<Vec<Endpoint>, HostsError> {
    let candidates = [domain.to_string(), domain.replace(':', "_")];
    let mut found = None;
    'search: for name in candidates.iter().map(String::as_str).chain([DEFAULT_DIR]) {
        for dir in config_dirs {
            let path = dir.join(name).join("hosts.toml");
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    found = Some((path, text));
                    break 'search;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(source) => return Err(HostsError::Read { path, source }),
            }
        }
    }
    match found {
        Some((path, text)) => parse(domain, &text, &path),
        None => Ok(default_endpoints(domain)),
    }
}

/// The built-in endpoints of a registry with no hosts.toml.
pub fn default_endpoints(domain: &str) -> Vec<Endpoint> {
    let (scheme, host) = default_server(domain);
    vec![Endpoint {
        scheme,
        host,
        path: "/v2".into(),
        capabilities: Capabilities {
            pull: true,
            resolve: true,
        },
        skip_verify: false,
        ca: Vec::new(),
        is_mirror: false,
        http_fallback: is_loopback(domain),
    }]
}

fn default_server(domain: &str) -> (String, String) {
    if domain == DOCKER_HUB_DOMAIN {
        ("https".into(), "registry-1.docker.io".into())
    } else {
        ("https".into(), domain.to_string())
    }
}

fn is_loopback(domain: &str) -> bool {
    let host = match domain.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => domain.split(':').next().unwrap_or(domain),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses one hosts.toml for `domain`; `path` names the file (relative `ca` paths are
/// relative to its directory).
pub fn parse(domain: &str, text: &str, path: &Path) -> Result<Vec<Endpoint>, HostsError> {
    let file: HostsFile = toml::from_str(text).map_err(|source| HostsError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("/"));
    // The TOML table does not keep file order; the order of the `[host."…"]` headers does.
    let mut hosts: Vec<(usize, String, HostEntry)> = Vec::new();
    for (url, value) in file.host {
        let entry: HostEntry = value.try_into().map_err(|source| HostsError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let position = text.find(&format!("\"{url}\"")).unwrap_or(usize::MAX);
        hosts.push((position, url, entry));
    }
    hosts.sort_by_key(|(position, _, _)| *position);

    let mut endpoints = Vec::new();
    for (_, url, entry) in hosts {
        endpoints.push(endpoint(
            &url,
            entry.capabilities.as_deref(),
            entry.skip_verify,
            entry.ca.map(StringOrList::into_vec),
            entry.override_path,
            true,
            base_dir,
            path,
        )?);
    }
    let server = match file.server {
        Some(server) => server,
        None => {
            let (scheme, host) = default_server(domain);
            format!("{scheme}://{host}")
        }
    };
    endpoints.push(endpoint(
        &server,
        file.capabilities.as_deref(),
        file.skip_verify,
        file.ca.map(StringOrList::into_vec),
        file.override_path,
        false,
        base_dir,
        path,
    )?);
    // An upstream without pull or resolve (e.g. `capabilities = []`) is never used.
    endpoints.retain(|e| e.capabilities.pull || e.capabilities.resolve);
    Ok(endpoints)
}

#[allow(clippy::too_many_arguments)]
fn endpoint(
    url: &str,
    capabilities: Option<&[String]>,
    skip_verify: Option<bool>,
    ca: Option<Vec<String>>,
    override_path: Option<bool>,
    is_mirror: bool,
    base_dir: &Path,
    file: &Path,
) -> Result<Endpoint, HostsError> {
    let bad = || HostsError::BadUrl {
        path: file.to_path_buf(),
        url: url.to_string(),
    };
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme @ ("http" | "https"), rest)) => (scheme.to_string(), rest),
        Some(_) => return Err(bad()),
        None => ("https".to_string(), url),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() || host.contains('@') || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    let path = if override_path.unwrap_or(false) {
        path.to_string()
    } else {
        format!("{path}/v2")
    };
    let capabilities = match capabilities {
        None => Capabilities {
            pull: true,
            resolve: true,
        },
        Some(list) => Capabilities {
            pull: list.iter().any(|c| c == "pull"),
            resolve: list.iter().any(|c| c == "resolve"),
        },
    };
    Ok(Endpoint {
        scheme,
        host: host.to_string(),
        path,
        capabilities,
        skip_verify: skip_verify.unwrap_or(false),
        ca: ca
            .unwrap_or_default()
            .into_iter()
            .map(|p| base_dir.join(p))
            .collect(),
        is_mirror,
        http_fallback: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(endpoints: &[Endpoint]) -> Vec<String> {
        endpoints.iter().map(Endpoint::base_url).collect()
    }

    #[test]
    fn mirrors_in_file_order_then_the_server() {
        let text = r#"
server = "https://registry-1.docker.io"

[host."http://zz-mirror:5000"]
  capabilities = ["pull", "resolve"]

[host."https://aa-mirror.example/prefix"]
  capabilities = ["pull"]
  skip_verify = true
  ca = "ca.pem"

[host."https://mm.example/custom/api"]
  override_path = true
"#;
        let eps = parse(
            "docker.io",
            text,
            Path::new("/etc/berth/certs.d/docker.io/hosts.toml"),
        )
        .unwrap();
        assert_eq!(
            urls(&eps),
            [
                "http://zz-mirror:5000/v2",
                "https://aa-mirror.example/prefix/v2",
                "https://mm.example/custom/api",
                "https://registry-1.docker.io/v2",
            ]
        );
        assert!(eps[0].is_mirror && eps[0].capabilities.resolve);
        assert!(eps[1].capabilities.pull && !eps[1].capabilities.resolve);
        assert!(eps[1].skip_verify);
        assert_eq!(
            eps[1].ca,
            [PathBuf::from("/etc/berth/certs.d/docker.io/ca.pem")]
        );
        assert!(!eps[3].is_mirror);
        assert!(eps.iter().all(|e| !e.http_fallback));
    }

    #[test]
    fn server_defaults_to_the_registry_and_can_be_disabled() {
        let eps = parse(
            "quay.io",
            "[host.\"http://127.0.0.1:5000\"]\n",
            Path::new("/x/h.toml"),
        )
        .unwrap();
        assert_eq!(
            urls(&eps),
            ["http://127.0.0.1:5000/v2", "https://quay.io/v2"]
        );
        let text = "server = \"https://quay.io\"\ncapabilities = []\n[host.\"http://m\"]\n";
        let eps = parse("quay.io", text, Path::new("/x/h.toml")).unwrap();
        assert_eq!(urls(&eps), ["http://m/v2"]);
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(parse("a.io", "server = 3", Path::new("/x")).is_err());
        assert!(parse("a.io", "[host.\"ftp://x\"]\n", Path::new("/x")).is_err());
        assert!(parse("a.io", "[host.\"https://u:p@x\"]\n", Path::new("/x")).is_err());
    }

    #[test]
    fn defaults_without_any_file() {
        let eps = default_endpoints("docker.io");
        assert_eq!(urls(&eps), ["https://registry-1.docker.io/v2"]);
        assert!(!eps[0].http_fallback);
        for loopback in [
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "localhost",
        ] {
            let eps = default_endpoints(loopback);
            assert!(eps[0].http_fallback, "{loopback}");
            assert_eq!(eps[0].scheme, "https");
        }
        assert_eq!(
            default_endpoints("127.0.0.1:5000")[0].as_http().base_url(),
            "http://127.0.0.1:5000/v2"
        );
    }

    #[test]
    fn directory_search_order_host_then_default() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let write = |dir: &Path, name: &str, text: &str| {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("hosts.toml"), text).unwrap();
        };
        write(second.path(), "docker.io", "[host.\"http://second\"]\n");
        write(first.path(), "_default", "[host.\"http://default\"]\n");
        write(
            second.path(),
            "127.0.0.1_5000",
            "server = \"http://127.0.0.1:5000\"\n",
        );
        let dirs = [first.path().to_path_buf(), second.path().to_path_buf()];
        // A host directory in a later dir beats _default in an earlier one.
        assert_eq!(
            urls(&resolve("docker.io", &dirs).unwrap()),
            ["http://second/v2", "https://registry-1.docker.io/v2"]
        );
        assert_eq!(
            urls(&resolve("quay.io", &dirs).unwrap()),
            ["http://default/v2", "https://quay.io/v2"]
        );
        // host:port is also found as host_port.
        assert_eq!(
            urls(&resolve("127.0.0.1:5000", &dirs).unwrap()),
            ["http://127.0.0.1:5000/v2"]
        );
        // Edits apply at the next resolve.
        write(second.path(), "docker.io", "[host.\"http://edited\"]\n");
        assert_eq!(
            urls(&resolve("docker.io", &dirs).unwrap())[0],
            "http://edited/v2"
        );
        assert_eq!(
            urls(&resolve("gcr.io", &[PathBuf::from("/nonexistent")]).unwrap()),
            ["https://gcr.io/v2"]
        );
    }
}
