//! Image references, parsed and normalized the way the kubelet and containerd do:
//! `busybox` → `docker.io/library/busybox:latest`.
//!
//! Grammar (the Docker distribution reference grammar):
//! `[domain/]path[:tag][@algorithm:hex]`, where the first component is a domain only when it
//! contains `.` or `:` or is `localhost`; path components are lowercase alphanumerics joined by
//! `.`, `_`, `__` or runs of `-`; a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.

use std::fmt;

pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid image reference {reference:?}: {reason}")]
    Invalid {
        reference: String,
        reason: &'static str,
    },
}

/// A normalized reference: always has a domain; a tag unless it has a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalizes. A reference with both a tag and a digest keeps only the
    /// digest (the digest names the content; the tag would be a claim nobody checks),
    /// as containerd's CRI does.
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let invalid = |reason| ReferenceError::Invalid {
            reference: text.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("empty"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(invalid)?;
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(invalid)?;
        }
        if name.is_empty() {
            return Err(invalid("empty repository name"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                validate_domain(first).map_err(invalid)?;
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == LEGACY_DEFAULT_DOMAIN {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        validate_path(&path).map_err(invalid)?;
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_REPO_PREFIX}{path}")
        } else {
            path
        };
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(invalid("repository name longer than 255 characters"));
        }
        let tag = match (&digest, tag) {
            (Some(_), _) => None,
            (None, Some(tag)) => Some(tag.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry host as written, with its port: `docker.io`, `127.0.0.1:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }
    /// The repository inside the registry: `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
    /// `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
    /// The tag or digest to ask the registry for.
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }
    /// `docker.io/library/busybox:latest`, when the reference has a tag.
    pub fn repo_tag(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }
    /// `docker.io/library/busybox@sha256:…` for a manifest digest.
    pub fn repo_digest(&self, manifest_digest: &str) -> String {
        format!("{}@{manifest_digest}", self.name())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// `sha256:<64 lowercase hex>`; other algorithms are refused (no registry serves them).
pub fn validate_digest(digest: &str) -> Result<(), &'static str> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Err("digest is not sha256:<hex>");
    };
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("digest is not 64 lowercase hex characters");
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), &'static str> {
    let bytes = tag.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    match bytes.first() {
        None => Err("empty tag"),
        Some(_) if bytes.len() > 128 => Err("tag longer than 128 characters"),
        Some(&first) if !word(first) => Err("tag must start with a letter, digit or '_'"),
        _ if bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') => Ok(()),
        _ => Err("tag has characters other than letters, digits, '_', '.', '-'"),
    }
}

fn validate_domain(domain: &str) -> Result<(), &'static str> {
    // An IPv6 literal in brackets, optionally with a port.
    if let Some(rest) = domain.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or("unclosed '[' in registry host")?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("bad IPv6 address in registry host");
        }
        return match after {
            "" => Ok(()),
            port => validate_port(port.strip_prefix(':').ok_or("bad registry port")?),
        };
    }
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    if let Some(port) = port {
        validate_port(port)?;
    }
    for label in host.split('.') {
        let b = label.as_bytes();
        let ok = !b.is_empty()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-';
        if !ok {
            return Err("bad registry host name");
        }
    }
    Ok(())
}

fn validate_port(port: &str) -> Result<(), &'static str> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err()
    {
        return Err("bad registry port");
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), &'static str> {
    for component in path.split('/') {
        validate_component(component)?;
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn validate_component(component: &str) -> Result<(), &'static str> {
    let err = "bad repository name (lowercase letters and digits, joined by '.', '_', '__' or '-')";
    let b = component.as_bytes();
    if b.is_empty() {
        return Err("empty repository name component");
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            expect_alnum = false;
            continue;
        }
        if expect_alnum {
            return Err(err);
        }
        // A separator: ".", "_", "__", or one or more "-".
        let sep_len = match b[i] {
            b'.' => 1,
            b'_' if b.get(i + 1) == Some(&b'_') => 2,
            b'_' => 1,
            b'-' => b[i..].iter().take_while(|&&c| c == b'-').count(),
            _ => return Err(err),
        };
        i += sep_len;
        expect_alnum = true;
    }
    if expect_alnum {
        return Err(err);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> String {
        Reference::parse(text).unwrap().to_string()
    }

    #[test]
    fn short_names_are_normalized_like_the_kubelet() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("index.docker.io/busybox:1", "docker.io/library/busybox:1"),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
            (
                "registry.k8s.io/e2e-test-images/busybox:1.29-2",
                "registry.k8s.io/e2e-test-images/busybox:1.29-2",
            ),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app:x", "localhost:5000/app:x"),
            (
                "127.0.0.1:5000/library/busybox",
                "127.0.0.1:5000/library/busybox:latest",
            ),
            ("[::1]:5000/a/b:c", "[::1]:5000/a/b:c"),
            (
                "a.b/c/d/e_f__g-h--i.j:T_a.g-1",
                "a.b/c/d/e_f__g-h--i.j:T_a.g-1",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input), want, "{input}");
        }
    }

    #[test]
    fn digests_and_tag_plus_digest() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{d}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.object(), d);
        assert_eq!(r.repo_tag(), None);
        // Tag plus digest: the digest wins, the tag is dropped.
        let r = Reference::parse(&format!("127.0.0.1:5000/x/y:1.0@{d}")).unwrap();
        assert_eq!(r.domain(), "127.0.0.1:5000");
        assert_eq!(r.path(), "x/y");
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(r.tag(), None);
        assert_eq!(r.repo_digest(&d), format!("127.0.0.1:5000/x/y@{d}"));
    }

    #[test]
    fn accessors_of_a_tagged_reference() {
        let r = Reference::parse("127.0.0.1:5000/library/busybox:1.36").unwrap();
        assert_eq!(r.domain(), "127.0.0.1:5000");
        assert_eq!(r.path(), "library/busybox");
        assert_eq!(r.object(), "1.36");
        assert_eq!(
            r.repo_tag().as_deref(),
            Some("127.0.0.1:5000/library/busybox:1.36")
        );
    }

    #[test]
    fn garbage_is_refused() {
        let long_tag = format!("a:{}", "t".repeat(129));
        let long_name = format!("a/{}", "b".repeat(260));
        let cases = [
            "",
            ":",
            ":latest",
            "Busybox",
            "docker.io/Library/busybox",
            "busybox:",
            "busybox:-tag",
            "busybox:ta g",
            "busybox@",
            "busybox@sha256:abc",
            "busybox@md5:0123456789abcdef0123456789abcdef",
            &format!("busybox@sha256:{}", "AB".repeat(32)),
            "a//b",
            "/a",
            "a/",
            "a_-b",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a b",
            "host:port/a",
            "host:99999/a",
            "ho_st.com/a",
            "[::1/a",
            "[zz]:5000/a",
            "http://example.com/a",
            long_tag.as_str(),
            long_name.as_str(),
        ];
        for input in cases {
            assert!(
                Reference::parse(input).is_err(),
                "{input:?} should be refused"
            );
        }
    }
}
