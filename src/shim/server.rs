//! The berth.shim.v1 server: serves the socket until Shutdown, and maps each RPC onto the
//! shim's parts (process lifecycle, ExecSync, interactive streams, events). Errors become
//! gRPC statuses in one place (`error.rs`).

use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::cmdline::ShimArgs;
use super::idle::Activity;
use super::shared::Shared;
use crate::shim_api::shim_server::{Shim, ShimServer};
use crate::shim_api::*;

pub(super) async fn serve(
    args: ShimArgs,
    listener: StdUnixListener,
) -> Result<(), super::error::ShimError> {
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(super::error::setup_err("register the listener"))?;
    let shared = Arc::new(Shared::new(
        args.sandbox_id.clone(),
        args.state_dir.clone(),
        args.socket.clone(),
    ));
    super::reaper::spawn(shared.clone()).map_err(super::error::setup_err("watch SIGCHLD"))?;
    shared.save(&shared.table());
    tracing::info!(sandbox_id = %args.sandbox_id, pid = std::process::id(), socket = %args.socket.display(), "shim serving");

    let stop = {
        let shared = shared.clone();
        async move { shared.shutdown.notified().await }
    };
    let activity = Activity::spawn_trimmer();
    let server = tonic::transport::Server::builder()
        .add_service(ShimServer::with_interceptor(
            Service {
                shared: shared.clone(),
            },
            move |request| {
                activity.touch();
                Ok(request)
            },
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            stop,
        );
    // Graceful shutdown waits for clients to hang up; don't let one keep the shim alive.
    let deadline = async {
        shared.shutdown.notified().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    tokio::select! {
        result = server => {
            if let Err(e) = result {
                tracing::error!(error = %e, "serve");
            }
        }
        () = deadline => {}
    }
    tracing::info!("shim exiting");
    Ok(())
}

struct Service {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Shim for Service {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse {
            sandbox_id: self.shared.sandbox_id.clone(),
            shim_pid: std::process::id(),
        }))
    }

    async fn create(
        &self,
        request: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let request = request.into_inner();
        let pid = self.shared.create_process(&request).await?;
        if request.start {
            self.shared.start_process(&request.id).await?;
        }
        Ok(Response::new(CreateResponse { pid: pid as u32 }))
    }

    async fn start(
        &self,
        request: Request<StartRequest>,
    ) -> Result<Response<StartResponse>, Status> {
        let pid = self.shared.start_process(&request.into_inner().id).await?;
        Ok(Response::new(StartResponse { pid: pid as u32 }))
    }

    async fn kill(&self, request: Request<KillRequest>) -> Result<Response<KillResponse>, Status> {
        let request = request.into_inner();
        self.shared
            .kill_process(&request.id, request.signal, request.all)?;
        Ok(Response::new(KillResponse {}))
    }

    async fn state(
        &self,
        request: Request<StateRequest>,
    ) -> Result<Response<StateResponse>, Status> {
        let state = self.shared.process_state(&request.into_inner().id)?;
        Ok(Response::new(state))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.shared.delete_process(&request.into_inner().id)?;
        Ok(Response::new(DeleteResponse {}))
    }

    async fn reopen_log(
        &self,
        request: Request<ReopenLogRequest>,
    ) -> Result<Response<ReopenLogResponse>, Status> {
        self.shared.reopen_log(&request.into_inner().id)?;
        Ok(Response::new(ReopenLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        let response = self.shared.exec_sync(&request.into_inner()).await?;
        Ok(Response::new(response))
    }

    type ExecStream = super::interactive::OutputStream;

    async fn exec(
        &self,
        request: Request<tonic::Streaming<ProcessInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let stream = self.shared.exec_stream(request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    type AttachStream = super::interactive::OutputStream;

    async fn attach(
        &self,
        request: Request<tonic::Streaming<ProcessInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let stream = self.shared.attach_stream(request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn shutdown(
        &self,
        _: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        tracing::info!("shutdown requested");
        self.shared.shutdown_pod().await;
        self.shared.stopping.send_replace(true);
        self.shared.shutdown.notify_waiters();
        Ok(Response::new(ShutdownResponse {}))
    }

    type EventsStream = super::events::EventStream;

    async fn events(
        &self,
        _: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        Ok(Response::new(self.shared.exit_events()))
    }
}
