//! 4. The outbox relay: publishes reconciliation events that the worker's transactions committed
//!    to the `outbox` table, to `<prefix>.reconciliation` with confirms, and marks them published.
//!    A process killed between a commit and the publish loses nothing: the rows wait for the next
//!    relay. A process killed between the publish and the mark publishes again; the event's
//!    stable `id` lets subscribers drop the duplicate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, HeaderValue, OutgoingMessage};
use crate::envelope::headers;
use crate::repository::outbox;
use crate::telemetry as metric;

/// Rows published per round trip to the broker.
const BATCH: i64 = 200;
/// How long a wake-up waits for more commits before publishing; bounds the added latency.
const COALESCE: Duration = Duration::from_millis(5);

pub struct Relay {
    db: PgPool,
    broker: Broker,
    /// How often to look for rows committed by other processes (this process's commits wake it).
    poll: Duration,
    shutdown: CancellationToken,
    wake: Arc<Notify>,
}

impl Relay {
    pub fn new(db: PgPool, broker: Broker, poll: Duration, shutdown: CancellationToken) -> Self {
        Self {
            db,
            broker,
            poll,
            shutdown,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Notify it after a commit that wrote outbox rows, to publish them without waiting for the poll.
    pub fn notifier(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub async fn run(self) {
        let poll = self.poll;
        let mut last_backlog_report: Option<Instant> = None;
        loop {
            match self.publish_pending().await {
                // A full batch: there may be more, go again at once.
                Ok(published) if published as i64 == BATCH => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "outbox relay failed; will retry"
                ),
            }
            // Under load the relay passes many times a second; counting the backlog once per poll
            // interval is enough for a gauge and keeps a query off every pass.
            if last_backlog_report.is_none_or(|at| at.elapsed() >= poll) {
                self.report_backlog().await;
                last_backlog_report = Some(Instant::now());
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    // One last pass so events committed during shutdown are not left waiting.
                    let _ = self.publish_pending().await;
                    return;
                }
                _ = self.wake.notified() => {
                    // A pass costs a transaction and a confirm round trip whether it carries one
                    // row or a hundred: let the other deliveries in flight commit theirs first.
                    tokio::time::sleep(COALESCE).await;
                }
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Publishes one batch of unpublished rows (locked so several relays share the table), then
    /// marks them published in the same transaction.
    async fn publish_pending(&self) -> anyhow::Result<usize> {
        let mut tx = self.db.begin().await?;
        let rows = outbox::lock_unpublished(&mut tx, BATCH).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let exchange = &self.broker.topology().reconciliation_exchange;
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        let messages: Vec<OutgoingMessage> = rows
            .into_iter()
            .map(|row| OutgoingMessage {
                exchange: exchange.clone(),
                headers: vec![(
                    headers::EVENT_TYPE.to_owned(),
                    HeaderValue::Text(row.routing_key.clone()),
                )],
                routing_key: row.routing_key,
                message_id: row.message_id,
                body: row.payload.into_bytes(),
            })
            .collect();
        self.broker.publish_all_unrouted_ok(&messages).await?;
        outbox::mark_published(&mut tx, &ids).await?;
        tx.commit().await?;
        metrics::counter!(metric::OUTBOX_PUBLISHED).increment(ids.len() as u64);
        Ok(ids.len())
    }

    async fn report_backlog(&self) {
        if let Ok(backlog) = outbox::backlog(&self.db).await {
            metrics::gauge!(metric::OUTBOX_BACKLOG).set(backlog as f64);
        }
    }
}
