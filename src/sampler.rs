//! Figures sampled into gauges every `telemetry.sample_interval_secs`, for the alerts and the
//! dashboard that ship with settle (`deploy/`): the broker as this process sees it (connected,
//! blocked, the depth of each of settle's queues) and, in a process that runs the worker, the
//! money waiting on a person (payouts partially matched and how long the oldest has waited,
//! invoices paid more than they owe). Counters are kept where things happen; these are the
//! figures only a look can give.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::repository::{invoices, payouts};
use crate::telemetry as metric;

#[derive(Clone)]
pub struct Sampler {
    pub broker: Broker,
    /// The database whose money figures this process exports: the worker's processes only, so
    /// intake never waits on PostgreSQL.
    pub db: Option<PgPool>,
    pub interval: Duration,
    pub shutdown: CancellationToken,
}

impl Sampler {
    pub async fn run(self) {
        loop {
            self.sample_broker().await;
            if let Some(db) = &self.db
                && let Err(error) = sample_money(db).await
            {
                tracing::warn!(%error, "could not sample the money figures; will try at the next interval");
            }
            if !crate::supervise::wait_interval(self.interval, &self.shutdown).await {
                return;
            }
        }
    }

    async fn sample_broker(&self) {
        let connected = self.broker.is_connected();
        metrics::gauge!(metric::BROKER_CONNECTED).set(flag(connected));
        metrics::gauge!(metric::BROKER_BLOCKED).set(flag(connected && self.broker.is_blocked()));
        for (queue, depth) in self.broker.queue_depths().await.unwrap_or_default() {
            metrics::gauge!(metric::QUEUE_MESSAGES, "queue" => queue).set(f64::from(depth));
        }
    }
}

async fn sample_money(db: &PgPool) -> sqlx::Result<()> {
    let (partially_matched, since) = payouts::partially_matched_backlog(db).await?;
    metrics::gauge!(metric::PAYOUTS_PARTIALLY_MATCHED).set(partially_matched as f64);
    let age = since.map_or(0.0, |since| {
        (Utc::now() - since).num_milliseconds().max(0) as f64 / 1000.0
    });
    metrics::gauge!(metric::PAYOUTS_PARTIALLY_MATCHED_OLDEST_SECONDS).set(age);
    let overpaid = invoices::overpaid_count(db).await?;
    metrics::gauge!(metric::INVOICES_OVERPAID).set(overpaid as f64);
    Ok(())
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}
