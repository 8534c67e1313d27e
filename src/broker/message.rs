//! Messages as settle sends and reads them: an outgoing message with its headers, and the one
//! decoder from AMQP header tables to JSON that every reader shares (the worker, the dead-letter
//! consumer, the operator tools, the tests).

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::{Map, Value};

use crate::names::{HeaderText, MessageId};

/// Fresh on every publish (`OutgoingMessage`): a redelivery keeps it, a retry, a dead letter or a
/// replay is a new publish and gets a new one. It names a dead letter, so a delivery dead-lettered
/// twice (its ack lost) is recorded once.
pub const PUBLISH_ID: &str = "settle-publish-id";

/// Whether a header is the broker's (`x-death`, `x-delivery-count`, `x-first-death-…`), or one of
/// ours under its old reserved name: never copied when a message is republished.
fn is_reserved(name: &str) -> bool {
    name.starts_with("x-")
}

/// A message to publish with confirms.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub exchange: String,
    pub routing_key: String,
    /// Stable id (`<provider>:<event id>` for webhook events) so consumers can dedupe; bounded
    /// to an AMQP short string by construction.
    pub message_id: MessageId,
    pub body: Vec<u8>,
    pub headers: Vec<(String, HeaderValue)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    /// Bounded by construction (`names::HeaderText`), so every header fits the frame.
    Text(HeaderText),
    Int(i64),
}

impl HeaderValue {
    pub fn text(text: impl Into<HeaderText>) -> Self {
        Self::Text(text.into())
    }
}

impl OutgoingMessage {
    /// Never panics, whatever the message holds: the message id is bounded by its type, and a
    /// header name AMQP cannot carry (none of settle's, nor one a delivery brought, is) is left
    /// out rather than converted with lapin's panicking `From<&str>`.
    pub(super) fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (name, value) in &self.headers {
            let Ok(name) = ShortString::try_new(name.as_str()) else {
                tracing::warn!(
                    bytes = name.len(),
                    "a header name longer than AMQP allows was left out"
                );
                continue;
            };
            let value = match value {
                HeaderValue::Text(text) => AMQPValue::LongString(text.as_str().into()),
                HeaderValue::Int(n) => AMQPValue::LongLongInt(*n),
            };
            headers.insert(name, value);
        }
        // Set last: a republished copy is a new publish, never the original's id.
        headers.insert(
            PUBLISH_ID.into(),
            AMQPValue::LongString(uuid::Uuid::new_v4().to_string().into()),
        );
        let properties = BasicProperties::default()
            // Persistent: written to disk, so it survives a broker restart.
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
            .with_app_id("settle".into())
            .with_headers(headers);
        match ShortString::try_new(self.message_id.as_str()) {
            Ok(id) => properties.with_message_id(id),
            // A `MessageId` is at most 255 bytes: this arm is never taken.
            Err(_) => properties,
        }
    }

    /// The same message (body, message id, headers) sent elsewhere, with `extra` headers set on top
    /// of the original ones: how the worker moves a delivery to a retry tier or the DLQ.
    /// The broker's headers (`x-death`, `x-delivery-count`, …) are not carried over: the copy is a
    /// new message to the broker, and a stale delivery count on it would mislead.
    pub fn republish(
        delivery: &lapin::message::Delivery,
        exchange: &str,
        routing_key: &str,
        extra: Vec<(String, HeaderValue)>,
    ) -> Self {
        Self {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            message_id: MessageId::new(message_id(&delivery.properties).unwrap_or_default()),
            body: delivery.data.clone(),
            headers: carried_headers(headers_json(&delivery.properties), extra),
        }
    }
}

/// The headers a republished copy carries: the original's own (text and integers), without the
/// broker's, with `extra` set on top.
fn carried_headers(
    original: Map<String, Value>,
    extra: Vec<(String, HeaderValue)>,
) -> Vec<(String, HeaderValue)> {
    let mut headers: Vec<(String, HeaderValue)> = original
        .into_iter()
        .filter(|(name, _)| !is_reserved(name))
        .filter_map(|(name, value)| {
            let value = match value {
                Value::String(text) => HeaderValue::text(text),
                Value::Number(n) => HeaderValue::Int(n.as_i64()?),
                _ => return None,
            };
            Some((name, value))
        })
        .collect();
    for (name, value) in extra {
        headers.retain(|(existing, _)| *existing != name);
        headers.push((name, value));
    }
    headers
}

/// The message id of a delivery, when it has one.
pub fn message_id(properties: &BasicProperties) -> Option<String> {
    properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
}

/// Every header of a delivery as JSON: text as strings, integers as numbers, tables (such as the
/// broker's `x-death`) as objects.
pub fn headers_json(properties: &BasicProperties) -> Map<String, Value> {
    properties
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), amqp_to_json(value)))
                .collect()
        })
        .unwrap_or_default()
}

fn amqp_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(t) => (*t).into(),
        AMQPValue::FieldTable(table) => Value::Object(
            table
                .inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), amqp_to_json(v)))
                .collect(),
        ),
        AMQPValue::FieldArray(array) => {
            Value::Array(array.as_slice().iter().map(amqp_to_json).collect())
        }
        other => Value::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_republished_copy_keeps_our_headers_and_drops_the_brokers() {
        let original = serde_json::json!({
            "provider": "stripe",
            "settle-attempts": 1,
            "x-settle-attempts": 1,
            "x-delivery-count": 3,
            "x-first-death-queue": "p.reconcile",
            "x-death": {"count": 1},
        });
        let Value::Object(original) = original else {
            unreachable!()
        };
        let extra = vec![("settle-attempts".to_owned(), HeaderValue::Int(2))];
        let mut carried = carried_headers(original, extra);
        carried.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            carried,
            vec![
                ("provider".to_owned(), HeaderValue::text("stripe")),
                ("settle-attempts".to_owned(), HeaderValue::Int(2)),
            ]
        );
    }

    #[test]
    fn headers_decode_to_json_whatever_integer_width_the_sender_chose() {
        let mut table = FieldTable::default();
        table.insert("text".into(), AMQPValue::LongString("a".into()));
        table.insert("short".into(), AMQPValue::ShortString("b".into()));
        table.insert("long".into(), AMQPValue::LongInt(7));
        table.insert("longlong".into(), AMQPValue::LongLongInt(8));
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        table.insert("x-death".into(), AMQPValue::FieldTable(death));
        let properties = BasicProperties::default().with_headers(table);
        let json = Value::Object(headers_json(&properties));
        assert_eq!(
            json,
            serde_json::json!({"text": "a", "short": "b", "long": 7, "longlong": 8, "x-death": {"count": 1}})
        );
    }
}
