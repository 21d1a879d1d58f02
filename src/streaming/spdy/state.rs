//! The state one SPDY connection shares between its two tasks and its stream handles, behind
//! one mutex (critical sections are short: map lookups, window arithmetic, a memcpy into the
//! outgoing buffer). Nothing awaits while holding it.
//!
//! Outgoing frames are encoded straight into `State::out`, in the order they are queued, so
//! header blocks are compressed in wire order; the outbound task swaps the buffer out and
//! writes it. DATA waits while `out` holds `write_buffer` bytes or more, which bounds memory
//! when the peer does not read (TCP pushes back on the outbound task).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::{Notify, oneshot, watch};

use super::SpdyError;
use super::config::{PeerFlowControl, Role, SessionConfig};
use super::frame::{self, Frame, RstStatus, RstStream, WindowUpdate};
use super::header::{HeaderCompressor, Headers};

/// Frames smaller than this are copied into a stream's tail buffer instead of being queued as
/// their own `Bytes`, so a peer sending 1-byte frames cannot make the queue cost more than
/// the window it fills.
const SMALL_CHUNK: usize = 4096;

pub(crate) struct Shared {
    pub role: Role,
    pub config: SessionConfig,
    state: Mutex<State>,
    /// Wakes the outbound task when `out` gets bytes or a close is requested.
    pub outbound_wake: Notify,
    /// Wakes the inbound task when a reader consumed data it was waiting on.
    pub consumed: Notify,
    /// Tells the inbound task the connection is closing: it reads on (discarding) for at
    /// most `close_linger`, then stops.
    pub closing: Notify,
    /// Tells the outbound task to give up on a write the peer is not taking.
    pub stop_writing: Notify,
    /// Signalled by the outbound task after each batch it wrote.
    pub out_drained: Notify,
    /// Becomes true when the outbound task has ended.
    pub outbound_finished: watch::Sender<bool>,
    /// Becomes true when both tasks have ended.
    pub finished: watch::Sender<bool>,
}

pub(crate) struct State {
    pub streams: HashMap<u32, StreamState>,
    /// Next id for a stream we open (odd for clients, even for servers).
    pub next_stream_id: u32,
    /// Highest id of a stream the peer opened.
    pub last_peer_stream_id: u32,
    pub next_ping_id: u32,
    pub pings: HashMap<u32, oneshot::Sender<()>>,

    /// Encoded frames waiting for the outbound task.
    pub out: BytesMut,
    pub compressor: HeaderCompressor,
    /// Bytes queued and bytes written since the start, to tell a writer when its frames left.
    pub enqueued_total: u64,
    pub written_total: u64,

    /// What we may still send on the session (SPDY/3.1 session window).
    pub session_send_window: i64,
    /// The peer's SETTINGS_INITIAL_WINDOW_SIZE, for the send window of new streams.
    pub peer_initial_window: i64,
    /// Whether writers wait for the peer's windows. The Go client never sends WINDOW_UPDATE,
    /// so under `PeerFlowControl::Auto` this turns on only once the peer shows it does flow
    /// control (a WINDOW_UPDATE or SETTINGS_INITIAL_WINDOW_SIZE).
    pub enforce_peer_windows: bool,
    /// Data received on the session and not yet read (or discarded).
    pub session_buffered: usize,
    /// Data consumed and not yet given back to the peer with a session WINDOW_UPDATE.
    pub session_recv_unacked: u32,

    pub goaway_sent: bool,
    pub goaway_received: Option<u32>,
    /// The outbound task writes what is queued, shuts the write side down and ends.
    pub close_requested: bool,
    /// Why the connection ended; every stream operation fails with it from then on.
    pub closed: Option<Arc<SpdyError>>,
}

