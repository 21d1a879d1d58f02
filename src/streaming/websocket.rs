//! The Kubernetes channel protocol over WebSocket: each message is one channel's data,
//! prefixed by the channel number (a byte, or an ASCII digit with base64 data); channel 255
//! in v5 closes the channel named by the next byte. Also the SPDY tunnel port-forward uses
//! (binary messages carrying a byte stream).

use std::io;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::protocol::{Encoding, ResizeDecoder, Version};
use super::remotecommand::{ClientInput, OutputSink};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` half-closes that channel.
pub const CLOSE: u8 = 255;

/// Largest message accepted from a client.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A normal closure: clients read a close without a status code as an error.
pub fn normal_close() -> Message {
    Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    }))
}

pub fn config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// One channel message as it goes on the wire.
pub fn encode(encoding: Encoding, channel: u8, data: &[u8]) -> Message {
    match encoding {
        Encoding::Binary => {
            let mut frame = BytesMut::with_capacity(data.len() + 1);
            frame.put_u8(channel);
            frame.put_slice(data);
            Message::Binary(frame.freeze())
        }
        Encoding::Base64 => {
            let mut text = String::with_capacity(data.len() * 4 / 3 + 5);
            text.push(char::from(b'0'.wrapping_add(channel)));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            Message::text(text)
        }
    }
}

/// A decoded client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data { channel: u8, data: Bytes },
    Close { channel: u8 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("a close signal must name exactly one channel")]
    BadClose,
    #[error("invalid base64 on channel {0}")]
    BadBase64(u8),
}

/// Decodes a client message; None for messages without channel data (empty, control).
pub fn decode(
    encoding: Encoding,
    version: Option<Version>,
    message: Message,
) -> Result<Option<Frame>, FrameError> {
    let data: Bytes = match (encoding, message) {
        (Encoding::Binary, Message::Binary(data)) => data,
        (Encoding::Base64, Message::Text(text)) => Bytes::from(text.as_str().as_bytes().to_vec()),
        // A binary client sending text (or the reverse) is read the same way.
        (Encoding::Binary, Message::Text(text)) => Bytes::from(text.as_str().as_bytes().to_vec()),
        (Encoding::Base64, Message::Binary(data)) => data,
        _ => return Ok(None),
    };
    let Some(&first) = data.first() else {
        return Ok(None);
    };
    if first == CLOSE && version == Some(Version::V5) {
        return match data.len() {
            2 => Ok(Some(Frame::Close { channel: data[1] })),
            _ => Err(FrameError::BadClose),
        };
    }
    match encoding {
        Encoding::Binary => Ok(Some(Frame::Data {
            channel: first,
            data: data.slice(1..),
        })),
        Encoding::Base64 => {
            let channel = first.wrapping_sub(b'0');
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(&data[1..])
                .map_err(|_| FrameError::BadBase64(channel))?;
            Ok(Some(Frame::Data {
                channel,
                data: Bytes::from(decoded),
            }))
        }
    }
}

type WsSink<S> = SplitSink<WebSocketStream<S>, Message>;

/// Exec/attach output going to a WebSocket client.
pub struct ChannelSink<S> {
    sink: WsSink<S>,
    encoding: Encoding,
    /// Set once the client's side of the connection ended.
    gone: tokio::sync::watch::Receiver<bool>,
}

impl<S> OutputSink for ChannelSink<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn stdout(&mut self, data: Bytes) -> io::Result<()> {
        self.sink
            .send(encode(self.encoding, STDOUT, &data))
            .await
            .map_err(io::Error::other)
    }

    async fn stderr(&mut self, data: Bytes) -> io::Result<()> {
        self.sink
            .send(encode(self.encoding, STDERR, &data))
            .await
            .map_err(io::Error::other)
    }

    async fn finish(mut self, error: Option<Vec<u8>>) {
        if let Some(error) = error {
            let _ = self.sink.send(encode(self.encoding, ERROR, &error)).await;
        }
        let _ = self.sink.send(normal_close()).await;
        let _ = self.sink.close().await;
    }

    fn gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut gone = self.gone.clone();
        async move {
            let _ = gone.wait_for(|gone| *gone).await;
        }
    }
}

/// Splits a WebSocket exec/attach connection: the output sink, and a task turning the
/// client's messages into inputs.
pub fn remote_command<S>(
    ws: WebSocketStream<S>,
    encoding: Encoding,
    version: Version,
) -> (ChannelSink<S>, mpsc::Receiver<ClientInput>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let (sender, inputs) = mpsc::channel(super::remotecommand::INPUT_QUEUE);
    let (gone_sender, gone) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        read_inputs(stream, encoding, version, sender).await;
        let _ = gone_sender.send(true);
    });
    (
        ChannelSink {
            sink,
            encoding,
            gone,
        },
        inputs,
    )
}

async fn read_inputs<S>(
    mut stream: SplitStream<WebSocketStream<S>>,
    encoding: Encoding,
    version: Version,
    sender: mpsc::Sender<ClientInput>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut resize = ResizeDecoder::default();
    let mut stdin_open = true;
    while let Some(Ok(message)) = stream.next().await {
        if message.is_close() {
            break;
        }
        let frame = match decode(encoding, Some(version), message) {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "bad websocket message");
                break;
            }
        };
        let inputs = match frame {
            Frame::Data {
                channel: STDIN,
                data,
            } if stdin_open => vec![ClientInput::Stdin(data)],
            Frame::Data {
                channel: RESIZE,
                data,
            } => resize
                .feed(&data)
                .into_iter()
                .map(ClientInput::Resize)
                .collect(),
            Frame::Close { channel: STDIN } if stdin_open => {
                stdin_open = false;
                vec![ClientInput::StdinEnd]
            }
            _ => Vec::new(),
        };
        for input in inputs {
            if sender.send(input).await.is_err() {
                return;
            }
        }
    }
    if stdin_open {
        let _ = sender.send(ClientInput::StdinEnd).await;
    }
}

/// The byte stream a SPDY tunnel carries in binary messages, as a plain duplex stream.
pub fn tunnel<S>(ws: WebSocketStream<S>) -> tokio::io::DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    const TUNNEL_BUFFER: usize = 256 * 1024;
    let (ours, theirs) = tokio::io::duplex(TUNNEL_BUFFER);
    let (mut read_half, mut write_half) = tokio::io::split(ours);
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Binary(data) if write_half.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = write_half.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match read_half.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    });
    theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_frames_carry_the_channel_byte() {
        assert_eq!(
            encode(Encoding::Binary, STDOUT, b"hi"),
            Message::Binary(Bytes::from_static(b"\x01hi"))
        );
        assert_eq!(
            decode(
                Encoding::Binary,
                Some(Version::V4),
                Message::Binary(Bytes::from_static(b"\x00abc"))
            ),
            Ok(Some(Frame::Data {
                channel: STDIN,
                data: Bytes::from_static(b"abc")
            }))
        );
    }

    #[test]
    fn base64_frames_use_a_digit_and_base64() {
        // "foo\n" on stdin, as the kubelet's documentation shows it.
        assert_eq!(
            encode(Encoding::Base64, STDIN, b"foo\n"),
            Message::text("0Zm9vCg==")
        );
        assert_eq!(
            decode(Encoding::Base64, Some(Version::V4), Message::text("1Cg=="))
                .unwrap()
                .unwrap(),
            Frame::Data {
                channel: STDOUT,
                data: Bytes::from_static(b"\n")
            }
        );
        assert_eq!(
            decode(Encoding::Base64, Some(Version::V4), Message::text("0!!!")),
            Err(FrameError::BadBase64(STDIN))
        );
    }

    #[test]
    fn sessions_end_with_a_normal_closure() {
        // Go's WebSocket client reads a close without status (1005) as an error.
        let Message::Close(Some(frame)) = normal_close() else {
            panic!("not a close frame with a status");
        };
        assert_eq!(u16::from(frame.code), 1000);
    }

    #[test]
    fn v5_close_signal_names_one_channel() {
        let close = Message::Binary(Bytes::from_static(&[CLOSE, STDIN]));
        assert_eq!(
            decode(Encoding::Binary, Some(Version::V5), close.clone()),
            Ok(Some(Frame::Close { channel: STDIN }))
        );
        // Before v5, 255 is just a channel number nobody uses.
        assert_eq!(
            decode(Encoding::Binary, Some(Version::V4), close),
            Ok(Some(Frame::Data {
                channel: CLOSE,
                data: Bytes::from_static(&[STDIN])
            }))
        );
        assert_eq!(
            decode(
                Encoding::Binary,
                Some(Version::V5),
                Message::Binary(Bytes::from_static(&[CLOSE]))
            ),
            Err(FrameError::BadClose)
        );
        assert_eq!(
            decode(
                Encoding::Binary,
                Some(Version::V5),
                Message::Binary(Bytes::new())
            ),
            Ok(None)
        );
    }
}
