//! The daemon's connection to one pod's shim: a single HTTP/2 connection over the shim's
//! unix socket, used as it is. tonic's `Channel` would add, per pod, a request queue (a
//! tower `Buffer`: a task and a 32-slot block) and a reconnect layer; the daemon holds one
//! connection per running pod, so that costs ~10 KiB a pod for nothing: calls to a shim are
//! few, and a shim that went away is not reconnected to but noticed (sandbox/shim_watch.rs)
//! or connected to afresh (`SandboxManager::shim`).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixStream;
use tonic::codegen::http;

/// What a shim call is answered with.
type Answer = Result<http::Response<hyper::body::Incoming>, hyper::Error>;

/// One shim's HTTP/2 connection; clones share it (HTTP/2 carries many calls at once).
#[derive(Debug, Clone)]
pub struct ShimConnection {
    send: SendRequest<tonic::body::Body>,
}

/// Why the connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to the socket")]
    Socket(#[source] std::io::Error),
    #[error("HTTP/2 handshake")]
    Handshake(#[source] hyper::Error),
}

impl ShimConnection {
    /// Connects to the shim listening on `socket`; the connection lives until the shim
    /// closes it or every clone is dropped.
    pub async fn connect(socket: &Path) -> Result<ShimConnection, ConnectError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(ConnectError::Socket)?;
        let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            // Ends when the shim goes away or the last clone is dropped; either way the
            // calls in flight have their answer (an error) already.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "shim connection ended");
            }
        });
        Ok(ShimConnection { send })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for ShimConnection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.send.send_request(request))
    }
}
