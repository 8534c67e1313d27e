//! 4. The outbox relay: publishes reconciliation events that the worker's transactions committed
//!    to the `outbox` table, to `<prefix>.reconciliation` with confirms, and marks them published.
//!    A process killed between a commit and the publish loses nothing: the rows wait for the next
//!    relay. A process killed between the publish and the mark publishes again; the event's
//!    stable `id` lets subscribers drop the duplicate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::broker::{HeaderValue, OutgoingMessage};
use crate::startup::AppState;

/// Rows published per round trip to the broker.
const BATCH: i64 = 200;
/// How long a wake-up waits for more commits before publishing; bounds the added latency.
const COALESCE: Duration = Duration::from_millis(5);

pub struct Relay {
    state: AppState,
    wake: Arc<Notify>,
}

impl Relay {
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Notify it after a commit that wrote outbox rows, to publish them without waiting for the poll.
    pub fn notifier(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub async fn run(self) {
        let poll = Duration::from_millis(self.state.settings.worker.outbox_poll_ms);
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
                _ = self.state.shutdown.cancelled() => {
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

    /// Publishes one batch of unpublished rows. `FOR UPDATE SKIP LOCKED` lets several relays
    /// (several worker processes) share the table without sending a row twice at the same time.
    async fn publish_pending(&self) -> anyhow::Result<usize> {
        let mut tx = self.state.db.begin().await?;
        let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT id, message_id, routing_key, payload::text FROM outbox
             WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let exchange = &self.state.broker.topology().reconciliation_exchange;
        let count = rows.len();
        let ids: Vec<i64> = rows.iter().map(|(id, ..)| *id).collect();
        let messages: Vec<OutgoingMessage> = rows
            .into_iter()
            .map(|(_, message_id, routing_key, payload)| OutgoingMessage {
                exchange: exchange.clone(),
                headers: vec![(
                    "event-type".to_owned(),
                    HeaderValue::Text(routing_key.clone()),
                )],
                routing_key,
                message_id,
                body: payload.into_bytes(),
            })
            .collect();
        self.state.broker.publish_all_unrouted_ok(&messages).await?;
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!("settle_outbox_published_total").increment(count as u64);
        Ok(count)
    }

    async fn report_backlog(&self) {
        if let Ok(backlog) =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&self.state.db)
                .await
        {
            metrics::gauge!("settle_outbox_backlog").set(backlog as f64);
        }
    }
}
