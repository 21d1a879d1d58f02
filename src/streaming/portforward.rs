//! Port-forward: dial a port inside the pod's network namespace (from a throwaway thread
//! that joined it, so the daemon's own threads never change namespace) and relay bytes.

use std::io;
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where a pod's ports are: its network namespace, or the host's for host-network pods.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    pub netns: Option<PathBuf>,
}

impl PodNetwork {
    /// Connects to `port` on the pod's loopback (IPv4, then IPv6).
    pub async fn dial(&self, port: u16) -> io::Result<TcpStream> {
        let connect = move || -> io::Result<std::net::TcpStream> {
            let v4 = std::net::TcpStream::connect(("127.0.0.1", port));
            match v4 {
                Ok(stream) => Ok(stream),
                Err(e) => std::net::TcpStream::connect(("::1", port)).map_err(|_| e),
            }
        };
        let netns = self.netns.clone();
        let stream = tokio::task::spawn_blocking(move || match netns {
            // The socket keeps the namespace it was made in after the thread is gone.
            Some(netns) => crate::linux::netns::run_in_netns(&netns, connect)?,
            None => connect(),
        })
        .await
        .map_err(io::Error::other)??;
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        TcpStream::from_std(stream)
    }
}

/// One copy direction's chunk size: big enough that a fast stream costs few syscalls.
const COPY_CHUNK: usize = 64 * 1024;

/// Which end of a relay failed.
#[derive(Debug)]
enum Failure {
    /// The client's stream (reset, gone): nothing to tell it.
    Client,
    /// The connection in the pod: the client is told on its error stream.
    Pod(io::Error),
}

/// Copies `from` to `to` until EOF, then shuts `to`'s write side; errors say which side.
async fn copy_until_eof(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    from_is_pod: bool,
) -> Result<(), Failure> {
    let side = |pod: bool| {
        move |e: io::Error| {
            if pod {
                Failure::Pod(e)
            } else {
                Failure::Client
            }
        }
    };
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = from.read(&mut buf).await.map_err(side(from_is_pod))?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).await.map_err(side(!from_is_pod))?;
    }
    to.shutdown().await.map_err(side(!from_is_pod))
}

/// Relays a client's stream and a connection both ways until both directions ended (or
/// one failed). Only a failure of the pod's side is an error: a client that resets its
/// stream when it is done (client-go does) has not failed.
pub async fn relay(
    client_read: impl AsyncRead + Unpin,
    client_write: impl AsyncWrite + Unpin,
    connection: TcpStream,
) -> io::Result<()> {
    let (conn_read, conn_write) = connection.into_split();
    let upstream = copy_until_eof(client_read, conn_write, false);
    let downstream = copy_until_eof(conn_read, client_write, true);
    // A failure either way ends both: a reset client must not leave the connection open.
    match tokio::try_join!(upstream, downstream) {
        Ok(_) | Err(Failure::Client) => Ok(()),
        Err(Failure::Pod(e)) => Err(e),
    }
}

/// WebSocket port-forward with channel framing: for the i-th requested port, channel 2i
/// carries its data and 2i+1 its errors; with `port_prefix` the first message on each
/// channel is the port number (little endian), as the kubelet sends it. One connection per
/// port per WebSocket.
pub async fn websocket_channels<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    ports: Vec<u16>,
    port_prefix: bool,
    encoding: super::protocol::Encoding,
    network: PodNetwork,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::Message;

    use super::websocket::{Frame, decode, encode};

    let (mut sink, mut stream) = ws.split();
    let (outgoing, mut to_client) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(message) = to_client.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        let _ = sink.send(super::websocket::normal_close()).await;
        let _ = sink.close().await;
    });
    let mut to_ports = Vec::new();
    let mut relays = Vec::new();
    for (index, port) in ports.iter().copied().enumerate() {
        let (data_channel, error_channel) = match u8::try_from(index * 2 + 1) {
            Ok(error_channel) => (error_channel - 1, error_channel),
            Err(_) => break,
        };
        if port_prefix {
            for channel in [data_channel, error_channel] {
                let _ = outgoing
                    .send(encode(encoding, channel, &port.to_le_bytes()))
                    .await;
            }
        }
        let (to_port, from_client) = mpsc::channel::<bytes::Bytes>(16);
        to_ports.push(to_port);
        let outgoing = outgoing.clone();
        let network = network.clone();
        relays.push(tokio::spawn(async move {
            let connection = match network.dial(port).await {
                Ok(connection) => connection,
                Err(e) => {
                    let message = format!("error forwarding port {port} to pod: {e}");
                    let _ = outgoing
                        .send(encode(encoding, error_channel, message.as_bytes()))
                        .await;
                    return;
                }
            };
            let (mut conn_read, mut conn_write) = connection.into_split();
            let upstream = async move {
                let mut from_client = from_client;
                while let Some(data) = from_client.recv().await {
                    conn_write.write_all(&data).await?;
                }
                conn_write.shutdown().await
            };
            let downstream = async {
                let mut buf = vec![0u8; COPY_CHUNK];
                loop {
                    let n = conn_read.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<(), io::Error>(());
                    }
                    if outgoing
                        .send(encode(encoding, data_channel, &buf[..n]))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            };
            if let Err(e) = tokio::try_join!(upstream, downstream) {
                let message = format!("error forwarding port {port}: {e}");
                let _ = outgoing
                    .send(encode(encoding, error_channel, message.as_bytes()))
                    .await;
            }
        }));
    }
    drop(outgoing);
    while let Some(Ok(message)) = stream.next().await {
        if message.is_close() {
            break;
        }
        let Ok(Some(Frame::Data { channel, data })) = decode(encoding, None, message) else {
            continue;
        };
        // Data for a port goes on its even channel; its error channel carries nothing in.
        if channel.is_multiple_of(2)
            && let Some(to_port) = to_ports.get(usize::from(channel / 2))
        {
            let _ = to_port.send(data).await;
        }
    }
    // The client is gone: so are its connections.
    for relay in relays {
        relay.abort();
    }
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client stream that fails, as a reset SPDY stream does.
    struct Reset;

    impl AsyncRead for Reset {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Err(io::Error::other("stream was reset")))
        }
    }

    async fn pod_side(reply: &'static [u8]) -> (TcpStream, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut connection, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let _ = connection.read_to_end(&mut got).await;
            let _ = connection.write_all(reply).await;
            got
        });
        (TcpStream::connect(address).await.unwrap(), server)
    }

    #[tokio::test]
    async fn relay_carries_both_ways_until_both_end() {
        let (connection, server) = pod_side(b"pong").await;
        let mut answer = Vec::new();
        relay(&b"ping"[..], &mut answer, connection).await.unwrap();
        assert_eq!(server.await.unwrap(), b"ping");
        assert_eq!(answer, b"pong");
    }

    #[tokio::test]
    async fn a_client_reset_is_not_an_error_to_report() {
        let (connection, _server) = pod_side(b"").await;
        relay(Reset, tokio::io::sink(), connection).await.unwrap();
    }
}
