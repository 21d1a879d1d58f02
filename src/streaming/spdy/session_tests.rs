//! Session tests over `tokio::io::duplex`: our client against our server, and a raw peer that
//! writes frames by hand (malformed input, and a Go-like peer that does no flow control).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use super::frame::{self, Data, Frame, GoAwayStatus, Limits, RstStatus, Setting, Settings};
use super::header::{HeaderCompressor, HeaderDecompressor, Headers};
use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn pair(
    config: SessionConfig,
) -> (
    (Session, mpsc::Receiver<Stream>),
    (Session, mpsc::Receiver<Stream>),
) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    (
        Session::server(a, config.clone()),
        Session::client(b, config),
    )
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn read_all(reader: &mut StreamReader) -> Vec<u8> {
    let mut out = Vec::new();
    within("read to EOF", reader.read_to_end(&mut out))
        .await
        .unwrap();
    out
}

fn headers(kind: &str) -> Headers {
    Headers::new().with("streamtype", kind)
}

/// Opens a stream from the client and takes it on the server.
async fn open(
    client: &Session,
    server_rx: &mut mpsc::Receiver<Stream>,
    kind: &str,
) -> (Stream, Stream) {
    let (ours, theirs) = tokio::join!(client.open_stream(headers(kind), false), async {
        within("accept", server_rx.recv()).await.unwrap()
    });
    (ours.unwrap(), theirs)
}

#[tokio::test]
async fn streams_carry_headers_and_data_both_ways_with_half_close() {
    let ((_server, mut accepted), (client, _)) = pair(SessionConfig::default());
    let (mut c, mut s) = open(&client, &mut accepted, "stdin").await;
    assert_eq!(s.headers.get("streamtype"), Some("stdin"));
    assert_eq!(s.id, c.id);
    assert_eq!(c.id % 2, 1, "client streams are odd");

    c.writer.write_all(b"hello ").await.unwrap();
    c.writer.write_all(b"server").await.unwrap();
    c.writer.shutdown().await.unwrap();
    assert_eq!(read_all(&mut s.reader).await, b"hello server");
    // Our side is still open after the peer's FIN.
    s.writer.write_all(b"bye").await.unwrap();
    s.writer.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c.reader).await, b"bye");
    assert!(
        c.writer.write_all(b"late").await.is_err(),
        "write after FIN"
    );
}

#[tokio::test]
async fn server_opens_even_streams_and_fin_on_open_closes_our_side() {
    let ((server, _), (_client, mut client_accepted)) = pair(SessionConfig::default());
    let (opened, accepted) = tokio::join!(server.open_stream(headers("resize"), true), async {
        within("accept", client_accepted.recv()).await.unwrap()
    });
    let mut opened = opened.unwrap();
    assert_eq!(opened.id % 2, 0);
    let mut accepted = accepted;
    assert_eq!(read_all(&mut accepted.reader).await, b"");
    assert!(opened.writer.write_all(b"x").await.is_err());
    accepted.writer.write_all(b"reply").await.unwrap();
    drop(accepted); // dropping both halves sends FIN
    assert_eq!(read_all(&mut opened.reader).await, b"reply");
}

/// The Go client (remotecommand) closes its stdin as soon as the server closes the stdin
/// stream: a server that drops the writer of its stdin stream must not send FIN.
#[tokio::test]
async fn dropping_only_the_writer_keeps_our_side_open() {
    let ((_server, mut accepted), (client, _)) = pair(SessionConfig::default());
    let (mut c, s) = open(&client, &mut accepted, "stdin").await;
    let Stream { reader, writer, .. } = s;
    drop(writer);
    let early = tokio::time::timeout(Duration::from_millis(200), c.reader.read_u8()).await;
    assert!(early.is_err(), "no FIN while the reader lives: {early:?}");
    c.writer.write_all(b"still read").await.unwrap();
    c.writer.shutdown().await.unwrap();
    let mut reader = reader;
    assert_eq!(read_all(&mut reader).await, b"still read");
    drop(reader);
    assert_eq!(
        read_all(&mut c.reader).await,
        b"",
        "FIN once both halves are gone"
    );
}