pub(crate) struct StreamState {
    // receiving
    pub recv: VecDeque<Bytes>,
    pub recv_tail: BytesMut,
    pub buffered: usize,
    pub recv_unacked: u32,
    pub remote_fin: bool,
    pub reader_alive: bool,
    pub reader_waker: Option<Waker>,
    // sending
    pub send_window: i64,
    pub local_fin: bool,
    pub writer_alive: bool,
    pub writer_waker: Option<Waker>,
    /// `enqueued_total` after this stream's last frame: flushed once `written_total` passes it.
    pub last_enqueued: u64,
    // both
    pub reset: Option<Reset>,
    /// The opener of the stream waits here for SYN_REPLY.
    pub reply: Option<oneshot::Sender<Result<Headers, SpdyError>>>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Reset {
    pub status: RstStatus,
    pub by_peer: bool,
}

impl StreamState {
    pub fn new(send_window: i64, remote_fin: bool, local_fin: bool) -> Self {
        StreamState {
            recv: VecDeque::new(),
            recv_tail: BytesMut::new(),
            buffered: 0,
            recv_unacked: 0,
            remote_fin,
            reader_alive: true,
            reader_waker: None,
            send_window,
            local_fin,
            writer_alive: true,
            writer_waker: None,
            last_enqueued: 0,
            reset: None,
            reply: None,
        }
    }

    pub fn push_data(&mut self, data: Bytes) {
        self.buffered += data.len();
        if data.len() < SMALL_CHUNK {
            self.recv_tail.extend_from_slice(&data);
        } else {
            if !self.recv_tail.is_empty() {
                let tail = self.recv_tail.split().freeze();
                self.recv.push_back(tail);
            }
            self.recv.push_back(data);
        }
    }

    /// Copies up to `dst.len()` buffered bytes into `dst`, oldest first.
    pub fn copy_out(&mut self, dst: &mut [u8]) -> usize {
        let mut n = 0;
        while n < dst.len() {
            let chunk = match self.recv.front_mut() {
                Some(chunk) => chunk,
                None if !self.recv_tail.is_empty() => {
                    let take = self.recv_tail.len().min(dst.len() - n);
                    dst[n..n + take].copy_from_slice(&self.recv_tail[..take]);
                    self.recv_tail.advance(take);
                    n += take;
                    break;
                }
                None => break,
            };
            let take = chunk.len().min(dst.len() - n);
            dst[n..n + take].copy_from_slice(&chunk[..take]);
            chunk.advance(take);
            n += take;
            if chunk.is_empty() {
                self.recv.pop_front();
            }
        }
        self.buffered -= n;
        n
    }

    /// Takes the oldest buffered chunk whole (no copy).
    pub fn take_chunk(&mut self) -> Option<Bytes> {
        let chunk = match self.recv.pop_front() {
            Some(chunk) => chunk,
            None if !self.recv_tail.is_empty() => self.recv_tail.split().freeze(),
            None => return None,
        };
        self.buffered -= chunk.len();
        Some(chunk)
    }

    pub fn discard_buffered(&mut self) -> usize {
        let n = self.buffered;
        self.recv.clear();
        self.recv_tail.clear();
        self.buffered = 0;
        n
    }

