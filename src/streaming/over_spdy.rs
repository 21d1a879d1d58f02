//! Exec, attach and port-forward over a SPDY connection: the client opens one stream per
//! channel, naming it in the `streamType` header.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::portforward::{PodNetwork, relay};
use super::protocol::{ResizeDecoder, Version};
use super::remotecommand::{ClientInput, INPUT_QUEUE, OutputSink};
use super::spdy::{RstStatus, Session, Stream, StreamWriter};
use super::token::Streams;

/// How long a client may take to open the streams it needs (the kubelet's default).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How many streams a client of `version` opens for `streams`: the error stream exists
/// from v2 on; a tty merges stderr into stdout and, from v3 on, adds the resize stream.
fn stream_count(streams: Streams, version: Version) -> usize {
    usize::from(version >= Version::V2)
        + usize::from(streams.stdin)
        + usize::from(streams.stdout)
        + usize::from(streams.stderr && !streams.tty)
        + usize::from(streams.tty && version.has_resize())
}

fn stream_type(stream: &Stream) -> &str {
    stream.headers.get("streamtype").unwrap_or("")
}

/// The streams of an exec or attach, sorted by channel.
#[derive(Default)]
struct Channels {
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    error: Option<Stream>,
    resize: Option<Stream>,
}

/// Waits for the client's streams; None if they did not all come in time (the
/// connection is then closed).
async fn collect_channels(
    incoming: &mut mpsc::Receiver<Stream>,
    expected: Streams,
    version: Version,
) -> Option<Channels> {
    let wanted = stream_count(expected, version);
    let mut channels = Channels::default();
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while received < wanted {
        let stream = match tokio::time::timeout_at(deadline, incoming.recv()).await {
            Ok(Some(stream)) => stream,
            Ok(None) => return None,
            Err(_) => {
                tracing::info!(received, wanted, "client did not open its streams in time");
                return None;
            }
        };
        let slot = match stream_type(&stream) {
            "stdin" => &mut channels.stdin,
            "stdout" => &mut channels.stdout,
            "stderr" => &mut channels.stderr,
            "error" => &mut channels.error,
            "resize" => &mut channels.resize,
            other => {
                tracing::debug!(stream_type = other, "unexpected stream type: reset");
                stream.writer.reset(RstStatus::CANCEL);
                continue;
            }
        };
        if slot.replace(stream).is_none() {
            received += 1;
        }
    }
    Some(channels)
}

/// Exec/attach output going to a SPDY client.
pub struct SpdySink {
    session: Session,
    stdout: Option<StreamWriter>,
    stderr: Option<StreamWriter>,
    error: Option<StreamWriter>,
}

impl OutputSink for SpdySink {
    async fn stdout(&mut self, data: Bytes) -> io::Result<()> {
        match &mut self.stdout {
            Some(writer) => writer.write_all(&data).await,
            None => Ok(()),
        }
    }

    async fn stderr(&mut self, data: Bytes) -> io::Result<()> {
        match &mut self.stderr {
            Some(writer) => writer.write_all(&data).await,
            // A tty client has no stderr stream; a non-tty one that asked for none gets none.
            None => Ok(()),
        }
    }

    async fn finish(mut self, error: Option<Vec<u8>>) {
        for writer in [self.stdout.as_mut(), self.stderr.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = writer.shutdown().await;
        }
        if let Some(writer) = self.error.as_mut() {
            if let Some(error) = error {
                let _ = writer.write_all(&error).await;
            }
            let _ = writer.shutdown().await;
        }
        self.session.close().await;
    }

    fn gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let session = self.session.clone();
        async move { session.closed().await }
    }
}

