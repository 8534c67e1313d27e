//! The supervisor of the background tasks a process runs beside its main job (the outbox relay,
//! the notification sender, retention, the backfill sweeper, the payout lister, the connection
//! secrets' refresher, the database check). Each is a loop that should run until shutdown; one
//! that panics, or returns before shutdown, is started again after a backoff, counted
//! (`settle_task_restarts_total{task}`), and, while it keeps failing, named in `/readyz`. A
//! panic in one never takes the process, or another task, with it, and no task dies silently.

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The first pause before a restart, doubled after each failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run this long counts as healthy: the next failure starts the backoff and the count afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// Failures in a row, each after a short run, after which a task is reported as failing.
const FAILING_AFTER: u32 = 3;

/// Starts supervised tasks and knows which of them keep failing.
#[derive(Clone, Default)]
pub struct Supervisor {
    failing: Arc<Mutex<BTreeSet<&'static str>>>,
}

impl Supervisor {
    /// Runs `start()` as task `name` on `tasks` until `shutdown`, starting it again whenever it
    /// panics or returns early.
    pub fn spawn<F, Fut>(
        &self,
        tasks: &TaskTracker,
        name: &'static str,
        shutdown: CancellationToken,
        start: F,
    ) where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let supervisor = self.clone();
        tasks.spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            let mut failures = 0_u32;
            loop {
                let started = Instant::now();
                // The task owns nothing another needs: what it held is dropped with it, and the
                // next run starts from a fresh `start()`.
                let outcome = AssertUnwindSafe(start()).catch_unwind().await;
                if shutdown.is_cancelled() {
                    return;
                }
                if started.elapsed() >= HEALTHY_RUN {
                    backoff = FIRST_BACKOFF;
                    failures = 0;
                }
                failures += 1;
                match outcome {
                    Ok(()) => {
                        tracing::error!(task = name, "background task ended; starting it again")
                    }
                    Err(panic) => tracing::error!(
                        task = name,
                        panic = panic_message(panic.as_ref()),
                        "background task panicked; starting it again"
                    ),
                }
                metrics::counter!(crate::telemetry::TASK_RESTARTS, "task" => name).increment(1);
                supervisor.set_failing(name, failures >= FAILING_AFTER);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
    }

    /// The tasks that failed `FAILING_AFTER` times in a row, each after a short run, and have not
    /// run healthily since.
    pub fn failing(&self) -> Vec<&'static str> {
        self.lock().iter().copied().collect()
    }

    fn set_failing(&self, name: &'static str, failing: bool) {
        let mut set = self.lock();
        if failing {
            set.insert(name);
        } else {
            set.remove(name);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<&'static str>> {
        // One insert or remove at a time: the set is whole whatever panicked holding it.
        self.failing.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Waits out one `interval` of a periodic task: `true` when it passed, `false` when `shutdown`
/// came first (the task then returns). The one wait of every periodic task's loop.
pub async fn wait_interval(interval: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(interval) => true,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A supervised task whose run `n` (from 1) does what `behave(n, shutdown)` says.
    struct Harness {
        supervisor: Supervisor,
        tasks: TaskTracker,
        shutdown: CancellationToken,
        runs: Arc<AtomicU32>,
    }

    impl Harness {
        fn start<Fut>(
            name: &'static str,
            behave: impl Fn(u32, CancellationToken) -> Fut + Send + 'static,
        ) -> Self
        where
            Fut: Future<Output = ()> + Send + 'static,
        {
            let (supervisor, tasks) = (Supervisor::default(), TaskTracker::new());
            let (shutdown, runs) = (CancellationToken::new(), Arc::new(AtomicU32::new(0)));
            let (counted, stop) = (runs.clone(), shutdown.clone());
            supervisor.spawn(&tasks, name, shutdown.clone(), move || {
                behave(counted.fetch_add(1, Ordering::SeqCst) + 1, stop.clone())
            });
            Self {
                supervisor,
                tasks,
                shutdown,
                runs,
            }
        }

        /// Polls (on the paused clock, which moves on whenever every task waits) until `done`,
        /// failing after ten minutes of virtual time.
        async fn until(&self, what: &str, done: impl Fn(&Self) -> bool) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
            while !done(self) {
                assert!(tokio::time::Instant::now() < deadline, "never: {what}");
                tokio::time::sleep(Duration::from_millis(100)).await; // poll interval
            }
        }

        async fn until_runs(&self, runs: u32) {
            self.until("the runs started", |h| {
                h.runs.load(Ordering::SeqCst) >= runs
            })
            .await;
        }

        async fn stop(self) -> u32 {
            self.shutdown.cancel();
            self.tasks.close();
            self.tasks.wait().await;
            self.runs.load(Ordering::SeqCst)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_is_started_again_with_backoff_and_named_while_it_keeps_failing() {
        let harness = Harness::start("flaky", |run, stop| async move {
            if run <= 4 {
                panic!("run {run} fails");
            }
            // The fifth run is healthy: it runs until shutdown.
            stop.cancelled().await;
        });
        harness
            .until("the task named failing", |h| {
                !h.supervisor.failing().is_empty()
            })
            .await;
        assert_eq!(harness.supervisor.failing(), ["flaky"]);
        assert!(
            harness.runs.load(Ordering::SeqCst) >= 3,
            "named only after three failures"
        );
        harness.until_runs(5).await;
        assert_eq!(harness.stop().await, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_healthy_run_clears_the_failing_mark() {
        let harness = Harness::start("recovers", |run, stop| async move {
            if run == 4 {
                // Healthy for longer than HEALTHY_RUN, then it ends: a fresh count.
                tokio::time::sleep(HEALTHY_RUN + Duration::from_secs(1)).await;
                return;
            }
            if run > 4 {
                stop.cancelled().await;
                return;
            }
            panic!("run {run} fails");
        });
        harness.until_runs(5).await;
        let failing = harness.supervisor.failing();
        assert!(failing.is_empty(), "{failing:?}");
        harness.stop().await;
    }
}
