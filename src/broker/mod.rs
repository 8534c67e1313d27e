//! RabbitMQ plumbing: one supervised connection per process, the topology, confirmed publishing.
//!
//! The supervisor owns the connection. It connects, declares the topology, opens the publisher
//! channels in confirm mode and publishes the result through a `watch` channel; when the
//! connection or a channel dies it drops everything and builds it again, so a broker restart never
//! needs a settle restart. Readers (`publish`, consumers, readiness) only ever see a complete,
//! working set of channels, or nothing.

pub mod topology;

/// Header names settle sets on queued events. The receiver sets the first four; the worker adds
/// the failure ones when it sends a message to a retry tier or the dead-letter queue (its own
/// attempt count, not `x-death`, which RabbitMQ 4 no longer maintains for republished messages).
pub mod headers {
    pub const PROVIDER: &str = "provider";
    pub const EVENT_ID: &str = "event-id";
    pub const EVENT_TYPE: &str = "event-type";
    pub const RECEIVED_AT: &str = "received-at";
    pub const ATTEMPTS: &str = "x-settle-attempts";
    pub const FIRST_FAILURE_AT: &str = "x-settle-first-failure-at";
    pub const LAST_FAILURE_AT: &str = "x-settle-last-failure-at";
    pub const LAST_ERROR: &str = "x-settle-last-error";
    pub const REASON: &str = "x-settle-reason";
    pub const DEAD_LETTER_KEY: &str = "x-settle-dead-letter-key";
}

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use secrecy::ExposeSecret;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::AmqpSettings;
pub use topology::Topology;

/// How often the supervisor looks at the connection's state. Losing the connection is also
/// noticed at once by any publish that fails, so this only bounds how stale readiness can be.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(200);

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
    fn properties(&self) -> BasicProperties {
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
}