    pub fn wake(&mut self) {
        if let Some(w) = self.reader_waker.take() {
            w.wake();
        }
        if let Some(w) = self.writer_waker.take() {
            w.wake();
        }
    }
}

impl Shared {
    pub fn new(role: Role, config: SessionConfig) -> Arc<Shared> {
        let compressor = HeaderCompressor::new();
        let (next_stream_id, next_ping_id) = match role {
            Role::Client => (1, 1),
            Role::Server => (2, 2),
        };
        let enforce_peer_windows = config.peer_flow_control == PeerFlowControl::Enforce;
        let state = State {
            streams: HashMap::new(),
            next_stream_id,
            last_peer_stream_id: 0,
            next_ping_id,
            pings: HashMap::new(),
            out: BytesMut::with_capacity(config.write_buffer + 64 * 1024),
            compressor,
            enqueued_total: 0,
            written_total: 0,
            session_send_window: i64::from(frame::DEFAULT_INITIAL_WINDOW),
            peer_initial_window: i64::from(frame::DEFAULT_INITIAL_WINDOW),
            enforce_peer_windows,
            session_buffered: 0,
            session_recv_unacked: 0,
            goaway_sent: false,
            goaway_received: None,
            close_requested: false,
            closed: None,
        };
        Arc::new(Shared {
            role,
            config,
            state: Mutex::new(state),
            outbound_wake: Notify::new(),
            consumed: Notify::new(),
            closing: Notify::new(),
            stop_writing: Notify::new(),
            out_drained: Notify::new(),
            outbound_finished: watch::channel(false).0,
            finished: watch::channel(false).0,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not wedge every stream: the state stays usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `id` belongs to streams the peer opens.
    pub fn is_peer_stream(&self, id: u32) -> bool {
        match self.role {
            Role::Server => !id.is_multiple_of(2),
            Role::Client => id.is_multiple_of(2),
        }
    }

    /// Gives `n` consumed (or discarded) bytes of stream `id` back to the peer's windows,
    /// sending WINDOW_UPDATE once a quarter of a window is owed, and lets a stalled inbound
    /// task go on.
    pub fn credit(&self, state: &mut State, id: Option<u32>, n: usize) {
        if n == 0 {
            return;
        }
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        state.session_buffered = state.session_buffered.saturating_sub(n);
        state.session_recv_unacked = state.session_recv_unacked.saturating_add(n32);
        if state.session_recv_unacked >= self.config.session_receive_window / 4 {
            let delta = std::mem::take(&mut state.session_recv_unacked);
            state.queue(&Frame::WindowUpdate(WindowUpdate {
                stream_id: 0,
                delta,
            }));
        }
        if let Some(id) = id
            && let Some(stream) = state.streams.get_mut(&id)
        {
            stream.recv_unacked = stream.recv_unacked.saturating_add(n32);
            let owed = stream.recv_unacked >= self.config.stream_receive_window / 4;
            if owed && !stream.remote_fin && stream.reset.is_none() {
                let delta = std::mem::take(&mut stream.recv_unacked);
                state.queue(&Frame::WindowUpdate(WindowUpdate {
                    stream_id: id,
                    delta,
                }));
            }
        }
        self.outbound_wake.notify_one();
        self.consumed.notify_one();
    }

    /// Ends the connection for every stream with `reason` (the first reason wins) and asks
    /// the outbound task to flush and shut down.
    pub fn fail(&self, state: &mut State, reason: SpdyError) {
        if state.closed.is_none() {
            state.closed = Some(Arc::new(reason));
        }
        state.close_requested = true;
        let reason = state.closed.clone();
        for stream in state.streams.values_mut() {
            if let (Some(reply), Some(reason)) = (stream.reply.take(), reason.clone()) {
                let _ = reply.send(Err(SpdyError::ConnectionLost(reason)));
            }
            stream.wake();
        }
        state.pings.clear();
        self.outbound_wake.notify_one();
        self.consumed.notify_one();
        self.closing.notify_one();
        self.out_drained.notify_one();
    }

    /// Removes a stream once neither handle is left, ending our side with FIN if nothing
    /// ended it before.
    pub fn forget_if_unused(&self, state: &mut State, id: u32) {
        let unused = state
            .streams
            .get(&id)
            .is_some_and(|s| !s.reader_alive && !s.writer_alive);
        if unused && let Some(mut stream) = state.streams.remove(&id) {
            if !stream.local_fin && stream.reset.is_none() && state.closed.is_none() {
                state.queue_data(id, true, &[]);
                self.outbound_wake.notify_one();
            }
            let dropped = stream.discard_buffered();
            self.credit(state, None, dropped);
        }
    }
}

impl State {
    /// Encodes a frame into the outgoing buffer.
    pub fn queue(&mut self, frame: &Frame) {
        let before = self.out.len();
        frame.encode(&mut self.out);
        self.enqueued_total += (self.out.len() - before) as u64;
    }

    /// Encodes a DATA frame (header and payload) into the outgoing buffer.
    pub fn queue_data(&mut self, stream_id: u32, fin: bool, data: &[u8]) {
        frame::put_data_header(&mut self.out, stream_id, fin, data.len());
        self.out.put_slice(data);
        self.enqueued_total += (frame::FRAME_HEADER_LEN + data.len()) as u64;
    }

    pub fn queue_rst(&mut self, stream_id: u32, status: RstStatus) {
        self.queue(&Frame::RstStream(RstStream { stream_id, status }));
    }

    /// Wakes every writer (window or buffer space may have opened).
    pub fn wake_writers(&mut self) {
        for stream in self.streams.values_mut() {
            if let Some(w) = stream.writer_waker.take() {
                w.wake();
            }
        }
    }
}
