//! Messages as settle sends and reads them: an outgoing message with its headers, and the one
//! decoder from AMQP header tables to JSON that every reader shares (the worker, the dead-letter
//! consumer, the operator tools, the tests).

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value};

/// A message to publish with confirms.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub exchange: String,
    pub routing_key: String,
    /// Stable id (`<provider>:<event id>` for webhook events) so consumers can dedupe.
    pub message_id: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, HeaderValue)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    Text(String),
    Int(i64),
}

impl OutgoingMessage {
    pub(super) fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (name, value) in &self.headers {
            let value = match value {
                HeaderValue::Text(text) => AMQPValue::LongString(text.as_str().into()),
                HeaderValue::Int(n) => AMQPValue::LongLongInt(*n),
            };
            headers.insert(name.as_str().into(), value);
        }
        BasicProperties::default()
            // Persistent: written to disk, so it survives a broker restart.
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(self.message_id.as_str().into())
            .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
            .with_app_id("settle".into())
            .with_headers(headers)
    }

    /// The same message (body, message id, headers) sent elsewhere, with `extra` headers set on top
    /// of the original ones: how the worker moves a delivery to a retry tier or the DLQ.
    /// Broker-added headers (`x-death` tables) are not carried over.
    pub fn republish(
        delivery: &lapin::message::Delivery,
        exchange: &str,
        routing_key: &str,
        extra: Vec<(String, HeaderValue)>,
    ) -> Self {
        let mut headers: Vec<(String, HeaderValue)> = headers_json(&delivery.properties)
            .into_iter()
            .filter_map(|(name, value)| {
                let value = match value {
                    Value::String(text) => HeaderValue::Text(text),
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
        Self {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            message_id: message_id(&delivery.properties).unwrap_or_default(),
            body: delivery.data.clone(),
            headers,
        }
    }
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
