//! The outbound task: writes whatever frames are queued, in batches.
//!
//! It swaps the shared buffer with its own empty one under the lock, then writes the batch
//! without holding it, so handles keep queueing while a batch is on its way (two buffers,
//! no allocation in steady state).

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt, WriteHalf};

use super::SpdyError;
use super::state::Shared;

pub(crate) async fn run<IO>(shared: Arc<Shared>, mut io: WriteHalf<IO>)
where
    IO: AsyncWrite + Unpin,
{
    let mut batch = BytesMut::with_capacity(shared.config.write_buffer + 64 * 1024);
    loop {
        {
            let mut state = shared.lock();
            if !state.out.is_empty() {
                std::mem::swap(&mut state.out, &mut batch);
            } else if state.close_requested {
                break;
            }
        }
        if batch.is_empty() {
            tokio::select! {
                _ = shared.outbound_wake.notified() => continue,
                _ = shared.stop_writing.notified() => break,
            }
        }
        let written = tokio::select! {
            result = write_batch(&mut io, &batch) => result,
            _ = shared.stop_writing.notified() => break,
        };
        let mut state = shared.lock();
        match written {
            Ok(()) => {
                state.written_total += batch.len() as u64;
                batch.clear();
                state.wake_writers();
                shared.out_drained.notify_one();
            }
            Err(err) => {
                shared.fail(&mut state, SpdyError::Io(err));
                break;
            }
        }
    }
    // Our FIN on the TCP connection; the peer reads GOAWAY (if any) and then EOF.
    let _ = tokio::time::timeout(shared.config.close_linger, io.shutdown()).await;
    let _ = shared.outbound_finished.send_replace(true);
}

async fn write_batch<IO: AsyncWrite + Unpin>(
    io: &mut WriteHalf<IO>,
    batch: &[u8],
) -> std::io::Result<()> {
    io.write_all(batch).await?;
    io.flush().await
}