#[tokio::test]
async fn reset_fails_both_halves_on_both_sides() {
    let ((_server, mut accepted), (client, _)) = pair(SessionConfig::default());
    let (mut c, mut s) = open(&client, &mut accepted, "stdout").await;
    c.writer.reset(RstStatus::CANCEL);
    let err = within("read", s.reader.read_u8()).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(err.to_string().contains("CANCEL"), "{err}");
    assert!(s.writer.write_all(b"x").await.is_err());
    assert!(c.reader.read_u8().await.is_err());
}

#[tokio::test]
async fn pings_are_answered_both_ways() {
    let ((server, _), (client, _)) = pair(SessionConfig::default());
    within("client ping", client.ping()).await.unwrap();
    within("server ping", server.ping()).await.unwrap();
}

#[tokio::test]
async fn several_streams_at_once() {
    let ((_server, mut accepted), (client, _)) = pair(SessionConfig::default());
    tokio::spawn(async move {
        while let Some(mut s) = accepted.recv().await {
            tokio::spawn(async move {
                // Echo with the stream's type as a prefix.
                let kind = s.headers.get("streamtype").unwrap_or("").to_string();
                let mut data = Vec::new();
                s.reader.read_to_end(&mut data).await.unwrap();
                s.writer.write_all(kind.as_bytes()).await.unwrap();
                s.writer.write_all(&data).await.unwrap();
                s.writer.shutdown().await.unwrap();
            });
        }
    });
    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let kind = format!("s{i}:");
            let st = client.open_stream(headers(&kind), false).await.unwrap();
            let payload: Vec<u8> = (0..300_000u32).map(|n| (n % 251) as u8 ^ i).collect();
            let (mut r, mut w) = (st.reader, st.writer);
            let send = tokio::spawn(async move {
                w.write_all(&payload).await.unwrap();
                w.shutdown().await.unwrap();
                payload
            });
            let got = read_all(&mut r).await;
            let payload = send.await.unwrap();
            assert_eq!(&got[..kind.len()], kind.as_bytes());
            assert!(got[kind.len()..] == payload[..], "stream {i} data differs");
        }));
    }
    for t in tasks {
        within("stream task", t).await.unwrap();
    }
}

#[tokio::test]
async fn writer_waits_for_a_peer_that_does_not_read_and_resumes() {
    let config = SessionConfig {
        stream_receive_window: 256 * 1024,
        ..SessionConfig::default()
    };
    let ((_server, mut accepted), (client, _)) = pair(config);
    let (mut c, mut s) = open(&client, &mut accepted, "stdout").await;
    let total = 8 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            s.writer.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        s.writer.shutdown().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "writer must wait for the reader");
    {
        // The client holds at most its stream window.
        let state = client.shared_for_tests().lock();
        assert!(
            state.session_buffered <= 256 * 1024,
            "{}",
            state.session_buffered
        );
    }
    let got = read_all(&mut c.reader).await;
    assert_eq!(got.len(), total);
    within("writer", writer).await.unwrap();
}

#[tokio::test]
async fn a_slow_reader_does_not_block_other_streams() {
    let config = SessionConfig {
        stream_receive_window: 128 * 1024,
        ..SessionConfig::default()
    };
    let ((_server, mut accepted), (client, _)) = pair(config);
    let (mut stuck_c, mut stuck_s) = open(&client, &mut accepted, "stuck").await;
    let stuck_writer = tokio::spawn(async move {
        let _ = stuck_s.writer.write_all(&vec![1u8; 4 << 20]).await;
        stuck_s
    });
    let (mut c, mut s) = open(&client, &mut accepted, "moving").await;
    let writer = tokio::spawn(async move {
        s.writer.write_all(&vec![2u8; 4 << 20]).await.unwrap();
        s.writer.shutdown().await.unwrap();
    });
    assert_eq!(read_all(&mut c.reader).await.len(), 4 << 20);
    within("moving writer", writer).await.unwrap();
    assert!(!stuck_writer.is_finished());
    let mut first = [0u8; 1];
    stuck_c.reader.read_exact(&mut first).await.unwrap();
    assert_eq!(first, [1]);
}

