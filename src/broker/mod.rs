//! RabbitMQ plumbing: one supervised connection per process, the topology, confirmed publishing.
//!
//! The supervisor owns the connection. It connects, declares the topology, opens the publisher
//! channels in confirm mode and publishes the result through a `watch` channel; when the
//! connection or a channel dies it drops everything and builds it again, so a broker restart never
//! needs a settle restart. Readers (`publish`, consumers, readiness) only ever see a complete,
//! working set of channels, or nothing.

pub mod message;
pub mod topology;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use lapin::types::ShortString;
use lapin::{Channel, Confirmation, Connection, ConnectionProperties};
use secrecy::ExposeSecret;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::AmqpSettings;
pub use message::{HeaderValue, OutgoingMessage, headers_json};
pub use topology::Topology;

/// How often the supervisor looks at the connection's state. Losing the connection is also
/// noticed at once by any publish that fails, so this only bounds how stale readiness can be.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Acks, checking that the ack went through. A failed ack means the broker will redeliver; the
/// inbox makes that harmless, so it is logged, not retried.
pub async fn ack(delivery: &Delivery, what: &str) {
    if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
        tracing::warn!(error = %error, what, "ack failed; the message will be redelivered");
    }
}

/// Hands a delivery back to the queue, to be delivered again (the queue's delivery limit is the
/// last net for one that keeps coming back).
pub async fn nack_requeue(delivery: &Delivery, what: &str) {
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(error) = delivery.nack(options).await {
        tracing::warn!(error = %error, what, "nack failed; the message will be redelivered when the channel closes");
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
