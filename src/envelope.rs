//! The queued-event message: what the receiver publishes for each provider event, and what the
//! worker, the dead-letter consumer and the operator tools read back. This is settle's own
//! contract on the work queue (RabbitMQ only carries it), so it has one owner: built here, parsed
//! here.
//!
//! A message carries the provider's exact event JSON as its body, the message id
//! `<provider>:<event id>` and the headers below. The worker adds the failure headers when it
//! moves a message to a retry tier or the dead-letter queue (its own attempt count, not `x-death`,
//! which RabbitMQ 4 no longer maintains for republished messages).

use crate::sealed::Keyring;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::broker::{HeaderValue, OutgoingMessage, Topology};
use crate::names::MessageId;
use crate::provider::Provider;
use crate::reconcile::events::storable;

/// Header names. The receiver sets the first five; the worker adds the rest on failure.
pub mod headers {
    pub const PROVIDER: &str = "provider";
    pub const EVENT_ID: &str = "event-id";
    pub const EVENT_TYPE: &str = "event-type";
    pub const RECEIVED_AT: &str = "received-at";
    /// Only on events that came through a connection's own endpoint: its id. The worker routes
    /// such an event to that connection's account (`reconcile::routing`).
    pub const CONNECTION_ID: &str = "connection-id";
    /// On reconciliation events (with `event-type`): the account the event is about, for a
    /// subscriber that binds per account on the `…reconciliation.by-account` headers exchange.
    pub const ACCOUNT_ID: &str = "account-id";
    /// Only on events that did not come by webhook: `backfill` (listed from the provider's API).
    pub const SOURCE: &str = "source";
    /// The MAC of the event's headers above and its body, under a key of `SETTLE_SECRET_KEYS`
    /// (`<key id>.<hex>`): only settle's own processes (the receiver, backfill, replay) can make
    /// one, so a holder of broker credentials alone cannot make the worker apply an event.
    pub const SEAL: &str = "settle-seal";
    /// The W3C trace context of the work that queued the event (a webhook's request, a backfill
    /// run): the worker continues the trace. Not sealed: it only ever joins spans.
    pub use crate::trace::TRACEPARENT;
    // Not `x-…`: that prefix belongs to the broker (RabbitMQ sets and may one day strip such
    // headers). Messages queued by settle before 0.2 carry these as `x-settle-…`; the readers
    // below accept both, so a retry tier drained across an upgrade keeps its counts.
    pub const ATTEMPTS: &str = "settle-attempts";
    pub const FIRST_FAILURE_AT: &str = "settle-first-failure-at";
    pub const LAST_FAILURE_AT: &str = "settle-last-failure-at";
    pub const LAST_ERROR: &str = "settle-last-error";
    pub const REASON: &str = "settle-reason";
    pub const DEAD_LETTER_KEY: &str = "settle-dead-letter-key";
    /// The broker's, stamped on every publish (`broker::message`).
    pub use crate::broker::message::PUBLISH_ID;
}

/// AMQP short strings (routing keys, message ids) hold at most 255 bytes.
const MAX_NAME_BYTES: usize = 255;

/// One provider event on the work queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    pub provider: Provider,
    pub event_id: String,
    /// Stripe's `type`; GoCardless's `<resource_type>.<action>`.
    pub event_type: String,
    pub received_at: DateTime<Utc>,
    /// The event's exact JSON as the provider sent it.
    pub body: Vec<u8>,
    /// The connection whose endpoint it came through (or whose API listed it); `None` for the
    /// platform's.
    pub connection_id: Option<String>,
    /// How it reached settle when not by webhook (`backfill`).
    pub source: Option<String>,
    /// The `traceparent` of the work that queued it (validated when read).
    pub trace: Option<String>,
}

/// Why a message is not a queued event settle can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("no `{0}` header")]
    MissingHeader(&'static str),
    #[error("unknown provider `{0}`")]
    UnknownProvider(String),
    #[error("the event id or type is too long: it makes a {0}-byte AMQP name, the limit is {limit}", limit = MAX_NAME_BYTES)]
    NameTooLong(usize),
}

impl QueuedEvent {
    /// Checks that the names derived from the event fit AMQP, so a hostile or odd event id is
    /// refused at the edge rather than failing at publish.
    pub fn new(
        provider: Provider,
        event_id: String,
        event_type: String,
        received_at: DateTime<Utc>,
        body: Vec<u8>,
    ) -> Result<Self, EnvelopeError> {
        let event = Self {
            provider,
            event_id,
            event_type,
            received_at,
            body,
            connection_id: None,
            source: None,
            trace: None,
        };
        for name in [event.message_id(), event.routing_key()] {
            if name.len() > MAX_NAME_BYTES {
                // The length, not the name: an error body must not echo a megabyte back.
                return Err(EnvelopeError::NameTooLong(name.len()));
            }
        }
        Ok(event)
    }

