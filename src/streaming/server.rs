//! The streaming HTTP server: `/exec/<token>`, `/attach/<token>` and `/portforward/<token>`,
//! each upgraded to SPDY/3.1 or WebSocket, then run as the token's request says.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::idle::IdleTimeout;
use super::over_spdy;
use super::portforward::PodNetwork;
use super::protocol::{self, Version, WsPortForward};
use super::remotecommand;
use super::spdy::{Session, SessionConfig};
use super::token::{StreamRequest, TokenCache};
use super::websocket;
use crate::container::manager::ContainerManager;
use crate::error::{Error, ErrorKind, Result};
use crate::sandbox::SandboxManager;
use crate::shim::ProcessSession;
use crate::shim_api::OpenIo;

/// Serves streaming URLs and hands them out.
pub struct StreamingServer {
    tokens: TokenCache,
    idle_timeout: std::time::Duration,
    base_url: String,
    containers: Arc<ContainerManager>,
    sandboxes: Arc<SandboxManager>,
}

type HttpResponse = Response<Full<Bytes>>;

fn plain(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(message.into())));
    *response.status_mut() = status;
    response
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

fn upgrade_response(upgrade: &'static str) -> HttpResponse {
    let mut response = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    headers.insert(hyper::header::UPGRADE, HeaderValue::from_static(upgrade));
    response
}