impl OutgoingMessage {
    /// The same message (body, message id, headers) sent elsewhere, with `extra` headers set on top
    /// of the original ones: how the worker moves a delivery to a retry tier or the DLQ.
    pub fn republish(
        delivery: &lapin::message::Delivery,
        exchange: &str,
        routing_key: &str,
        extra: Vec<(String, HeaderValue)>,
    ) -> Self {
        let mut headers: Vec<(String, HeaderValue)> = delivery
            .properties
            .headers()
            .as_ref()
            .map(|table| {
                table
                    .inner()
                    .iter()
                    .filter_map(|(name, value)| {
                        let value = match value {
                            AMQPValue::LongString(s) => HeaderValue::Text(
                                String::from_utf8_lossy(s.as_bytes()).into_owned(),
                            ),
                            AMQPValue::ShortString(s) => HeaderValue::Text(s.as_str().to_owned()),
                            AMQPValue::LongLongInt(n) => HeaderValue::Int(*n),
                            AMQPValue::LongInt(n) => HeaderValue::Int((*n).into()),
                            // Broker-added headers (x-death tables) are not carried over.
                            _ => return None,
                        };
                        Some((name.as_str().to_owned(), value))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (name, value) in extra {
            headers.retain(|(existing, _)| *existing != name);
            headers.push((name, value));
        }
        Self {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default(),
            body: delivery.data.clone(),
            headers,
        }
    }
}

/// A text header of a delivery (`None` when absent or not text).
pub fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

/// An integer header of a delivery.
pub fn header_int(properties: &BasicProperties, name: &str) -> Option<i64> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some((*n).into()),
        AMQPValue::ShortInt(n) => Some((*n).into()),
        AMQPValue::LongUInt(n) => Some((*n).into()),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker is not connected")]
    NotConnected,
    #[error("the broker did not confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("the broker returned message {0} as unroutable")]
    Unroutable(String),
    #[error("the broker refused (nacked) message {0}")]
    Nacked(String),
    #[error("a name is longer than AMQP allows: {0}")]
    NameTooLong(String),
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
}

/// A live connection with its confirm-mode publisher channels.
pub struct Connected {
    pub connection: Connection,
    publishers: Vec<Channel>,
    /// Round-robin over `publishers`; concurrent requests share channels and pipeline confirms.
    next_publisher: AtomicUsize,
}

impl Connected {
    fn is_healthy(&self) -> bool {
        self.connection.status().connected()
            && self.publishers.iter().all(|c| c.status().connected())
    }
}

/// Cheap to clone; every clone sees the same supervised connection.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AmqpSettings,
    topology: Topology,
    /// The current connection, `None` while disconnected. Written only by the supervisor.
    current: watch::Sender<Option<Arc<Connected>>>,
    /// Stops the supervisor; `close` cancels it after the users of the broker have finished.
    stop: CancellationToken,
}

impl Broker {
    /// Starts the supervisor, which connects in the background: a broker that is down at start
    /// only makes the process unready until it comes up.
    pub fn start(settings: AmqpSettings, topology: Topology) -> Self {
        let (current, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            settings,
            topology,
            current,
            stop: CancellationToken::new(),
        });
        tokio::spawn(supervise(inner.clone()));
        Self { inner }
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    pub fn is_connected(&self) -> bool {
        self.inner
            .current
            .borrow()
            .as_ref()
            .is_some_and(|c| c.is_healthy())
    }

    /// Waits for a live connection; `None` once the broker is closing.
    pub async fn connected(&self) -> Option<Arc<Connected>> {
        let mut changes = self.inner.current.subscribe();
        tokio::select! {
            _ = self.inner.stop.cancelled() => None,
            result = changes.wait_for(|c| c.as_ref().is_some_and(|c| c.is_healthy())) => {
                result.ok().and_then(|c| c.clone())
            }
        }
    }

    /// Publishes every message (persistent, mandatory) and waits for all their confirms together:
    /// the publishes are pipelined, not confirmed one by one. Succeeds only if the broker acked
    /// every message and returned none as unroutable.
    pub async fn publish_all(&self, messages: &[OutgoingMessage]) -> Result<(), PublishError> {
        self.publish_with(messages, true).await
    }

    /// Like `publish_all`, but a message no queue is bound for is fine: for the outgoing
    /// reconciliation events, whose subscribers bind their own queues (or none yet).
    pub async fn publish_all_unrouted_ok(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<(), PublishError> {
        self.publish_with(messages, false).await
    }

    async fn publish_with(
        &self,
        messages: &[OutgoingMessage],
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let connected = self
            .inner
            .current
            .borrow()
            .clone()
            .ok_or(PublishError::NotConnected)?;
        let timeout = self.inner.settings.confirm_timeout();
        tokio::time::timeout(timeout, publish_on(&connected, messages, mandatory))
            .await
            .map_err(|_| PublishError::ConfirmTimeout(timeout))?
    }

    /// Closes the connection after flushing what was sent. Call once the users are done.
    pub async fn close(&self) {
        self.inner.stop.cancel();
        let current = self.inner.current.send_replace(None);
        if let Some(connected) = current {
            // Closing the connection closes its channels; confirms already received are kept.
            let _ = connected
                .connection
                .close(200, "settle shutting down".into())
                .await;
        }
    }
}

async fn publish_on(
    connected: &Connected,
    messages: &[OutgoingMessage],
    mandatory: bool,
) -> Result<(), PublishError> {
    let index = connected.next_publisher.fetch_add(1, Ordering::Relaxed);
    let channel = &connected.publishers[index % connected.publishers.len()];
    let mut confirms = Vec::with_capacity(messages.len());
    for message in messages {
        let exchange = ShortString::try_new(message.exchange.as_str())
            .map_err(|_| PublishError::NameTooLong(message.exchange.clone()))?;
        let routing_key = ShortString::try_new(message.routing_key.as_str())
            .map_err(|_| PublishError::NameTooLong(message.routing_key.clone()))?;
        let confirm = channel
            .basic_publish(
                exchange,
                routing_key,
                // Mandatory: an unroutable message comes back instead of vanishing.
                BasicPublishOptions {
                    mandatory,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                message.properties(),
            )
            .await?;
        confirms.push(confirm);
    }
    for (confirmation, message) in join_all(confirms).await.into_iter().zip(messages) {
        match confirmation? {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(_)) => {
                return Err(PublishError::Unroutable(message.message_id.clone()));
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                return Err(PublishError::Nacked(message.message_id.clone()));
            }
        }
    }
    Ok(())
}

async fn supervise(inner: Arc<Inner>) {
    loop {
        match connect(&inner).await {
            Ok(connected) => {
                tracing::info!(prefix = %inner.settings.prefix, "connected to the broker");
                let connected = Arc::new(connected);
                inner.current.send_replace(Some(connected.clone()));
                let mut poll = tokio::time::interval(HEALTH_POLL_INTERVAL);
                loop {
                    tokio::select! {
                        _ = inner.stop.cancelled() => return,
                        _ = poll.tick() => {}
                    }
                    if !connected.is_healthy() {
                        break;
                    }
                }
                inner.current.send_replace(None);
                tracing::warn!("lost the broker connection; reconnecting");
                let _ = connected.connection.close(200, "reconnecting".into()).await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot reach the broker; will retry");
            }
        }
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tokio::time::sleep(inner.settings.reconnect_delay()) => {}
        }
    }
}

async fn connect(inner: &Inner) -> lapin::Result<Connected> {
    let properties = ConnectionProperties::default().with_connection_name("settle".into());
    let connection = Connection::connect(inner.settings.url.expose_secret(), properties).await?;
    let setup = connection.create_channel().await?;
    inner.topology.declare(&setup).await?;
    let _ = setup.close(200, "topology declared".into()).await;
    let mut publishers = Vec::with_capacity(inner.settings.publisher_channels);
    for _ in 0..inner.settings.publisher_channels {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        publishers.push(channel);
    }
    Ok(Connected {
        connection,
        publishers,
        next_publisher: AtomicUsize::new(0),
    })
}
