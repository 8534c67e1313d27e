//! 4. The outbox relay: publishes reconciliation events that the worker's transactions committed
//!    to the `outbox` table, to `<prefix>.reconciliation` with confirms, and marks them published.
//!    A process killed between a commit and the publish loses nothing: the rows wait for the next
//!    relay. A process killed between the publish and the mark publishes again; the event's
//!    stable `id` lets subscribers drop the duplicate.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::broker::{HeaderValue, OutgoingMessage};
use crate::startup::AppState;

/// Rows published per round trip to the broker.
const BATCH: i64 = 200;

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
            self.report_backlog().await;
            tokio::select! {
                _ = self.state.shutdown.cancelled() => {
                    // One last pass so events committed during shutdown are not left waiting.
                    let _ = self.publish_pending().await;
                    return;
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Publishes one batch of unpublished rows. `FOR UPDATE SKIP LOCKED` lets several relays
    /// (several worker processes) share the table without sending a row twice at the same time.
    async fn publish_pending(&self) -> anyhow::Result<usize> {
        let mut tx = self.state.db.begin().await?;
        let rows: Vec<(i64, String, String, serde_json::Value)> = sqlx::query_as(
            "SELECT id, message_id, routing_key, payload FROM outbox
             WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let exchange = &self.state.broker.topology().reconciliation_exchange;
        let messages: Vec<OutgoingMessage> = rows
            .iter()
            .map(|(_, message_id, routing_key, payload)| OutgoingMessage {
                exchange: exchange.clone(),
                routing_key: routing_key.clone(),
                message_id: message_id.clone(),
                body: payload.to_string().into_bytes(),
                headers: vec![(
                    "event-type".to_owned(),
                    HeaderValue::Text(routing_key.clone()),
                )],
            })
            .collect();
        self.state.broker.publish_all_unrouted_ok(&messages).await?;
        let ids: Vec<i64> = rows.iter().map(|(id, ..)| *id).collect();
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!("settle_outbox_published_total").increment(rows.len() as u64);
        Ok(rows.len())
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
