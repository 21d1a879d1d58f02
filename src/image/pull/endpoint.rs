//! Endpoints tried in order (mirrors, then the registry; plain HTTP for loopback hosts that
//! speak it) and the watchdog that fails a pull making no progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::error::{Attempt, PullError};
use super::manifest::Descriptor;
use crate::image::hosts::Endpoint;
use crate::image::inner::{Inner, lock};
use crate::image::registry::{Manifest, RegistryAuth, RegistryError};

/// When the last byte arrived, for the no-progress watchdog.
pub(super) struct Progress {
    pub(super) start: Instant,
    pub(super) last_ms: AtomicU64,
}

impl Progress {
    pub(super) fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }
    pub(super) fn idle(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

pub(super) async fn watchdog(progress: Arc<Progress>, timeout: Duration) -> PullError {
    let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        if progress.idle() >= timeout {
            return PullError::ProgressTimeout(timeout);
        }
    }
}

pub(super) struct Ctx<'a> {
    pub(super) inner: &'a Inner,
    pub(super) repository: &'a str,
    pub(super) auth: Option<&'a RegistryAuth>,
    pub(super) progress: &'a Progress,
}

impl Ctx<'_> {
    /// The endpoint to use now: a loopback host that answered only over http stays http.
    pub(super) fn effective(&self, endpoint: &Endpoint) -> Endpoint {
        if endpoint.http_fallback && lock(&self.inner.http_hosts).contains(&endpoint.host) {
            endpoint.as_http()
        } else {
            endpoint.clone()
        }
    }

    /// Tries `endpoints` in order (with the http fallback of loopback registries) until one
    /// answers; returns its answer and the endpoint.
    pub(super) async fn first_answer<T, F, Fut>(
        &self,
        what: String,
        endpoints: &[&Endpoint],
        mut request: F,
    ) -> Result<(T, Endpoint), PullError>
    where
        F: FnMut(Endpoint) -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut attempts = Vec::new();
        for endpoint in endpoints {
            let endpoint = self.effective(endpoint);
            match request(endpoint.clone()).await {
                Ok(answer) => return Ok((answer, endpoint)),
                Err(error @ RegistryError::Request { .. }) if endpoint.http_fallback => {
                    let http = endpoint.as_http();
                    match request(http.clone()).await {
                        Ok(answer) => {
                            lock(&self.inner.http_hosts).insert(endpoint.host.clone());
                            return Ok((answer, http));
                        }
                        Err(http_error @ RegistryError::Request { .. }) => {
                            attempts.push(Attempt {
                                endpoint: endpoint.base_url(),
                                error,
                            });
                            attempts.push(Attempt {
                                endpoint: http.base_url(),
                                error: http_error,
                            });
                        }
                        // The host speaks plain http and answered (404, 401, ...): that
                        // answer is the one that counts, the https probe was only a probe.
                        Err(http_error) => {
                            lock(&self.inner.http_hosts).insert(endpoint.host.clone());
                            attempts.push(Attempt {
                                endpoint: http.base_url(),
                                error: http_error,
                            });
                        }
                    }
                }
                Err(error) => attempts.push(Attempt {
                    endpoint: endpoint.base_url(),
                    error,
                }),
            }
        }
        Err(PullError::Endpoints { what, attempts })
    }

    pub(super) async fn manifest(
        &self,
        endpoints: &[&Endpoint],
        object: &str,
    ) -> Result<(Manifest, Endpoint), PullError> {
        let (manifest, endpoint) = self
            .first_answer(
                format!("fetching manifest {}:{object}", self.repository),
                endpoints,
                |endpoint| async move {
                    self.inner
                        .registry
                        .manifest(&endpoint, self.repository, object, self.auth)
                        .await
                },
            )
            .await?;
        self.progress.touch();
        if object.starts_with("sha256:") && manifest.digest != object {
            return Err(PullError::ManifestDigest {
                endpoint: endpoint.base_url(),
                expected: object.to_string(),
                actual: manifest.digest,
            });
        }
        Ok((manifest, endpoint))
    }

    pub(super) async fn blob_response(
        &self,
        endpoints: &[&Endpoint],
        digest: &str,
    ) -> Result<(reqwest::Response, Endpoint), PullError> {
        let answer = self
            .first_answer(
                format!("fetching blob {digest}"),
                endpoints,
                |endpoint| async move {
                    self.inner
                        .registry
                        .blob(&endpoint, self.repository, digest, self.auth)
                        .await
                },
            )
            .await?;
        self.progress.touch();
        Ok(answer)
    }

    /// A small blob (the config) fetched into memory, verified and stored.
    pub(super) async fn small_blob(
        &self,
        endpoints: &[&Endpoint],
        descriptor: &Descriptor,
    ) -> Result<Bytes, PullError> {
        let (response, endpoint) = self.blob_response(endpoints, &descriptor.digest).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|source| PullError::Download {
                digest: descriptor.digest.clone(),
                endpoint: endpoint.base_url(),
                source: source.without_url(),
            })?;
        self.progress.touch();
        crate::metrics::add_pulled_bytes(bytes.len());
        self.store_blob(&descriptor.digest, bytes.clone()).await?;
        Ok(bytes)
    }

    pub(super) async fn store_blob(&self, digest: &str, bytes: Bytes) -> Result<(), PullError> {
        let store = self.inner.store.clone();
        let digest = digest.to_string();
        tokio::task::spawn_blocking(move || {
            store
                .write_blob(&digest, &bytes)
                .map_err(|source| PullError::Store { digest, source })
        })
        .await?
    }
}
