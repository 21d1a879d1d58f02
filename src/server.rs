//! The daemon process: configuration, logging, the CRI socket, the recovery gate, and
//! serving what the composition root (`crate::daemon`) builds.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use crate::cri::api::image_service_server::ImageServiceServer;
use crate::cri::api::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::codegen::http;

use crate::config::{Config, ConfigFlags, LogFormat};
use crate::error::{Error, ErrorKind, Result};

/// Entry of the default role; returns when the daemon is asked to stop.
pub fn run_daemon(flags: &ConfigFlags) -> ExitCode {
    let config = match Config::load(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth: {}", Error::from(e));
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berth")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "berth stopped");
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    // The HTTP/2 stack logs every frame at debug: keep it at info unless BERTH_LOG asks.
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{},h2=info,hyper=info,hyper_util=info,tower=info,tonic=info,reqwest=info,rustls=info",
            config.log_level.as_str()
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Holds the lock that makes a second daemon on the same socket refuse to start.
struct SocketLock {
    _file: File,
}

fn lock_socket(socket: &Path) -> Result<SocketLock> {
    let mut lock_path = socket.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    if let Some(dir) = socket.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| Error::internal(format!("creating {}", dir.display()), e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::internal(format!("opening lock file {}", lock_path.display()), e))?;
    // SAFETY: flock on a valid, owned descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Error::failed_precondition(format!(
            "another berth daemon is serving {}",
            socket.display()
        )));
    }
    Ok(SocketLock { _file: file })
}

fn bind_socket(socket: &Path) -> Result<UnixListener> {
    // We hold the lock, so any socket file here is stale.
    crate::persist::remove_file_if_exists(socket)
        .map_err(|e| Error::internal(format!("removing stale {}", socket.display()), e))?;
    let listener = UnixListener::bind(socket)
        .map_err(|e| Error::internal(format!("binding {}", socket.display()), e))?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o660))
        .map_err(|e| Error::internal(format!("chmod {}", socket.display()), e))?;
    Ok(listener)
}

/// Refuses a kernel below berth's floor and says which optional features this one lacks.
fn check_kernel() -> Result<()> {
    use crate::linux::kernel;
    let Some(running) = kernel::KernelVersion::running() else {
        tracing::warn!(
            "cannot read the kernel release; assuming it is at least {}",
            kernel::FLOOR
        );
        return Ok(());
    };
    kernel::check_floor(running).map_err(Error::failed_precondition)?;
    if !kernel::overlay_lowerdir_plus() {
        tracing::info!(kernel = %running, "overlayfs lacks lowerdir+: rootfs layers go through the classic lowerdir option");
    }
    if let Some(why) = kernel::userns_pods_unsupported() {
        tracing::warn!("{why}: such pods are refused");
    }
    Ok(())
}

async fn serve(config: Config) -> Result<()> {
    check_kernel()?;
    let config = Arc::new(config);
    let _lock = lock_socket(&config.socket)?;
    for dir in [&config.root, &config.state] {
        fs::create_dir_all(dir)
            .map_err(|e| Error::internal(format!("creating {}", dir.display()), e))?;
    }
    let listener = bind_socket(&config.socket)?;
    let ready = Arc::new(AtomicBool::new(false));

    let daemon = crate::daemon::Daemon::open(config.clone()).await?;
    let metrics_listener = if config.metrics.enabled {
        Some(crate::metrics::http::bind(config.metrics.address).await?)
    } else {
        None
    };
    let runtime_service = RuntimeServiceServer::new(daemon.runtime_service())
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(16 * 1024 * 1024);
    let image_service = ImageServiceServer::new(daemon.image_service());

    let gate = RecoveryGateLayer {
        ready: ready.clone(),
    };
    let server = tonic::transport::Server::builder()
        .trace_fn(|request| {
            tracing::info_span!(
                "rpc",
                method = %request.uri().path().rsplit('/').next().unwrap_or_default(),
                request_id = %format!("{:08x}", rand::random::<u32>()),
            )
        })
        .layer(crate::metrics::rpc::RpcMetricsLayer)
        .layer(crate::rpc_deadline::DeadlineLayer)
        .layer(crate::idle_memory::start(crate::idle_memory::QUIET))
        .layer(gate)
        .add_service(runtime_service)
        .add_service(image_service)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown_signal());
    let serving = tokio::spawn(server);

    // Serve (answering Unavailable) while recovery runs, so clients see why they wait.
    daemon.recover().await?;
    ready.store(true, Ordering::Release);
    if let Some(listener) = metrics_listener {
        tracing::info!(address = %config.metrics.address, "serving metrics on /metrics");
        crate::metrics::http::serve(listener);
    }
    tracing::info!(socket = %config.socket.display(), "berth is ready");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    let result = serving
        .await
        .map_err(|e| Error::internal("server task", e))?
        .map_err(|e| Error::internal("serving the CRI socket", e));
    daemon.shutdown().await;
    let _ = fs::remove_file(&config.socket);
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("shutting down; pods and containers keep running");
}

/// Answers every RPC with Unavailable until recovery has finished.
#[derive(Clone)]
struct RecoveryGateLayer {
    ready: Arc<AtomicBool>,
}

impl<S> tower::Layer<S> for RecoveryGateLayer {
    type Service = RecoveryGate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RecoveryGate {
            inner,
            ready: self.ready.clone(),
        }
    }
}

#[derive(Clone)]
struct RecoveryGate<S> {
    inner: S,
    ready: Arc<AtomicBool>,
}

impl<S, B> tower::Service<http::Request<B>> for RecoveryGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        std::future::Ready<std::result::Result<S::Response, S::Error>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if self.ready.load(Ordering::Acquire) {
            futures_util::future::Either::Right(self.inner.call(request))
        } else {
            let status: tonic::Status = Error::new(
                ErrorKind::Unavailable,
                "berth is recovering its state; retry",
            )
            .into();
            futures_util::future::Either::Left(std::future::ready(Ok(status.into_http())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    #[tokio::test]
    async fn the_gate_answers_unavailable_until_recovery_is_done() {
        let ready = Arc::new(AtomicBool::new(false));
        let inner = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let mut gate = RecoveryGateLayer {
            ready: ready.clone(),
        }
        .layer(inner);
        let response = gate
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(response.headers()).expect("a grpc status");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("recovering"));

        ready.store(true, Ordering::Release);
        let response = gate
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap();
        assert!(tonic::Status::from_header_map(response.headers()).is_none());
    }
}
