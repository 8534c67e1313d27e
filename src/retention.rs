//! 6. Retention: rows whose work is done leave the database once past their window (inbox rows,
//!    published outbox rows, sent or failed mails, replayed dead letters; `[retention]`).
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
use crate::repository::retention::Expiring;
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
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Deletes everything past its window, batch after batch, until nothing is left or shutdown.
    async fn run_once(&self) -> sqlx::Result<()> {
        let batch = i64::from(self.settings.batch_size);
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
