//! Stream handles: a reader (tokio `AsyncRead`) and a writer (tokio `AsyncWrite`) per stream.
//!
//! The reader returns EOF after the peer's FIN, and an error after a reset or the loss of the
//! connection (data that arrived before either is still read first). Reading gives the
//! consumed bytes back to the peer's windows (WINDOW_UPDATE). The writer cuts writes into
//! DATA frames of at most `max_data_frame` bytes, waits for the peer's windows when they are
//! enforced and for room in the outgoing buffer; `shutdown` sends an empty DATA frame with FIN.
//! Dropping the writer alone does not end our side (the Go client reacts to a FIN on its
//! stdin stream by closing its stdin); dropping both handles sends the FIN if `shutdown` did
//! not, and releases the stream (later data from the peer is dropped).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::SpdyError;
use super::frame::RstStatus;
use super::header::Headers;
use super::state::{Reset, Shared, State, StreamState};

/// A stream: its id, the headers of its SYN_STREAM, and its two halves.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Stream {
    pub(crate) fn new(shared: Arc<Shared>, id: u32, headers: Headers) -> Stream {
        Stream {
            id,
            headers,
            reader: StreamReader {
                shared: shared.clone(),
                id,
            },
            writer: StreamWriter { shared, id },
        }
    }
}

pub struct StreamReader {
    shared: Arc<Shared>,
    id: u32,
}

pub struct StreamWriter {
    shared: Arc<Shared>,
    id: u32,
}

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamReader({})", self.id)
    }
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamWriter({})", self.id)
    }
}

fn io_error(err: SpdyError) -> io::Error {
    let kind = match &err {
        SpdyError::StreamReset { .. } => io::ErrorKind::ConnectionReset,
        _ => io::ErrorKind::ConnectionAborted,
    };
    io::Error::new(kind, err)
}

/// Why a stream can no longer be used, if it cannot.
fn stream_error(state: &State, id: u32, stream: &StreamState) -> Option<SpdyError> {
    if let Some(reset) = stream.reset {
        return Some(if reset.by_peer {
            SpdyError::StreamReset {
                id,
                status: reset.status,
            }
        } else {
            SpdyError::StreamResetLocally { id }
        });
    }
    state
        .closed
        .as_ref()
        .map(|reason| SpdyError::ConnectionLost(reason.clone()))
}

/// Resets stream `id` (RST_STREAM with `status`): both halves fail from then on.
fn reset_stream(shared: &Shared, id: u32, status: RstStatus) {
    let mut state = shared.lock();
    let closed = state.closed.is_some();
    let Some(stream) = state.streams.get_mut(&id) else {
        return;
    };
    if stream.reset.is_some() {
        return;
    }
    stream.reset = Some(Reset {
        status,
        by_peer: false,
    });
    let dropped = stream.discard_buffered();
    stream.wake();
    if !closed {
        state.queue_rst(id, status);
        shared.outbound_wake.notify_one();
    }
    shared.credit(&mut state, None, dropped);
}

