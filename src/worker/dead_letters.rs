//! The dead-letter consumer. RabbitMQ queues cannot be browsed without consuming them, so every
//! dead letter is copied (body, headers, why) into the `dead_letters` table, and only then acked.
//! Operators list, inspect and replay them from there (`settle dlq …`).

use lapin::message::Delivery;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::broker::message::message_id;
use crate::broker::{ack, headers_json, nack_requeue};
use crate::envelope::{header_int, header_text, header_time, headers};
use crate::repository::dead_letters::{self, NewDeadLetter};

pub async fn handle(db: &PgPool, delivery: Delivery) {
    let headers = headers_json(&delivery.properties);
    let headers_value = serde_json::Value::Object(headers.clone());
    let key = key(&headers, &delivery.data);
    // Only the broker's own dead-lettering lacks our reason: the delivery limit.
    let reason = header_text(&headers, headers::REASON).unwrap_or("delivery_limit");
    let message_id = message_id(&delivery.properties);
    let letter = NewDeadLetter {
        key: &key,
        message_id: message_id.as_deref(),
        provider: header_text(&headers, headers::PROVIDER),
        event_id: header_text(&headers, headers::EVENT_ID),
        event_type: header_text(&headers, headers::EVENT_TYPE),
        routing_key: delivery.routing_key.as_str(),
        headers: &headers_value,
        body: &delivery.data,
        reason,
        last_error: header_text(&headers, headers::LAST_ERROR),
        attempts: header_int(&headers, headers::ATTEMPTS)
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(0),
        first_failure_at: header_time(&headers, headers::FIRST_FAILURE_AT),
        last_failure_at: header_time(&headers, headers::LAST_FAILURE_AT),
    };
    match dead_letters::insert(db, &letter).await {
        Ok(()) => {
            tracing::info!(message_id = ?message_id, reason, "dead letter recorded");
            ack(&delivery, "dead letter").await;
        }
        Err(error) => {
            // Left unacked: it stays in the DLQ and is copied once the database is back.
            tracing::warn!(error = %error, "could not record a dead letter; it stays queued");
            nack_requeue(&delivery, "dead letter").await;
        }
    }
}

/// The worker names each dead letter it sends (after the delivery it comes from); a message the
/// broker dead-lettered itself (the delivery limit) gets a key from its content, stable across
/// redeliveries of the copy (so without the count of those redeliveries).
fn key(headers: &serde_json::Map<String, serde_json::Value>, body: &[u8]) -> String {
    if let Some(key) = header_text(headers, headers::DEAD_LETTER_KEY) {
        return key.to_owned();
    }
    let mut stable = headers.clone();
    stable.remove("x-delivery-count");
    let mut hash = Sha256::new();
    hash.update(serde_json::Value::Object(stable).to_string().as_bytes());
    hash.update(body);
    format!("broker:{}", hex::encode(hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_dead_letter_redelivered_from_the_dlq_keeps_its_key() {
        let first = headers(serde_json::json!({"event-id": "evt_1", "x-death": {"count": 1}}));
        let again = headers(
            serde_json::json!({"event-id": "evt_1", "x-death": {"count": 1}, "x-delivery-count": 2}),
        );
        assert_eq!(key(&first, b"{}"), key(&again, b"{}"));
        assert_ne!(key(&first, b"{}"), key(&first, b"{ }"));
        let named = headers(serde_json::json!({"settle-dead-letter-key": "pub-1"}));
        assert_eq!(key(&named, b"{}"), "pub-1");
    }
}
