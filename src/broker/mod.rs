//! RabbitMQ plumbing: supervised connections, the topology, confirmed publishing.
//!
//! The supervisor owns the connections. It connects, declares the topology, opens the publisher
//! channels in confirm mode and publishes the result through a `watch` channel; when a connection
//! or a channel dies it drops everything and builds it again, so a broker restart never needs a
//! settle restart. Readers (`publish`, consumers, readiness) only ever see a complete, working set
//! of channels, or nothing.
//!
//! A process that consumes gets two connections: one that only publishes and one that only
//! consumes (and acks). RabbitMQ's memory and disk alarms block connections that publish, by no
//! longer reading their socket; on a shared connection the worker's acks would stall with them, and
//! the backlog that caused the alarm could never drain. While the publishing connection is blocked
//! (`connection.blocked`) a publish fails at once (`PublishError::Blocked`): intake answers 503
//! without waiting out its confirm deadline, and readiness says so.
//!
//! On a cluster (`amqp.urls`) a process connects to one node, starting at a random one so that
//! processes spread over the nodes, and when it loses that node it goes on to the next at once;
//! it pauses `reconnect_delay` only once every node has failed in turn. An intake process also
//! leaves a node that takes a publish and gives no confirm within the deadline (frozen, or cut
//! off: its sockets stay open). Both connections of a process are on the same node. A publish that fails because the connection died under it, or
//! that the broker nacks (a quorum queue electing a new leader), is made again on the next
//! connection, within the same confirm deadline (`publish_all`).

pub mod message;
pub mod topology;

use std::hash::BuildHasher;
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
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::AmqpSettings;
pub use message::{HeaderValue, OutgoingMessage, headers_json};
pub use topology::Topology;

/// How often the supervisor looks at the connection's state. Losing the connection is also
/// noticed at once by any publish that fails, so this only bounds how stale readiness can be.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// A broker that accepts TCP but never answers (a frozen node, SIGSTOP) must not hold the
/// supervisor: the attempt is abandoned and made again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection being replaced is given to close cleanly.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// After a publish failed in a way a new attempt can mend, the pause before the attempt: long
/// enough not to spin on a broker that nacks everything, short against a confirm deadline.
const REPUBLISH_PAUSE: Duration = Duration::from_millis(50);
/// Nacks published again at most this often per call: AMQP does not say why a message was
/// nacked, and a full queue (`reject-publish`) nacks every attempt; intake then answers 503 at
/// once rather than at its deadline.
const NACKED_REPUBLISHES: u32 = 2;

/// Acks, checking that the ack went through. A failed ack means the broker will redeliver; the
/// inbox makes that harmless, so it is logged and counted, not retried.
pub async fn ack(delivery: &Delivery, what: &str) {
    settled(delivery.ack(BasicAckOptions::default()).await, "ack", what);
}

/// Hands a delivery back to the queue, to be delivered again (the queue's delivery limit is the
/// last net for one that keeps coming back).
pub async fn nack_requeue(delivery: &Delivery, what: &str) {
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    settled(delivery.nack(options).await, "nack", what);
}

/// `Ok(false)` is a failure too: lapin sends nothing for a delivery whose acker was already used
/// or whose channel has gone (the broker redelivers it once the channel closes).
fn settled(result: lapin::Result<bool>, how: &'static str, what: &str) {
    let error = match result {
        Ok(true) => return,
        Ok(false) => "the delivery's channel is gone or it was already settled".to_owned(),
        Err(error) => error.to_string(),
    };
    metrics::counter!(crate::telemetry::BROKER_SETTLE_FAILURES, "how" => how).increment(1);
    tracing::warn!(
        error,
        how,
        what,
        "a delivery could not be settled; the broker will redeliver it"
    );
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker is not connected")]
    NotConnected,
    #[error("the broker is blocking publishers (a memory or disk alarm)")]
    Blocked,
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

impl PublishError {
    /// Whether publishing again, on the next connection, can succeed: the connection was
    /// missing or died under the publish. (A nack may pass too: `publish_all` counts those.)
    fn may_succeed_again(&self) -> bool {
        matches!(self, Self::NotConnected | Self::Amqp(_))
    }
}

/// Which connections a process opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// Intake and the operator tools.
    PublishOnly,
    /// The worker: its consumers and acks on a connection of their own.
    PublishAndConsume,
}

/// Live connections with the confirm-mode publisher channels.
pub struct Connected {
    /// `host:port` of the node both connections are on.
    node: String,
    publishing: Connection,
    publishers: Vec<Channel>,
    /// Round-robin over `publishers`; concurrent requests share channels and pipeline confirms.
    next_publisher: AtomicUsize,
    consuming: Option<Connection>,
}