    /// Stamps the connection whose endpoint the event came through.
    pub fn via_connection(mut self, connection: Option<&str>) -> Self {
        self.connection_id = connection.map(str::to_owned);
        self
    }

    /// Stamps the trace of the work queuing it: `span`'s (a webhook's request, a backfill run,
    /// an operator's replay).
    pub fn in_trace_of(mut self, span: &tracing::Span) -> Self {
        self.trace = crate::trace::traceparent_of(span);
        self
    }

    /// Marks how the event reached settle when not by webhook (`backfill`).
    pub fn from_source(mut self, source: &str) -> Self {
        self.source = Some(source.to_owned());
        self
    }

    /// `<provider>:<event id>`: stable across redeliveries, replays and backfills.
    pub fn message_id(&self) -> String {
        format!("{}:{}", self.provider.wire_name(), self.event_id)
    }

    /// `<provider>.<event type>` on the webhooks exchange.
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.provider.wire_name(), self.event_type)
    }

    fn headers(&self, keyring: &Keyring) -> Vec<(String, HeaderValue)> {
        let text = |name: &str, value: &str| (name.to_owned(), HeaderValue::text(value));
        let received_at = self
            .received_at
            .to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut list = vec![
            text(headers::PROVIDER, self.provider.wire_name()),
            text(headers::EVENT_ID, &self.event_id),
            text(headers::EVENT_TYPE, &self.event_type),
            text(headers::RECEIVED_AT, &received_at),
        ];
        if let Some(connection) = &self.connection_id {
            list.push(text(headers::CONNECTION_ID, connection));
        }
        if let Some(source) = &self.source {
            list.push(text(headers::SOURCE, source));
        }
        if let Some(trace) = &self.trace {
            list.push(text(headers::TRACEPARENT, trace));
        }
        let sealed = [
            self.provider.wire_name(),
            &self.event_id,
            &self.event_type,
            &received_at,
            self.connection_id.as_deref().unwrap_or_default(),
            self.source.as_deref().unwrap_or_default(),
        ];
        if let Some(seal) = keyring.mac(&seal_parts(&sealed, &self.body)) {
            list.push(text(headers::SEAL, &seal));
        }
        list
    }

    /// As the receiver publishes it: to the webhooks exchange, routed by provider and type.
    pub fn to_webhook_message(self, topology: &Topology, keyring: &Keyring) -> OutgoingMessage {
        OutgoingMessage {
            exchange: topology.webhooks_exchange.clone(),
            routing_key: self.routing_key(),
            message_id: MessageId::new(self.message_id()),
            headers: self.headers(keyring),
            body: self.body,
        }
    }

    /// Straight onto the work queue, as the receiver would have queued it, with no failure
    /// headers, so its attempts start again: how operators replay an event.
    pub fn to_work_queue_message(self, topology: &Topology, keyring: &Keyring) -> OutgoingMessage {
        OutgoingMessage {
            exchange: String::new(),
            routing_key: topology.reconcile_queue.clone(),
            message_id: MessageId::new(self.message_id()),
            headers: self.headers(keyring),
            body: self.body,
        }
    }

    /// Reads a message back from its headers (as `broker::headers_json` decodes them, or as the
    /// dead-letter table stores them). A missing or unreadable `received-at` is taken as now.
    /// The ids are the provider's, which may hold a NUL: they are read `storable`, as the worker
    /// keeps them (the inbox key, the ledger's event ids).
    pub fn from_headers(
        headers: &Map<String, Value>,
        body: Vec<u8>,
    ) -> Result<Self, EnvelopeError> {
        let text = |name: &'static str| {
            header_text(headers, name).ok_or(EnvelopeError::MissingHeader(name))
        };
        let storable = |text: &str| storable(text).into_owned();
        let provider = text(headers::PROVIDER)?;
        let provider = Provider::from_wire_name(provider)
            .ok_or_else(|| EnvelopeError::UnknownProvider(provider.to_owned()))?;
        let received_at = header_text(headers, headers::RECEIVED_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
        Ok(Self {
            provider,
            event_id: storable(text(headers::EVENT_ID)?),
            event_type: storable(text(headers::EVENT_TYPE)?),
            received_at,
            body,
            connection_id: header_text(headers, headers::CONNECTION_ID).map(storable),
            source: header_text(headers, headers::SOURCE).map(str::to_owned),
            trace: header_text(headers, headers::TRACEPARENT)
                .filter(|text| crate::trace::parse(text).is_some())
                .map(str::to_owned),
        })
    }
}

