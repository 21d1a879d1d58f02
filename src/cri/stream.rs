//! The Stream* RPCs: the same items as their List twins, sent in messages that each stay
//! far below the 16 MiB gRPC limit however many items there are.
//!
//! The response is a lazy stream owned by tonic: items are converted one batch at a time
//! as the client reads, and when the client goes away tonic drops the stream, and with it
//! everything not yet sent. No task is spawned, so none can be left behind.

use std::future::Future;
use std::pin::Pin;

use futures_util::StreamExt;
use tonic::Status;

/// A server-streaming response.
pub type ResponseStream<T> =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Items converted per batch (stats sample this many records at once).
pub const BATCH_ITEMS: usize = 128;
/// A message is closed once its items' encoded size reaches this (one item larger than
/// it still travels alone, as it would in the List answer).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Streams `items`, converted `BATCH_ITEMS` at a time by `convert`, each converted batch
/// split by encoded size and wrapped into a response by `wrap`.
pub fn batched<D, T, R, F, Fut>(
    items: Vec<D>,
    convert: F,
    wrap: fn(Vec<T>) -> R,
) -> ResponseStream<R>
where
    D: Send + 'static,
    T: prost::Message + Send + 'static,
    R: Send + 'static,
    F: FnMut(Vec<D>) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<T>> + Send + 'static,
{
    let mut items = items.into_iter();
    let batches = std::iter::from_fn(move || {
        let batch: Vec<D> = items.by_ref().take(BATCH_ITEMS).collect();
        (!batch.is_empty()).then_some(batch)
    });
    Box::pin(
        futures_util::stream::iter(batches)
            .then(convert)
            .flat_map(move |converted| {
                futures_util::stream::iter(
                    by_size(converted).map(move |c| Ok::<_, Status>(wrap(c))),
                )
            }),
    )
}

/// Streams `items` converted one by one (the cheap, synchronous lists).
pub fn converted<D, T, R>(
    items: Vec<D>,
    convert: impl Fn(D) -> T + Send + Sync + Copy + 'static,
    wrap: fn(Vec<T>) -> R,
) -> ResponseStream<R>
where
    D: Send + 'static,
    T: prost::Message + Send + 'static,
    R: Send + 'static,
{
    batched(
        items,
        move |batch| std::future::ready(batch.into_iter().map(convert).collect()),
        wrap,
    )
}

/// Splits `items` into runs of at most `CHUNK_BYTES` encoded bytes (at least one item each).
fn by_size<T: prost::Message>(items: Vec<T>) -> impl Iterator<Item = Vec<T>> {
    let mut items = items.into_iter().peekable();
    std::iter::from_fn(move || {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        while let Some(next) = items.peek() {
            let len = next.encoded_len();
            if !chunk.is_empty() && bytes + len > CHUNK_BYTES {
                break;
            }
            bytes += len;
            chunk.extend(items.next());
        }
        (!chunk.is_empty()).then_some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::api as cri;

    fn container(id: usize, annotation_bytes: usize) -> cri::Container {
        cri::Container {
            id: format!("c{id}"),
            annotations: [("big".to_string(), "x".repeat(annotation_bytes))].into(),
            ..Default::default()
        }
    }

    async fn collect(stream: ResponseStream<cri::StreamContainersResponse>) -> Vec<usize> {
        stream.map(|r| r.unwrap().containers.len()).collect().await
    }

    #[tokio::test]
    async fn every_item_arrives_once_in_order_in_batches() {
        let items: Vec<usize> = (0..300).collect();
        let stream = converted(
            items,
            |i| container(i, 0),
            |containers| cri::StreamContainersResponse { containers },
        );
        let ids: Vec<String> = stream
            .flat_map(|r| futures_util::stream::iter(r.unwrap().containers))
            .map(|c| c.id)
            .collect()
            .await;
        assert_eq!(ids, (0..300).map(|i| format!("c{i}")).collect::<Vec<_>>());
        let sizes = collect(converted(
            (0..300).collect(),
            |i| container(i, 0),
            |containers| cri::StreamContainersResponse { containers },
        ))
        .await;
        assert_eq!(sizes, vec![128, 128, 44]);
    }

    #[tokio::test]
    async fn large_items_split_a_batch_so_no_message_nears_the_grpc_limit() {
        // 128 items of 256 KiB annotations (the Kubernetes cap per object) would be 32 MiB
        // in one message.
        let stream = converted(
            (0..128).collect(),
            |i| container(i, 256 << 10),
            |containers| cri::StreamContainersResponse { containers },
        );
        let sizes = collect(stream).await;
        assert_eq!(sizes.iter().sum::<usize>(), 128);
        assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
    }

    #[tokio::test]
    async fn no_items_is_an_empty_stream() {
        let stream = converted(
            Vec::<usize>::new(),
            |i| container(i, 0),
            |containers| cri::StreamContainersResponse { containers },
        );
        assert!(collect(stream).await.is_empty());
    }
}
