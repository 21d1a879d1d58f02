//! Giving back the code pages a burst of RPCs touched, once the shim is quiet again. A
//! pod's shim is idle nearly all its life; without this its resident set would keep
//! every page of the (large, shared) binary that any request ever ran.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Notify;

/// How long without an RPC before the shim gives back the code pages it touched.
const IDLE_TRIM_AFTER: Duration = Duration::from_secs(1);

/// RPCs (and other work) seen, so the shim can tell when it has gone quiet.
#[derive(Default)]
pub(super) struct Activity {
    count: AtomicU64,
    notify: Notify,
}

impl Activity {
    /// Starts the trimmer; `touch` it on every request.
    pub(super) fn spawn_trimmer() -> Arc<Activity> {
        let activity = Arc::new(Activity::default());
        tokio::spawn(trim_when_idle(activity.clone()));
        activity
    }

    pub(super) fn touch(&self) {
        self.count.fetch_add(1, Relaxed);
        self.notify.notify_one();
    }
}

/// After each burst, once quiet, drops the clean file pages the burst mapped. No timer
/// runs while nothing happens.
async fn trim_when_idle(activity: Arc<Activity>) {
    loop {
        activity.notify.notified().await;
        loop {
            let seen = activity.count.load(Relaxed);
            tokio::time::sleep(IDLE_TRIM_AFTER).await;
            if activity.count.load(Relaxed) == seen {
                break;
            }
        }
        let _ = crate::linux::memory::trim_idle_pages();
    }
}