impl StreamReader {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The next buffered chunk as it arrived, without copying; `None` at the peer's FIN.
    pub async fn read_chunk(&mut self) -> io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        let mut state = self.shared.lock();
        let state = &mut *state;
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(None));
        };
        if let Some(chunk) = stream.take_chunk() {
            let n = chunk.len();
            self.shared.credit(state, Some(self.id), n);
            return Poll::Ready(Ok(Some(chunk)));
        }
        self.poll_end(state, cx).map(|r| r.map(|()| None))
    }

    /// Nothing buffered: EOF, an error, or wait.
    fn poll_end(&self, state: &mut State, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(stream) = state.streams.get(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        // After the peer's FIN everything was delivered: a later reset or connection loss
        // (the Go client resets every stream when it closes) does not turn EOF into an error.
        if stream.remote_fin && stream.reset.is_none_or(|r| r.by_peer) {
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = stream_error(state, self.id, stream) {
            return Poll::Ready(Err(io_error(err)));
        }
        if let Some(stream) = state.streams.get_mut(&self.id) {
            stream.reader_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Resets the stream (RST_STREAM); both halves fail from then on.
    pub fn reset(&self, status: RstStatus) {
        reset_stream(&self.shared, self.id, status);
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut state = this.shared.lock();
        let state = &mut *state;
        let Some(stream) = state.streams.get_mut(&this.id) else {
            return Poll::Ready(Ok(()));
        };
        if stream.buffered > 0 {
            let n = stream.copy_out(buf.initialize_unfilled());
            buf.advance(n);
            this.shared.credit(state, Some(this.id), n);
            return Poll::Ready(Ok(()));
        }
        this.poll_end(state, cx)
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return;
        };
        stream.reader_alive = false;
        let dropped = stream.discard_buffered();
        self.shared.credit(&mut state, Some(self.id), dropped);
        self.shared.forget_if_unused(&mut state, self.id);
    }
}

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Resets the stream (RST_STREAM); both halves fail from then on.
    pub fn reset(&self, status: RstStatus) {
        reset_stream(&self.shared, self.id, status);
    }

    /// Ready once every frame this writer queued has been written to the connection.
    fn poll_flushed(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.shared.lock();
        let written = state.written_total;
        let closed = state.closed.clone();
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        if written >= stream.last_enqueued {
            return Poll::Ready(Ok(()));
        }
        if let Some(reason) = closed {
            return Poll::Ready(Err(io_error(SpdyError::ConnectionLost(reason))));
        }
        stream.writer_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let config = &this.shared.config;
        let mut state = this.shared.lock();
        let state = &mut *state;
        let Some(stream) = state.streams.get(&this.id) else {
            return Poll::Ready(Err(io_error(SpdyError::StreamClosed { id: this.id })));
        };
        if let Some(err) = stream_error(state, this.id, stream) {
            return Poll::Ready(Err(io_error(err)));
        }
        if stream.local_fin {
            return Poll::Ready(Err(io_error(SpdyError::StreamClosed { id: this.id })));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut n = buf.len().min(config.max_data_frame).min(frame_max());
        let room = state.out.len() < config.write_buffer;
        if room && state.enforce_peer_windows {
            let window = stream.send_window.min(state.session_send_window);
            n = n.min(usize::try_from(window.max(0)).unwrap_or(0));
        }
        if !room || n == 0 {
            if let Some(stream) = state.streams.get_mut(&this.id) {
                stream.writer_waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        state.queue_data(this.id, false, &buf[..n]);
        state.session_send_window -= n as i64;
        let enqueued = state.enqueued_total;
        if let Some(stream) = state.streams.get_mut(&this.id) {
            stream.send_window -= n as i64;
            stream.last_enqueued = enqueued;
        }
        this.shared.outbound_wake.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flushed(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        {
            let mut state = this.shared.lock();
            let state = &mut *state;
            let Some(stream) = state.streams.get(&this.id) else {
                return Poll::Ready(Ok(()));
            };
            if !stream.local_fin {
                if let Some(err) = stream_error(state, this.id, stream) {
                    return Poll::Ready(Err(io_error(err)));
                }
                state.queue_data(this.id, true, &[]);
                let enqueued = state.enqueued_total;
                if let Some(stream) = state.streams.get_mut(&this.id) {
                    stream.local_fin = true;
                    stream.last_enqueued = enqueued;
                }
                this.shared.outbound_wake.notify_one();
            }
        }
        this.poll_flushed(cx)
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return;
        };
        // No FIN here: the Go client closes its stdin when the server closes the stdin
        // stream, so a server that drops the writer of a stream it never writes to must not
        // end the stream. The FIN goes out once the reader is gone too.
        stream.writer_alive = false;
        self.shared.forget_if_unused(&mut state, self.id);
    }
}

/// DATA payloads never exceed what the 24-bit length can say.
fn frame_max() -> usize {
    super::frame::MAX_PAYLOAD_LEN
}
