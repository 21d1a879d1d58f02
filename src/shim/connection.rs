//! The daemon's connection to one pod's shim: a single HTTP/2 connection over the shim's
//! unix socket, spoken with the `h2` crate directly. The daemon holds one such connection
//! per running pod for the pod's whole life (its exit events stream over it), so what each
//! layer keeps per connection counts: tonic's `Channel` adds a request queue (a tower
//! `Buffer`: a task and a 32-slot block) and a reconnect layer, and hyper's client a
//! dispatch channel (another 32-slot block) and a task per open request body, together
//! ~20 KiB a pod for nothing here. Calls to a shim are few, and a shim that went away is
//! not reconnected to but noticed (sandbox/shim_watch.rs) or connected to afresh
//! (`SandboxManager::shim`).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::net::UnixStream;
use tonic::codegen::http;

/// Flow-control windows: large enough that an ExecSync answer (up to 16 MiB a stream)
/// does not wait on a window update every 64 KiB. Windows are credit, not buffers.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// One shim's HTTP/2 connection; clones share it (HTTP/2 carries many calls at once).
#[derive(Debug, Clone)]
pub struct ShimConnection {
    send: SendRequest<Bytes>,
}

/// Why the connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to the socket")]
    Socket(#[source] std::io::Error),
    #[error("HTTP/2 handshake")]
    Handshake(#[source] h2::Error),
}

impl ShimConnection {
    /// Connects to the shim listening on `socket`; the connection lives until the shim
    /// closes it or every clone is dropped.
    pub async fn connect(socket: &Path) -> Result<ShimConnection, ConnectError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(ConnectError::Socket)?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(stream)
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            // Ends when the shim goes away or the last clone is dropped; the calls in
            // flight get their answer (an error) from their streams.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "shim connection ended");
            }
        });
        Ok(ShimConnection { send })
    }
}

type Answer = Result<http::Response<ShimBody>, h2::Error>;

impl tower::Service<http::Request<tonic::body::Body>> for ShimConnection {
    type Response = http::Response<ShimBody>;
    type Error = h2::Error;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let sent = self
            .send
            .send_request(http::Request::from_parts(parts, ()), false);
        Box::pin(async move {
            let (response, stream) = sent?;
            // A request body may stream on while the answer does (a stdin stream): it is
            // sent by its own task, which ends with the body.
            tokio::spawn(send_body(body, stream));
            let response = response.await?;
            Ok(response.map(|recv| ShimBody {
                recv,
                data_done: false,
            }))
        })
    }
}

/// Sends `body` on `stream` as the peer's flow control allows, then ends the stream.
async fn send_body(mut body: tonic::body::Body, mut stream: SendStream<Bytes>) {
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                tracing::debug!(error = %e, "a request body to a shim failed");
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
        };
        match frame.into_data() {
            Ok(mut data) => {
                while data.has_remaining() {
                    stream.reserve_capacity(data.remaining());
                    let granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                        Some(Ok(granted)) => granted,
                        // The stream was reset or the connection closed: the answer says so.
                        Some(Err(_)) | None => return,
                    };
                    let chunk = data.split_to(granted.min(data.remaining()));
                    if stream.send_data(chunk, false).is_err() {
                        return;
                    }
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = stream.send_trailers(trailers);
                    return;
                }
            }
        }
    }
    let _ = stream.send_data(Bytes::new(), true);
}

/// An answer's body: its data, then its trailers (where gRPC puts the status).
pub struct ShimBody {
    recv: RecvStream,
    data_done: bool,
}

impl Body for ShimBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Read: the shim may send that much more.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