/// Whether a queued message's seal holds: the `settle-seal` header is the MAC of its event
/// headers (as received, before any reading of them) and its body under a key of `keyring`. With
/// no key configured nothing is sealed, and nothing is checked.
pub fn seal_holds(headers: &Map<String, Value>, body: &[u8], keyring: &Keyring) -> bool {
    if keyring.is_empty() {
        return true;
    }
    let Some(seal) = header_text(headers, headers::SEAL) else {
        return false;
    };
    let text = |name| header_text(headers, name).unwrap_or_default();
    let sealed = [
        text(headers::PROVIDER),
        text(headers::EVENT_ID),
        text(headers::EVENT_TYPE),
        text(headers::RECEIVED_AT),
        text(headers::CONNECTION_ID),
        text(headers::SOURCE),
    ];
    keyring.verifies(&seal_parts(&sealed, body), seal)
}

/// What a seal covers: the event's header texts, in a fixed order, then its body.
fn seal_parts<'a>(texts: &[&'a str; 6], body: &'a [u8]) -> [&'a [u8]; 7] {
    [
        texts[0].as_bytes(),
        texts[1].as_bytes(),
        texts[2].as_bytes(),
        texts[3].as_bytes(),
        texts[4].as_bytes(),
        texts[5].as_bytes(),
        body,
    ]
}

/// A header by its name, or by the `x-` name settle used for its own headers before 0.2.
fn header<'a>(headers: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    headers
        .get(name)
        .or_else(|| headers.get(&format!("x-{name}")))
}

/// A text header.
pub fn header_text<'a>(headers: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    header(headers, name)?.as_str()
}

/// An integer header.
pub fn header_int(headers: &Map<String, Value>, name: &str) -> Option<i64> {
    header(headers, name)?.as_i64()
}

/// A time header, as the worker writes them (RFC 3339).
pub fn header_time(headers: &Map<String, Value>, name: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(header_text(headers, name)?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_headers_are_read_under_their_name_before_0_2_too() {
        let Value::Object(old) =
            serde_json::json!({"x-settle-attempts": 2, "x-settle-reason": "panicked"})
        else {
            unreachable!()
        };
        assert_eq!(header_int(&old, headers::ATTEMPTS), Some(2));
        assert_eq!(header_text(&old, headers::REASON), Some("panicked"));
        let Value::Object(new) = serde_json::json!({"settle-attempts": 3, "x-settle-attempts": 2})
        else {
            unreachable!()
        };
        assert_eq!(header_int(&new, headers::ATTEMPTS), Some(3));
    }

    fn event() -> QueuedEvent {
        QueuedEvent::new(
            Provider::GoCardless,
            "EV123".into(),
            "payments.confirmed".into(),
            "2026-11-02T12:00:00.123456Z".parse().unwrap(),
            br#"{"id":"EV123"}"#.to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn a_message_reads_back_as_the_event_it_was_built_from() {
        let topology = Topology::new("p", &[1000], 10);
        let message = event().to_webhook_message(&topology, &Keyring::default());
        assert_eq!(message.exchange, "p.webhooks");
        assert_eq!(message.routing_key, "gocardless.payments.confirmed");
        assert_eq!(message.message_id.as_str(), "gocardless:EV123");
        let headers: Map<String, Value> = message
            .headers
            .iter()
            .map(|(name, value)| match value {
                HeaderValue::Text(text) => (name.clone(), Value::from(text.as_str())),
                HeaderValue::Int(n) => (name.clone(), Value::from(*n)),
            })
            .collect();
        assert_eq!(
            QueuedEvent::from_headers(&headers, message.body),
            Ok(event())
        );

        let replay = event().to_work_queue_message(&topology, &Keyring::default());
        assert_eq!(
            (replay.exchange.as_str(), replay.routing_key.as_str()),
            ("", "p.reconcile")
        );
        assert_eq!(replay.headers, message.headers);
    }

    #[test]
    fn unreadable_messages_say_what_is_wrong() {
        let mut headers = Map::new();
        assert_eq!(
            QueuedEvent::from_headers(&headers, vec![]),
            Err(EnvelopeError::MissingHeader(headers::PROVIDER))
        );
        headers.insert(headers::PROVIDER.into(), "paypal".into());
        assert_eq!(
            QueuedEvent::from_headers(&headers, vec![]),
            Err(EnvelopeError::UnknownProvider("paypal".into()))
        );
        headers.insert(headers::PROVIDER.into(), "stripe".into());
        assert_eq!(
            QueuedEvent::from_headers(&headers, vec![]),
            Err(EnvelopeError::MissingHeader(headers::EVENT_ID))
        );
    }

    #[test]
    fn names_that_do_not_fit_amqp_are_refused() {
        let long = "x".repeat(250);
        let refused = QueuedEvent::new(Provider::Stripe, long, "t".into(), Utc::now(), vec![]);
        assert!(matches!(refused, Err(EnvelopeError::NameTooLong(_))));
    }
}
