//! The undo list of a multi-step mutation. Each acquired resource pushes its undo step
//! with a description; `commit` keeps everything; anything else — an error that returns,
//! an early `?`, a future dropped mid-way — runs the steps in reverse. `unwind` runs them
//! before returning (the error path, so the caller sees a clean slate); `Drop` spawns them
//! (a dropped future cannot await), which needs a tokio runtime, as every caller has.

use std::future::Future;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

struct Step {
    description: String,
    undo: BoxFuture<'static, crate::error::Result<()>>,
}

pub struct Rollback {
    /// What is being made ("container 3f2a…"), for the log lines.
    subject: String,
    steps: Vec<Step>,
}

impl Rollback {
    pub fn new(subject: impl Into<String>) -> Rollback {
        Rollback {
            subject: subject.into(),
            steps: Vec::new(),
        }
    }

    /// Records how to give back what was just taken. `undo` does not run until needed.
    pub fn push(
        &mut self,
        description: impl Into<String>,
        undo: impl Future<Output = ()> + Send + 'static,
    ) {
        self.push_try(description, undo.map(Ok));
    }

    /// `push` of a step that can fail: an undo cannot fail the call it cleans up after,
    /// so the failure is logged (`finish` returns it instead).
    pub fn push_try(
        &mut self,
        description: impl Into<String>,
        undo: impl Future<Output = crate::error::Result<()>> + Send + 'static,
    ) {
        let description = description.into();
        let undo = undo.boxed();
        self.steps.push(Step { description, undo });
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Success: the steps are dropped without running.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// Runs the steps in reverse now.
    pub async fn unwind(mut self) {
        let steps = std::mem::take(&mut self.steps);
        run(&self.subject, steps).await;
    }

    /// Runs the steps in reverse now as a removal does (RemoveX gives back what the
    /// creation took, with its undo steps): the first failure stops it and is returned, so
    /// the removal fails and its retry takes the steps again.
    pub async fn finish(mut self) -> crate::error::Result<()> {
        for step in std::mem::take(&mut self.steps).into_iter().rev() {
            step.undo.await?;
        }
        Ok(())
    }
}

async fn run(subject: &str, steps: Vec<Step>) {
    for step in steps.into_iter().rev() {
        tracing::info!(subject, step = %step.description, "rollback");
        if let Err(e) = step.undo.await {
            tracing::warn!(subject, step = %step.description, error = %e, "rollback step failed");
        }
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if self.steps.is_empty() {
            return;
        }
        let steps = std::mem::take(&mut self.steps);
        let subject = std::mem::take(&mut self.subject);
        tracing::warn!(
            subject,
            steps = steps.len(),
            "dropped before commit; rolling back"
        );
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move { run(&subject, steps).await });
            }
            Err(_) => {
                tracing::error!(
                    subject,
                    "no runtime to roll back on; recovery cleans up at the next start"
                );
            }
        }
    }
}

/// Undo steps both kinds take. An undo cannot fail the call it cleans up after, so a
/// failure is logged.
pub async fn remove_dir(dir: std::path::PathBuf) {
    if let Err(e) = crate::persist::remove_dir_all_if_exists(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "rollback: removing dir");
    }
}

/// What is left in the cgroup killed (for at most `wait`), then the cgroup removed.
pub async fn remove_cgroup(
    cgroups: crate::linux::cgroup::Cgroups,
    path: String,
    wait: std::time::Duration,
) -> crate::error::Result<()> {
    crate::error::blocking("cgroup task", move || cgroups.destroy(&path, wait)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn journal() -> Arc<Mutex<Vec<&'static str>>> {
        Arc::default()
    }

    fn step(
        j: &Arc<Mutex<Vec<&'static str>>>,
        name: &'static str,
    ) -> impl Future<Output = ()> + Send + 'static {
        let j = j.clone();
        async move { j.lock().unwrap().push(name) }
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn dropped_without_commit_undoes_every_step_in_reverse() {
        let j = journal();
        let mut rb = Rollback::new("thing");
        rb.push("remove dir", step(&j, "dir"));
        rb.push("unpin netns", step(&j, "netns"));
        rb.push("delete process", step(&j, "process"));
        assert_eq!(rb.len(), 3);
        assert!(
            j.lock().unwrap().is_empty(),
            "nothing runs before it is needed"
        );
        drop(rb);
        settle().await;
        assert_eq!(*j.lock().unwrap(), ["process", "netns", "dir"]);
    }

    #[tokio::test]
    async fn finish_takes_the_steps_in_reverse_and_stops_at_the_first_failure() {
        let j = journal();
        let mut rb = Rollback::new("thing");
        rb.push("remove dir", step(&j, "dir"));
        rb.push_try("remove cgroup", async {
            let busy = std::io::Error::other("EBUSY");
            Err(crate::error::Error::internal("removing cgroup x", busy))
        });
        rb.push("stop unit", step(&j, "unit"));
        let err = rb.finish().await.unwrap_err();
        assert!(err.to_string().contains("removing cgroup x"), "{err}");
        settle().await;
        assert_eq!(*j.lock().unwrap(), ["unit"], "the rest waits for the retry");
    }

    #[tokio::test]
    async fn a_failing_step_does_not_stop_the_ones_after_it() {
        let j = journal();
        let mut rb = Rollback::new("thing");
        rb.push("remove dir", step(&j, "dir"));
        rb.push_try("CNI DEL", async {
            Err(crate::error::Error::internal(
                "CNI DEL",
                std::io::Error::other("plugin failed"),
            ))
        });
        let j2 = j.clone();
        rb.push_try("unpin", async move {
            j2.lock().unwrap().push("unpin");
            Ok(())
        });
        rb.unwind().await;
        assert_eq!(*j.lock().unwrap(), ["unpin", "dir"]);
    }

    #[tokio::test]
    async fn commit_keeps_everything() {
        let j = journal();
        let mut rb = Rollback::new("thing");
        rb.push("remove dir", step(&j, "dir"));
        rb.commit();
        settle().await;
        assert!(j.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn unwind_runs_the_steps_before_it_returns() {
        let j = journal();
        let mut rb = Rollback::new("thing");
        rb.push("a", step(&j, "a"));
        rb.push("b", step(&j, "b"));
        rb.unwind().await;
        assert_eq!(*j.lock().unwrap(), ["b", "a"]);
    }

    #[tokio::test]
    async fn an_early_return_unwinds() {
        let j = journal();
        async fn make(j: Arc<Mutex<Vec<&'static str>>>) -> Result<(), &'static str> {
            let mut rb = Rollback::new("thing");
            rb.push("a", step(&j, "a"));
            Err("step two failed")?;
            rb.commit();
            Ok(())
        }
        assert!(make(j.clone()).await.is_err());
        settle().await;
        assert_eq!(*j.lock().unwrap(), ["a"]);
    }

    #[tokio::test]
    async fn a_dropped_future_unwinds_even_the_async_steps() {
        let j = journal();
        let j2 = j.clone();
        let creation = async move {
            let mut rb = Rollback::new("thing");
            rb.push("slow undo", async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                j2.lock().unwrap().push("undone");
            });
            // The client gives up while this waits.
            tokio::time::sleep(Duration::from_secs(60)).await;
            rb.commit();
        };
        assert!(
            tokio::time::timeout(Duration::from_millis(10), creation)
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*j.lock().unwrap(), ["undone"]);
    }
}
