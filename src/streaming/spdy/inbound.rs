//! The inbound task: reads frames and applies them to the shared state.
//!
//! Reading pauses (and TCP pushes back on the peer) while a stream holds more unread data
//! than its receive window, or the session more than the session window. A flow-controlled
//! peer never gets there; the Go client, which ignores windows, gets the same head-of-line
//! back-pressure its own implementation applies. Memory stays bounded either way.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, ReadHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::SpdyError;
use super::config::PeerFlowControl;
use super::frame::{
    self, Data, Frame, GoAway, GoAwayStatus, Ping, RstStatus, RstStream, Settings, SynReply,
    SynStream, WindowUpdate,
};
use super::header::{HeaderDecompressor, Headers};
use super::state::{Reset, Shared, StreamState};
use super::stream::Stream;

const READ_CHUNK: usize = 256 * 1024;

struct Inbound {
    shared: Arc<Shared>,
    decompressor: HeaderDecompressor,
    accept: Option<mpsc::Sender<Stream>>,
}

pub(crate) async fn run<IO>(shared: Arc<Shared>, mut io: ReadHalf<IO>, accept: mpsc::Sender<Stream>)
where
    IO: AsyncRead + Unpin,
{
    let mut inbound = Inbound {
        decompressor: HeaderDecompressor::new(shared.config.max_header_block),
        shared: shared.clone(),
        accept: Some(accept),
    };
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut linger_until: Option<Instant> = None;
    let end = loop {
        let closed = shared.lock().closed.is_some();
        if closed {
            // After GOAWAY (ours or a connection error) input is read only to be dropped.
            buf.clear();
            inbound.accept = None;
            linger_until.get_or_insert_with(|| Instant::now() + shared.config.close_linger);
        } else if let Err(err) = inbound.dispatch_all(&mut buf).await {
            tracing::debug!(error = %err, "SPDY connection error, sending GOAWAY");
            connection_error(&shared, err);
            continue;
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let linger = async {
            match linger_until {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = io.read_buf(&mut buf) => match read {
                Ok(0) => break SpdyError::PeerClosed,
                Ok(_) => {}
                Err(err) => break SpdyError::Io(err),
            },
            _ = shared.closing.notified() => {}
            _ = linger => break SpdyError::Closed,
        }
    };
    drop(inbound);
    {
        let mut state = shared.lock();
        shared.fail(&mut state, end);
    }
    // Let the outbound task write what is queued (GOAWAY included), but not forever.
    let mut outbound_finished = shared.outbound_finished.subscribe();
    let wait = outbound_finished.wait_for(|done| *done);
    if tokio::time::timeout(shared.config.close_linger, wait)
        .await
        .is_err()
    {
        shared.stop_writing.notify_one();
    }
}

/// A malformed frame or header block: GOAWAY(PROTOCOL_ERROR), then the connection ends.
fn connection_error(shared: &Shared, err: SpdyError) {
    let mut state = shared.lock();
    if !state.goaway_sent {
        state.goaway_sent = true;
        let last_good_stream_id = state.last_peer_stream_id;
        state.queue(&Frame::GoAway(GoAway {
            last_good_stream_id,
            status: GoAwayStatus::PROTOCOL_ERROR,
        }));
    }
    shared.fail(&mut state, err);
}

impl Inbound {
    async fn dispatch_all(&mut self, buf: &mut BytesMut) -> Result<(), SpdyError> {
        while let Some(frame) = frame::decode(buf, &self.shared.config.limits)? {
            self.wait_for_outbound_room().await;
            self.dispatch(frame).await?;
        }
        Ok(())
    }

    /// Pauses reading while our replies pile up: DATA waits for room by itself, but a peer
    /// that sends PINGs (or frames for unknown streams) and never reads would otherwise make
    /// the answers grow without bound.
    async fn wait_for_outbound_room(&self) {
        let limit = 2 * self.shared.config.write_buffer;
        loop {
            let drained = self.shared.out_drained.notified();
            {
                let state = self.shared.lock();
                if state.out.len() <= limit || state.closed.is_some() {
                    return;
                }
            }
            drained.await;
        }
    }

    async fn dispatch(&mut self, frame: Frame) -> Result<(), SpdyError> {
        match frame {
            Frame::Data(f) => self.on_data(f).await,
            Frame::SynStream(f) => self.on_syn_stream(f).await,
            Frame::SynReply(f) => self.on_syn_reply(f),
            Frame::Headers(f) => {
                // Decoded only to keep the zlib context in step; nothing uses trailing headers.
                self.decompressor.decompress(&f.header_block)?;
                if f.fin {
                    self.remote_fin(f.stream_id);
                }
                Ok(())
            }
            Frame::RstStream(f) => {
                self.on_rst_stream(f);
                Ok(())
            }
            Frame::Settings(f) => {
                self.on_settings(f);
                Ok(())
            }
            Frame::Ping(f) => {
                self.on_ping(f);
                Ok(())
            }
            Frame::GoAway(f) => {
                self.on_goaway(f);
                Ok(())
            }
            Frame::WindowUpdate(f) => {
                self.on_window_update(f);
                Ok(())
            }
        }
    }

    /// Whether `id` names a stream that existed once (frames for it are late, not wrong).
    fn was_opened(&self, state: &super::state::State, id: u32) -> bool {
        if self.shared.is_peer_stream(id) {
            id <= state.last_peer_stream_id
        } else {
            id < state.next_stream_id
        }
    }

    async fn on_data(&mut self, f: Data) -> Result<(), SpdyError> {
        let shared = self.shared.clone();
        let len = f.data.len();
        {
            let mut state = shared.lock();
            state.session_buffered += len;
            let accepted = match state.streams.get_mut(&f.stream_id) {
                Some(stream) if stream.remote_fin && stream.reset.is_none() => {
                    state.queue_rst(f.stream_id, RstStatus::STREAM_ALREADY_CLOSED);
                    false
                }
                Some(stream) if stream.reader_alive && stream.reset.is_none() => {
                    stream.push_data(f.data);
                    stream.remote_fin |= f.fin;
                    if let Some(w) = stream.reader_waker.take() {
                        w.wake();
                    }
                    true
                }
                Some(_) => false,
                None => {
                    if !self.was_opened(&state, f.stream_id) {
                        state.queue_rst(f.stream_id, RstStatus::INVALID_STREAM);
                    }
                    false
                }
            };
            if !accepted {
                // Nobody will read it: give the window back at once.
                shared.credit(&mut state, Some(f.stream_id), len);
                shared.outbound_wake.notify_one();
                return Ok(());
            }
        }
        self.wait_for_readers(f.stream_id).await;
        Ok(())
    }

    /// Pauses reading while the peer has sent more than our windows allow and nobody reads.
    async fn wait_for_readers(&self, id: u32) {
        let config = &self.shared.config;
        loop {
            let consumed = self.shared.consumed.notified();
            {
                let state = self.shared.lock();
                let stream_over = state.streams.get(&id).is_some_and(|s| {
                    s.reader_alive
                        && s.reset.is_none()
                        && s.buffered > config.stream_receive_window as usize
                });
                let session_over = state.session_buffered > config.session_receive_window as usize;
                if state.closed.is_some() || !(stream_over || session_over) {
                    return;
                }
            }
            consumed.await;
        }
    }

    async fn on_syn_stream(&mut self, f: SynStream) -> Result<(), SpdyError> {
        // Always decompress first: the zlib context must see every block in order.
        let headers = self.decompressor.decompress(&f.header_block)?;
        let shared = self.shared.clone();
        let id = f.stream_id;
        {
            let mut state = shared.lock();
            if !shared.is_peer_stream(id) || id <= state.last_peer_stream_id {
                let status = if state.streams.contains_key(&id) {
                    RstStatus::STREAM_IN_USE
                } else {
                    RstStatus::PROTOCOL_ERROR
                };
                state.queue_rst(id, status);
                shared.outbound_wake.notify_one();
                return Ok(());
            }
            state.last_peer_stream_id = id;
            let refused =
                state.goaway_sent || self.accept.as_ref().is_none_or(mpsc::Sender::is_closed);
            if refused {
                state.queue_rst(id, RstStatus::REFUSED_STREAM);
                shared.outbound_wake.notify_one();
                return Ok(());
            }
            let send_window = state.peer_initial_window;
            state
                .streams
                .insert(id, StreamState::new(send_window, f.fin, f.unidirectional));
            if !f.unidirectional {
                let header_block = state.compressor.compress(&Headers::new())?;
                state.queue(&Frame::SynReply(SynReply {
                    stream_id: id,
                    fin: false,
                    header_block,
                }));
            }
            shared.outbound_wake.notify_one();
        }
        let stream = Stream::new(shared.clone(), id, headers);
        let Some(accept) = &self.accept else {
            return Ok(());
        };
        // A full backlog pauses reading, but must not keep a closing connection alive.
        tokio::select! {
            sent = accept.send(stream) => {
                if sent.is_err() {
                    self.accept = None;
                }
            }
            _ = shared.closing.notified() => {}
        }
        Ok(())
    }

    fn on_syn_reply(&mut self, f: SynReply) -> Result<(), SpdyError> {
        let headers = self.decompressor.decompress(&f.header_block)?;
        let mut state = self.shared.lock();
        let opened = self.was_opened(&state, f.stream_id);
        match state.streams.get_mut(&f.stream_id) {
            Some(stream) => {
                stream.remote_fin |= f.fin;
                if let Some(reply) = stream.reply.take() {
                    let _ = reply.send(Ok(headers));
                }
                stream.wake();
            }
            None if !opened => {
                state.queue_rst(f.stream_id, RstStatus::INVALID_STREAM);
                self.shared.outbound_wake.notify_one();
            }
            None => {}
        }
        Ok(())
    }

    fn remote_fin(&self, id: u32) {
        let mut state = self.shared.lock();
        if let Some(stream) = state.streams.get_mut(&id) {
            stream.remote_fin = true;
            stream.wake();
        }
    }

    fn on_rst_stream(&mut self, f: RstStream) {
        let mut state = self.shared.lock();
        if let Some(stream) = state.streams.get_mut(&f.stream_id) {
            stream.reset.get_or_insert(Reset {
                status: f.status,
                by_peer: true,
            });
            if let Some(reply) = stream.reply.take() {
                let _ = reply.send(Err(SpdyError::StreamReset {
                    id: f.stream_id,
                    status: f.status,
                }));
            }
            stream.wake();
        }
        // The map entry stays until both handles are dropped; buffered data stays readable.
    }

    fn on_settings(&mut self, f: Settings) {
        let mut state = self.shared.lock();
        for setting in f.entries {
            if setting.id == frame::SETTINGS_INITIAL_WINDOW_SIZE {
                let new = i64::from(setting.value.min(frame::MAX_WINDOW));
                let delta = new - state.peer_initial_window;
                state.peer_initial_window = new;
                // SPDY/3.1 §2.6.4: the change applies to the windows of open streams too.
                for stream in state.streams.values_mut() {
                    stream.send_window += delta;
                }
                if self.shared.config.peer_flow_control == PeerFlowControl::Auto {
                    state.enforce_peer_windows = true;
                }
            }
        }
        state.wake_writers();
    }

    fn on_ping(&mut self, f: Ping) {
        let mut state = self.shared.lock();
        // Ping ids follow the stream id parity of their sender.
        let ours = !self.shared.is_peer_stream(f.id);
        if ours {
            if let Some(waiter) = state.pings.remove(&f.id) {
                let _ = waiter.send(());
            }
        } else {
            state.queue(&Frame::Ping(f));
            self.shared.outbound_wake.notify_one();
        }
    }

    fn on_goaway(&mut self, f: GoAway) {
        let mut state = self.shared.lock();
        state.goaway_received = Some(f.last_good_stream_id);
        // Streams we opened above the last one the peer took were never processed.
        let shared = &self.shared;
        for (id, stream) in state.streams.iter_mut() {
            if !shared.is_peer_stream(*id) && *id > f.last_good_stream_id {
                stream.reset.get_or_insert(Reset {
                    status: RstStatus::REFUSED_STREAM,
                    by_peer: true,
                });
                if let Some(reply) = stream.reply.take() {
                    let _ = reply.send(Err(SpdyError::GoneAway));
                }
                stream.wake();
            }
        }
    }

    fn on_window_update(&mut self, f: WindowUpdate) {
        let mut state = self.shared.lock();
        let delta = i64::from(f.delta);
        let max = i64::from(frame::MAX_WINDOW);
        if f.stream_id == 0 {
            state.session_send_window = (state.session_send_window + delta).min(max);
        } else if let Some(stream) = state.streams.get_mut(&f.stream_id) {
            stream.send_window = (stream.send_window + delta).min(max);
        }
        if self.shared.config.peer_flow_control == PeerFlowControl::Auto {
            state.enforce_peer_windows = true;
        }
        state.wake_writers();
    }
}