impl Connected {
    fn is_healthy(&self) -> bool {
        self.publishing.status().connected()
            && self.publishers.iter().all(|c| c.status().connected())
            && self
                .consuming
                .as_ref()
                .is_none_or(|c| c.status().connected())
    }

    /// The connection consumers open their channels on; `None` in a broker started with
    /// `Connections::PublishOnly`.
    pub fn consuming(&self) -> Option<&Connection> {
        self.consuming.as_ref()
    }

    fn connections(&self) -> impl Iterator<Item = &Connection> {
        std::iter::once(&self.publishing).chain(&self.consuming)
    }
}

/// How the broker confirmed one message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    Routed,
    /// Mandatory and no queue bound for it: returned, and acked.
    Unroutable,
    /// Refused, e.g. by a full queue with `reject-publish`.
    Nacked,
}

/// Cheap to clone; every clone sees the same supervised connection.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AmqpSettings,
    topology: Topology,
    connections: Connections,
    /// The current connection, `None` while disconnected. Written only by the supervisor.
    current: watch::Sender<Option<Arc<Connected>>>,
    /// Stops the supervisor; `close` cancels it after the users of the broker have finished.
    stop: CancellationToken,
    /// A publish got no confirm within its deadline: on a cluster, the node may be frozen (a
    /// network pause keeps its sockets open), and an intake process's supervisor moves to the
    /// next.
    unresponsive: tokio::sync::Notify,
}