#[tokio::test]
async fn connection_loss_ends_every_stream() {
    let ((server, mut accepted), (client, _)) = pair(SessionConfig::default());
    let (mut c, mut s) = open(&client, &mut accepted, "stdin").await;
    c.writer.write_all(b"partial").await.unwrap();
    c.writer.flush().await.unwrap();
    drop(client);
    // Buffered data first, then an error (no FIN came).
    let mut got = [0u8; 7];
    within("read", s.reader.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"partial");
    assert!(within("read", s.reader.read_u8()).await.is_err());
    within("closed", server.closed()).await;
    assert!(s.writer.write_all(b"x").await.is_err());
    assert!(c.reader.read_u8().await.is_err());
}

#[tokio::test]
async fn read_chunk_hands_out_data_without_copying_then_eof() {
    let ((_server, mut accepted), (client, _)) = pair(SessionConfig::default());
    let (mut c, mut s) = open(&client, &mut accepted, "stdin").await;
    c.writer.write_all(&vec![1u8; 100_000]).await.unwrap();
    c.writer.write_all(b"tail").await.unwrap();
    c.writer.shutdown().await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = within("chunk", s.reader.read_chunk()).await.unwrap() {
        assert!(!chunk.is_empty());
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), 100_004);
    assert!(got.ends_with(b"tail"));
}

#[tokio::test]
async fn close_flushes_queued_data_before_goaway() {
    let ((server, mut accepted), (client, _)) = pair(SessionConfig::default());
    let (mut c, mut s) = open(&client, &mut accepted, "stdout").await;
    let data = vec![9u8; 3 << 20];
    let reader = tokio::spawn(async move { read_all(&mut c.reader).await });
    s.writer.write_all(&data).await.unwrap();
    s.writer.shutdown().await.unwrap();
    within("close", server.close()).await;
    assert_eq!(within("reader", reader).await.unwrap(), data);
    within("client sees the end", client.closed()).await;
    assert!(client.open_stream(Headers::new(), false).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_through_one_stream() {
    let ((server, mut accepted), (client, _)) = pair(SessionConfig::default());
    let total: usize = 100 << 20;
    let (mut c, mut s) = open(&client, &mut accepted, "stdout").await;
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk: Vec<u8> = (0..32 * 1024).map(|i| (i % 253) as u8).collect();
        let mut sent = 0;
        while sent < total {
            s.writer.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        s.writer.shutdown().await.unwrap();
    });
    let mut received = 0usize;
    let mut checksum = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = within("read", c.reader.read(&mut buf)).await.unwrap();
        if n == 0 {
            break;
        }
        checksum += buf[..n].iter().map(|b| u64::from(*b)).sum::<u64>();
        received += n;
    }
    let elapsed = start.elapsed();
    writer.await.unwrap();
    assert_eq!(received, total);
    let per_chunk: u64 = (0..32 * 1024u64).map(|i| i % 253).sum();
    assert_eq!(checksum, per_chunk * (total / (32 * 1024)) as u64);
    println!(
        "100 MiB through one SPDY stream (duplex, debug={}): {:.0} MiB/s",
        cfg!(debug_assertions),
        100.0 / elapsed.as_secs_f64()
    );
    server.close().await;
}

/// A peer that writes and reads frames by hand.
struct RawPeer {
    io: DuplexStream,
    buf: BytesMut,
    compressor: HeaderCompressor,
    decompressor: HeaderDecompressor,
}

