//! Mutating calls run in their own task: dropping the caller's future (a client deadline, a
//! disconnect) leaves the work running to its end, and whoever asks again gets its result.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};

use crate::error::{Error, ErrorKind, Result};
use crate::store::lock;

/// A finished call's error, cloneable so every waiter gets it (kind and message kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        Error::new(f.kind, f.message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// A call running in its own task; every clone resolves to its one result.
pub type Running<T> = Shared<BoxFuture<'static, std::result::Result<T, Failure>>>;

/// Starts `work` in its own task now; the returned handle may be dropped at any time.
pub fn detach<T, F>(work: F) -> Running<T>
where
    T: Clone + Send + Sync + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    let task = tokio::spawn(work);
    async move {
        match task.await {
            Ok(result) => result.map_err(Failure::from),
            Err(join) => Err(Failure::from(Error::internal(
                "the call's task ended",
                join,
            ))),
        }
    }
    .boxed()
    .shared()
}

/// Calls in flight by key (`"<op> <id> <arguments>"`): an identical call made while one
/// runs waits for that one instead of starting another.
pub struct Calls<T> {
    inflight: Arc<Mutex<HashMap<String, Running<T>>>>,
}

impl<T> Default for Calls<T> {
    fn default() -> Self {
        Calls {
            inflight: Arc::default(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Calls<T> {
    /// Runs `work` detached, or joins the identical call already running.
    pub async fn run<F>(&self, key: String, work: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let running = {
            let mut inflight = lock(&self.inflight);
            match inflight.get(&key) {
                Some(running) => running.clone(),
                None => {
                    let map = self.inflight.clone();
                    let task_key = key.clone();
                    let running = detach(async move {
                        let result = work.await;
                        lock(&map).remove(&task_key);
                        result
                    });
                    inflight.insert(key, running.clone());
                    running
                }
            }
        };
        running.await.map_err(Error::from)
    }

    pub fn in_flight(&self) -> usize {
        lock(&self.inflight).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_dropped_caller_does_not_stop_the_work() {
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let running = detach(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            d.fetch_add(1, Ordering::SeqCst);
            Ok(7)
        });
        drop(running);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn identical_calls_in_flight_share_one_run_and_its_error() {
        let calls: Calls<u32> = Calls::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let work = |runs: Arc<AtomicUsize>| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            Err::<u32, _>(Error::failed_precondition("container x is exited"))
        };
        let (a, b) = tokio::join!(
            calls.run("stop x".into(), work(runs.clone())),
            calls.run("stop x".into(), work(runs.clone()))
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        for r in [a, b] {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
            assert!(e.to_string().contains("container x is exited"));
        }
        assert_eq!(calls.in_flight(), 0, "a finished call is forgotten");
        // After it finished, the same call runs again (the managers make that idempotent).
        calls
            .run("stop x".into(), async { Ok(1) })
            .await
            .expect("a new run");
    }

    #[tokio::test]
    async fn an_abandoned_call_is_joined_by_its_retry() {
        let calls: Calls<u32> = Calls::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let first = calls.run("start x".into(), async move {
            r.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(5)
        });
        // The client gives up after 5 ms.
        assert!(
            tokio::time::timeout(Duration::from_millis(5), first)
                .await
                .is_err()
        );
        let again = calls.run("start x".into(), async { Ok(6) }).await.unwrap();
        assert_eq!(again, 5, "the retry got the first call's result");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
