//! The RabbitMQ topology, declared idempotently by every process at start and after each
//! reconnect. Every name starts with the configured prefix so deployments and tests can share a
//! broker. RabbitMQ 3.10 is the floor, so only its features are used.
//!
//! ```text
//! <p>.webhooks (topic) ──#──► <p>.reconcile (quorum) ──► worker
//!                               │  ▲                        │ transient failure: publish to a tier
//!                               │  └── TTL ── <p>.retry.<ms>ms (quorum, one per delay) ◄──┘
//!                               └─ delivery limit ──► <p>.dead (quorum) ◄── worker: poison/exhausted
//! <p>.reconciliation (topic): outgoing reconciliation events; subscribers bind their own queues.
//! ```

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// Names and arguments of every exchange and queue settle owns.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Where the receiver publishes webhook events, routing key `<provider>.<event type>`.
    pub webhooks_exchange: String,
    /// The work queue the worker consumes.
    pub reconcile_queue: String,
    /// Poison and exhausted messages, for operators.
    pub dead_letter_queue: String,
    /// Outgoing reconciliation events for internal services, routing key the event type.
    pub reconciliation_exchange: String,
    /// The same events again, for subscribers that bind by header (`account-id`, `event-type`)
    /// with `x-match`: a headers exchange bound to the topic one with `#`. The routing key stays
    /// the type, so every existing binding keeps working, and a per-account binding is an exact
    /// match on the header, never a pattern over ids.
    pub reconciliation_by_account_exchange: String,
    /// Retry tiers, shortest delay first.
    pub retry_queues: Vec<RetryQueue>,
    delivery_limit: u32,
    /// Replicas of each quorum queue when it is first declared; `None`: RabbitMQ's default.
    quorum_initial_group_size: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryQueue {
    pub name: String,
    pub delay_ms: u64,
}

