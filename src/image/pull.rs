//! The pull pipeline: resolve endpoints → manifest (index → linux/amd64) → config and
//! layers at once (a layer needs the config's diff_id and chain id only to be checked and
//! committed), each layer streamed at once into the content store (hashing the compressed
//! bytes) and into the unpacker (which hashes the uncompressed ones), so download, verify and
//! unpack overlap → one syncfs → image record written last.

use std::io::{self, Read, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes};
use futures_util::StreamExt as _;
use serde::Deserialize;

use super::hosts::{self, Endpoint};
use super::reference::{Reference, validate_digest};
use super::registry::{
    MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, Manifest,
    RegistryAuth, RegistryError,
};
use super::store::{self, BlobWriter, ImageRecord, LayerInfo, StoreError};
use super::unpack::{self, Compression, UnpackError, UnpackLimits};
use super::{Inner, lock};
use crate::error::ErrorKind;

const PLATFORM_OS: &str = "linux";
const PLATFORM_ARCH: &str = "amd64";
/// Chunks buffered between the download and the unpacker of one layer.
const CHANNEL_CHUNKS: usize = 32;

/// One endpoint that was tried and why it failed.
#[derive(Debug)]
pub struct Attempt {
    pub endpoint: String,
    pub error: RegistryError,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("registry hosts configuration")]
    Hosts(#[from] hosts::HostsError),
    #[error("{what}: {}", describe_attempts(.attempts))]
    Endpoints {
        what: String,
        attempts: Vec<Attempt>,
    },
    #[error("manifest from {endpoint} has digest {actual}, not the {expected} asked for")]
    ManifestDigest {
        endpoint: String,
        expected: String,
        actual: String,
    },
    #[error("the manifest list has no linux/amd64 image (it has: {platforms})")]
    NoPlatform { platforms: String },
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedManifest(String),
    #[error("bad manifest {digest}")]
    BadManifest {
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("bad digest {0:?} in manifest")]
    BadDigest(String),
    #[error("bad image config {digest}")]
    BadConfig {
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the image config lists {diff_ids} layers, the manifest {layers}")]
    LayerCount { diff_ids: usize, layers: usize },
    #[error("layer {digest}")]
    LayerMediaType {
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error("downloading {digest} from {endpoint}")]
    Download {
        digest: String,
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unpacking layer {digest}")]
    Unpack {
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error(
        "layer {digest}: its uncompressed content is {actual}, the image config says {expected}"
    )]
    DiffId {
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("storing {digest}")]
    Store {
        digest: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "no bytes received for {} (image.pull_progress_timeout); pull cancelled",
        humantime::format_duration(*.0)
    )]
    ProgressTimeout(Duration),
    #[error("pull task failed")]
    Join(#[from] tokio::task::JoinError),
    #[error("stopped because another layer of the pull failed")]
    Cancelled,
    #[error("layer {digest}: the download stopped before its end")]
    Truncated { digest: String },
}

impl PullError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PullError::Endpoints { attempts, .. } => {
                if attempts
                    .iter()
                    .all(|a| matches!(a.error, RegistryError::NotFound { .. }))
                {
                    ErrorKind::NotFound
                } else if attempts.iter().any(|a| {
                    matches!(
                        a.error,
                        RegistryError::Unauthorized { .. } | RegistryError::Token { .. }
                    )
                }) {
                    ErrorKind::FailedPrecondition
                } else {
                    ErrorKind::Unavailable
                }
            }
            PullError::Download { .. } | PullError::Truncated { .. } => ErrorKind::Unavailable,
            PullError::ProgressTimeout(_) => ErrorKind::DeadlineExceeded,
            PullError::Store {
                source: StoreError::DigestMismatch { .. },
                ..
            } => ErrorKind::FailedPrecondition,
            PullError::Unpack {
                source: UnpackError::Io { .. } | UnpackError::LayerDir { .. },
                ..
            } => ErrorKind::Internal,
            // The layer is broken or hostile, or too big for the limits.
            PullError::Unpack { .. } => ErrorKind::FailedPrecondition,
            PullError::Store { .. } | PullError::Join(_) | PullError::Cancelled => {
                ErrorKind::Internal
            }
            PullError::Hosts(_)
            | PullError::ManifestDigest { .. }
            | PullError::NoPlatform { .. }
            | PullError::UnsupportedManifest(_)
            | PullError::BadManifest { .. }
            | PullError::BadDigest(_)
            | PullError::BadConfig { .. }
            | PullError::LayerCount { .. }
            | PullError::LayerMediaType { .. }
            | PullError::DiffId { .. } => ErrorKind::FailedPrecondition,
        }
    }
}