impl RawPeer {
    /// A raw client against a berth server session.
    fn against_server(config: SessionConfig) -> (RawPeer, Session, mpsc::Receiver<Stream>) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let (server, accepted) = Session::server(a, config);
        let peer = RawPeer {
            io: b,
            buf: BytesMut::new(),
            compressor: HeaderCompressor::new(),
            decompressor: HeaderDecompressor::new(1 << 20),
        };
        (peer, server, accepted)
    }

    async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        self.io.write_all(&out).await.unwrap();
    }

    async fn syn_stream(&mut self, id: u32, h: &Headers) {
        let header_block = self.compressor.compress(h).unwrap();
        self.send(Frame::SynStream(frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            header_block,
        }))
        .await;
    }

    /// The next frame, skipping the server's opening SETTINGS and WINDOW_UPDATEs.
    async fn recv(&mut self) -> Option<Frame> {
        loop {
            let frame = self.recv_any().await?;
            if !matches!(frame, Frame::Settings(_) | Frame::WindowUpdate(_)) {
                return Some(frame);
            }
        }
    }

    async fn recv_any(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = frame::decode(&mut self.buf, &Limits::default()).unwrap() {
                if let Frame::SynReply(f) = &frame {
                    self.decompressor.decompress(&f.header_block).unwrap();
                }
                return Some(frame);
            }
            let n = within("raw read", self.io.read_buf(&mut self.buf))
                .await
                .unwrap();
            if n == 0 {
                return None;
            }
        }
    }
}

async fn expect_goaway(peer: &mut RawPeer, server: &Session) {
    loop {
        match peer.recv().await {
            Some(Frame::GoAway(g)) => {
                assert_eq!(g.status, GoAwayStatus::PROTOCOL_ERROR);
                break;
            }
            Some(_) => continue,
            None => panic!("connection ended without GOAWAY"),
        }
    }
    assert!(peer.recv().await.is_none(), "connection ends after GOAWAY");
    within("server closed", server.closed()).await;
}

#[tokio::test]
async fn garbage_gets_goaway_and_ends_the_streams() {
    let (mut peer, server, mut accepted) = RawPeer::against_server(SessionConfig::default());
    peer.syn_stream(1, &headers("stdin")).await;
    assert!(matches!(peer.recv().await, Some(Frame::SynReply(r)) if r.stream_id == 1));
    let mut stream = within("accept", accepted.recv()).await.unwrap();
    // A control frame of version 2.
    peer.io
        .write_all(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1])
        .await
        .unwrap();
    drop(peer.io.shutdown().await);
    expect_goaway(&mut peer, &server).await;
    assert!(stream.reader.read_u8().await.is_err());
    assert!(stream.writer.write_all(b"x").await.is_err());
    assert!(matches!(
        server.close_reason().as_deref(),
        Some(SpdyError::Frame(frame::FrameError::UnsupportedVersion(2)))
    ));
}

#[tokio::test]
async fn oversized_header_block_gets_goaway() {
    let (mut peer, server, _accepted) = RawPeer::against_server(SessionConfig::default());
    let big = Headers::new().with("x-big", "a".repeat(200_000));
    peer.syn_stream(1, &big).await;
    expect_goaway(&mut peer, &server).await;
    assert!(matches!(
        server.close_reason().as_deref(),
        Some(SpdyError::Header(header::HeaderError::TooLarge { .. }))
    ));
}

#[tokio::test]
async fn unknown_and_reused_stream_ids_get_rst_stream() {
    let (mut peer, _server, _accepted) = RawPeer::against_server(SessionConfig::default());
    // An empty DATA frame: nothing to credit, the RST_STREAM must still go out.
    peer.send(Frame::Data(Data {
        stream_id: 41,
        fin: true,
        data: Bytes::new(),
    }))
    .await;
    assert!(matches!(
        peer.recv().await,
        Some(Frame::RstStream(r)) if r.stream_id == 41 && r.status == RstStatus::INVALID_STREAM
    ));
    peer.syn_stream(3, &headers("a")).await;
    assert!(matches!(peer.recv().await, Some(Frame::SynReply(r)) if r.stream_id == 3));
    peer.syn_stream(3, &headers("b")).await;
    assert!(matches!(
        peer.recv().await,
        Some(Frame::RstStream(r)) if r.stream_id == 3 && r.status == RstStatus::STREAM_IN_USE
    ));
    peer.syn_stream(2, &headers("c")).await; // even: a server id
    assert!(matches!(
        peer.recv().await,
        Some(Frame::RstStream(r)) if r.stream_id == 2 && r.status == RstStatus::PROTOCOL_ERROR
    ));
}

