//! `settle events replay <provider> <event id>`: re-drives an event archived in the inbox.
//!
//! The inbox row is deleted and the event re-queued in one database transaction that commits only
//! after the broker confirmed the message: a failure leaves the inbox as it was. The worker's
//! insert of the same inbox row waits for this transaction, so it cannot skip the replayed event.
//! Re-applying is safe: effects derive from state, and outbox and notification rows are keyed by
//! the event, so nothing is sent twice.

use sqlx::PgPool;

use super::{EXIT_NOTHING_MATCHED, EXIT_OK};
use crate::config::Settings;

pub async fn replay(
    db: &PgPool,
    settings: &Settings,
    provider: &str,
    event_id: &str,
) -> anyhow::Result<u8> {
    let provider = provider.to_uppercase();
    let mut tx = db.begin().await?;
    let row: Option<(String, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "DELETE FROM webhook_events WHERE provider = $1 AND event_id = $2
         RETURNING event_type, payload::text, received_at",
    )
    .bind(&provider)
    .bind(event_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((event_type, payload, received_at)) = row else {
        eprintln!("no archived event {provider} {event_id}");
        return Ok(EXIT_NOTHING_MATCHED);
    };
    let broker = super::connect_broker(settings).await?;
    let provider_header = provider.to_lowercase();
    let message = super::requeue_message(
        broker.topology(),
        &format!("{provider_header}:{event_id}"),
        &provider_header,
        event_id,
        &event_type,
        &received_at.to_rfc3339(),
        payload.into_bytes(),
    );
    let published = broker.publish_all(std::slice::from_ref(&message)).await;
    broker.close().await;
    published?;
    tx.commit().await?;
    println!("re-queued {provider_header} event {event_id} ({event_type})");
    Ok(EXIT_OK)
}
