//! One SPDY/3.1 connection: the public handle and its two tasks (its settings: `config`).
//!
//! `inbound` reads and dispatches frames, `outbound` writes what the handles queue. Both roles
//! behave the same except for stream and ping id parity: a server opens even streams and
//! accepts odd ones, a client the reverse. Every SYN_STREAM that is accepted is answered with
//! an empty SYN_REPLY before the stream is handed out (as the kubelet's Go server does).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use super::SpdyError;
use super::config::{Role, SessionConfig};
use super::frame::{self, Frame, GoAway, GoAwayStatus, Ping, Setting, Settings, SynStream};
use super::header::Headers;
use super::state::{Shared, StreamState};
use super::stream::Stream;
use super::{inbound, outbound};

/// A SPDY connection. Cheap to clone; when the last clone is dropped the connection is
/// closed as by [`Session::close`] (streams still held then fail).
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
    _close_on_drop: Arc<CloseOnDrop>,
}

struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        request_close(&self.0, GoAwayStatus::OK);
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.shared.role)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Runs the server side of a connection whose HTTP upgrade is done. Streams the peer
    /// opens arrive on the receiver, already answered with SYN_REPLY.
    pub fn server<IO>(io: IO, config: SessionConfig) -> (Session, mpsc::Receiver<Stream>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::start(Role::Server, io, config)
    }

    /// Runs the client side (used by tests and tools that talk to the streaming server).
    pub fn client<IO>(io: IO, config: SessionConfig) -> (Session, mpsc::Receiver<Stream>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::start(Role::Client, io, config)
    }

    fn start<IO>(role: Role, io: IO, config: SessionConfig) -> (Session, mpsc::Receiver<Stream>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (accept_tx, accept_rx) = mpsc::channel(config.accept_backlog.max(1));
        let shared = Shared::new(role, config);
        advertise_windows(&shared);
        let (read_half, write_half) = tokio::io::split(io);
        let outbound = tokio::spawn(outbound::run(shared.clone(), write_half));
        let inbound = tokio::spawn(inbound::run(shared.clone(), read_half, accept_tx));
        let watcher = shared.clone();
        tokio::spawn(async move {
            let _ = outbound.await;
            let _ = inbound.await;
            let _ = watcher.finished.send_replace(true);
        });
        let session = Session {
            _close_on_drop: Arc::new(CloseOnDrop(shared.clone())),
            shared,
        };
        (session, accept_rx)
    }

    pub fn role(&self) -> Role {
        self.shared.role
    }

    /// Opens a stream and waits for the peer's SYN_REPLY. With `fin`, we send nothing on it
    /// (our side is closed from the start).
    pub async fn open_stream(&self, headers: Headers, fin: bool) -> Result<Stream, SpdyError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let id = {
            let mut state = self.shared.lock();
            if let Some(reason) = &state.closed {
                return Err(SpdyError::ConnectionLost(reason.clone()));
            }
            if state.goaway_received.is_some() || state.goaway_sent {
                return Err(SpdyError::GoneAway);
            }
            let id = state.next_stream_id;
            if id > frame::MAX_STREAM_ID {
                return Err(SpdyError::StreamIdsExhausted);
            }
            // Compressed under the lock: header blocks must reach the wire in compression order.
            let header_block = state.compressor.compress(&headers)?;
            state.next_stream_id += 2;
            state.queue(&Frame::SynStream(SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                fin,
                unidirectional: false,
                header_block,
            }));
            let mut stream = StreamState::new(state.peer_initial_window, false, fin);
            stream.reply = Some(reply_tx);
            state.streams.insert(id, stream);
            id
        };
        self.shared.outbound_wake.notify_one();
        // Built before waiting so that dropping this future releases the stream.
        let stream = Stream::new(self.shared.clone(), id, headers);
        match reply_rx.await {
            Ok(Ok(_reply_headers)) => Ok(stream),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(SpdyError::ConnectionLost(Arc::new(SpdyError::Closed))),
        }
    }

    /// Sends a PING and waits for its echo; returns the round trip time.
    pub async fn ping(&self) -> Result<Duration, SpdyError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if let Some(reason) = &state.closed {
                return Err(SpdyError::ConnectionLost(reason.clone()));
            }
            let id = state.next_ping_id;
            // Ids keep the parity of our role; 0 is not a valid id.
            state.next_ping_id = match state.next_ping_id.wrapping_add(2) {
                0 => 2,
                next => next,
            };
            state.pings.insert(id, tx);
            state.queue(&Frame::Ping(Ping { id }));
        }
        self.shared.outbound_wake.notify_one();
        let start = Instant::now();
        rx.await
            .map(|()| start.elapsed())
            .map_err(|_| SpdyError::ConnectionLost(Arc::new(SpdyError::Closed)))
    }

    /// Sends GOAWAY, writes everything already queued, shuts the write side down and ends
    /// every stream. Returns once the queued frames are written (or the connection is gone).
    pub async fn close(&self) {
        request_close(&self.shared, GoAwayStatus::OK);
        // The outbound task ends once everything queued is written, or the write failed, or
        // the peer stopped taking data for `close_linger`.
        let mut outbound_finished = self.shared.outbound_finished.subscribe();
        let _ = outbound_finished.wait_for(|done| *done).await;
    }

    /// Resolves when the connection is gone, whichever side ended it.
    pub async fn closed(&self) {
        let mut finished = self.shared.finished.subscribe();
        while !*finished.borrow_and_update() {
            if finished.changed().await.is_err() {
                return;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn shared_for_tests(&self) -> &Shared {
        &self.shared
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<Arc<SpdyError>> {
        self.shared.lock().closed.clone()
    }
}

/// Queues GOAWAY (once) and marks the connection closed by us.
pub(crate) fn request_close(shared: &Shared, status: GoAwayStatus) {
    let mut state = shared.lock();
    if !state.goaway_sent && state.closed.is_none() {
        state.goaway_sent = true;
        let last_good_stream_id = state.last_peer_stream_id;
        state.queue(&Frame::GoAway(GoAway {
            last_good_stream_id,
            status,
        }));
    }
    shared.fail(&mut state, SpdyError::Closed);
}

/// Tells the peer how much it may send: our per-stream window through SETTINGS and the
/// session window through a WINDOW_UPDATE on stream 0. The Go client parses and ignores both.
fn advertise_windows(shared: &Shared) {
    let config = &shared.config;
    let mut state = shared.lock();
    let stream_window = config.stream_receive_window.clamp(1, frame::MAX_WINDOW);
    if stream_window != frame::DEFAULT_INITIAL_WINDOW {
        state.queue(&Frame::Settings(Settings {
            clear: false,
            entries: vec![Setting {
                flags: 0,
                id: frame::SETTINGS_INITIAL_WINDOW_SIZE,
                value: stream_window,
            }],
        }));
    }
    let session_window = config.session_receive_window.min(frame::MAX_WINDOW);
    if session_window > frame::DEFAULT_INITIAL_WINDOW {
        state.queue(&Frame::WindowUpdate(frame::WindowUpdate {
            stream_id: 0,
            delta: session_window - frame::DEFAULT_INITIAL_WINDOW,
        }));
    }
}
