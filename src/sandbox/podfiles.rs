//! The files a pod's containers see as /etc/hostname, /etc/hosts and /etc/resolv.conf:
//! pure rendering from the pod's config, plus writing them atomically into the sandbox dir.

use std::net::IpAddr;
use std::path::Path;

use crate::Error;

/// Longest hostname the kernel accepts (HOST_NAME_MAX).
const MAX_HOSTNAME_LEN: usize = 64;
/// Limits on the search list (glibc ≥ 2.26 has no fixed limit; these are the kubelet's).
const MAX_DNS_SEARCHES: usize = 32;
const MAX_DNS_SEARCH_CHARS: usize = 2048;

/// A pod's DNS settings (CRI `DNSConfig`, without the proto).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl DnsConfig {
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.searches.is_empty() && self.options.is_empty()
    }
}

/// The rendered content of a pod's three files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFiles {
    pub hostname: String,
    pub hosts: String,
    pub resolv_conf: String,
}

impl PodFiles {
    /// Renders all three files. `host_hosts` and `host_resolv` are the node's /etc/hosts and
    /// /etc/resolv.conf contents (used for host-network pods and when DNS config is empty).
    pub fn render(
        hostname: &str,
        pod_ips: &[IpAddr],
        host_network: bool,
        dns: &DnsConfig,
        host_hosts: &str,
        host_resolv: &str,
    ) -> Result<PodFiles, Error> {
        Ok(PodFiles {
            hostname: render_hostname(hostname)?,
            hosts: render_hosts(hostname, pod_ips, host_network, host_hosts)?,
            resolv_conf: render_resolv_conf(dns, host_resolv)?,
        })
    }

    /// Writes `hostname`, `hosts` and `resolv.conf` into `dir` (which must exist), each atomically
    /// and world-readable (containers may run as any user).
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        crate::persist::write_atomic(&dir.join("hostname"), self.hostname.as_bytes())?;
        crate::persist::write_atomic(&dir.join("hosts"), self.hosts.as_bytes())?;
        crate::persist::write_atomic(&dir.join("resolv.conf"), self.resolv_conf.as_bytes())
    }
}

/// Checks that `hostname` is an RFC 1123 host name the kernel accepts.
pub fn validate_hostname(hostname: &str) -> Result<(), Error> {
    let invalid =
        |why: &str| Error::invalid_argument(format!("hostname {hostname:?} is invalid: {why}"));
    if hostname.is_empty() {
        return Err(invalid("empty"));
    }
    if hostname.len() > MAX_HOSTNAME_LEN {
        return Err(invalid("longer than 64 characters"));
    }
    for label in hostname.split('.') {
        let bytes = label.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
            return Err(invalid("empty label"));
        };
        if label.len() > 63 {
            return Err(invalid("a label is longer than 63 characters"));
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            || !first.is_ascii_alphanumeric()
            || !last.is_ascii_alphanumeric()
        {
            return Err(invalid(
                "labels must be letters, digits and '-', starting and ending with a letter or digit",
            ));
        }
    }
    Ok(())
}

pub fn render_hostname(hostname: &str) -> Result<String, Error> {
    validate_hostname(hostname)?;
    Ok(format!("{hostname}\n"))
}

/// A pod network gets the kubelet's managed hosts file with one line per pod IP; a host-network
/// pod sees the node's own /etc/hosts (`host_hosts`).
pub fn render_hosts(
    hostname: &str,
    pod_ips: &[IpAddr],
    host_network: bool,
    host_hosts: &str,
) -> Result<String, Error> {
    if host_network {
        return Ok(host_hosts.to_owned());
    }
    validate_hostname(hostname)?;
    let mut hosts = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    for ip in pod_ips {
        hosts.push_str(&format!("{ip}\t{hostname}\n"));
    }
    Ok(hosts)
}