fn describe_attempts(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "no endpoint with the needed capability (check hosts.toml capabilities)".into();
    }
    let parts: Vec<String> = attempts
        .iter()
        .map(|a| format!("{} ({})", a.endpoint, error_chain(&a.error)))
        .collect();
    format!("every endpoint failed: {}", parts.join("; "))
}

/// An error and its causes on one line (reqwest's own Display omits the cause).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: std::collections::HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ManifestDoc {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

enum Parsed {
    Index(Vec<Descriptor>),
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

fn parse_manifest(manifest: &Manifest) -> Result<Parsed, PullError> {
    let doc: ManifestDoc =
        serde_json::from_slice(&manifest.bytes).map_err(|source| PullError::BadManifest {
            digest: manifest.digest.clone(),
            source,
        })?;
    // The Content-Type header decides; registries that send a generic one are judged by the
    // document's own mediaType, then by its shape.
    let media_type = match manifest.media_type.as_str() {
        MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST | MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST => {
            manifest.media_type.clone()
        }
        _ => doc.media_type.clone().unwrap_or_else(|| {
            if doc.manifests.is_some() {
                MEDIA_OCI_INDEX.to_string()
            } else if doc.config.is_some() {
                MEDIA_OCI_MANIFEST.to_string()
            } else {
                manifest.media_type.clone()
            }
        }),
    };
    match media_type.as_str() {
        MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST => Ok(Parsed::Index(doc.manifests.unwrap_or_default())),
        MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST => match doc.config {
            Some(config) => Ok(Parsed::Image {
                config,
                layers: doc.layers.unwrap_or_default(),
            }),
            None => Err(PullError::UnsupportedManifest(media_type)),
        },
        _ => Err(PullError::UnsupportedManifest(media_type)),
    }
}

/// The linux/amd64 entry of an index; attestation and unknown-platform entries are skipped.
/// An entry without a variant is preferred to one with (amd64 variants are microarchitecture
/// levels this host may lack).
pub(super) fn select_platform(manifests: &[Descriptor]) -> Result<&Descriptor, PullError> {
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == PLATFORM_OS && p.architecture == PLATFORM_ARCH)
                && d.annotations
                    .get("vnd.docker.reference.type")
                    .is_none_or(|t| t != "attestation-manifest")
        })
        .collect();
    candidates
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.variant.is_none()))
        .or(candidates.first())
        .copied()
        .ok_or_else(|| PullError::NoPlatform {
            platforms: manifests
                .iter()
                .map(|d| match &d.platform {
                    Some(p) => match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    },
                    None => "unknown".to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// When the last byte arrived, for the no-progress watchdog.
struct Progress {
    start: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }
    fn idle(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

async fn watchdog(progress: Arc<Progress>, timeout: Duration) -> PullError {
    let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        if progress.idle() >= timeout {
            return PullError::ProgressTimeout(timeout);
        }
    }
}

pub(super) async fn run(
    inner: &Inner,
    reference: &Reference,
    auth: Option<&RegistryAuth>,
) -> Result<String, PullError> {
    let progress = Arc::new(Progress {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let started = Instant::now();
    let result = tokio::select! {
        result = pull(inner, reference, auth, &progress) => result,
        error = watchdog(progress.clone(), inner.progress_timeout) => Err(error),
    };
    crate::metrics::observe_pull(started.elapsed(), result.is_ok());
    match &result {
        Ok((id, endpoint)) => tracing::info!(
            image = %reference,
            image_id = %id,
            endpoint = %endpoint,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "image pulled"
        ),
        Err(error) => tracing::info!(
            image = %reference,
            error = %error_chain(error),
            "image pull failed"
        ),
    }
    result.map(|(id, _)| id)
}

struct Ctx<'a> {
    inner: &'a Inner,
    repository: &'a str,
    auth: Option<&'a RegistryAuth>,
    progress: &'a Progress,
}

impl Ctx<'_> {
    /// The endpoint to use now: a loopback host that answered only over http stays http.
    fn effective(&self, endpoint: &Endpoint) -> Endpoint {
        if endpoint.http_fallback && lock(&self.inner.http_hosts).contains(&endpoint.host) {
            endpoint.as_http()
        } else {
            endpoint.clone()
        }
    }

    /// Tries `endpoints` in order (with the http fallback of loopback registries) until one
    /// answers; returns its answer and the endpoint.
    async fn first_answer<T, F, Fut>(
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

    async fn manifest(
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

    async fn blob_response(
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
    async fn small_blob(
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

    async fn store_blob(&self, digest: &str, bytes: Bytes) -> Result<(), PullError> {
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

async fn pull(
    inner: &Inner,
    reference: &Reference,
    auth: Option<&RegistryAuth>,
    progress: &Progress,
) -> Result<(String, String), PullError> {
    // Garbage collection waits until no pull is running: a pull's layers belong to no
    // record until the end.
    let _gc = inner.gc_barrier.read().await;
    let domain = reference.domain().to_string();
    let dirs = inner.config_dirs.clone();
    let endpoints = tokio::task::spawn_blocking(move || hosts::resolve(&domain, &dirs)).await??;
    let ctx = Ctx {
        inner,
        repository: reference.path(),
        auth,
        progress,
    };
    let resolvers: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| {
            if reference.digest().is_some() {
                e.capabilities.pull
            } else {
                e.capabilities.resolve
            }
        })
        .collect();
    let (top, served_by) = ctx.manifest(&resolvers, reference.object()).await?;
    // Content is fetched from the endpoint that resolved the reference first, then the others.
    let mut pullers: Vec<&Endpoint> = Vec::new();
    if let Some(first) = endpoints
        .iter()
        .find(|e| e.host == served_by.host && e.path == served_by.path && e.capabilities.pull)
    {
        pullers.push(first);
    }
    for endpoint in endpoints.iter().filter(|e| e.capabilities.pull) {
        if !pullers.iter().any(|p| std::ptr::eq(*p, endpoint)) {
            pullers.push(endpoint);
        }
    }

    let top_digest = top.digest.clone();
    let mut manifests = vec![(top.digest.clone(), top.bytes.clone())];
    let (config, layers, manifest_digest) = match parse_manifest(&top)? {
        Parsed::Image { config, layers } => (config, layers, top.digest.clone()),
        Parsed::Index(entries) => {
            let entry = select_platform(&entries)?;
            validate_digest(&entry.digest)
                .map_err(|_| PullError::BadDigest(entry.digest.clone()))?;
            let (manifest, _) = ctx.manifest(&pullers, &entry.digest).await?;
            manifests.push((manifest.digest.clone(), manifest.bytes.clone()));
            match parse_manifest(&manifest)? {
                Parsed::Image { config, layers } => (config, layers, manifest.digest.clone()),
                Parsed::Index(_) => {
                    return Err(PullError::UnsupportedManifest(
                        "an index inside an index".into(),
                    ));
                }
            }
        }
    };
    for descriptor in std::iter::once(&config).chain(&layers) {
        validate_digest(&descriptor.digest)
            .map_err(|_| PullError::BadDigest(descriptor.digest.clone()))?;
    }

    let phase = |name: &str| tracing::debug!(image = %reference, phase = name, elapsed_ms = progress.start.elapsed().as_secs_f64() * 1e3, "pull phase");
    phase("manifest");
    // The config is fetched while the layers already download: a layer needs its diff_id
    // and chain id only at the end, to be checked and committed.
    let (cancel, cancelled) = tokio::sync::watch::channel(false);
    let (ids_tx, ids_rx) = tokio::sync::watch::channel(None::<Arc<LayerIds>>);
    let config_work = async {
        let result = async {
            let config_bytes = ctx.small_blob(&pullers, &config).await?;
            phase("config");
            let image_config: oci_spec::image::ImageConfiguration =
                serde_json::from_slice(&config_bytes).map_err(|source| PullError::BadConfig {
                    digest: config.digest.clone(),
                    source,
                })?;
            let diff_ids = image_config.rootfs().diff_ids().clone();
            if diff_ids.len() != layers.len() {
                return Err(PullError::LayerCount {
                    diff_ids: diff_ids.len(),
                    layers: layers.len(),
                });
            }
            let chain_ids = store::chain_ids(&diff_ids);
            Ok((image_config, diff_ids, chain_ids))
        }
        .await;
        match &result {
            Ok((_, diff_ids, chain_ids)) => {
                ids_tx.send_replace(Some(Arc::new(LayerIds {
                    diff_ids: diff_ids.clone(),
                    chain_ids: chain_ids.clone(),
                })));
            }
            Err(_) => {
                cancel.send_replace(true);
            }
        }
        result
    };

    // On the first failure the other layers stop too, and the pull returns only after each
    // has cleaned up after itself, so a failed pull leaves nothing half-written behind.
    let slots = tokio::sync::Semaphore::new(inner.max_downloads);
    let layers_work = async {
        let mut running = futures_util::stream::FuturesUnordered::new();
        for (index, layer) in layers.iter().enumerate() {
            let (ctx, pullers, cancel, slots) = (&ctx, &pullers, &cancel, &slots);
            let job = LayerTask {
                index,
                layer,
                ids: ids_rx.clone(),
                cancelled: cancelled.clone(),
            };
            running.push(async move {
                let result = fetch_layer(ctx, pullers, job, slots).await;
                if result.is_err() {
                    cancel.send_replace(true);
                }
                result
            });
        }
        let mut results = Vec::new();
        while let Some(result) = running.next().await {
            results.push(result);
        }
        results
    };
    let (config_result, results) = tokio::join!(config_work, layers_work);
    phase("layers");
    // A failed config is the cause (the layers only stopped for it); otherwise, in
    // completion order, the first error is the cause and later ones are its echoes.
    let (image_config, _, chain_ids) = config_result?;
    if let Some(error) = results.into_iter().find_map(Result::err) {
        return Err(error);
    }

    for (digest, bytes) in manifests {
        ctx.store_blob(&digest, bytes).await?;
    }

    let mut blobs = vec![top_digest.clone()];
    if manifest_digest != top_digest {
        blobs.push(manifest_digest.clone());
    }
    blobs.push(config.digest.clone());
    blobs.extend(layers.iter().map(|l| l.digest.clone()));
    let record = ImageRecord {
        version: store::RECORD_VERSION,
        id: config.digest.clone(),
        repo_tags: reference.repo_tag().into_iter().collect(),
        repo_digests: vec![reference.repo_digest(&top_digest)],
        manifest_digest,
        chain_ids,
        blobs,
        size: config.size + layers.iter().map(|l| l.size).sum::<u64>(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        user: image_config
            .config()
            .as_ref()
            .and_then(|c| c.user().clone())
            .unwrap_or_default(),
        pinned: false,
    };
    crate::fault::point("image.pull.after_layers_committed");
    save_record(inner, record).await?;
    Ok((config.digest, served_by.base_url()))
}

/// Writes the image record, merging with an existing record of the same image and taking
/// the tag away from any other image that had it.
async fn save_record(inner: &Inner, mut record: ImageRecord) -> Result<(), PullError> {
    let _records = inner.records_lock.lock().await;
    let mut changed = Vec::new();
    {
        let index = inner.index.read().unwrap_or_else(|p| p.into_inner());
        for other in index.values() {
            if other.id == record.id {
                for tag in &other.repo_tags {
                    if !record.repo_tags.contains(tag) {
                        record.repo_tags.push(tag.clone());
                    }
                }
                for digest in &other.repo_digests {
                    if !record.repo_digests.contains(digest) {
                        record.repo_digests.push(digest.clone());
                    }
                }
                record.pinned |= other.pinned;
                record.created = other.created;
            } else if other.repo_tags.iter().any(|t| record.repo_tags.contains(t)) {
                let mut other = other.clone();
                other.repo_tags.retain(|t| !record.repo_tags.contains(t));
                changed.push(other);
            }
        }
    }
    record.repo_tags.sort();
    record.repo_digests.sort();
    let id = record.id.clone();
    changed.push(record);
    let store = inner.store.clone();
    let to_write = changed.clone();
    tokio::task::spawn_blocking(move || {
        // One syncfs makes the layers and blobs of this pull durable before the record.
        store
            .write_records_durably(&to_write)
            .map_err(|source| PullError::Store { digest: id, source })
    })
    .await??;
    let mut index = inner.index.write().unwrap_or_else(|p| p.into_inner());
    for record in changed {
        index.insert(record.id.clone(), record);
    }
    Ok(())
}

/// The diff_ids and chain ids of an image's layers, from its config.
struct LayerIds {
    diff_ids: Vec<String>,
    chain_ids: Vec<String>,
}

/// One layer of a pull: its place in the image, the config's ids once they are known, and
/// the signal that another part of the pull failed.
struct LayerTask<'a> {
    index: usize,
    layer: &'a Descriptor,
    ids: tokio::sync::watch::Receiver<Option<Arc<LayerIds>>>,
    cancelled: tokio::sync::watch::Receiver<bool>,
}

impl LayerTask<'_> {
    /// This layer's (diff_id, chain id), once the config is in; `Cancelled` when the pull
    /// failed first (the config's own error is reported by the pull).
    async fn ids(&mut self) -> Result<(String, String), PullError> {
        let ids = tokio::select! {
            ids = self.ids.wait_for(Option::is_some) => match ids {
                Ok(ids) => ids.clone(),
                Err(_) => None,
            },
            _ = self.cancelled.wait_for(|c| *c) => None,
        };
        ids.and_then(|ids| {
            Some((
                ids.diff_ids.get(self.index)?.clone(),
                ids.chain_ids.get(self.index)?.clone(),
            ))
        })
        .ok_or(PullError::Cancelled)
    }
}

/// One unpack per key (a chain id, or a blob digest being downloaded) at a time.
async fn key_lock(inner: &Inner, key: String) -> tokio::sync::OwnedMutexGuard<()> {
    let mutex = lock(&inner.layer_locks).entry(key).or_default().clone();
    mutex.lock_owned().await
}

/// Downloads, verifies and unpacks one layer unless its chain is already unpacked.
///
/// A layer whose compressed blob is already stored was probably unpacked by an earlier
/// pull: it waits for the config to learn its chain and skips the download when that chain
/// is there. Any other layer downloads and unpacks into a temp dir at once, while the config
/// is still on its way, and is checked against its diff_id and committed (unless another
/// pull committed the same chain meanwhile) once the config is in.
async fn fetch_layer(
    ctx: &Ctx<'_>,
    endpoints: &[&Endpoint],
    mut task: LayerTask<'_>,
    slots: &tokio::sync::Semaphore,
) -> Result<(), PullError> {
    if *task.cancelled.borrow() {
        return Err(PullError::Cancelled);
    }
    let layer = task.layer;
    let store = ctx.inner.store.clone();
    let store_err = |source| PullError::Store {
        digest: layer.digest.clone(),
        source,
    };
    let compression = Compression::from_media_type(&layer.media_type).map_err(|source| {
        PullError::LayerMediaType {
            digest: layer.digest.clone(),
            source,
        }
    })?;
    let blob_path = store.blob_path(&layer.digest).map_err(store_err)?;
    // Two pulls of images sharing a new layer download it once: the second waits here and
    // then finds the blob stored. ("blob " keeps these keys apart from chain ids, which an
    // uncompressed bottom layer's blob digest equals.)
    let _blob = key_lock(ctx.inner, format!("blob {}", layer.digest)).await;
    if blob_path.exists() {
        let (diff_id, chain_id) = task.ids().await?;
        let _chain = key_lock(ctx.inner, chain_id.clone()).await;
        if store.has_layer(&chain_id).map_err(store_err)? {
            return Ok(());
        }
        let unpacked = {
            let _slot = slots.acquire().await;
            download_layer(ctx, endpoints, &mut task, compression).await?
        };
        return finish_layer(store, layer.digest.clone(), unpacked, diff_id, chain_id).await;
    }
    let unpacked = {
        let _slot = slots.acquire().await;
        download_layer(ctx, endpoints, &mut task, compression).await?
    };
    let (diff_id, chain_id) = match task.ids().await {
        Ok(ids) => ids,
        Err(error) => {
            unpacked.discard().await;
            return Err(error);
        }
    };
    let _chain = key_lock(ctx.inner, chain_id.clone()).await;
    finish_layer(store, layer.digest.clone(), unpacked, diff_id, chain_id).await
}

/// A layer downloaded and unpacked, with both digests computed, nothing committed yet.
struct Unpacked {
    tmp: TmpLayer,
    stats: unpack::UnpackStats,
    blob: BlobWriter,
}

impl Unpacked {
    async fn discard(self) {
        let Unpacked { tmp, blob, .. } = self;
        let _ = tokio::task::spawn_blocking(move || {
            drop(blob);
            tmp.remove_now();
        })
        .await;
    }
}

/// A layer's temp dir: removed unless committed, also when the pull is dropped midway (the
/// progress watchdog).
struct TmpLayer {
    path: Option<std::path::PathBuf>,
}

impl TmpLayer {
    fn path(&self) -> &std::path::Path {
        self.path.as_deref().unwrap_or(std::path::Path::new(""))
    }
    fn remove_now(mut self) {
        if let Some(path) = self.path.take() {
            remove_failed_layer(&path);
        }
    }
    /// Renamed into place (or already removed by the store): nothing left to clean up.
    fn forget(mut self) {
        self.path = None;
    }
}

impl Drop for TmpLayer {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || remove_failed_layer(&path))),
                Err(_) => remove_failed_layer(&path),
            }
        }
    }
}

/// Checks both digests and moves the layer into place (unless its chain is there already:
/// then ours is dropped). The caller holds the chain's lock.
async fn finish_layer(
    store: store::Store,
    digest: String,
    unpacked: Unpacked,
    diff_id: String,
    chain_id: String,
) -> Result<(), PullError> {
    let finish = move || {
        let store_err = |source| PullError::Store {
            digest: digest.clone(),
            source,
        };
        let Unpacked { tmp, stats, blob } = unpacked;
        let result = (|| {
            // Nothing is kept unless the compressed bytes match the digest...
            blob.commit(&digest).map_err(store_err)?;
            // ...and the uncompressed ones match the image config.
            if stats.diff_id != diff_id {
                return Err(PullError::DiffId {
                    digest: digest.clone(),
                    expected: diff_id.clone(),
                    actual: stats.diff_id.clone(),
                });
            }
            if store.has_layer(&chain_id).map_err(store_err)? {
                return Ok(false);
            }
            let info = LayerInfo {
                version: store::RECORD_VERSION,
                chain_id: chain_id.clone(),
                diff_id: stats.diff_id.clone(),
                bytes: stats.bytes,
                inodes: stats.inodes,
            };
            // commit_layer removes the temp dir itself when it fails.
            store.commit_layer(tmp.path(), &info).map_err(store_err)?;
            Ok(true)
        })();
        match result {
            Ok(true) => tmp.forget(),
            Ok(false) => tmp.remove_now(),
            Err(error) => {
                tmp.remove_now();
                return Err(error);
            }
        }
        Ok(())
    };
    tokio::task::spawn_blocking(finish).await?
}

/// Streams one layer blob into the ingest area and into the unpacker at once.
async fn download_layer(
    ctx: &Ctx<'_>,
    endpoints: &[&Endpoint],
    task: &mut LayerTask<'_>,
    compression: Compression,
) -> Result<Unpacked, PullError> {
    let layer = task.layer;
    let store = ctx.inner.store.clone();
    let (response, endpoint) = ctx.blob_response(endpoints, &layer.digest).await?;
    tracing::debug!(digest = %layer.digest, endpoint = %endpoint.base_url(), "downloading layer");

    // Two blocking workers take the stream at once, so the two cores share the work: one
    // writes and hashes the compressed blob, the other decompresses, hashes and extracts.
    let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(CHANNEL_CHUNKS);
    let (blob_tx, blob_rx) = tokio::sync::mpsc::channel::<Piece>(CHANNEL_CHUNKS);
    let job = LayerJob {
        store: store.clone(),
        digest: layer.digest.clone(),
        compression,
        limits: ctx.inner.unpack_limits,
    };
    let unpacker = tokio::task::spawn_blocking(move || job.run(rx));
    let blob_store = store.clone();
    let blob_writer = tokio::task::spawn_blocking(move || write_blob(&blob_store, blob_rx));

    let mut body = response.bytes_stream();
    let mut network_error = None;
    loop {
        let chunk = tokio::select! {
            chunk = body.next() => chunk,
            _ = task.cancelled.wait_for(|c| *c) => {
                network_error = Some(PullError::Cancelled);
                break;
            }
        };
        let Some(chunk) = chunk else { break };
        match chunk {
            Ok(bytes) => {
                ctx.progress.touch();
                crate::metrics::add_pulled_bytes(bytes.len());
                let (to_unpack, to_blob) = tokio::join!(
                    tx.send(Piece::Data(bytes.clone())),
                    blob_tx.send(Piece::Data(bytes))
                );
                if to_unpack.is_err() || to_blob.is_err() {
                    // A worker stopped early; its result says why.
                    break;
                }
            }
            Err(source) => {
                network_error = Some(PullError::Download {
                    digest: layer.digest.clone(),
                    endpoint: endpoint.base_url(),
                    source: source.without_url(),
                });
                break;
            }
        }
    }
    if network_error.is_none() {
        let _ = tokio::join!(tx.send(Piece::End), blob_tx.send(Piece::End));
    }
    drop(tx);
    drop(blob_tx);
    let (unpacked, blob) = tokio::join!(unpacker, blob_writer);
    let (unpacked, blob) = (unpacked?, blob?);
    let digest = layer.digest.clone();
    let check = move || {
        let (tmp, stats) = unpacked?;
        let result = (|| {
            if let Some(error) = network_error {
                return Err(error);
            }
            blob.map_err(|source| PullError::Store {
                digest: digest.clone(),
                source,
            })?
            .ok_or_else(|| PullError::Truncated {
                digest: digest.clone(),
            })
        })();
        match result {
            Ok(blob) => Ok(Unpacked { tmp, stats, blob }),
            Err(error) => {
                tmp.remove_now();
                Err(error)
            }
        }
    };
    tokio::task::spawn_blocking(check).await?
}

fn remove_failed_layer(tmp: &std::path::Path) {
    if let Err(e) = unpack::remove_layer_dir(tmp) {
        tracing::warn!(path = %tmp.display(), error = %e, "removing a failed layer");
    }
}

/// Writes the compressed stream into the ingest area, hashing it; `None` when the download
/// ended before its end marker.
fn write_blob(
    store: &store::Store,
    mut rx: tokio::sync::mpsc::Receiver<Piece>,
) -> Result<Option<BlobWriter>, StoreError> {
    let mut writer = store.ingest()?;
    while let Some(piece) = rx.blocking_recv() {
        match piece {
            Piece::Data(bytes) => writer.write_all(&bytes).map_err(|source| StoreError::Io {
                what: "writing",
                path: writer.path().to_path_buf(),
                source,
            })?,
            Piece::End => return Ok(Some(writer)),
        }
    }
    Ok(None)
}

enum Piece {
    Data(Bytes),
    End,
}

/// The decompressing half of a layer download: unpack what arrives into a temp dir (named
/// by the blob digest: the chain id comes with the config, later); the caller checks both
/// digests before moving the layer into place.
struct LayerJob {
    store: store::Store,
    digest: String,
    compression: Compression,
    limits: UnpackLimits,
}

impl LayerJob {
    fn run(
        self,
        rx: tokio::sync::mpsc::Receiver<Piece>,
    ) -> Result<(TmpLayer, unpack::UnpackStats), PullError> {
        let store_err = |source| PullError::Store {
            digest: self.digest.clone(),
            source,
        };
        let tmp = TmpLayer {
            path: Some(self.store.layer_tmp(&self.digest).map_err(store_err)?),
        };
        let unpack_err = |source| PullError::Unpack {
            digest: self.digest.clone(),
            source,
        };
        let mut reader = ChannelReader {
            rx,
            current: Bytes::new(),
            ended: false,
            chunks: 0,
        };
        let result = unpack::extract_layer(
            &mut reader,
            self.compression,
            &tmp.path().join("fs"),
            &self.limits,
        )
        .map_err(unpack_err)
        .and_then(|stats| {
            // Drain what the unpacker did not need, so the blob writer sees it all.
            io::copy(&mut reader, &mut io::sink())
                .map_err(|e| unpack_err(UnpackError::Stream(e)))?;
            Ok(stats)
        });
        match result {
            Ok(stats) => Ok((tmp, stats)),
            Err(error) => {
                tmp.remove_now();
                Err(error)
            }
        }
    }
}

/// Reads the chunks of a download as a byte stream.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Piece>,
    current: Bytes,
    ended: bool,
    /// Chunks received so far (the crash tests die once the first one is unpacked).
    chunks: u32,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Piece::Data(bytes)) => {
                    // The extractor asks for more only once it has written the first chunk.
                    if self.chunks == 1 {
                        crate::fault::point("image.pull.layer_partly_unpacked");
                    }
                    self.chunks += 1;
                    self.current = bytes;
                }
                Some(Piece::End) => self.ended = true,
                None => return Err(io::Error::other("download stopped before its end")),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(os: &str, arch: &str, variant: Option<&str>, digest_byte: char) -> serde_json::Value {
        let mut platform = serde_json::json!({"os": os, "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        serde_json::json!({
            "mediaType": MEDIA_OCI_MANIFEST,
            "digest": format!("sha256:{}", digest_byte.to_string().repeat(64)),
            "size": 100,
            "platform": platform,
        })
    }

    fn manifest(media_type: &str, json: serde_json::Value) -> Manifest {
        let bytes = Bytes::from(serde_json::to_vec(&json).unwrap());
        Manifest {
            digest: store::sha256_digest(&bytes),
            bytes,
            media_type: media_type.into(),
        }
    }

    #[test]
    fn index_resolves_to_linux_amd64_skipping_attestations() {
        let mut attestation = entry("unknown", "unknown", None, 'd');
        attestation["annotations"] =
            serde_json::json!({"vnd.docker.reference.type": "attestation-manifest"});
        let index = manifest(
            MEDIA_OCI_INDEX,
            serde_json::json!({
                "schemaVersion": 2,
                "manifests": [
                    entry("linux", "arm64", Some("v8"), 'a'),
                    attestation,
                    entry("linux", "amd64", Some("v3"), 'e'),
                    entry("linux", "amd64", None, 'b'),
                    entry("windows", "amd64", None, 'c'),
                ]
            }),
        );
        let Parsed::Index(entries) = parse_manifest(&index).unwrap() else {
            panic!("an index")
        };
        assert_eq!(
            select_platform(&entries).unwrap().digest,
            format!("sha256:{}", "b".repeat(64))
        );
        // With only a variant entry, that one is taken.
        let only_variant =
            [serde_json::from_value(entry("linux", "amd64", Some("v2"), 'f')).unwrap()];
        assert!(select_platform(&only_variant).is_ok());
    }

    #[test]
    fn index_without_amd64_names_what_it_has() {
        let list = manifest(
            MEDIA_DOCKER_LIST,
            serde_json::json!({
                "schemaVersion": 2,
                "manifests": [entry("linux", "arm64", Some("v8"), 'a'), entry("linux", "s390x", None, 'b')]
            }),
        );
        let Parsed::Index(entries) = parse_manifest(&list).unwrap() else {
            panic!("an index")
        };
        let err = select_platform(&entries).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("linux/amd64"), "{text}");
        assert!(text.contains("linux/arm64/v8, linux/s390x"), "{text}");
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    }

    #[test]
    fn image_manifests_of_both_kinds_parse() {
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": format!("sha256:{}", "1".repeat(64)), "size": 5},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "digest": format!("sha256:{}", "2".repeat(64)), "size": 7}]
        });
        for media_type in [
            MEDIA_DOCKER_MANIFEST,
            MEDIA_OCI_MANIFEST,
            "application/json",
        ] {
            let Parsed::Image { config, layers } =
                parse_manifest(&manifest(media_type, doc.clone())).unwrap()
            else {
                panic!("an image manifest for {media_type}")
            };
            assert_eq!(config.size, 5);
            assert_eq!(layers.len(), 1);
        }
        let schema1 = manifest(
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            serde_json::json!({"schemaVersion": 1}),
        );
        assert!(matches!(
            parse_manifest(&schema1),
            Err(PullError::UnsupportedManifest(_))
        ));
        let garbage = Manifest {
            bytes: Bytes::from_static(b"not json"),
            media_type: MEDIA_OCI_MANIFEST.into(),
            digest: String::new(),
        };
        assert!(matches!(
            parse_manifest(&garbage),
            Err(PullError::BadManifest { .. })
        ));
    }

    #[test]
    fn endpoint_failures_choose_the_kind() {
        let attempt = |error| Attempt {
            endpoint: "http://x/v2".into(),
            error,
        };
        let not_found = || RegistryError::NotFound { url: "u".into() };
        let err = PullError::Endpoints {
            what: "w".into(),
            attempts: vec![attempt(not_found()), attempt(not_found())],
        };
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let err = PullError::Endpoints {
            what: "w".into(),
            attempts: vec![
                attempt(not_found()),
                attempt(RegistryError::Unauthorized {
                    url: "u".into(),
                    status: 401,
                }),
            ],
        };
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        let err = PullError::Endpoints {
            what: "w".into(),
            attempts: vec![attempt(RegistryError::Status {
                url: "u".into(),
                status: 500,
            })],
        };
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(
            err.to_string().contains("http://x/v2 (u: HTTP 500)"),
            "{err}"
        );
    }
}
