//! A small OCI distribution client: manifests and blobs over HTTP(S), with the registry's
//! Basic or Bearer-token challenge answered from the pull's credentials.
//!
//! One `reqwest::Client` per distinct TLS setting (cached), tokens cached per (host, scope)
//! until they expire. Credentials never reach an error message or a log line: URLs we build
//! carry none, and `RegistryAuth`'s Debug is redacted.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};

use super::hosts::Endpoint;

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// Manifests are small; a bigger one is an attack or a mistake.
const MAX_MANIFEST_BYTES: usize = 4 << 20;
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Credentials of one pull (from the CRI AuthConfig). Debug never shows the secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    /// A refresh token, exchanged at the token endpoint (`grant_type=refresh_token`).
    pub identity_token: String,
    /// A bearer token sent as is.
    pub registry_token: String,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &str| if s.is_empty() { "<none>" } else { "<redacted>" };
        f.debug_struct("RegistryAuth")
            .field("username", &set(&self.username))
            .field("password", &set(&self.password))
            .field("identity_token", &set(&self.identity_token))
            .field("registry_token", &set(&self.registry_token))
            .finish()
    }
}

impl RegistryAuth {
    fn is_empty(&self) -> bool {
        self.username.is_empty()
            && self.password.is_empty()
            && self.identity_token.is_empty()
            && self.registry_token.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: not found")]
    NotFound { url: String },
    #[error("{url}: authentication failed (HTTP {status})")]
    Unauthorized { url: String, status: u16 },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: unsupported authentication challenge {challenge:?}")]
    BadChallenge { url: String, challenge: String },
    #[error("token endpoint {realm}: {reason}")]
    Token { realm: String, reason: String },
    #[error("reading CA certificate {path}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA certificate {path}")]
    BadCa {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("building HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("{url}: manifest larger than {MAX_MANIFEST_BYTES} bytes")]
    ManifestTooBig { url: String },
}

impl RegistryError {
    /// Nothing answered (as opposed to an answer we did not like).
    pub fn is_connect(&self) -> bool {
        matches!(self, RegistryError::Request { source, .. } if source.is_connect())
    }
}

/// The parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let params = parse_params(params)?;
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// `k=v, k="quoted \"v\""` pairs.
fn parse_params(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return None;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_string(), value.trim().to_string()));
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct TlsKey {
    skip_verify: bool,
    ca: Vec<PathBuf>,
}

#[derive(Clone)]
struct CachedToken {
    token: String,
    expires: Instant,
}

/// What a host asked for last time, so later requests skip the 401 round trip.
#[derive(Clone)]
enum HostAuth {
    Basic,
    Bearer(Challenge),
}

#[derive(Default)]
pub struct RegistryClient {
    clients: Mutex<HashMap<TlsKey, reqwest::Client>>,
    tokens: Mutex<HashMap<(String, String), CachedToken>>,
    host_auth: Mutex<HashMap<String, HostAuth>>,
}

/// A fetched manifest: the bytes, their media type and digest.
pub struct Manifest {
    pub bytes: bytes::Bytes,
    pub media_type: String,
    pub digest: String,
}

impl RegistryClient {
    pub fn new() -> Self {
        Self::default()
    }

    fn client_for(&self, endpoint: &Endpoint) -> Result<reqwest::Client, RegistryError> {
        let key = TlsKey {
            skip_verify: endpoint.skip_verify,
            ca: endpoint.ca.clone(),
        };
        if let Some(client) = lock(&self.clients).get(&key) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if key.skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        for path in &key.ca {
            let pem = std::fs::read(path).map_err(|source| RegistryError::ReadCa {
                path: path.clone(),
                source,
            })?;
            let cert =
                reqwest::Certificate::from_pem(&pem).map_err(|source| RegistryError::BadCa {
                    path: path.clone(),
                    source,
                })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(RegistryError::Client)?;
        lock(&self.clients).insert(key, client.clone());
        Ok(client)
    }

    /// GET a manifest by tag or digest.
    pub async fn manifest(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        object: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<Manifest, RegistryError> {
        let url = format!("{}/{repository}/manifests/{object}", endpoint.base_url());
        let response = self
            .get(endpoint, repository, &url, Some(MANIFEST_ACCEPT), auth)
            .await?;
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
            .unwrap_or_default();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST_BYTES as u64)
        {
            return Err(RegistryError::ManifestTooBig { url });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|source| RegistryError::Request {
                url: url.clone(),
                source,
            })?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::ManifestTooBig { url });
        }
        let digest = super::store::sha256_digest(&bytes);
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// GET a blob; the caller streams the body.
    pub async fn blob(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        digest: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<reqwest::Response, RegistryError> {
        let url = format!("{}/{repository}/blobs/{digest}", endpoint.base_url());
        self.get(endpoint, repository, &url, None, auth).await
    }

    /// GET with the host's authorization; on 401 answer the challenge once and retry.
    async fn get(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        url: &str,
        accept: Option<&str>,
        auth: Option<&RegistryAuth>,
    ) -> Result<reqwest::Response, RegistryError> {
        let client = self.client_for(endpoint)?;
        let scope = format!("repository:{repository}:pull");
        let known = lock(&self.host_auth).get(&endpoint.host).cloned();
        let mut authorization = match known {
            Some(host_auth) => {
                self.authorization(&client, &endpoint.host, &scope, &host_auth, auth, false)
                    .await?
            }
            None => None,
        };
        for attempt in 0..2 {
            let mut request = client.get(url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(value) = &authorization {
                request = request.header(AUTHORIZATION, value.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|source| RegistryError::Request {
                    url: url.to_string(),
                    source: source.without_url(),
                })?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == StatusCode::NOT_FOUND {
                return Err(RegistryError::NotFound {
                    url: url.to_string(),
                });
            }
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                let header = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let host_auth = match parse_challenge(&header) {
                    Some(Challenge::Basic) => HostAuth::Basic,
                    Some(bearer) => HostAuth::Bearer(bearer),
                    None => {
                        return Err(RegistryError::BadChallenge {
                            url: url.to_string(),
                            challenge: header,
                        });
                    }
                };
                lock(&self.host_auth).insert(endpoint.host.clone(), host_auth.clone());
                authorization = self
                    .authorization(&client, &endpoint.host, &scope, &host_auth, auth, true)
                    .await?;
                if authorization.is_none() {
                    return Err(RegistryError::Unauthorized {
                        url: url.to_string(),
                        status: status.as_u16(),
                    });
                }
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                // A rejected token must not be reused.
                lock(&self.tokens).remove(&(endpoint.host.clone(), scope.clone()));
                return Err(RegistryError::Unauthorized {
                    url: url.to_string(),
                    status: status.as_u16(),
                });
            }
            return Err(RegistryError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        Err(RegistryError::Unauthorized {
            url: url.to_string(),
            status: StatusCode::UNAUTHORIZED.as_u16(),
        })
    }

    /// The Authorization header value for `host`, fetching a token when needed.
    async fn authorization(
        &self,
        client: &reqwest::Client,
        host: &str,
        scope: &str,
        host_auth: &HostAuth,
        auth: Option<&RegistryAuth>,
        refresh: bool,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let auth = auth.filter(|a| !a.is_empty());
        match host_auth {
            HostAuth::Basic => Ok(auth
                .filter(|a| !a.username.is_empty())
                .map(|a| basic_header(&a.username, &a.password))),
            HostAuth::Bearer(challenge) => {
                if let Some(token) = auth.map(|a| &a.registry_token).filter(|t| !t.is_empty()) {
                    return Ok(Some(bearer_header(token)));
                }
                let key = (host.to_string(), scope.to_string());
                if !refresh {
                    let cached = lock(&self.tokens).get(&key).cloned();
                    return Ok(cached
                        .filter(|t| t.expires > Instant::now())
                        .map(|t| bearer_header(&t.token)));
                }
                let Challenge::Bearer { realm, service, .. } = challenge else {
                    return Ok(None);
                };
                let token = fetch_token(client, realm, service.as_deref(), scope, auth).await?;
                let header = bearer_header(&token.token);
                lock(&self.tokens).insert(key, token);
                Ok(Some(header))
            }
        }
    }
}

async fn fetch_token(
    client: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    scope: &str,
    auth: Option<&RegistryAuth>,
) -> Result<CachedToken, RegistryError> {
    let token_error = |reason: String| RegistryError::Token {
        realm: realm.to_string(),
        reason,
    };
    let identity_token = auth.map(|a| &a.identity_token).filter(|t| !t.is_empty());
    let request = match identity_token {
        Some(refresh_token) => {
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.as_str()),
                ("scope", scope),
                ("client_id", "berth"),
            ];
            if let Some(service) = service {
                form.push(("service", service));
            }
            client.post(realm).form(&form)
        }
        None => {
            let mut query = vec![("scope", scope)];
            if let Some(service) = service {
                query.push(("service", service));
            }
            let request = client.get(realm).query(&query);
            match auth.filter(|a| !a.username.is_empty()) {
                Some(a) => request.basic_auth(&a.username, Some(&a.password)),
                None => request,
            }
        }
    };
    // without_url: the error text must not depend on what the request carried.
    let response = request
        .send()
        .await
        .map_err(|e| token_error(e.without_url().to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(token_error(if status == StatusCode::UNAUTHORIZED {
            "authentication failed (HTTP 401)".to_string()
        } else {
            format!("HTTP {}", status.as_u16())
        }));
    }
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let body: TokenResponse = response
        .json()
        .await
        .map_err(|e| token_error(format!("bad token response: {}", e.without_url())))?;
    let token = body
        .token
        .or(body.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| token_error("token response has no token".into()))?;
    let lifetime = body
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    // Renew a little early so a token does not expire mid-request.
    let expires = Instant::now() + lifetime.saturating_sub(Duration::from_secs(5));
    Ok(CachedToken { token, expires })
}

fn basic_header(username: &str, password: &str) -> HeaderValue {
    use base64::Engine as _;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

fn bearer_header(token: &str) -> HeaderValue {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves it consistent (single inserts).
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        let c = parse_challenge(r#"bearer  realm="https://r/t", scope="a:b:pull,push", x=y"#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://r/t".into(),
                service: None,
                scope: Some("a:b:pull,push".into()),
            })
        );
        let c = parse_challenge(r#"Bearer realm="https://r/\"q\"",service=plain"#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://r/\"q\"".into(),
                service: Some("plain".into()),
                scope: None,
            })
        );
    }

    #[test]
    fn basic_and_bad_challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="berth-test""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Basic"), Some(Challenge::Basic));
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
        assert_eq!(parse_challenge(r#"Negotiate abc"#), None);
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn auth_debug_never_shows_secrets() {
        let auth = RegistryAuth {
            username: "user1".into(),
            password: "hunter2".into(),
            identity_token: String::new(),
            registry_token: "tok-xyz".into(),
        };
        let text = format!("{auth:?}");
        assert!(!text.contains("user1") && !text.contains("hunter2") && !text.contains("tok-xyz"));
        assert!(text.contains("<redacted>") && text.contains("<none>"));
    }

    #[test]
    fn authorization_headers_are_marked_sensitive() {
        let h = basic_header("berth", "berth-secret");
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Basic YmVydGg6YmVydGgtc2VjcmV0");
        assert!(bearer_header("t").is_sensitive());
    }
}