impl Topology {
    /// The topology every process of a deployment declares: the prefix, retry tiers and delivery
    /// limit of its settings.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            quorum_initial_group_size: settings.amqp.quorum_initial_group_size,
            ..Self::new(
                &settings.amqp.prefix,
                &settings.worker.retry_delays_ms,
                settings.amqp.delivery_limit,
            )
        }
    }

    pub fn new(prefix: &str, retry_delays_ms: &[u64], delivery_limit: u32) -> Self {
        Self {
            webhooks_exchange: format!("{prefix}.webhooks"),
            reconcile_queue: format!("{prefix}.reconcile"),
            dead_letter_queue: format!("{prefix}.dead"),
            reconciliation_exchange: format!("{prefix}.reconciliation"),
            reconciliation_by_account_exchange: format!("{prefix}.reconciliation.by-account"),
            retry_queues: retry_delays_ms
                .iter()
                .map(|&delay_ms| RetryQueue {
                    // The delay is in the name: queue arguments cannot change after declaration,
                    // so a new delay must be a new queue rather than a PRECONDITION_FAILED.
                    name: format!("{prefix}.retry.{delay_ms}ms"),
                    delay_ms,
                })
                .collect(),
            delivery_limit,
            quorum_initial_group_size: None,
        }
    }

    /// Declares everything. Safe to repeat: declarations with the same arguments are no-ops.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for exchange in [&self.webhooks_exchange, &self.reconciliation_exchange] {
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Topic,
                    durable_exchange,
                    FieldTable::default(),
                )
                .await?;
        }
        channel
            .exchange_declare(
                self.reconciliation_by_account_exchange.as_str().into(),
                ExchangeKind::Headers,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_bind(
                self.reconciliation_by_account_exchange.as_str().into(),
                self.reconciliation_exchange.as_str().into(),
                "#".into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        // Declared first: the other queues dead-letter into it.
        self.declare_quorum_queue(channel, &self.dead_letter_queue, FieldTable::default())
            .await?;

        let mut work = FieldTable::default();
        // 3.10 quorum queues have no default delivery limit: without one, a message that crashes
        // the worker is redelivered forever.
        work.insert("x-delivery-limit".into(), long(self.delivery_limit.into()));
        dead_letter_to(&mut work, &self.dead_letter_queue);
        self.declare_quorum_queue(channel, &self.reconcile_queue, work)
            .await?;
        channel
            .queue_bind(
                self.reconcile_queue.as_str().into(),
                self.webhooks_exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        for tier in &self.retry_queues {
            let mut retry = FieldTable::default();
            // The TTL is the delay: expired messages go back to the work queue.
            retry.insert("x-message-ttl".into(), long(tier.delay_ms as i64));
            dead_letter_to(&mut retry, &self.reconcile_queue);
            self.declare_quorum_queue(channel, &tier.name, retry)
                .await?;
        }
        Ok(())
    }
}

impl Topology {
    /// Every queue name, work queue first.
    pub fn queues(&self) -> Vec<&str> {
        let mut queues = vec![
            self.reconcile_queue.as_str(),
            self.dead_letter_queue.as_str(),
        ];
        queues.extend(self.retry_queues.iter().map(|tier| tier.name.as_str()));
        queues
    }

    /// Each queue's ready messages, by passive declarations; `None` when one is missing (which
    /// closes `channel`).
    pub async fn depths(&self, channel: &Channel) -> Option<Vec<(String, u32)>> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let mut depths = Vec::new();
        for queue in self.queues() {
            let declared = channel
                .queue_declare(queue.into(), passive, FieldTable::default())
                .await
                .ok()?;
            depths.push((queue.to_owned(), declared.message_count()));
        }
        Some(depths)
    }

    /// Whether every queue and exchange is there, by passive declarations: reads, which a
    /// cluster answers while one of its nodes is frozen, where a declaration waits for every
    /// node (RabbitMQ writes its metadata on all of them). A missing one closes `channel`.
    pub async fn exists(&self, channel: &Channel) -> bool {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        for queue in self.queues() {
            let declared = channel
                .queue_declare(queue.into(), passive, FieldTable::default())
                .await;
            if declared.is_err() {
                return false;
            }
        }
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        for (exchange, kind) in [
            (&self.webhooks_exchange, ExchangeKind::Topic),
            (&self.reconciliation_exchange, ExchangeKind::Topic),
            (
                &self.reconciliation_by_account_exchange,
                ExchangeKind::Headers,
            ),
        ] {
            let declared = channel
                .exchange_declare(
                    exchange.as_str().into(),
                    kind,
                    passive,
                    FieldTable::default(),
                )
                .await;
            if declared.is_err() {
                return false;
            }
        }
        true
    }

    /// Deletes every queue and exchange (their messages with them). For tests and benchmarks that
    /// ran under a throw-away prefix; never called by the service itself.
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        for queue in self.queues() {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [
            &self.webhooks_exchange,
            &self.reconciliation_exchange,
            &self.reconciliation_by_account_exchange,
        ] {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

fn long(value: i64) -> AMQPValue {
    AMQPValue::LongLongInt(value)
}

/// Dead-letters through the default exchange straight to `queue`, at-least-once: the broker keeps
/// the message until the target queue confirms it, so dead-lettering never loses one. At-least-once
/// dead-lettering requires `x-overflow=reject-publish` (a full queue refuses publishes, which the
/// publisher sees as a nack, instead of dropping its oldest messages).
fn dead_letter_to(arguments: &mut FieldTable, queue: &str) {
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(queue.into()),
    );
    arguments.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
}

impl Topology {
    /// Quorum queues are replicated and fsync messages before confirming them: a broker crash
    /// after a confirm loses nothing, which classic transient queues cannot promise.
    async fn declare_quorum_queue(
        &self,
        channel: &Channel,
        name: &str,
        mut arguments: FieldTable,
    ) -> lapin::Result<()> {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        if let Some(replicas) = self.quorum_initial_group_size {
            arguments.insert("x-quorum-initial-group-size".into(), long(replicas.into()));
        }
        declare_durable_queue(channel, name, arguments).await
    }
}

async fn declare_durable_queue(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
) -> lapin::Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_carries_the_prefix_and_retry_names_carry_their_delay() {
        let topology = Topology::new("test-abc", &[1000, 60000], 10);
        assert_eq!(topology.webhooks_exchange, "test-abc.webhooks");
        assert_eq!(topology.reconcile_queue, "test-abc.reconcile");
        assert_eq!(topology.dead_letter_queue, "test-abc.dead");
        assert_eq!(topology.reconciliation_exchange, "test-abc.reconciliation");
        assert_eq!(
            topology.retry_queues,
            vec![
                RetryQueue {
                    name: "test-abc.retry.1000ms".into(),
                    delay_ms: 1000
                },
                RetryQueue {
                    name: "test-abc.retry.60000ms".into(),
                    delay_ms: 60000
                },
            ]
        );
    }
}
