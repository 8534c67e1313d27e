//! The dead-letter consumer. RabbitMQ queues cannot be browsed without consuming them, so every
//! dead letter is copied (body, headers, why) into the `dead_letters` table, and only then acked.
//! Operators list, inspect and replay them from there (`settle dlq …`). A dead letter is always
//! recorded (`handle` says how), so one the database refuses can neither spin in the queue nor,
//! with a few like it, fill the consumer's prefetch and hide every other dead letter.
//!
//! The queue has no `x-delivery-limit` of its own: RabbitMQ refuses to redeclare an existing queue
//! with other arguments, so adding one would stop every deployment that already has the queue
//! until an operator deleted it (and its dead letters). This consumer never requeues a message in
//! a loop instead.

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine;
use lapin::message::Delivery;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::broker::message::message_id;
use crate::broker::{ack, headers_json, nack_requeue};
use crate::envelope::{header_int, header_text, header_time, headers};
use crate::reconcile::events::{storable, storable_json};
use crate::repository::dead_letters::{self, NewDeadLetter};
use crate::repository::{DbFailure, classify};
use crate::telemetry as metric;

/// The reason of a dead letter whose own row PostgreSQL refused, recorded in a degraded row.
const UNRECORDABLE: &str = "unrecordable";

/// Copies one dead letter into `dead_letters`, then acks it. It is always recorded, never
/// requeued in a loop:
/// - every text of the row is `storable` (a NUL in an event id, or in an error that echoes
///   event data, made PostgreSQL refuse the row, and the message came straight back for ever);
/// - a row PostgreSQL still refuses for good (`classify`: a data error, a constraint) is
///   recorded degraded instead (`degraded`): the body as received, the headers in base64;
/// - while the database is away (or refuses for a reason that may pass), the delivery is held
///   and the insert tried again, backing off: the message stays unacked, spending none of its
///   redeliveries. At shutdown it is requeued, and copied by the next consumer.
pub async fn handle(db: &PgPool, delivery: Delivery, shutdown: &CancellationToken) {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(5);
    let headers = headers_json(&delivery.properties);
    let key = key(&headers, &delivery.data);
    let message_id = message_id(&delivery.properties);
    let letter = Letter::of(&key, message_id.as_deref(), &headers, &delivery);
    let mut pause = FIRST;
    loop {
        let failure = match dead_letters::insert(db, &letter.row()).await {
            Ok(()) => {
                tracing::info!(message_id = ?message_id, reason = %letter.reason, "dead letter recorded");
                return ack(&delivery, "dead letter").await;
            }
            Err(refused) if classify(&refused) == DbFailure::Permanent => {
                match dead_letters::insert(db, &letter.degraded(&refused).row()).await {
                    Ok(()) => {
                        metrics::counter!(metric::DEAD_LETTERS_UNRECORDED, "how" => "degraded")
                            .increment(1);
                        tracing::warn!(message_id = ?message_id, error = %refused, "a dead letter's row was refused; recorded degraded, reason `unrecordable`");
                        return ack(&delivery, "dead letter").await;
                    }
                    // Not expected: the degraded row holds nothing PostgreSQL can refuse. Held
                    // and tried again, as in an outage: never dropped, never spun.
                    Err(error) => format!("even degraded: {error}"),
                }
            }
            Err(error) => error.to_string(),
        };
        metrics::counter!(metric::DEAD_LETTERS_UNRECORDED, "how" => "held").increment(1);
        tracing::warn!(error = failure, retry_in = ?pause, "could not record a dead letter; holding it and trying again");
        tokio::select! {
            () = shutdown.cancelled() => return nack_requeue(&delivery, "dead letter").await,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX);
    }
}

/// A dead letter's row, every text `storable`.
struct Letter<'a> {
    key: Cow<'a, str>,
    message_id: Option<Cow<'a, str>>,
    provider: Option<Cow<'a, str>>,
    event_id: Option<Cow<'a, str>>,
    event_type: Option<Cow<'a, str>>,
    routing_key: Cow<'a, str>,
    headers: Value,
    body: &'a [u8],
    reason: Cow<'a, str>,
    last_error: Option<Cow<'a, str>>,
    attempts: i32,
    headers_raw: &'a Map<String, Value>,
}

impl<'a> Letter<'a> {
    fn of(
        key: &'a str,
        message_id: Option<&'a str>,
        headers: &'a Map<String, Value>,
        delivery: &'a Delivery,
    ) -> Self {
        let text = |name: &str| header_text(headers, name).map(storable);
        Self {
            key: storable(key),
            message_id: message_id.map(storable),
            provider: text(headers::PROVIDER),
            event_id: text(headers::EVENT_ID),
            event_type: text(headers::EVENT_TYPE),
            routing_key: storable(delivery.routing_key.as_str()),
            headers: storable_json(&Value::Object(headers.clone())),
            body: &delivery.data,
            // Only the broker's own dead-lettering lacks our reason: the delivery limit.
            reason: text(headers::REASON).unwrap_or(Cow::Borrowed("delivery_limit")),
            last_error: text(headers::LAST_ERROR),
            attempts: header_int(headers, headers::ATTEMPTS)
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(0),
            headers_raw: headers,
        }
    }

    /// The row when PostgreSQL refused this one for good: its own key (a digest of the first,
    /// so a redelivery is still recorded once), the body as received (`bytea` takes any bytes),
    /// the headers as base64 of their JSON under `unrecordable`, why in `last_error`. Nothing
    /// in it is the sender's text.
    fn degraded(&self, refused: &sqlx::Error) -> Self {
        let headers = Value::Object(self.headers_raw.clone()).to_string();
        let mut kept = Map::new();
        kept.insert(
            UNRECORDABLE.to_owned(),
            base64::engine::general_purpose::STANDARD
                .encode(headers)
                .into(),
        );
        let digest = hex::encode(Sha256::digest(self.key.as_bytes()));
        Self {
            key: Cow::Owned(format!("{UNRECORDABLE}:{digest}")),
            message_id: None,
            provider: None,
            event_id: None,
            event_type: None,
            routing_key: self.routing_key.clone(),
            headers: Value::Object(kept),
            body: self.body,
            reason: Cow::Borrowed(UNRECORDABLE),
            last_error: Some(Cow::Owned(
                storable(&format!(
                    "dead-lettered `{}`; its row was refused ({refused}): the headers are kept as base64 JSON under `{UNRECORDABLE}`",
                    self.reason
                ))
                .into_owned(),
            )),
            attempts: self.attempts,
            headers_raw: self.headers_raw,
        }
    }

    fn row(&self) -> NewDeadLetter<'_> {
        NewDeadLetter {
            key: &self.key,
            message_id: self.message_id.as_deref(),
            provider: self.provider.as_deref(),
            event_id: self.event_id.as_deref(),
            event_type: self.event_type.as_deref(),
            routing_key: &self.routing_key,
            headers: &self.headers,
            body: self.body,
            reason: &self.reason,
            last_error: self.last_error.as_deref(),
            attempts: self.attempts,
            first_failure_at: header_time(self.headers_raw, headers::FIRST_FAILURE_AT),
            last_failure_at: header_time(self.headers_raw, headers::LAST_FAILURE_AT),
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