impl Broker {
    /// Starts the supervisor, which connects in the background: a broker that is down at start
    /// only makes the process unready until it comes up.
    pub fn start(settings: AmqpSettings, topology: Topology, connections: Connections) -> Self {
        let (current, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            settings,
            topology,
            connections,
            current,
            stop: CancellationToken::new(),
            unresponsive: tokio::sync::Notify::new(),
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

    /// `host:port` of the node this process is connected to; `None` while disconnected.
    pub fn node(&self) -> Option<String> {
        self.inner
            .current
            .borrow()
            .as_ref()
            .filter(|c| c.is_healthy())
            .map(|c| c.node.clone())
    }

    /// Whether the broker has blocked the publishing connection (`connection.blocked`).
    pub fn is_blocked(&self) -> bool {
        self.inner
            .current
            .borrow()
            .as_ref()
            .is_some_and(|c| c.publishing.status().blocked())
    }

    /// How many messages each of settle's queues holds ready, work queue first (passive
    /// declarations, on a channel of their own); `None` while disconnected or when a queue is
    /// missing.
    pub async fn queue_depths(&self) -> Option<Vec<(String, u32)>> {
        let connected = self.inner.current.borrow().clone()?;
        let channel = connected.publishing.create_channel().await.ok()?;
        let depths = self.inner.topology.depths(&channel).await;
        let _ = channel.close(200, "done".into()).await;
        depths
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
    ///
    /// Within the confirm deadline, a failure that a new attempt can mend (a lost connection, a
    /// nack) is followed by a new attempt with all the messages, on the next live connection. A
    /// message may so be published twice; the consumers' inbox makes that harmless.
    pub async fn publish_all(&self, messages: &[OutgoingMessage]) -> Result<(), PublishError> {
        let deadline = Instant::now() + self.inner.settings.confirm_timeout();
        let mut nacks = 0;
        loop {
            let error = match self.publish_all_once(messages, deadline).await {
                Ok(()) => return Ok(()),
                Err(error @ PublishError::Nacked(_)) if nacks < NACKED_REPUBLISHES => {
                    nacks += 1;
                    error
                }
                Err(error) if error.may_succeed_again() => error,
                Err(error) => return Err(error),
            };
            tokio::time::sleep(REPUBLISH_PAUSE).await;
            // No node connected: wait for one only as long as a failover to the next node takes,
            // then answer; the confirm deadline is for a publish a broker has taken.
            let connect_by = deadline.min(Instant::now() + self.inner.settings.connect_wait());
            let reconnected = tokio::time::timeout_at(connect_by, self.connected()).await;
            if !matches!(reconnected, Ok(Some(_))) {
                return Err(error);
            }
            metrics::counter!(crate::telemetry::BROKER_REPUBLISHED).increment(1);
            tracing::info!(%error, "publishing again on the broker's current connection");
        }
    }

    async fn publish_all_once(
        &self,
        messages: &[OutgoingMessage],
        deadline: Instant,
    ) -> Result<(), PublishError> {
        let confirms = self.publish_each_until(messages, deadline).await?;
        for (confirmed, message) in confirms.into_iter().zip(messages) {
            let id = message.message_id.to_string();
            match confirmed {
                Confirmed::Routed => {}
                Confirmed::Unroutable => return Err(PublishError::Unroutable(id)),
                Confirmed::Nacked => return Err(PublishError::Nacked(id)),
            }
        }
        Ok(())
    }

    /// Publishes every message (persistent, mandatory) and says how each was confirmed, so a
    /// caller can settle the ones that went through and keep the others: the outbox relay. An
    /// `Err` means none can be counted on (not connected, blocked, no confirm in time).
    pub async fn publish_each(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<Confirmed>, PublishError> {
        let deadline = Instant::now() + self.inner.settings.confirm_timeout();
        self.publish_each_until(messages, deadline).await
    }

    async fn publish_each_until(
        &self,
        messages: &[OutgoingMessage],
        deadline: Instant,
    ) -> Result<Vec<Confirmed>, PublishError> {
        let connected = self
            .inner
            .current
            .borrow()
            .clone()
            .ok_or(PublishError::NotConnected)?;
        if connected.publishing.status().blocked() {
            return Err(PublishError::Blocked);
        }
        let published = tokio::time::timeout_at(deadline, publish_on(&connected, messages)).await;
        // Intake only: moving a worker would also drop its consumers, and every delivery they
        // hold would come back one step nearer its delivery limit.
        let may_move = self.inner.settings.addresses().len() > 1
            && self.inner.connections == Connections::PublishOnly;
        if published.is_err() && may_move {
            // Wakes the supervisor if it is watching a connection; never stored for later.
            self.inner.unresponsive.notify_waiters();
        }
        published
            .map_err(|_| PublishError::ConfirmTimeout(self.inner.settings.confirm_timeout()))?
    }

    /// Closes the connection after flushing what was sent. Call once the users are done.
    pub async fn close(&self) {
        self.inner.stop.cancel();
        let current = self.inner.current.send_replace(None);
        if let Some(connected) = current {
            // Closing a connection closes its channels; confirms already received are kept.
            for connection in connected.connections() {
                let _ = connection.close(200, "settle shutting down".into()).await;
            }
        }
    }
}

async fn publish_on(
    connected: &Connected,
    messages: &[OutgoingMessage],
) -> Result<Vec<Confirmed>, PublishError> {
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
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                message.properties(),
            )
            .await?;
        confirms.push(confirm);
    }
    join_all(confirms)
        .await
        .into_iter()
        .map(|confirmation| {
            Ok(match confirmation? {
                Confirmation::Ack(None) => Confirmed::Routed,
                Confirmation::Ack(Some(_)) => Confirmed::Unroutable,
                Confirmation::Nack(_) | Confirmation::NotRequested => Confirmed::Nacked,
            })
        })
        .collect()
}

async fn supervise(inner: Arc<Inner>) {
    let addresses = inner.settings.addresses();
    // A random first node, so that the processes of a deployment spread over the cluster.
    let mut next = std::hash::RandomState::new().hash_one(std::process::id()) as usize;
    let mut failed_in_a_row = 0;
    let mut connected_before = false;
    loop {
        let address = &addresses[next % addresses.len()];
        next = next.wrapping_add(1);
        let node = node_of(address);
        let first = !connected_before;
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, connect(&inner, address, &node, first))
            .await
            .unwrap_or_else(|_| {
                Err(lapin::Error::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {CONNECT_TIMEOUT:?}"),
                )))
            });
        match attempt {
            Ok(connected) => {
                failed_in_a_row = 0;
                connected_before = true;
                tracing::info!(prefix = %inner.settings.prefix, node, "connected to the broker");
                let connected = Arc::new(connected);
                inner.current.send_replace(Some(connected.clone()));
                let mut poll = tokio::time::interval(HEALTH_POLL_INTERVAL);
                loop {
                    tokio::select! {
                        _ = inner.stop.cancelled() => return,
                        _ = poll.tick() => {}
                        _ = inner.unresponsive.notified() => {
                            tracing::warn!(node, "no publisher confirm from the node within the deadline; moving to the next node");
                            break;
                        }
                    }
                    if !connected.is_healthy() {
                        break;
                    }
                }
                inner.current.send_replace(None);
                tracing::warn!(node, "lost the broker connection; reconnecting");
                for connection in connected.connections() {
                    // A frozen node never answers the close: do not wait for it.
                    let closing = connection.close(200, "reconnecting".into());
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
                }
            }
            Err(error) => {
                failed_in_a_row += 1;
                tracing::warn!(error = %error, node, "cannot reach the broker; will retry");
            }
        }
        // On a cluster the next node is tried at once; the pause comes once every node failed
        // in turn. One node: a pause before each attempt, as it is the only one to try.
        let every_node_failed = failed_in_a_row > 0 && failed_in_a_row % addresses.len() == 0;
        if addresses.len() > 1 && !every_node_failed {
            continue;
        }
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tokio::time::sleep(inner.settings.reconnect_delay()) => {}
        }
    }
}