/// An empty DNS config means "the node's resolv.conf" (`host_resolv`, copied as is);
/// otherwise `search`, `nameserver` and `options` lines.
pub fn render_resolv_conf(dns: &DnsConfig, host_resolv: &str) -> Result<String, Error> {
    if dns.is_empty() {
        return Ok(host_resolv.to_owned());
    }
    for server in &dns.servers {
        if server.parse::<IpAddr>().is_err() {
            return Err(Error::invalid_argument(format!(
                "dns_config: server {server:?} is not an IP address"
            )));
        }
    }
    if dns.searches.len() > MAX_DNS_SEARCHES {
        return Err(Error::invalid_argument(format!(
            "dns_config: {} search domains, at most {MAX_DNS_SEARCHES} are allowed",
            dns.searches.len()
        )));
    }
    let search_chars: usize = dns.searches.iter().map(|s| s.len() + 1).sum();
    if search_chars > MAX_DNS_SEARCH_CHARS {
        return Err(Error::invalid_argument(format!(
            "dns_config: the search list is {search_chars} characters, at most {MAX_DNS_SEARCH_CHARS} are allowed"
        )));
    }
    for word in dns.searches.iter().chain(&dns.options) {
        if word.is_empty() || word.contains(char::is_whitespace) {
            return Err(Error::invalid_argument(format!(
                "dns_config: {word:?} is empty or contains whitespace"
            )));
        }
    }

    let mut resolv = String::new();
    if !dns.searches.is_empty() {
        resolv.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        resolv.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        resolv.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(resolv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn hostname_file_has_a_trailing_newline() {
        assert_eq!(render_hostname("web-0").unwrap(), "web-0\n");
        assert_eq!(render_hostname("a.b-c.D1").unwrap(), "a.b-c.D1\n");
    }

    #[test]
    fn invalid_hostnames_are_refused_naming_the_hostname() {
        let long = "a".repeat(65);
        for bad in ["", "-a", "a-", "a..b", "a_b", "a b", "a.", &long] {
            let err = render_hostname(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
            assert!(err.to_string().starts_with("hostname "), "{err}");
        }
        assert!(validate_hostname(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn pod_network_hosts_file_lists_localhost_and_each_pod_ip() {
        let ips = ["10.88.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        assert_eq!(
            render_hosts("web-0", &ips, false, "ignored").unwrap(),
            "# Kubernetes-managed hosts file.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\n\
             fe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n\
             10.88.0.5\tweb-0\n\
             fd00::5\tweb-0\n"
        );
    }

    #[test]
    fn host_network_hosts_file_is_the_nodes() {
        let node = "127.0.0.1 localhost\n192.168.1.2 node1\n";
        assert_eq!(render_hosts("node1", &[], true, node).unwrap(), node);
    }

    #[test]
    fn empty_dns_config_copies_the_nodes_resolv_conf() {
        let node = "nameserver 192.168.1.1\nsearch lan\n";
        assert_eq!(
            render_resolv_conf(&DnsConfig::default(), node).unwrap(),
            node
        );
    }

    #[test]
    fn dns_config_renders_search_nameserver_options() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into(), "fd00::a".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        assert_eq!(
            render_resolv_conf(&dns, "ignored").unwrap(),
            "search default.svc.cluster.local svc.cluster.local\n\
             nameserver 10.96.0.10\n\
             nameserver fd00::a\n\
             options ndots:5 edns0\n"
        );
        let only_options = DnsConfig {
            options: vec!["ndots:2".into()],
            ..DnsConfig::default()
        };
        assert_eq!(
            render_resolv_conf(&only_options, "x").unwrap(),
            "options ndots:2\n"
        );
    }

    #[test]
    fn bad_dns_configs_are_refused() {
        let cases = [
            DnsConfig {
                servers: vec!["dns.example".into()],
                ..DnsConfig::default()
            },
            DnsConfig {
                searches: (0..33).map(|i| format!("d{i}")).collect(),
                ..DnsConfig::default()
            },
            DnsConfig {
                searches: vec!["x".repeat(2100)],
                ..DnsConfig::default()
            },
            DnsConfig {
                searches: vec!["a\nnameserver 1.2.3.4".into()],
                ..DnsConfig::default()
            },
            DnsConfig {
                options: vec!["".into()],
                ..DnsConfig::default()
            },
        ];
        for dns in cases {
            let err = render_resolv_conf(&dns, "").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{dns:?}");
        }
    }

    #[test]
    fn pod_files_are_written_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = PodFiles::render(
            "pod",
            &["10.0.0.2".parse().unwrap()],
            false,
            &DnsConfig::default(),
            "",
            "nameserver 1.1.1.1\n",
        )
        .unwrap();
        files.write_to(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("hostname")).unwrap(),
            "pod\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("resolv.conf")).unwrap(),
            "nameserver 1.1.1.1\n"
        );
        let hosts = std::fs::read_to_string(dir.path().join("hosts")).unwrap();
        assert!(hosts.ends_with("10.0.0.2\tpod\n"));
        let mode = std::fs::metadata(dir.path().join("hosts"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
