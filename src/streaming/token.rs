//! Single-use tokens for streaming URLs: the CRI call that asked for a stream stores what
//! it validated under an unguessable token; the first HTTP request naming the token takes
//! it. A used, expired or unknown token is simply absent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

/// How long a URL stays usable (the kubelet's streaming server uses one minute too).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Outstanding tokens kept at most; the oldest go first. Bounds memory when a client asks
/// for URLs and never uses them.
const MAX_TOKENS: usize = 4096;

/// Which streams an exec or attach carries (and so which ones its client opens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRequest {
    Exec {
        container_id: String,
        cmd: Vec<String>,
        streams: Streams,
    },
    Attach {
        container_id: String,
        streams: Streams,
    },
    PortForward {
        sandbox_id: String,
    },
}

impl StreamRequest {
    /// The URL path prefix of this kind of request.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamRequest::Exec { .. } => "exec",
            StreamRequest::Attach { .. } => "attach",
            StreamRequest::PortForward { .. } => "portforward",
        }
    }
}

#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (StreamRequest, Instant)>>,
}

impl TokenCache {
    /// Stores `request`; returns its token (256 random bits, URL-safe).
    pub fn insert(&self, request: StreamRequest) -> String {
        self.insert_at(request, Instant::now())
    }

    fn insert_at(&self, request: StreamRequest, now: Instant) -> String {
        let token =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let mut entries = self.lock();
        entries.retain(|_, (_, created)| now.duration_since(*created) < TOKEN_TTL);
        if entries.len() >= MAX_TOKENS {
            let oldest = entries
                .iter()
                .min_by_key(|(_, (_, created))| *created)
                .map(|(token, _)| token.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.insert(token.clone(), (request, now));
        token
    }

    /// Takes the request of `token` if it is of `kind` and not expired; the token is
    /// gone afterwards either way.
    pub fn take(&self, kind: &str, token: &str) -> Option<StreamRequest> {
        self.take_at(kind, token, Instant::now())
    }

    fn take_at(&self, kind: &str, token: &str, now: Instant) -> Option<StreamRequest> {
        let (request, created) = self.lock().remove(token)?;
        (now.duration_since(created) < TOKEN_TTL && request.kind() == kind).then_some(request)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (StreamRequest, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward() -> StreamRequest {
        StreamRequest::PortForward {
            sandbox_id: "pod".into(),
        }
    }

    #[test]
    fn a_token_is_used_once() {
        let cache = TokenCache::default();
        let token = cache.insert(forward());
        assert_eq!(cache.take("portforward", &token), Some(forward()));
        assert_eq!(cache.take("portforward", &token), None);
    }

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let cache = TokenCache::default();
        let a = cache.insert(forward());
        let b = cache.insert(forward());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn an_expired_token_is_refused() {
        let cache = TokenCache::default();
        let start = Instant::now();
        let token = cache.insert_at(forward(), start);
        assert_eq!(
            cache.take_at("portforward", &token, start + TOKEN_TTL),
            None
        );
    }

    #[test]
    fn a_token_for_another_kind_is_refused_and_spent() {
        let cache = TokenCache::default();
        let token = cache.insert(forward());
        assert_eq!(cache.take("exec", &token), None);
        assert_eq!(cache.take("portforward", &token), None);
        assert_eq!(cache.take("portforward", "nosuchtoken"), None);
    }

    #[test]
    fn outstanding_tokens_are_bounded() {
        let cache = TokenCache::default();
        let start = Instant::now();
        let first = cache.insert_at(forward(), start);
        for i in 0..MAX_TOKENS {
            cache.insert_at(forward(), start + Duration::from_millis(1 + i as u64));
        }
        assert_eq!(cache.lock().len(), MAX_TOKENS);
        assert_eq!(cache.take_at("portforward", &first, start), None);
    }
}
