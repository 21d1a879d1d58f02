//! The daemon gives memory back after pods and containers come and go.
//!
//! A burst of creations grows the heap, and the allocator keeps what was freed; the code of
//! the calls that ran stays resident too. Once removals have stopped for [`QUIET`], the
//! daemon releases both (`linux::memory::release_idle_memory`), so its RSS returns to about
//! what it was idle. Removals rather than any call mark activity: a kubelet lists and reads
//! every second, and the daemon would never look quiet.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;
use tonic::codegen::http;

/// How long after the last removal the memory is released.
pub const QUIET: Duration = Duration::from_secs(2);

/// The calls after which memory is worth releasing.
const REMOVALS: [&str; 2] = ["/RemovePodSandbox", "/RemoveContainer"];

/// Starts the task that releases memory once removals have been quiet for `quiet`, and
/// returns the layer that tells it about them.
pub fn start(quiet: Duration) -> IdleMemoryLayer {
    let removed = Arc::new(Notify::new());
    let heard = removed.clone();
    tokio::spawn(async move {
        loop {
            heard.notified().await;
            // Each removal within `quiet` of the last one restarts the wait.
            while tokio::time::timeout(quiet, heard.notified()).await.is_ok() {}
            let released = tokio::task::spawn_blocking(crate::linux::memory::release_idle_memory);
            if let Ok(Err(e)) = released.await {
                tracing::debug!(error = %e, "releasing idle memory");
            }
        }
    });
    IdleMemoryLayer { removed }
}

#[derive(Clone)]
pub struct IdleMemoryLayer {
    removed: Arc<Notify>,
}

impl<S> tower::Layer<S> for IdleMemoryLayer {
    type Service = IdleMemory<S>;
    fn layer(&self, inner: S) -> Self::Service {
        IdleMemory {
            inner,
            removed: self.removed.clone(),
        }
    }
}

#[derive(Clone)]
pub struct IdleMemory<S> {
    inner: S,
    removed: Arc<Notify>,
}

impl<S, B> tower::Service<http::Request<B>> for IdleMemory<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if REMOVALS.iter().any(|method| path.ends_with(method)) {
            self.removed.notify_one();
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    #[tokio::test]
    async fn removals_mark_activity_and_other_calls_do_not() {
        let removed = Arc::new(Notify::new());
        let layer = IdleMemoryLayer {
            removed: removed.clone(),
        };
        let mut service = layer.layer(tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(())
        }));
        let call = |path: &str| http::Request::builder().uri(path).body(()).unwrap();
        let heard = || tokio::time::timeout(Duration::from_millis(50), removed.notified());
        for (path, is_removal) in [
            ("/runtime.v1.RuntimeService/ListContainers", false),
            ("/runtime.v1.RuntimeService/PodSandboxStatus", false),
            ("/runtime.v1.RuntimeService/RemoveContainer", true),
            ("/runtime.v1.RuntimeService/RemovePodSandbox", true),
        ] {
            service
                .ready()
                .await
                .unwrap()
                .call(call(path))
                .await
                .unwrap();
            assert_eq!(heard().await.is_ok(), is_removal, "{path}");
        }
    }
}
