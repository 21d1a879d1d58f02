//! Frame encode/decode tests: round trips, known bytes, malformed input.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::*;

fn encoded(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    out.to_vec()
}

fn decode_all(bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
    decode(&mut BytesMut::from(bytes), &Limits::default())
}

fn every_frame() -> Vec<Frame> {
    vec![
        Frame::SynStream(SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 7,
            slot: 0,
            fin: false,
            unidirectional: true,
            header_block: Bytes::from_static(b"\x78\x9c compressed"),
        }),
        Frame::SynReply(SynReply {
            stream_id: 3,
            fin: true,
            header_block: Bytes::from_static(b"block"),
        }),
        Frame::RstStream(RstStream {
            stream_id: 5,
            status: RstStatus::CANCEL,
        }),
        Frame::Settings(Settings {
            clear: true,
            entries: vec![
                Setting {
                    flags: 1,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: 1 << 20,
                },
                Setting {
                    flags: 0,
                    id: SETTINGS_MAX_CONCURRENT_STREAMS,
                    value: 100,
                },
            ],
        }),
        Frame::Ping(Ping { id: 0xffff_fffe }),
        Frame::GoAway(GoAway {
            last_good_stream_id: 9,
            status: GoAwayStatus::PROTOCOL_ERROR,
        }),
        Frame::Headers(HeadersFrame {
            stream_id: 2,
            fin: false,
            header_block: Bytes::new(),
        }),
        Frame::WindowUpdate(WindowUpdate {
            stream_id: 0,
            delta: MAX_WINDOW,
        }),
        Frame::Data(Data {
            stream_id: MAX_STREAM_ID,
            fin: true,
            data: Bytes::from_static(b"hello"),
        }),
        Frame::Data(Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new(),
        }),
    ]
}

#[test]
fn every_frame_type_round_trips() {
    for frame in every_frame() {
        let bytes = encoded(&frame);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            decode(&mut buf, &Limits::default()),
            Ok(Some(frame.clone())),
            "{}",
            frame.kind()
        );
        assert!(buf.is_empty(), "{} left bytes behind", frame.kind());
    }
}

#[test]
fn frames_decode_one_by_one_from_a_stream_fed_byte_by_byte() {
    let frames = every_frame();
    let wire: Vec<u8> = frames.iter().flat_map(encoded).collect();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for byte in wire {
        buf.put_u8(byte);
        while let Some(frame) = decode(&mut buf, &Limits::default()).unwrap() {
            got.push(frame);
        }
    }
    assert_eq!(got, frames);
}

#[test]
fn known_bytes() {
    // PING id 1: control bit + version 3, type 6, no flags, length 4.
    assert_eq!(
        encoded(&Frame::Ping(Ping { id: 1 })),
        [0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1]
    );
    // DATA on stream 1 with FIN: no control bit, flags 0x01, length 3.
    assert_eq!(
        encoded(&Frame::Data(Data {
            stream_id: 1,
            fin: true,
            data: Bytes::from_static(b"abc")
        })),
        [0, 0, 0, 1, 0x01, 0, 0, 3, b'a', b'b', b'c']
    );
    // WINDOW_UPDATE stream 0 (session), delta 0x10000.
    assert_eq!(
        encoded(&Frame::WindowUpdate(WindowUpdate {
            stream_id: 0,
            delta: 0x1_0000
        })),
        [
            0x80, 0x03, 0x00, 0x09, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0x01, 0, 0
        ]
    );
    // GOAWAY last good 5, PROTOCOL_ERROR.
    assert_eq!(
        encoded(&Frame::GoAway(GoAway {
            last_good_stream_id: 5,
            status: GoAwayStatus::PROTOCOL_ERROR
        })),
        [0x80, 0x03, 0x00, 0x07, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 1]
    );
    // SYN_STREAM id 1, FIN, priority 0, empty block: length 10.
    assert_eq!(
        encoded(&Frame::SynStream(SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin: true,
            unidirectional: false,
            header_block: Bytes::new()
        })),
        [
            0x80, 0x03, 0x00, 0x01, 0x01, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0
        ]
    );
    // SETTINGS with one entry: flags 0x01 (persist) in the id's top byte.
    assert_eq!(
        encoded(&Frame::Settings(Settings {
            clear: false,
            entries: vec![Setting {
                flags: 1,
                id: 7,
                value: 0x0100
            }]
        })),
        [
            0x80, 0x03, 0x00, 0x04, 0, 0, 0, 12, 0, 0, 0, 1, 0x01, 0, 0, 7, 0, 0, 1, 0
        ]
    );
    // RST_STREAM stream 3 CANCEL, as the Go client sends on Close.
    assert_eq!(
        decode_all(&[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5]),
        Ok(Some(Frame::RstStream(RstStream {
            stream_id: 3,
            status: RstStatus::CANCEL
        })))
    );
}