/// Sets up an exec/attach over SPDY: waits for the client's streams, then returns the sink
/// and the inputs. None: the client did not open them (the connection is closed).
pub async fn remote_command(
    session: Session,
    mut incoming: mpsc::Receiver<Stream>,
    expected: Streams,
    version: Version,
) -> Option<(SpdySink, mpsc::Receiver<ClientInput>)> {
    let Some(channels) = collect_channels(&mut incoming, expected, version).await else {
        session.close().await;
        return None;
    };
    // Streams opened later are not part of this session.
    tokio::spawn(async move {
        while let Some(stream) = incoming.recv().await {
            stream.writer.reset(RstStatus::CANCEL);
        }
    });
    let (sender, inputs) = mpsc::channel(INPUT_QUEUE);
    match channels.stdin {
        Some(stdin) => {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut reader = stdin.reader;
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let data = Bytes::copy_from_slice(&buf[..n]);
                            if sender.send(ClientInput::Stdin(data)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = sender.send(ClientInput::StdinEnd).await;
            });
        }
        None => {
            let _ = sender.send(ClientInput::StdinEnd).await;
        }
    }
    if let Some(resize) = channels.resize {
        tokio::spawn(async move {
            let mut reader = resize.reader;
            let mut decoder = ResizeDecoder::default();
            let mut buf = vec![0u8; 1024];
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                for size in decoder.feed(&buf[..n]) {
                    if sender.send(ClientInput::Resize(size)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    let sink = SpdySink {
        session,
        stdout: channels.stdout.map(|s| s.writer),
        stderr: channels.stderr.map(|s| s.writer),
        error: channels.error.map(|s| s.writer),
    };
    Some((sink, inputs))
}

/// Port-forward over SPDY: each forwarded connection is a pair of streams (`error` and
/// `data`) sharing a `requestID` and naming the `port`.
pub async fn port_forward(
    session: Session,
    mut incoming: mpsc::Receiver<Stream>,
    network: PodNetwork,
) {
    let mut error_streams: std::collections::HashMap<String, StreamWriter> =
        std::collections::HashMap::new();
    let mut pending_errors: std::collections::HashMap<String, String> =
        std::collections::HashMap::new();
    let (failures, mut failed) = mpsc::channel::<(String, String)>(16);
    loop {
        let stream = tokio::select! {
            stream = incoming.recv() => match stream {
                Some(stream) => stream,
                None => break,
            },
            Some((request_id, message)) = failed.recv() => {
                match error_streams.remove(&request_id) {
                    Some(mut writer) => {
                        tokio::spawn(async move {
                            let _ = writer.write_all(message.as_bytes()).await;
                            let _ = writer.shutdown().await;
                        });
                    }
                    None => {
                        pending_errors.insert(request_id, message);
                    }
                }
                continue;
            }
        };
        let request_id = stream.headers.get("requestid").unwrap_or("").to_string();
        let port = stream
            .headers
            .get("port")
            .and_then(|p| p.parse::<u16>().ok());
        match stream_type(&stream) {
            "error" => {
                let mut writer = stream.writer;
                match pending_errors.remove(&request_id) {
                    Some(message) => {
                        tokio::spawn(async move {
                            let _ = writer.write_all(message.as_bytes()).await;
                            let _ = writer.shutdown().await;
                        });
                    }
                    None => {
                        error_streams.insert(request_id, writer);
                    }
                }
            }
            "data" => {
                let Some(port) = port.filter(|p| *p > 0) else {
                    let message = format!(
                        "invalid port {:?} in request {request_id}",
                        stream.headers.get("port").unwrap_or("")
                    );
                    let _ = failures.send((request_id, message)).await;
                    stream.writer.reset(RstStatus::CANCEL);
                    continue;
                };
                let network = network.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    let result = match network.dial(port).await {
                        Ok(connection) => relay(stream.reader, stream.writer, connection).await,
                        Err(e) => {
                            stream.writer.reset(RstStatus::CANCEL);
                            Err(e)
                        }
                    };
                    if let Err(e) = result {
                        let message = format!("error forwarding port {port} to pod: {e}");
                        let _ = failures.send((request_id, message)).await;
                    }
                });
            }
            other => {
                tracing::debug!(stream_type = other, "unexpected port-forward stream: reset");
                stream.writer.reset(RstStatus::CANCEL);
            }
        }
    }
    session.close().await;
}
