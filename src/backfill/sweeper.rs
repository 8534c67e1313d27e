//! The sweeper: every worker process runs one, and one sweep runs at a time across them (a
//! lease, `lease`). Every `backfill.interval_secs` it backfills each
//! source from its cursor (`backfill_cursors`) less the overlap, up to `lag_secs` before now, and
//! moves the cursor only when the source's sweep succeeded: a provider that is down is reported
//! (`settle_backfill_sweep_failures_total`) and swept again, over the same window, next interval.
//! Best effort by design: readiness never depends on it.

use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::queue::run;
use crate::broker::Broker;
use crate::config::Settings;
use crate::lease::{self, Lease};
use crate::provider::Provider;
use crate::providers::Window;
use crate::providers::source::{Source, Which, sources};
use crate::repository::backfill as cursors;
use crate::sealed::Keyring;
use crate::telemetry as metric;
use strum::VariantArray;

#[derive(Clone)]
pub struct Sweeper {
    pub db: PgPool,
    pub broker: Broker,
    pub settings: Settings,
    pub keyring: Keyring,
    pub shutdown: CancellationToken,
}

impl Sweeper {
    pub async fn run(self) {
        let backfill = &self.settings.backfill;
        let interval = Duration::from_secs(backfill.interval_secs);
        // The first sweep one interval after start: the webhooks queued while this process was
        // away drain first, and are not counted as missed.
        while crate::supervise::wait_interval(interval, &self.shutdown).await {
            let started = Instant::now();
            match self.sweep().await {
                Ok(true) => metrics::histogram!(metric::BACKFILL_SWEEP_SECONDS)
                    .record(started.elapsed().as_secs_f64()),
                Ok(false) => tracing::debug!("another worker process is sweeping"),
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "backfill sweep not run; will retry at the next interval"
                ),
            }
        }
    }

    /// One sweep of every source, if no other process is sweeping; whether it ran.
    async fn sweep(&self) -> anyhow::Result<bool> {
        // No expiry: a sweep waits on the providers' APIs, away from its session, for long.
        let mut lease = Lease::new(lease::BACKFILL_SWEEP, None);
        if !lease.hold(&self.db).await {
            return Ok(false);
        }
        for provider in Provider::VARIANTS.iter().copied() {
            let sources = sources(
                &self.db,
                &self.settings,
                &self.keyring,
                provider,
                &Which::All,
            )
            .await?;
            for source in &sources {
                if self.shutdown.is_cancelled() {
                    break;
                }
                self.sweep_source(source).await?;
            }
        }
        lease.release().await;
        Ok(true)
    }

    async fn sweep_source(&self, source: &Source) -> anyhow::Result<()> {
        let backfill = &self.settings.backfill;
        let provider = source.provider;
        let until = Utc::now() - chrono::Duration::seconds(backfill.lag_secs as i64);
        let since = match cursors::swept_until(&self.db, provider, source.name()).await? {
            Some(swept) => swept - chrono::Duration::seconds(backfill.overlap_secs as i64),
            None => until - chrono::Duration::hours(backfill.first_window_hours as i64),
        };
        let window = Window {
            since,
            until: Some(until),
        };
        let report = run(
            &self.db,
            Some(&self.broker),
            &self.keyring,
            source,
            window,
            &[],
        )
        .await;
        metrics::counter!(metric::BACKFILL_MISSED, "provider" => provider.wire_name())
            .increment(report.queued as u64);
        if report.queued > 0 {
            tracing::warn!(
                %provider,
                source = source.name(),
                missed = report.queued,
                "the sweep found events no webhook delivered, and queued them"
            );
        }
        match &report.error {
            None if report.failed == 0 => {
                let missed = i32::try_from(report.queued).unwrap_or(i32::MAX);
                cursors::record_sweep(&self.db, provider, source.name(), until, missed).await?;
                metrics::gauge!(
                    metric::WEBHOOK_GAP_EVENTS,
                    "provider" => provider.wire_name(),
                    "source" => source.name().to_owned(),
                )
                .set(f64::from(missed));
                metrics::gauge!(
                    metric::BACKFILL_LAST_SUCCESS,
                    "provider" => provider.wire_name(),
                    "source" => source.name().to_owned(),
                )
                .set(until.timestamp() as f64);
            }
            error => {
                metrics::counter!(metric::BACKFILL_SWEEP_FAILURES, "provider" => provider.wire_name())
                    .increment(1);
                tracing::warn!(
                    %provider,
                    source = source.name(),
                    error = error.as_deref().unwrap_or("some events were not queued"),
                    "a source's sweep failed; it is swept again, over the same window, next interval"
                );
            }
        }
        Ok(())
    }
}