#[test]
fn truncated_input_needs_more_and_consumes_nothing() {
    let bytes = encoded(&Frame::GoAway(GoAway {
        last_good_stream_id: 1,
        status: GoAwayStatus::OK,
    }));
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(decode(&mut buf, &Limits::default()), Ok(None));
        assert_eq!(buf.len(), cut);
    }
}

#[test]
fn bad_version_is_rejected() {
    let mut bytes = encoded(&Frame::Ping(Ping { id: 1 }));
    bytes[1] = 2;
    assert_eq!(decode_all(&bytes), Err(FrameError::UnsupportedVersion(2)));
}

#[test]
fn huge_lengths_are_rejected_before_buffering() {
    // Only the 8-byte header is present: the limit check must not wait for the payload.
    let data = [0, 0, 0, 1, 0, 0x10, 0, 0];
    let limits = Limits {
        max_data: 64 * 1024,
        max_control: 1024,
    };
    assert_eq!(
        decode(&mut BytesMut::from(&data[..]), &limits),
        Err(FrameError::TooLarge {
            kind: "DATA",
            len: 0x10_0000,
            limit: 64 * 1024
        })
    );
    let control = [0x80, 0x03, 0x00, 0x01, 0, 0xff, 0xff, 0xff];
    assert!(matches!(
        decode(&mut BytesMut::from(&control[..]), &limits),
        Err(FrameError::TooLarge {
            kind: "control",
            ..
        })
    ));
}

#[test]
fn malformed_control_frames_are_rejected() {
    let cases: &[(&[u8], FrameError)] = &[
        (
            &[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 3, 0, 0, 1],
            FrameError::BadLength {
                kind: "PING",
                len: 3,
            },
        ),
        (
            &[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 0],
            FrameError::ZeroPingId,
        ),
        (
            &[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 5],
            FrameError::ZeroStreamId { kind: "RST_STREAM" },
        ),
        (
            &[0x80, 0x03, 0x00, 0x01, 0, 0, 0, 4, 0, 0, 0, 1],
            FrameError::BadLength {
                kind: "SYN_STREAM",
                len: 4,
            },
        ),
        (
            &[0x80, 0x03, 0x00, 0x04, 0, 0, 0, 8, 0, 0, 0, 2, 0, 0, 0, 7],
            FrameError::BadLength {
                kind: "SETTINGS",
                len: 8,
            },
        ),
        (
            &[0x80, 0x03, 0x00, 0x09, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0],
            FrameError::BadWindowDelta(0),
        ),
        (
            &[0x80, 0x03, 0x00, 0x07, 0, 0, 0, 4, 0, 0, 0, 1],
            FrameError::BadLength {
                kind: "GOAWAY",
                len: 4,
            },
        ),
        (
            &[0, 0, 0, 0, 0, 0, 0, 1, b'x'],
            FrameError::ZeroStreamId { kind: "DATA" },
        ),
    ];
    for (bytes, err) in cases {
        assert_eq!(decode_all(bytes).as_ref(), Err(err), "{bytes:02x?}");
    }
}

#[test]
fn unknown_control_types_are_skipped() {
    // Type 0x0a (CREDENTIAL in SPDY/3) with a 2-byte payload, then a PING.
    let mut wire = vec![0x80, 0x03, 0x00, 0x0a, 0, 0, 0, 2, 0xaa, 0xbb];
    wire.extend(encoded(&Frame::Ping(Ping { id: 7 })));
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(
        decode(&mut buf, &Limits::default()),
        Ok(Some(Frame::Ping(Ping { id: 7 })))
    );
    assert!(buf.is_empty());
}
