//! The dead-letter consumer. RabbitMQ queues cannot be browsed without consuming them, so every
//! dead letter is copied (body, headers, why) into the `dead_letters` table, and only then acked.
//! Operators list, inspect and replay them from there (`settle dlq …`).

use lapin::message::Delivery;
use lapin::types::AMQPValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::broker::{header_int, header_text, headers};
use crate::startup::AppState;

/// Headers as JSON, for the table (broker-added tables such as `x-death` included).
fn headers_json(delivery: &Delivery) -> Value {
    fn convert(value: &AMQPValue) -> Value {
        match value {
            AMQPValue::LongString(s) => {
                Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
            AMQPValue::Boolean(b) => Value::Bool(*b),
            AMQPValue::LongLongInt(n) => (*n).into(),
            AMQPValue::LongInt(n) => (*n).into(),
            AMQPValue::ShortInt(n) => (*n).into(),
            AMQPValue::LongUInt(n) => (*n).into(),
            AMQPValue::Timestamp(t) => (*t).into(),
            AMQPValue::FieldTable(table) => Value::Object(
                table
                    .inner()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), convert(v)))
                    .collect(),
            ),
            AMQPValue::FieldArray(array) => {
                Value::Array(array.as_slice().iter().map(convert).collect())
            }
            other => Value::String(format!("{other:?}")),
        }
    }
    let mut map = Map::new();
    if let Some(table) = delivery.properties.headers().as_ref() {
        for (key, value) in table.inner() {
            map.insert(key.as_str().to_owned(), convert(value));
        }
    }
    Value::Object(map)
}

pub async fn handle(state: AppState, delivery: Delivery) {
    let properties = &delivery.properties;
    let headers_json = headers_json(&delivery);
    // The worker names each dead letter it sends; a message the broker dead-lettered itself (the
    // delivery limit) gets a key from its content, stable across redeliveries of the copy.
    let key = header_text(properties, headers::DEAD_LETTER_KEY).unwrap_or_else(|| {
        let mut hash = Sha256::new();
        hash.update(headers_json.to_string().as_bytes());
        hash.update(&delivery.data);
        format!("broker:{}", hex::encode(hash.finalize()))
    });
    let reason = header_text(properties, headers::REASON).unwrap_or_else(|| {
        // Only the broker's own dead-lettering lacks our reason: the delivery limit.
        "delivery_limit".to_owned()
    });
    let message_id = properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned());
    let parse_time = |name: &str| {
        header_text(properties, name)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let result = sqlx::query(
        "INSERT INTO dead_letters (dead_letter_key, message_id, provider, event_id, event_type,
             routing_key, headers, body, reason, last_error, attempts, first_failure_at, last_failure_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (dead_letter_key) DO NOTHING",
    )
    .bind(&key)
    .bind(&message_id)
    .bind(header_text(properties, headers::PROVIDER))
    .bind(header_text(properties, headers::EVENT_ID))
    .bind(header_text(properties, headers::EVENT_TYPE))
    .bind(delivery.routing_key.as_str())
    .bind(&headers_json)
    .bind(&delivery.data)
    .bind(&reason)
    .bind(header_text(properties, headers::LAST_ERROR))
    .bind(header_int(properties, headers::ATTEMPTS).unwrap_or(0) as i32)
    .bind(parse_time(headers::FIRST_FAILURE_AT))
    .bind(parse_time(headers::LAST_FAILURE_AT))
    .execute(&state.db)
    .await;
    match result {
        Ok(_) => {
            tracing::info!(message_id = ?message_id, reason = %reason, "dead letter recorded");
            super::ack(&delivery, "dead letter").await;
        }
        Err(error) => {
            // Left unacked: it stays in the DLQ and is copied once the database is back.
            tracing::warn!(error = %error, "could not record a dead letter; it stays queued");
            let _ = delivery
                .nack(lapin::options::BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
        }
    }
}
