//! The Events stream: each process exit, pushed to the daemon as it becomes final. A new
//! subscriber first gets the exits the table still holds, so an exit is never lost to a
//! daemon that was away, restarted, or reconnected; one that lags gets them again.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use super::shared::Shared;
use crate::shim_api::ProcessEvent;

/// Events queued toward the daemon before the sender waits.
const EVENT_QUEUE: usize = 16;

pub(super) type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ProcessEvent, Status>> + Send + 'static>>;

impl Shared {
    pub(super) fn exit_events(self: &Arc<Self>) -> EventStream {
        // Subscribed before the snapshot: an exit between the two may come twice, it is never lost.
        let mut exits = self.subscribe_exits();
        let replay = self.exited();
        let mut stopping = self.stopping.subscribe();
        let (sender, receiver) = mpsc::channel(EVENT_QUEUE);
        let shared = self.clone();
        tokio::spawn(async move {
            let mut pending = replay;
            loop {
                for event in pending.drain(..) {
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    // Exits already sent out go before the end of the stream.
                    biased;
                    exit = exits.recv() => match exit {
                        Ok(event) => pending.push(event),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "an events subscriber fell behind; sending every exit again");
                            pending = shared.exited();
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = stopping.wait_for(|stopping| *stopping) => return,
                    () = sender.closed() => return,
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
    }
}
