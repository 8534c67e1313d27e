//! 6. Retention: rows whose work is done leave the database once past their window (inbox rows,
//!    published outbox rows, sent or failed mails, replayed dead letters; `[retention]`), and
//!    unmatched events no registration claimed in `unmatched_days` expire. Each run also reports
//!    how many unmatched events wait, and the oldest one's age.
//!
//!    Run by every worker process, every `interval_secs`, in statements of `batch_size` rows each
//!    committed on its own: no long transaction, no lock held for long, and a batch another
//!    process is deleting is skipped (`SKIP LOCKED`), so several workers share the job. A failed
//!    run (the database away) is logged and tried at the next interval; nothing depends on it.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::RetentionSettings;
use crate::repository::retention::{self as store, Expiring};
use crate::telemetry as metric;

#[derive(Clone)]
pub struct Retention {
    db: PgPool,
    settings: RetentionSettings,
    shutdown: CancellationToken,
}

impl Retention {
    pub fn new(db: PgPool, settings: RetentionSettings, shutdown: CancellationToken) -> Self {
        Self {
            db,
            settings,
            shutdown,
        }
    }

    pub async fn run(self) {
        let interval = Duration::from_secs(self.settings.interval_secs);
        loop {
            if let Err(error) = self.run_once().await {
                tracing::warn!(error = %error, "retention run failed; will retry at the next interval");
            }
            if !crate::supervise::wait_interval(interval, &self.shutdown).await {
                return;
            }
        }
    }

    /// Expires the unmatched events past their window, reports those still waiting, then deletes
    /// everything past its window, batch after batch, until nothing is left or shutdown.
    async fn run_once(&self) -> sqlx::Result<()> {
        let batch = i64::from(self.settings.batch_size);
        let days = self.settings.unmatched_days;
        let before = Utc::now() - chrono::Duration::days(i64::from(days));
        let reason = format!("no payment registered within {days} days (retention.unmatched_days)");
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let expired = store::expire_unmatched(&self.db, before, batch, &reason).await?;
            metrics::counter!(metric::UNMATCHED_SETTLED, "outcome" => "expired").increment(expired);
            if expired < self.settings.batch_size.into() {
                break;
            }
        }
        let (waiting, oldest) = store::unmatched_backlog(&self.db).await?;
        metrics::gauge!(metric::UNMATCHED_EVENTS).set(waiting as f64);
        let age = oldest.map_or(0.0, |at| {
            (Utc::now() - at).num_milliseconds() as f64 / 1000.0
        });
        metrics::gauge!(metric::UNMATCHED_OLDEST_SECONDS).set(age.max(0.0));
        for expiring in Expiring::ALL {
            let before = Utc::now() - chrono::Duration::days(i64::from(self.window_days(expiring)));
            loop {
                if self.shutdown.is_cancelled() {
                    return Ok(());
                }
                let deleted = expiring.delete(&self.db, before, batch).await?;
                metrics::counter!(metric::RETENTION_DELETED, "table" => expiring.table())
                    .increment(deleted);
                if deleted < self.settings.batch_size.into() {
                    break;
                }
            }
        }
        Ok(())
    }

    fn window_days(&self, expiring: Expiring) -> u32 {
        let s = &self.settings;
        match expiring {
            Expiring::Inbox => s.inbox_days,
            Expiring::PublishedOutbox => s.outbox_published_days,
            Expiring::Notifications => s.notifications_days,
            Expiring::ReplayedDeadLetters => s.dead_letters_replayed_days,
        }
    }
}
