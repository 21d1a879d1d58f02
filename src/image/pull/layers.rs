//! Layers: each streamed at once into the content store and the unpacker, verified by
//! digest and diff id, committed under its chain id.

use std::io::{self, Read, Write as _};
use std::sync::Arc;

use bytes::{Buf as _, Bytes};
use futures_util::StreamExt as _;

use super::endpoint::*;
use super::error::PullError;
use super::manifest::Descriptor;
use crate::image::hosts::Endpoint;
use crate::image::inner::{Inner, lock};
use crate::image::store::{self, BlobWriter, LayerInfo, StoreError};
use crate::image::unpack::{self, Compression, UnpackError, UnpackLimits};

/// Chunks buffered between the download and the unpacker of one layer.
const CHANNEL_CHUNKS: usize = 32;

/// The diff_ids and chain ids of an image's layers, from its config.
pub(super) struct LayerIds {
    pub(super) diff_ids: Vec<String>,
    pub(super) chain_ids: Vec<String>,
}

/// One layer of a pull: its place in the image, the config's ids once they are known, and
/// the signal that another part of the pull failed.
pub(super) struct LayerTask<'a> {
    pub(super) index: usize,
    pub(super) layer: &'a Descriptor,
    pub(super) ids: tokio::sync::watch::Receiver<Option<Arc<LayerIds>>>,
    pub(super) cancelled: tokio::sync::watch::Receiver<bool>,
}

impl LayerTask<'_> {
    /// This layer's (diff_id, chain id), once the config is in; `Cancelled` when the pull
    /// failed first (the config's own error is reported by the pull).
    pub(super) async fn ids(&mut self) -> Result<(String, String), PullError> {
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
pub(super) async fn key_lock(inner: &Inner, key: String) -> tokio::sync::OwnedMutexGuard<()> {
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
pub(super) async fn fetch_layer(
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
pub(super) struct Unpacked {
    pub(super) tmp: TmpLayer,
    pub(super) stats: unpack::UnpackStats,
    pub(super) blob: BlobWriter,
}

impl Unpacked {
    pub(super) async fn discard(self) {
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
pub(super) struct TmpLayer {
    pub(super) path: Option<std::path::PathBuf>,
}

impl TmpLayer {
    pub(super) fn path(&self) -> &std::path::Path {
        self.path.as_deref().unwrap_or(std::path::Path::new(""))
    }
    pub(super) fn remove_now(mut self) {
        if let Some(path) = self.path.take() {
            remove_failed_layer(&path);
        }
    }
    /// Renamed into place (or already removed by the store): nothing left to clean up.
    pub(super) fn forget(mut self) {
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
pub(super) async fn finish_layer(
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
pub(super) async fn download_layer(
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

pub(super) fn remove_failed_layer(tmp: &std::path::Path) {
    if let Err(e) = unpack::remove_layer_dir(tmp) {
        tracing::warn!(path = %tmp.display(), error = %e, "removing a failed layer");
    }
}

/// Writes the compressed stream into the ingest area, hashing it; `None` when the download
/// ended before its end marker.
pub(super) fn write_blob(
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

pub(super) enum Piece {
    Data(Bytes),
    End,
}

/// The decompressing half of a layer download: unpack what arrives into a temp dir (named
/// by the blob digest: the chain id comes with the config, later); the caller checks both
/// digests before moving the layer into place.
pub(super) struct LayerJob {
    pub(super) store: store::Store,
    pub(super) digest: String,
    pub(super) compression: Compression,
    pub(super) limits: UnpackLimits,
}

impl LayerJob {
    pub(super) fn run(
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
pub(super) struct ChannelReader {
    pub(super) rx: tokio::sync::mpsc::Receiver<Piece>,
    pub(super) current: Bytes,
    pub(super) ended: bool,
    /// Chunks received so far (the crash tests die once the first one is unpacked).
    pub(super) chunks: u32,
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