impl StreamingServer {
    /// Binds `[streaming] address:port` (port 0: any free one) and starts serving.
    pub async fn start(
        address: std::net::IpAddr,
        port: u16,
        idle_timeout: std::time::Duration,
        containers: Arc<ContainerManager>,
        sandboxes: Arc<SandboxManager>,
    ) -> Result<Arc<StreamingServer>> {
        let listener = TcpListener::bind((address, port)).await.map_err(|e| {
            Error::with_source(
                ErrorKind::Internal,
                format!("bind the streaming server on {address}:{port}"),
                e,
            )
        })?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::with_source(ErrorKind::Internal, "streaming server address", e))?;
        // An unspecified address serves every interface; URLs need one a client can reach.
        let url_ip = if bound.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            bound.ip()
        };
        let base_url = format!("http://{}", SocketAddr::new(url_ip, bound.port()));
        let server = Arc::new(StreamingServer {
            tokens: TokenCache::default(),
            idle_timeout,
            base_url,
            containers,
            sandboxes,
        });
        tracing::info!(address = %bound, "streaming server listening");
        tokio::spawn(server.clone().accept(listener));
        Ok(server)
    }

    /// A single-use URL for `request`.
    pub fn url_for(&self, request: StreamRequest) -> String {
        let kind = request.kind();
        let token = self.tokens.insert(request);
        format!("{}/{kind}/{token}", self.base_url)
    }

    async fn accept(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (connection, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "streaming server accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = connection.set_nodelay(true);
            let server = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let server = server.clone();
                    async move { Ok::<_, std::convert::Infallible>(server.handle(request)) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(connection), service)
                    .with_upgrades()
                    .await;
                if let Err(e) = served {
                    tracing::debug!(peer = %peer, error = %e, "streaming connection");
                }
            });
        }
    }

    fn handle(self: Arc<Self>, mut request: Request<Incoming>) -> HttpResponse {
        let path = request.uri().path().to_string();
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (Some(kind), Some(token)) = (parts.next(), parts.next()) else {
            return plain(StatusCode::NOT_FOUND, "not found");
        };
        let Some(stream_request) = self.tokens.take(kind, token) else {
            return plain(StatusCode::NOT_FOUND, "not found");
        };
        let upgrade = request
            .headers()
            .get(hyper::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let on_upgrade = hyper::upgrade::on(&mut request);
        match upgrade.as_str() {
            "spdy/3.1" => self.upgrade_spdy(&request, stream_request, on_upgrade),
            "websocket" => self.upgrade_websocket(&request, stream_request, on_upgrade),
            _ => plain(
                StatusCode::BAD_REQUEST,
                "expected an upgrade to SPDY/3.1 or websocket",
            ),
        }
    }

    fn upgrade_spdy(
        self: Arc<Self>,
        request: &Request<Incoming>,
        stream_request: StreamRequest,
        on_upgrade: hyper::upgrade::OnUpgrade,
    ) -> HttpResponse {
        let offered_values = header_values(request.headers(), "x-stream-protocol-version");
        let offered = protocol::offered(offered_values);
        let chosen = match &stream_request {
            StreamRequest::PortForward { .. } => {
                protocol::spdy_port_forward(&offered).map(|name| (name, Version::V4))
            }
            _ => protocol::spdy_remote_command(&offered),
        };
        let Some((name, version)) = chosen else {
            let accepted = match stream_request {
                StreamRequest::PortForward { .. } => protocol::PORT_FORWARD.to_string(),
                _ => protocol::spdy_remote_command_names().join(", "),
            };
            let mut response = plain(
                StatusCode::FORBIDDEN,
                format!("none of the stream protocols {offered:?} is supported"),
            );
            if let Ok(value) = HeaderValue::from_str(&accepted) {
                response
                    .headers_mut()
                    .insert("x-accepted-stream-protocol-versions", value);
            }
            return response;
        };
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY upgrade");
                    return;
                }
            };
            let connection = IdleTimeout::new(TokioIo::new(upgraded), self.idle_timeout);
            let (session, incoming) = Session::server(connection, SessionConfig::default());
            match stream_request {
                StreamRequest::PortForward { sandbox_id } => match self.pod_network(&sandbox_id) {
                    Ok(network) => over_spdy::port_forward(session, incoming, network).await,
                    Err(e) => {
                        tracing::info!(sandbox_id, error = %e, "port-forward");
                        session.close().await;
                    }
                },
                request @ (StreamRequest::Exec { streams, .. }
                | StreamRequest::Attach { streams, .. }) => {
                    let Some((sink, inputs)) =
                        over_spdy::remote_command(session, incoming, streams, version).await
                    else {
                        return;
                    };
                    let started = self.start_process(request).await;
                    remotecommand::run(started, inputs, sink, version).await;
                }
            }
        });
        let mut response = upgrade_response("SPDY/3.1");
        if !name.is_empty() {
            response
                .headers_mut()
                .insert("x-stream-protocol-version", HeaderValue::from_static(name));
        }
        response
    }

    fn upgrade_websocket(
        self: Arc<Self>,
        request: &Request<Incoming>,
        stream_request: StreamRequest,
        on_upgrade: hyper::upgrade::OnUpgrade,
    ) -> HttpResponse {
        let headers = request.headers();
        let Some(key) = headers.get("sec-websocket-key") else {
            return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
        };
        if headers
            .get("sec-websocket-version")
            .is_some_and(|v| v.as_bytes() != b"13")
        {
            let mut response = plain(
                StatusCode::UPGRADE_REQUIRED,
                "unsupported WebSocket version",
            );
            response
                .headers_mut()
                .insert("sec-websocket-version", HeaderValue::from_static("13"));
            return response;
        }
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let offered_values = header_values(headers, "sec-websocket-protocol");
        let offered = protocol::offered(offered_values);
        let ports: Vec<u16> = request
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .filter(|(name, _)| *name == "port")
            .filter_map(|(_, value)| value.parse().ok())
            .collect();
        enum Plan {
            Remote(Version, protocol::Encoding),
            Forward(WsPortForward),
        }
        let chosen = match &stream_request {
            StreamRequest::PortForward { .. } => {
                protocol::ws_port_forward(&offered).map(|(name, mode)| (name, Plan::Forward(mode)))
            }
            _ => protocol::ws_remote_command(&offered)
                .map(|(name, version, encoding)| (name, Plan::Remote(version, encoding))),
        };
        let Some((name, plan)) = chosen else {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("none of the WebSocket protocols {offered:?} is supported"),
            );
        };
        if matches!(plan, Plan::Forward(WsPortForward::Channels { .. })) && ports.is_empty() {
            return plain(
                StatusCode::BAD_REQUEST,
                "port-forward needs a port query parameter",
            );
        }
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "WebSocket upgrade");
                    return;
                }
            };
            let ws = WebSocketStream::from_raw_socket(
                IdleTimeout::new(TokioIo::new(upgraded), self.idle_timeout),
                Role::Server,
                Some(websocket::config()),
            )
            .await;
            match (stream_request, plan) {
                (StreamRequest::PortForward { sandbox_id }, Plan::Forward(mode)) => {
                    let network = match self.pod_network(&sandbox_id) {
                        Ok(network) => network,
                        Err(e) => {
                            tracing::info!(sandbox_id, error = %e, "port-forward");
                            return;
                        }
                    };
                    match mode {
                        WsPortForward::Tunnel => {
                            let (session, incoming) =
                                Session::server(websocket::tunnel(ws), SessionConfig::default());
                            over_spdy::port_forward(session, incoming, network).await;
                        }
                        WsPortForward::Channels {
                            port_prefix,
                            encoding,
                        } => {
                            super::portforward::websocket_channels(
                                ws,
                                ports,
                                port_prefix,
                                encoding,
                                network,
                            )
                            .await;
                        }
                    }
                }
                (request, Plan::Remote(version, encoding)) => {
                    let (sink, inputs) = websocket::remote_command(ws, encoding, version);
                    let started = self.start_process(request).await;
                    remotecommand::run(started, inputs, sink, version).await;
                }
                _ => {}
            }
        });
        let mut response = upgrade_response("websocket");
        let headers = response.headers_mut();
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert("sec-websocket-accept", accept);
        }
        if !name.is_empty() {
            headers.insert("sec-websocket-protocol", HeaderValue::from_static(name));
        }
        response
    }

    fn pod_network(&self, sandbox_id: &str) -> Result<PodNetwork> {
        let (record, _) = self.sandboxes.status(sandbox_id)?;
        Ok(PodNetwork {
            netns: record.netns,
        })
    }

    /// Starts the exec, or attaches, through the pod's shim.
    async fn start_process(
        &self,
        request: StreamRequest,
    ) -> std::result::Result<ProcessSession, String> {
        let (container_id, args, streams, is_exec) = match request {
            StreamRequest::Exec {
                container_id,
                cmd,
                streams,
            } => (container_id, cmd, streams, true),
            StreamRequest::Attach {
                container_id,
                streams,
            } => (container_id, Vec::new(), streams, false),
            StreamRequest::PortForward { .. } => {
                return Err("not an exec or attach request".into());
            }
        };
        let started = async {
            let record = self.containers.status(&container_id)?;
            let mut shim = self.sandboxes.shim(&record.sandbox_id).await?;
            let open = OpenIo {
                id: record.id.clone(),
                // Names the exec in the shim's log.
                exec_id: if is_exec {
                    hex::encode(rand::random::<[u8; 8]>())
                } else {
                    String::new()
                },
                args,
                tty: streams.tty,
                stdin: streams.stdin,
                stdout: streams.stdout,
                stderr: streams.stderr,
            };
            let session = if is_exec {
                shim.exec(open).await
            } else {
                shim.attach(open).await
            };
            session.map_err(Error::from)
        };
        started.await.map_err(|e: Error| e.to_string())
    }
}
