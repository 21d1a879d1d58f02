//! SPDY/3.1 frames as data: incremental decoding from a byte buffer and encoding into one.
//!
//! Header blocks stay compressed here (`header_block`); `header.rs` owns the per-connection
//! zlib contexts, because a block can only be decompressed in wire order.
//!
//! Wire layout (big endian):
//! - control: `1 | version:15 | type:16`, `flags:8 | length:24`, payload
//! - data:    `0 | stream_id:31`,         `flags:8 | length:24`, payload

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The only protocol version berth speaks (SPDY/3.1 keeps version 3 on the wire).
pub const VERSION: u16 = 3;
/// Every frame starts with 8 bytes: two 32-bit words.
pub const FRAME_HEADER_LEN: usize = 8;
/// The 24-bit length field caps every payload at 16 MiB - 1.
pub const MAX_PAYLOAD_LEN: usize = 0x00ff_ffff;

/// Largest stream id (31 bits) and the largest window a delta may build.
pub const MAX_STREAM_ID: u32 = 0x7fff_ffff;
pub const MAX_WINDOW: u32 = 0x7fff_ffff;

/// The window every stream and the session start with (SPDY/3.1 §2.6.8).
pub const DEFAULT_INITIAL_WINDOW: u32 = 64 * 1024;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// FLAG_FIN on DATA, SYN_STREAM, SYN_REPLY and HEADERS.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM: the receiver must not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS on SETTINGS.
pub const FLAG_SETTINGS_CLEAR: u8 = 0x01;

/// RST_STREAM status codes (SPDY/3.1 §2.4.2). Unknown codes are kept as they came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RstStatus(pub u32);

impl RstStatus {
    pub const PROTOCOL_ERROR: RstStatus = RstStatus(1);
    pub const INVALID_STREAM: RstStatus = RstStatus(2);
    pub const REFUSED_STREAM: RstStatus = RstStatus(3);
    pub const UNSUPPORTED_VERSION: RstStatus = RstStatus(4);
    pub const CANCEL: RstStatus = RstStatus(5);
    pub const INTERNAL_ERROR: RstStatus = RstStatus(6);
    pub const FLOW_CONTROL_ERROR: RstStatus = RstStatus(7);
    pub const STREAM_IN_USE: RstStatus = RstStatus(8);
    pub const STREAM_ALREADY_CLOSED: RstStatus = RstStatus(9);
    pub const FRAME_TOO_LARGE: RstStatus = RstStatus(11);
}

impl std::fmt::Display for RstStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            1 => "PROTOCOL_ERROR",
            2 => "INVALID_STREAM",
            3 => "REFUSED_STREAM",
            4 => "UNSUPPORTED_VERSION",
            5 => "CANCEL",
            6 => "INTERNAL_ERROR",
            7 => "FLOW_CONTROL_ERROR",
            8 => "STREAM_IN_USE",
            9 => "STREAM_ALREADY_CLOSED",
            11 => "FRAME_TOO_LARGE",
            other => return write!(f, "status {other}"),
        };
        f.write_str(name)
    }
}

/// GOAWAY status codes (SPDY/3.1 §2.6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoAwayStatus(pub u32);

impl GoAwayStatus {
    pub const OK: GoAwayStatus = GoAwayStatus(0);
    pub const PROTOCOL_ERROR: GoAwayStatus = GoAwayStatus(1);
    pub const INTERNAL_ERROR: GoAwayStatus = GoAwayStatus(2);
}