/// Whether every queue and exchange of `topology` is there (a missing one closes the channel
/// the check ran on, so it has one of its own).
async fn topology_in_place(topology: &Topology, connection: &Connection) -> lapin::Result<bool> {
    let check = connection.create_channel().await?;
    let in_place = topology.exists(&check).await;
    if in_place {
        let _ = check.close(200, "topology in place".into()).await;
    }
    Ok(in_place)
}

/// Declares the topology; a broker user without the right to (a role's least-privilege user,
/// `deploy/rabbitmq-users.sh`) instead finds it in place, declared by `settle broker declare`
/// under the admin user. Missing and not ours to declare is an error that says so.
pub async fn declare_or_find(topology: &Topology, connection: &Connection) -> lapin::Result<()> {
    let setup = connection.create_channel().await?;
    match topology.declare(&setup).await {
        Ok(()) => {
            let _ = setup.close(200, "topology declared".into()).await;
            Ok(())
        }
        Err(error) if refused_access(&error) => {
            if topology_in_place(topology, connection).await? {
                tracing::debug!("this broker user may not declare the topology; it is in place");
                Ok(())
            } else {
                tracing::error!(
                    "the broker topology is missing and this broker user may not declare it: \
                     run `settle broker declare` with a user that may configure it"
                );
                Err(error)
            }
        }
        Err(error) => Err(error),
    }
}

/// `settle broker declare`: declares the topology on the first node that answers, as the one
/// step of a deployment whose broker user may configure it (the roles' users may not). The
/// node's `host:port` on success.
pub async fn declare_topology(
    settings: &AmqpSettings,
    topology: &Topology,
) -> anyhow::Result<String> {
    let mut last_error = None;
    for address in settings.addresses() {
        let node = node_of(address);
        let connection =
            match Connection::connect(address.expose_secret(), ConnectionProperties::default())
                .await
            {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(error = %error, node, "cannot reach this broker node");
                    last_error = Some(error);
                    continue;
                }
            };
        let setup = connection.create_channel().await?;
        let declared = topology.declare(&setup).await;
        let _ = connection.close(200, "topology declared".into()).await;
        return match declared {
            Ok(()) => Ok(node),
            Err(error) if refused_access(&error) => Err(anyhow::anyhow!(
                "this broker user may not configure settle's queues and exchanges ({error}): \
                 declare them with the admin user (deploy/rabbitmq-users.sh)"
            )),
            Err(error) => Err(error.into()),
        };
    }
    Err(anyhow::anyhow!(
        "no broker node answered (AMQP_URL / AMQP_URLS): {}",
        last_error.map_or_else(|| "none configured".to_owned(), |e| e.to_string())
    ))
}

/// Whether the broker refused an operation for want of permission (ACCESS_REFUSED, 403).
pub fn refused_access(error: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED))
    )
}

/// `host:port` of a broker URL, for the logs (the URL itself holds a password).
fn node_of(address: &SecretString) -> String {
    address
        .expose_secret()
        .parse::<lapin::uri::AMQPUri>()
        .map_or_else(
            |_| "(unparsable URL)".to_owned(),
            |uri| format!("{}:{}", uri.authority.host, uri.authority.port),
        )
}

async fn connect(
    inner: &Inner,
    address: &SecretString,
    node: &str,
    first: bool,
) -> lapin::Result<Connected> {
    let open = |role: &'static str| {
        // The process id tells an operator's `rabbitmqctl list_connections` which process it is.
        let name = format!("settle {role} (pid {})", std::process::id());
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        Connection::connect(address.expose_secret(), properties)
    };
    let connection = open("publish").await?;
    let consuming = match inner.connections {
        Connections::PublishOnly => None,
        Connections::PublishAndConsume => Some(open("consume").await?),
    };
    // The first connection declares the topology, so a queue whose arguments differ from the
    // settings' stops the process at start (PRECONDITION_FAILED). A reconnection only checks
    // that it is all there, and declares it again if not (a node reset, a queue deleted): on a
    // cluster with a frozen node a declaration waits for that node, a check does not.
    if first || !topology_in_place(&inner.topology, &connection).await? {
        declare_or_find(&inner.topology, &connection).await?;
    }
    let mut publishers = Vec::with_capacity(inner.settings.publisher_channels);
    for _ in 0..inner.settings.publisher_channels {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        publishers.push(channel);
    }
    Ok(Connected {
        node: node.to_owned(),
        publishing: connection,
        publishers,
        next_publisher: AtomicUsize::new(0),
        consuming,
    })
}