/// Like the Go client (moby/spdystream): never sends WINDOW_UPDATE, so berth must not wait
/// for one, and TCP (here the duplex buffer) is what bounds the data in flight.
#[tokio::test]
async fn a_peer_without_flow_control_still_gets_all_data() {
    let (mut peer, _server, mut accepted) = RawPeer::against_server(SessionConfig::default());
    peer.syn_stream(1, &headers("stdout")).await;
    assert!(matches!(peer.recv().await, Some(Frame::SynReply(_))));
    let mut s = within("accept", accepted.recv()).await.unwrap();
    let total = 4 << 20;
    let writer = tokio::spawn(async move {
        s.writer.write_all(&vec![5u8; total]).await.unwrap();
        s.writer.shutdown().await.unwrap();
        s
    });
    let mut got = 0;
    loop {
        match peer.recv().await {
            Some(Frame::Data(d)) => {
                assert!(d.data.len() <= 64 * 1024);
                got += d.data.len();
                if d.fin {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, total);
    within("writer", writer).await.unwrap();
}

/// The Go client also ignores our windows when it sends: berth buffers at most about one
/// window per stream and stops reading the connection until the reader catches up.
#[tokio::test]
async fn a_peer_ignoring_our_window_cannot_make_us_buffer_without_bound() {
    let config = SessionConfig {
        stream_receive_window: 256 * 1024,
        ..SessionConfig::default()
    };
    let (mut peer, server, mut accepted) = RawPeer::against_server(config);
    peer.syn_stream(1, &headers("stdin")).await;
    assert!(matches!(peer.recv().await, Some(Frame::SynReply(_))));
    let mut s = within("accept", accepted.recv()).await.unwrap();
    let total = 16 << 20;
    let (mut rd, mut wr) = tokio::io::split(peer.io);
    // Drain whatever the server sends (WINDOW_UPDATEs) so only our sending can block.
    tokio::spawn(async move { while rd.read(&mut [0u8; 4096]).await.unwrap_or(0) > 0 {} });
    let sender = tokio::spawn(async move {
        let chunk = Bytes::from(vec![3u8; 32 * 1024]);
        let mut out = BytesMut::new();
        for _ in 0..total / chunk.len() {
            out.clear();
            Frame::Data(Data {
                stream_id: 1,
                fin: false,
                data: chunk.clone(),
            })
            .encode(&mut out);
            wr.write_all(&out).await.unwrap();
        }
        out.clear();
        frame::put_data_header(&mut out, 1, true, 0);
        wr.write_all(&out).await.unwrap();
        wr
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sender.is_finished(), "the peer must be held back");
    {
        let state = server.shared_for_tests().lock();
        assert!(
            state.session_buffered <= 256 * 1024 + 32 * 1024,
            "buffered {}",
            state.session_buffered
        );
    }
    assert_eq!(read_all(&mut s.reader).await.len(), total);
    within("sender", sender).await.unwrap();
}

#[tokio::test]
async fn initial_window_size_setting_limits_open_streams() {
    let config = SessionConfig {
        peer_flow_control: PeerFlowControl::Auto,
        ..SessionConfig::default()
    };
    let (mut peer, _server, mut accepted) = RawPeer::against_server(config);
    peer.syn_stream(1, &headers("stdout")).await;
    assert!(matches!(peer.recv().await, Some(Frame::SynReply(_))));
    let mut s = within("accept", accepted.recv()).await.unwrap();
    // The stream window goes from 64 KiB to 1000 bytes (nothing was sent yet).
    peer.send(Frame::Settings(Settings {
        clear: false,
        entries: vec![Setting {
            flags: 0,
            id: frame::SETTINGS_INITIAL_WINDOW_SIZE,
            value: 1000,
        }],
    }))
    .await;
    peer.send(Frame::Ping(frame::Ping { id: 1 })).await;
    assert!(
        matches!(peer.recv().await, Some(Frame::Ping(_))),
        "settings applied"
    );
    let writer = tokio::spawn(async move {
        s.writer.write_all(&[1u8; 3000]).await.unwrap();
        s.writer.flush().await.unwrap();
        s
    });
    match peer.recv().await {
        Some(Frame::Data(d)) => assert_eq!(d.data.len(), 1000),
        other => panic!("unexpected {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!writer.is_finished(), "window exhausted");
    peer.send(Frame::WindowUpdate(frame::WindowUpdate {
        stream_id: 1,
        delta: 2000,
    }))
    .await;
    match peer.recv().await {
        Some(Frame::Data(d)) => assert_eq!(d.data.len(), 2000),
        other => panic!("unexpected {other:?}"),
    }
    within("writer", writer).await.unwrap();
}

#[tokio::test]
async fn a_vanishing_peer_ends_every_stream() {
    let (mut peer, server, mut accepted) = RawPeer::against_server(SessionConfig::default());
    peer.syn_stream(1, &headers("stdin")).await;
    peer.send(Frame::Data(Data {
        stream_id: 1,
        fin: false,
        data: Bytes::from_static(b"partial"),
    }))
    .await;
    let mut s = within("accept", accepted.recv()).await.unwrap();
    let mut got = [0u8; 7];
    within("read", s.reader.read_exact(&mut got)).await.unwrap();
    drop(peer);
    let err = within("read", s.reader.read_u8()).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
    within("closed", server.closed()).await;
    assert!(s.writer.write_all(b"x").await.is_err());
    assert!(matches!(
        server.close_reason().as_deref(),
        Some(SpdyError::PeerClosed | SpdyError::Io(_))
    ));
}

#[tokio::test]
async fn goaway_from_the_peer_stops_new_streams_but_not_open_ones() {
    let (mut peer, server, mut accepted) = RawPeer::against_server(SessionConfig::default());
    peer.syn_stream(1, &headers("stdout")).await;
    assert!(matches!(peer.recv().await, Some(Frame::SynReply(_))));
    let mut s = within("accept", accepted.recv()).await.unwrap();
    peer.send(Frame::GoAway(frame::GoAway {
        last_good_stream_id: 0,
        status: GoAwayStatus::OK,
    }))
    .await;
    peer.send(Frame::Ping(frame::Ping { id: 1 })).await;
    assert!(matches!(peer.recv().await, Some(Frame::Ping(_))));
    assert!(matches!(
        server.open_stream(headers("x"), false).await,
        Err(SpdyError::GoneAway)
    ));
    s.writer.write_all(b"still here").await.unwrap();
    s.writer.flush().await.unwrap();
    match peer.recv().await {
        Some(Frame::Data(d)) => assert_eq!(&d.data[..], b"still here"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_ping_flood_from_a_peer_that_never_reads_stays_bounded() {
    let config = SessionConfig {
        write_buffer: 64 * 1024,
        ..SessionConfig::default()
    };
    let (peer, server, _accepted) = RawPeer::against_server(config);
    let (_rd, mut wr) = tokio::io::split(peer.io);
    let flood = tokio::spawn(async move {
        let mut out = BytesMut::new();
        for id in 0..200_000u32 {
            Frame::Ping(frame::Ping { id: 2 * id + 1 }).encode(&mut out);
        }
        wr.write_all(&out).await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!flood.is_finished(), "the flood must be held back");
    let queued = server.shared_for_tests().lock().out.len();
    assert!(queued <= 2 * 64 * 1024 + 12, "queued {queued}");
}