/// SETTINGS ids (SPDY/3.1 §2.6.4); only INITIAL_WINDOW_SIZE and MAX_CONCURRENT_STREAMS matter here.
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u32 = 4;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynStream {
    pub stream_id: u32,
    pub associated_to: u32,
    /// 0 (highest) to 7.
    pub priority: u8,
    pub slot: u8,
    pub fin: bool,
    pub unidirectional: bool,
    pub header_block: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynReply {
    pub stream_id: u32,
    pub fin: bool,
    pub header_block: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RstStream {
    pub stream_id: u32,
    pub status: RstStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// FLAG_SETTINGS_PERSIST_VALUE (1) / FLAG_SETTINGS_PERSISTED (2).
    pub flags: u8,
    /// 24-bit id.
    pub id: u32,
    pub value: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub clear: bool,
    pub entries: Vec<Setting>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    pub id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    pub last_good_stream_id: u32,
    pub status: GoAwayStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadersFrame {
    pub stream_id: u32,
    pub fin: bool,
    pub header_block: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowUpdate {
    /// 0 for the session window (SPDY/3.1).
    pub stream_id: u32,
    pub delta: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub stream_id: u32,
    pub fin: bool,
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream(SynStream),
    SynReply(SynReply),
    RstStream(RstStream),
    Settings(Settings),
    Ping(Ping),
    GoAway(GoAway),
    Headers(HeadersFrame),
    WindowUpdate(WindowUpdate),
    Data(Data),
}

/// Why bytes are not a valid frame. Every one of them is a connection error (GOAWAY PROTOCOL_ERROR).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    #[error("{kind} frame of {len} bytes is over the limit of {limit}")]
    TooLarge {
        kind: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("{kind} frame with a payload of {len} bytes is malformed")]
    BadLength { kind: &'static str, len: usize },
    #[error("{kind} frame for stream 0")]
    ZeroStreamId { kind: &'static str },
    #[error("WINDOW_UPDATE with a delta of {0}")]
    BadWindowDelta(u32),
    #[error("PING with id 0")]
    ZeroPingId,
}

/// Size limits applied while decoding, before the payload is buffered.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest DATA payload accepted. The Go client (moby/spdystream) writes one DATA frame
    /// per `Write` call, so this stays at the wire maximum unless a caller knows better.
    pub max_data: usize,
    /// Largest control frame payload (header blocks are the only big ones).
    pub max_control: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_data: MAX_PAYLOAD_LEN,
            max_control: 256 * 1024,
        }
    }
}

/// Decodes the next whole frame from the front of `buf`, consuming it. `Ok(None)` means more
/// bytes are needed (nothing is consumed). Control frames of unknown types are skipped, as
/// SPDY/3.1 §2.2.1 requires. A DATA payload is split off `buf` without copying.
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, FrameError> {
    loop {
        if buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        let control = first & 0x8000_0000 != 0;
        if control {
            let version = ((first >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(FrameError::UnsupportedVersion(version));
            }
            if len > limits.max_control {
                return Err(FrameError::TooLarge {
                    kind: "control",
                    len,
                    limit: limits.max_control,
                });
            }
        } else if len > limits.max_data {
            return Err(FrameError::TooLarge {
                kind: "DATA",
                len,
                limit: limits.max_data,
            });
        }
        if buf.len() < FRAME_HEADER_LEN + len {
            buf.reserve(FRAME_HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(FRAME_HEADER_LEN);
        let payload = buf.split_to(len).freeze();
        if !control {
            let stream_id = first & MAX_STREAM_ID;
            if stream_id == 0 {
                return Err(FrameError::ZeroStreamId { kind: "DATA" });
            }
            return Ok(Some(Frame::Data(Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            })));
        }
        let frame_type = (first & 0xffff) as u16;
        if let Some(frame) = decode_control(frame_type, flags, payload)? {
            return Ok(Some(frame));
        }
    }
}

fn decode_control(frame_type: u16, flags: u8, mut p: Bytes) -> Result<Option<Frame>, FrameError> {
    let len = p.len();
    let fin = flags & FLAG_FIN != 0;
    let frame = match frame_type {
        TYPE_SYN_STREAM => {
            need(len >= 10, "SYN_STREAM", len)?;
            let stream_id = stream_id(p.get_u32(), "SYN_STREAM")?;
            let associated_to = p.get_u32() & MAX_STREAM_ID;
            let priority = p.get_u8() >> 5;
            let slot = p.get_u8();
            Frame::SynStream(SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                fin,
                unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                header_block: p,
            })
        }
        TYPE_SYN_REPLY => {
            need(len >= 4, "SYN_REPLY", len)?;
            let stream_id = stream_id(p.get_u32(), "SYN_REPLY")?;
            Frame::SynReply(SynReply {
                stream_id,
                fin,
                header_block: p,
            })
        }
        TYPE_HEADERS => {
            need(len >= 4, "HEADERS", len)?;
            let stream_id = stream_id(p.get_u32(), "HEADERS")?;
            Frame::Headers(HeadersFrame {
                stream_id,
                fin,
                header_block: p,
            })
        }
        TYPE_RST_STREAM => {
            need(len == 8, "RST_STREAM", len)?;
            let stream_id = stream_id(p.get_u32(), "RST_STREAM")?;
            Frame::RstStream(RstStream {
                stream_id,
                status: RstStatus(p.get_u32()),
            })
        }
        TYPE_SETTINGS => {
            need(len >= 4, "SETTINGS", len)?;
            let count = p.get_u32() as usize;
            need(count.checked_mul(8) == Some(len - 4), "SETTINGS", len)?;
            let entries = (0..count)
                .map(|_| {
                    let flags_id = p.get_u32();
                    Setting {
                        flags: (flags_id >> 24) as u8,
                        id: flags_id & 0x00ff_ffff,
                        value: p.get_u32(),
                    }
                })
                .collect();
            Frame::Settings(Settings {
                clear: flags & FLAG_SETTINGS_CLEAR != 0,
                entries,
            })
        }
        TYPE_PING => {
            need(len == 4, "PING", len)?;
            let id = p.get_u32();
            if id == 0 {
                return Err(FrameError::ZeroPingId);
            }
            Frame::Ping(Ping { id })
        }
        TYPE_GOAWAY => {
            need(len == 8, "GOAWAY", len)?;
            Frame::GoAway(GoAway {
                last_good_stream_id: p.get_u32() & MAX_STREAM_ID,
                status: GoAwayStatus(p.get_u32()),
            })
        }
        TYPE_WINDOW_UPDATE => {
            need(len == 8, "WINDOW_UPDATE", len)?;
            let stream_id = p.get_u32() & MAX_STREAM_ID;
            let delta = p.get_u32() & MAX_WINDOW;
            if delta == 0 {
                return Err(FrameError::BadWindowDelta(delta));
            }
            Frame::WindowUpdate(WindowUpdate { stream_id, delta })
        }
        // Unknown control frames are ignored (SPDY/3.1 §2.2.1); their payload is already consumed.
        _ => return Ok(None),
    };
    Ok(Some(frame))
}

fn need(ok: bool, kind: &'static str, len: usize) -> Result<(), FrameError> {
    if ok {
        Ok(())
    } else {
        Err(FrameError::BadLength { kind, len })
    }
}

fn stream_id(word: u32, kind: &'static str) -> Result<u32, FrameError> {
    match word & MAX_STREAM_ID {
        0 => Err(FrameError::ZeroStreamId { kind }),
        id => Ok(id),
    }
}

fn put_control_header(out: &mut BytesMut, frame_type: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(frame_type);
    out.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00ff_ffff));
}

/// Writes the 8-byte header of a DATA frame whose `len` payload bytes the caller appends.
pub fn put_data_header(out: &mut BytesMut, stream_id: u32, fin: bool, len: usize) {
    out.put_u32(stream_id & MAX_STREAM_ID);
    let flags = if fin { FLAG_FIN } else { 0 };
    out.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00ff_ffff));
}

