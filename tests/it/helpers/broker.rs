//! The broker side of a test: a subscriber's queue on the reconciliation exchange, the messages a
//! queue holds, and the test's topology removed at the end.

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};

use super::TestApp;

/// A message as the broker holds it.
#[derive(Debug)]
pub struct QueuedMessage {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub delivery_mode: Option<u8>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl QueuedMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl TestApp {
    async fn amqp(&self) -> Connection {
        Connection::connect(&self.amqp_url, ConnectionProperties::default())
            .await
            .expect("test AMQP connection")
    }

    /// A queue bound to the reconciliation exchange, as a subscribing service would have.
    pub async fn subscribe(&self) -> String {
        self.subscribe_as("test-subscriber", "#", FieldTable::default())
            .await
    }

    /// A subscriber's queue `<prefix>.<name>`, declared with `arguments` (a length limit, say)
    /// and bound with `binding`.
    pub async fn subscribe_as(&self, name: &str, binding: &str, arguments: FieldTable) -> String {
        self.bind_queue(
            name,
            "reconciliation",
            binding,
            arguments,
            FieldTable::default(),
        )
        .await
    }

    /// A subscriber's queue that receives one account's reconciliation events only, bound as
    /// the README says: to the `by-account` headers exchange, matching `account-id`.
    pub async fn subscribe_to_account(&self, name: &str, account: &str) -> String {
        let mut binding = FieldTable::default();
        binding.insert("x-match".into(), AMQPValue::LongString("all".into()));
        binding.insert("account-id".into(), AMQPValue::LongString(account.into()));
        self.bind_queue(
            name,
            "reconciliation.by-account",
            "",
            FieldTable::default(),
            binding,
        )
        .await
    }

    async fn bind_queue(
        &self,
        name: &str,
        exchange: &str,
        binding: &str,
        arguments: FieldTable,
        binding_arguments: FieldTable,
    ) -> String {
        let queue = self.queue(name);
        let connection = self.amqp().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                arguments,
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.as_str().into(),
                self.queue(exchange).as_str().into(),
                binding.into(),
                QueueBindOptions::default(),
                binding_arguments,
            )
            .await
            .unwrap();
        let _ = connection.close(200, "done".into()).await;
        queue
    }

    /// Deletes a queue, as an operator or a policy might under a running settle.
    pub async fn delete_queue(&self, queue: &str) {
        let connection = self.amqp().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
            .await
            .unwrap();
        let _ = connection.close(200, "done".into()).await;
    }

    /// Puts a message straight on `queue` (through the default exchange, persistent) with
    /// `headers` (strings and integers): as an earlier settle, or the broker itself, may have left
    /// it there.
    pub async fn put_on_queue(
        &self,
        queue: &str,
        message_id: &str,
        headers: &serde_json::Map<String, serde_json::Value>,
        body: &[u8],
    ) {
        let mut table = FieldTable::default();
        for (name, value) in headers {
            let value = match value {
                serde_json::Value::String(text) => AMQPValue::LongString(text.as_str().into()),
                other => AMQPValue::LongLongInt(other.as_i64().expect("a string or an integer")),
            };
            table.insert(name.as_str().into(), value);
        }
        let properties = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message_id.into())
            .with_headers(table);
        let connection = self.amqp().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .unwrap();
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                lapin::options::BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "the broker took the message");
        let _ = connection.close(200, "done".into()).await;
    }

    /// Takes every message currently in `queue` (acking them), waiting until at least `at_least`
    /// have arrived.
    pub async fn take_messages(&self, queue: &str, at_least: usize) -> Vec<QueuedMessage> {
        let connection = self.amqp().await;
        let channel = connection.create_channel().await.unwrap();
        let mut messages = Vec::new();
        let started = tokio::time::Instant::now();
        loop {
            match channel
                .basic_get(queue.into(), BasicGetOptions::default())
                .await
                .expect("basic.get")
            {
                Some(message) => {
                    let delivery = &message.delivery;
                    messages.push(QueuedMessage {
                        routing_key: delivery.routing_key.as_str().to_owned(),
                        message_id: settle::broker::message::message_id(&delivery.properties),
                        delivery_mode: *delivery.properties.delivery_mode(),
                        // The service's own decoder: the tests read headers as the worker does.
                        headers: settle::broker::headers_json(&delivery.properties)
                            .into_iter()
                            .map(|(name, value)| match value {
                                serde_json::Value::String(text) => (name, text),
                                other => (name, other.to_string()),
                            })
                            .collect(),
                        body: delivery.data.clone(),
                    });
                    delivery.ack(BasicAckOptions::default()).await.unwrap();
                }
                None if messages.len() >= at_least => break,
                None => {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "only {} of {at_least} messages arrived in {queue}",
                        messages.len()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
                }
            }
        }
        let _ = connection.close(200, "done".into()).await;
        messages
    }

    /// Messages ready in `queues` (passive declares: nothing is consumed).
    pub async fn queued_count(&self, queues: &[String]) -> u32 {
        self.passive_counts(queues, |queue| queue.message_count())
            .await
    }

    /// Consumers subscribed to `queues`, together.
    pub async fn consumer_count(&self, queues: &[String]) -> u32 {
        self.passive_counts(queues, |queue| queue.consumer_count())
            .await
    }

    /// `count` of each of `queues` (passive declares: nothing is consumed), summed.
    async fn passive_counts(&self, queues: &[String], count: impl Fn(&lapin::Queue) -> u32) -> u32 {
        let connection = self.amqp().await;
        let channel = connection.create_channel().await.unwrap();
        let mut total = 0;
        for queue in queues {
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("the queue exists");
            total += count(&declared);
        }
        let _ = connection.close(200, "done".into()).await;
        total
    }

    /// Stops the app once its worker has handled every delivery queued so far: waits until the
    /// work queue holds none ready, then shuts down gracefully, which finishes the deliveries in
    /// flight and flushes the outbox. Returns how many messages wait in the work, retry and
    /// dead-letter queues afterwards (a delivery that failed went to one of them).
    pub async fn stop_when_idle(&mut self) -> u32 {
        let topology = settle::broker::Topology::from_settings(&self.settings);
        let work_queue = [topology.reconcile_queue.clone()];
        super::poll_until("the work queue to be consumed", super::WAIT, || async {
            (self.queued_count(&work_queue).await == 0).then_some(())
        })
        .await;
        self.shutdown_only().await;
        let mut queues = work_queue.to_vec();
        queues.extend(topology.retry_queues.iter().map(|tier| tier.name.clone()));
        queues.push(topology.dead_letter_queue.clone());
        self.queued_count(&queues).await
    }

    /// Removes this test's exchanges and queues (best effort: the broker may be gone).
    pub async fn delete_topology(&self) {
        let Ok(connection) =
            Connection::connect(&self.amqp_url, ConnectionProperties::default()).await
        else {
            return;
        };
        let topology = settle::broker::Topology::from_settings(&self.settings);
        let channel = connection.create_channel().await.unwrap();
        let _ = topology.delete(&channel).await;
        let _ = connection.close(200, "done".into()).await;
    }
}
