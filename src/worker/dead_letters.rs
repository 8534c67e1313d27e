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
    // The worker names each dead letter it sends; a message the broker dead-lettered itself (the
    // delivery limit) gets a key from its content, stable across redeliveries of the copy.
    let key = header_text(&headers, headers::DEAD_LETTER_KEY).map_or_else(
        || {
            let mut hash = Sha256::new();
            hash.update(headers_value.to_string().as_bytes());
            hash.update(&delivery.data);
            format!("broker:{}", hex::encode(hash.finalize()))
        },
        str::to_owned,
    );
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
