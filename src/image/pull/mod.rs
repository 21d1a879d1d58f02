//! The pull pipeline: resolve endpoints → manifest (index → linux/amd64) → config and
//! layers at once (a layer needs the config's diff_id and chain id only to be checked and
//! committed), each layer streamed at once into the content store (hashing the compressed
//! bytes) and into the unpacker (which hashes the uncompressed ones), so download, verify and
//! unpack overlap → one syncfs → image record written last.

mod endpoint;
mod error;
mod layers;
mod manifest;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use futures_util::StreamExt as _;

use crate::image::hosts::{self, Endpoint};
use crate::image::inner::Inner;
use crate::image::reference::{Reference, validate_digest};
use crate::image::registry::RegistryAuth;
use crate::image::store::{self, ImageRecord};
use endpoint::*;
pub use error::PullError;
use error::error_chain;
use layers::*;
use manifest::*;

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
    // Tests hold a pull here to abandon it in flight (a no-op otherwise).
    crate::fault::hold("image.pull.after_layers_committed").await;
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