fn fin_flag(fin: bool) -> u8 {
    if fin { FLAG_FIN } else { 0 }
}

impl Frame {
    /// Appends the frame's wire form to `out`. Payloads must fit the 24-bit length
    /// (the session never builds bigger ones).
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::SynStream(f) => {
                let mut flags = fin_flag(f.fin);
                if f.unidirectional {
                    flags |= FLAG_UNIDIRECTIONAL;
                }
                put_control_header(out, TYPE_SYN_STREAM, flags, 10 + f.header_block.len());
                out.put_u32(f.stream_id & MAX_STREAM_ID);
                out.put_u32(f.associated_to & MAX_STREAM_ID);
                out.put_u8((f.priority & 0x07) << 5);
                out.put_u8(f.slot);
                out.put_slice(&f.header_block);
            }
            Frame::SynReply(f) => {
                put_control_header(
                    out,
                    TYPE_SYN_REPLY,
                    fin_flag(f.fin),
                    4 + f.header_block.len(),
                );
                out.put_u32(f.stream_id & MAX_STREAM_ID);
                out.put_slice(&f.header_block);
            }
            Frame::Headers(f) => {
                put_control_header(out, TYPE_HEADERS, fin_flag(f.fin), 4 + f.header_block.len());
                out.put_u32(f.stream_id & MAX_STREAM_ID);
                out.put_slice(&f.header_block);
            }
            Frame::RstStream(f) => {
                put_control_header(out, TYPE_RST_STREAM, 0, 8);
                out.put_u32(f.stream_id & MAX_STREAM_ID);
                out.put_u32(f.status.0);
            }
            Frame::Settings(f) => {
                let flags = if f.clear { FLAG_SETTINGS_CLEAR } else { 0 };
                put_control_header(out, TYPE_SETTINGS, flags, 4 + 8 * f.entries.len());
                out.put_u32(f.entries.len() as u32);
                for e in &f.entries {
                    out.put_u32((u32::from(e.flags) << 24) | (e.id & 0x00ff_ffff));
                    out.put_u32(e.value);
                }
            }
            Frame::Ping(f) => {
                put_control_header(out, TYPE_PING, 0, 4);
                out.put_u32(f.id);
            }
            Frame::GoAway(f) => {
                put_control_header(out, TYPE_GOAWAY, 0, 8);
                out.put_u32(f.last_good_stream_id & MAX_STREAM_ID);
                out.put_u32(f.status.0);
            }
            Frame::WindowUpdate(f) => {
                put_control_header(out, TYPE_WINDOW_UPDATE, 0, 8);
                out.put_u32(f.stream_id & MAX_STREAM_ID);
                out.put_u32(f.delta & MAX_WINDOW);
            }
            Frame::Data(f) => {
                put_data_header(out, f.stream_id, f.fin, f.data.len());
                out.put_slice(&f.data);
            }
        }
    }

    /// Name of the frame type, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::SynStream(_) => "SYN_STREAM",
            Frame::SynReply(_) => "SYN_REPLY",
            Frame::RstStream(_) => "RST_STREAM",
            Frame::Settings(_) => "SETTINGS",
            Frame::Ping(_) => "PING",
            Frame::GoAway(_) => "GOAWAY",
            Frame::Headers(_) => "HEADERS",
            Frame::WindowUpdate(_) => "WINDOW_UPDATE",
            Frame::Data(_) => "DATA",
        }
    }
}
