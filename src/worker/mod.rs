//! 2. Consume `<prefix>.reconcile` in batches: the deliveries at hand, up to
//!    `worker.batch_size`, or what arrives within `worker.batch_wait_ms` of the first (a lone
//!    event is not held longer), are applied in one database transaction (`apply::apply_batch`),
//!    and only then acknowledged. At most `prefetch / batch_size` batches are in flight (rounded
//!    up): while they commit, the next deliveries gather into the next batch, so the batches grow
//!    with the load and a commit's cost is shared by more events.
//!
//!    An event the batch cannot apply (its invoice not registered yet, a currency mismatch)
//!    wrote nothing, and its neighbours commit without it; it alone goes down the failure path
//!    below. A batch whose transaction fails as a whole (a database error, a race with another
//!    transaction over one of its events, a panic) is applied again one event per transaction,
//!    which isolates the event at fault: the others cost a re-run, nothing more.
//!
//!    A failure that may pass (database unavailable,
//!    invoice not registered yet) is re-published to a delayed retry tier with the attempt count
//!    in a header; one that cannot (unparseable, currency mismatch, a database error retrying
//!    cannot fix), or one out of attempts, is re-published to the dead-letter queue with why
//!    (`retry`). Either way the re-publish is confirmed before the original is acked, so a
//!    message is never lost between the two (at worst duplicated, which the inbox absorbs). A
//!    healthy message never waits behind a failing one: the failing one leaves the work queue at
//!    once. A handler that panics is caught and its delivery sent down the same retry path.
//!
//!    A database outage is no message's fault: a delivery whose transaction failed because
//!    PostgreSQL is out of reach (`repository::is_outage`) is held, unacknowledged, until the
//!    database answers again, and then applied; it spends no attempt, however long the outage.
//!    Held deliveries fill the prefetch window, so consumption pauses by itself and resumes when
//!    the database is back. (RabbitMQ's `consumer_timeout` must exceed the longest outage to ride
//!    out without a redelivery; a redelivery is absorbed by the inbox.)
//!
//!    RabbitMQ counts every return of a delivery to the queue against `x-delivery-limit` (a
//!    restart, a crash, a shutdown while held), so a healthy event must not be returned often: a
//!    consumer subscribes only once the database answers (a process restarted during an outage
//!    takes nothing, so it returns nothing), and after subscribing it takes one delivery at a
//!    time while the queue hands back redeliveries, so a delivery that crashes the process takes
//!    no neighbour with it; the full prefetch follows the first fresh delivery.
//!
//!    The same loop runs the dead-letter consumer (`dead_letters`); the outbox relay and the
//!    notification sender run beside it (started by `startup`).

pub mod apply;
pub mod dead_letters;
pub mod retry;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{
    Broker, HeaderValue, OutgoingMessage, PublishError, ack, headers_json, nack_requeue,
};
use crate::envelope::{QueuedEvent, header_int, header_text, headers};
use crate::reconcile::outcome::Outcome;
use crate::telemetry as metric;
use apply::{ApplyError, Policy};
use retry::NextStep;
use tracing::Instrument;

/// How many times in a row a batch that raced another transaction is applied again at once
/// before its events go their own ways (each race needs yet another delivery of the same event).
const RACES_APPLIED_AGAIN: u32 = 3;
/// Dead letters held at once: they are rare, and each holds a database connection while it is
/// copied, so they get a small window of their own rather than the work queue's.
pub const DEAD_LETTER_PREFETCH: u16 = 4;

/// Database connections a consuming process needs at most at once: one per batch in flight
/// (work queue) and per dead letter in flight, the outbox relay, the notification sender and a
/// readiness probe. A pool at least this big never makes a delivery wait for a connection.
pub fn connections_needed(shape: BatchShape) -> u32 {
    u32::from(shape.in_flight()) + u32::from(DEAD_LETTER_PREFETCH) + 3
}

/// How a queue's deliveries are grouped.
#[derive(Debug, Clone, Copy)]
pub struct BatchShape {
    /// Unacknowledged deliveries held at once (basic.qos).
    pub prefetch: u16,
    /// Deliveries applied in one transaction at most.
    pub size: u16,
    /// How long a batch waits for more deliveries after its first.
    pub wait: std::time::Duration,
}

/// How the work queue's deliveries are batched, as the settings say. (Here, not in `config`: the
/// settings are read by the worker, never the other way round.)
impl From<&crate::config::WorkerSettings> for BatchShape {
    fn from(worker: &crate::config::WorkerSettings) -> Self {
        Self {
            prefetch: worker.prefetch,
            size: worker.batch_size,
            wait: std::time::Duration::from_millis(worker.batch_wait_ms),
        }
    }
}

impl BatchShape {
    /// One delivery at a time, up to `prefetch` at once.
    pub const fn single(prefetch: u16) -> Self {
        Self {
            prefetch,
            size: 1,
            wait: std::time::Duration::ZERO,
        }
    }

    /// Batches in flight at most.
    pub fn in_flight(&self) -> u16 {
        self.prefetch.div_ceil(self.size.max(1)).max(1)
    }
}

/// A consumer of `queue` on `channel`, with the channel's current prefetch.
async fn subscribe(channel: &lapin::Channel, queue: &str) -> lapin::Result<lapin::Consumer> {
    channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// What the consumers share. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    pub db: PgPool,
    pub broker: Broker,
    pub policy: Arc<Policy>,
    /// How the work queue's deliveries are batched. The dead-letter queue has its own,
    /// `DEAD_LETTER_PREFETCH` deliveries one at a time.
    pub batches: BatchShape,
    /// Deliveries of one message (the first included) before a failure that may pass is
    /// dead-lettered.
    pub max_attempts: u32,
    /// Checks each delivery's seal (`envelope::seal_holds`): an event no settle process queued
    /// (anyone with broker credentials can publish) is dead-lettered `unsealed`.
    pub keyring: Arc<crate::sealed::Keyring>,
    /// Cancelled when shutdown begins: consumers stop taking deliveries and finish theirs.
    pub shutdown: CancellationToken,
}

impl Worker {
    /// Consumes the work queue and the dead-letter queue until shutdown. `relay` is woken after
    /// each commit that wrote outbox rows.
    pub async fn run(self, relay: Arc<Notify>) {
        let tasks = TaskTracker::new();
        let work_queue = self.broker.topology().reconcile_queue.clone();
        tasks.spawn(self.clone().consume_forever(
            work_queue,
            self.batches,
            move |worker, deliveries| {
                let relay = relay.clone();
                async move { worker.handle(deliveries, relay).await }
            },
        ));
        let dead_queue = self.broker.topology().dead_letter_queue.clone();
        tasks.spawn(self.clone().consume_forever(
            dead_queue,
            BatchShape::single(DEAD_LETTER_PREFETCH),
            |worker, deliveries| async move {
                for delivery in deliveries {
                    dead_letters::handle(&worker.db, delivery, &worker.shutdown).await;
                }
            },
        ));
        tasks.close();
        tasks.wait().await;
    }

    /// Consumes `queue` with `handler`, resubscribing after every connection loss or cancel, until
    /// shutdown. A subscription that keeps failing (its queue deleted and not re-declarable, a
    /// permission revoked) is retried with backoff, not in a tight loop.
    async fn consume_forever<H, F>(self, queue: String, shape: BatchShape, handler: H)
    where
        H: Fn(Worker, Vec<Delivery>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        const FIRST: std::time::Duration = std::time::Duration::from_millis(100);
        const MAX: std::time::Duration = std::time::Duration::from_secs(10);
        // A subscription that lasted this long was healthy: the next failure starts afresh.
        const HEALTHY: std::time::Duration = std::time::Duration::from_secs(10);
        let mut pause = FIRST;
        loop {
            let connected = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                connected = self.broker.connected() => match connected {
                    Some(connected) => connected,
                    None => return,
                },
            };
            let Some(connection) = connected.consuming() else {
                tracing::error!(queue = %queue, "a consumer in a process whose broker only publishes: nothing consumed");
                return;
            };
            let subscribed = Instant::now();
            let result = self
                .consume(connection, &queue, shape, handler.clone())
                .await;
            if self.shutdown.is_cancelled() {
                return;
            }
            if subscribed.elapsed() >= HEALTHY {
                pause = FIRST;
            }
            match result {
                Ok(()) => tracing::warn!(queue = %queue, "consumer cancelled; resubscribing"),
                Err(error) => {
                    tracing::warn!(error = %error, queue = %queue, retry_in = ?pause, "consumer stopped; resubscribing");
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX);
        }
    }

    /// Consumes until the stream ends (connection lost) or shutdown, handing the deliveries to
    /// `handler` in batches (`BatchShape`); in-flight deliveries are always finished before
    /// returning.
    async fn consume<H, F>(
        &self,
        connection: &lapin::Connection,
        queue: &str,
        shape: BatchShape,
        handler: H,
    ) -> lapin::Result<()>
    where
        H: Fn(Worker, Vec<Delivery>) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        // Declared again on every subscribe, not only on connecting: a queue deleted under a live
        // connection (by an operator, or a policy) comes back, and consuming resumes.
        crate::broker::declare_or_find(self.broker.topology(), connection).await?;
        let channel = connection.create_channel().await?;
        // Nothing is taken while the database is away: a delivery this process took and held
        // would go back to the queue at its next restart, one step nearer `x-delivery-limit`,
        // and restarts during a long outage would dead-letter healthy events.
        if !self.wait_until_database_answers(queue).await {
            return Ok(());
        }
        // One delivery at a time while the queue hands back redeliveries: one of them may be
        // what crashed the last process, and a crash returns, and counts against the delivery
        // limit, every delivery the process holds. The full prefetch, which bounds this
        // worker's concurrency, once a first delivery comes that nobody took before.
        channel.basic_qos(1, BasicQosOptions::default()).await?;
        let mut full_prefetch = false;
        let mut consumer = subscribe(&channel, queue).await?;
        let in_flight = TaskTracker::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(shape.in_flight().into()));
        let result = loop {
            // A free slot first: while every batch is busy, deliveries gather for the next one.
            let slot = tokio::select! {
                _ = self.shutdown.cancelled() => break Ok(()),
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break Ok(()),
                },
            };
            let next = tokio::select! {
                _ = self.shutdown.cancelled() => break Ok(()),
                next = consumer.next() => next,
            };
            let mut batch = match next {
                Some(Ok(delivery)) => vec![delivery],
                Some(Err(error)) => break Err(error),
                None => break Ok(()),
            };
            if !full_prefetch && !batch[0].redelivered {
                full_prefetch = true;
                // RabbitMQ applies a prefetch to the consumers created after it: the window
                // opens on a new consumer (the one delivery held stays ours to ack).
                match self
                    .open_window(&channel, &consumer, queue, shape.prefetch)
                    .await
                {
                    Ok(wider) => consumer = wider,
                    Err(error) => break Err(error),
                }
            }
            let deadline = tokio::time::Instant::now() + shape.wait;
            let mut ended = None;
            // A redelivery is applied alone (the prefetch of one sees to it).
            while full_prefetch && batch.len() < usize::from(shape.size) {
                // Deliveries already received are taken at once, even past the deadline.
                match tokio::time::timeout_at(deadline, consumer.next()).await {
                    Ok(Some(Ok(delivery))) => batch.push(delivery),
                    Ok(Some(Err(error))) => {
                        ended = Some(Err(error));
                        break;
                    }
                    Ok(None) => {
                        ended = Some(Ok(()));
                        break;
                    }
                    Err(_) => break,
                }
            }
            let work = handler(self.clone(), batch);
            in_flight.spawn(async move {
                work.await;
                drop(slot);
            });
            if let Some(ended) = ended {
                break ended;
            }
        };
        // Stop new deliveries first, then let the ones we hold finish and ack.
        let _ = channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
        in_flight.close();
        in_flight.wait().await;
        let _ = channel.close(200, "consumer done".into()).await;
        result
    }

    async fn handle(self, deliveries: Vec<Delivery>, relay: Arc<Notify>) {
        let started = Instant::now();
        let mut events = Vec::with_capacity(deliveries.len());
        let mut delivered = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let received = headers_json(&delivery.properties);
            if !crate::envelope::seal_holds(&received, &delivery.data, &self.keyring) {
                let failure = ApplyError::Permanent {
                    reason: "unsealed",
                    detail: "no settle process queued this message: its seal is missing or does not match (published with broker credentials alone?)".to_owned(),
                };
                self.fail(&delivery, &failure, None).await;
                continue;
            }
            match QueuedEvent::from_headers(&received, delivery.data.clone()) {
                Ok(event) => {
                    events.push(event);
                    delivered.push(delivery);
                }
                Err(error) => {
                    let failure = ApplyError::Permanent {
                        reason: "unparseable",
                        detail: error.to_string(),
                    };
                    self.fail(&delivery, &failure, None).await;
                }
            }
        }
        if events.is_empty() {
            return;
        }
        // One span for the batch's transaction. One event continues its trace, and the
        // reconciliation events it causes are published as children of this span; several are
        // each linked (their reconciliation events keep each event's own trace).
        let span = tracing::info_span!(
            "reconcile",
            events = events.len(),
            trace_id = tracing::field::Empty
        );
        if let [event] = &mut events[..] {
            crate::trace::continue_in(&span, event.trace.as_deref());
            event.trace = crate::trace::traceparent_of(&span);
        } else {
            for event in &events {
                crate::trace::link(&span, event.trace.as_deref());
            }
            crate::trace::continue_in(&span, None);
        }
        self.apply_and_answer(delivered, events, started, relay)
            .instrument(span)
            .await;
    }

    /// Applies the batch's events and answers each delivery: acked once committed, sent on to a
    /// retry tier or the dead letters when it failed.
    async fn apply_and_answer(
        self,
        delivered: Vec<Delivery>,
        events: Vec<QueuedEvent>,
        started: Instant,
        relay: Arc<Notify>,
    ) {
        metrics::histogram!(metric::WORKER_BATCH_EVENTS).record(events.len() as f64);
        let results = match self.apply_held(&events).await {
            Some(Ok(results)) => results,
            Some(Err(failure)) if events.len() == 1 => vec![Err(failure)],
            Some(Err(failure)) => {
                return self
                    .isolate(&delivered, &events, &failure, started, &relay)
                    .await;
            }
            None => return self.requeue(&delivered).await,
        };
        let mut failed = Vec::new();
        for ((delivery, event), result) in delivered.iter().zip(&events).zip(results) {
            match result {
                Ok(outcome) => self.reconciled(delivery, event, outcome, started).await,
                Err(failure) => failed.push((delivery, event, failure)),
            }
        }
        relay.notify_one();
        for (delivery, event, failure) in failed {
            self.fail(delivery, &failure, Some(event)).await;
        }
    }

    /// A batch whose transaction failed as a whole: each event is applied again in a
    /// transaction of its own, and acked or sent on as soon as it is done, so the failure is
    /// charged to the event at fault alone and its neighbours wait for nothing but the re-run.
    async fn isolate(
        &self,
        delivered: &[Delivery],
        events: &[QueuedEvent],
        failure: &ApplyError,
        started: Instant,
        relay: &Notify,
    ) {
        metrics::counter!(metric::WORKER_BATCHES_SPLIT).increment(1);
        tracing::warn!(events = events.len(), error = %failure, "a batch failed as a whole; applying its events one by one");
        for (i, (delivery, event)) in delivered.iter().zip(events).enumerate() {
            match self.apply_held(std::slice::from_ref(event)).await {
                Some(Ok(alone)) => match apply::only(alone) {
                    Ok(outcome) => {
                        self.reconciled(delivery, event, outcome, started).await;
                        relay.notify_one();
                    }
                    Err(failure) => self.fail(delivery, &failure, Some(event)).await,
                },
                Some(Err(failure)) => self.fail(delivery, &failure, Some(event)).await,
                None => return self.requeue(&delivered[i..]).await,
            }
        }
    }

    /// Acks an event whose transaction committed (or that needed none), after counting it.
    async fn reconciled(
        &self,
        delivery: &Delivery,
        event: &QueuedEvent,
        outcome: Outcome,
        started: Instant,
    ) {
        metrics::histogram!(metric::WORKER_PROCESSING_SECONDS)
            .record(started.elapsed().as_secs_f64());
        if outcome == Outcome::Applied {
            let end_to_end = chrono::Utc::now() - event.received_at;
            metrics::histogram!(metric::END_TO_END_SECONDS)
                .record(end_to_end.num_microseconds().unwrap_or(0) as f64 / 1e6);
        }
        metrics::counter!(metric::WORKER_MESSAGES, "result" => outcome.as_str()).increment(1);
        apply::log_reconciled(event, outcome, "worker");
        ack(delivery, "reconciled event").await;
    }

    /// Shutting down with the database still away: the broker redelivers these.
    async fn requeue(&self, delivered: &[Delivery]) {
        for delivery in delivered {
            nack_requeue(delivery, "event held for the database").await;
        }
    }

    /// `apply::apply_batch`, caught if it panics, and repeated for as long as the database is
    /// out of reach, or at once after a race with another transaction (neither is any event's
    /// fault, so neither spends an attempt). `None`: shutdown came first.
    async fn apply_held(
        &self,
        events: &[QueuedEvent],
    ) -> Option<Result<Vec<Result<Outcome, ApplyError>>, ApplyError>> {
        let mut races = 0;
        loop {
            let result = guarded(apply::apply_batch(&self.db, &self.policy, events)).await;
            match &result {
                Err(failure) if failure.is_outage() => {
                    if !self.wait_for_database(events, failure).await {
                        return None;
                    }
                }
                // The other transaction committed what it recorded (the write waited for it):
                // applied again, those events are duplicates now.
                Err(ApplyError::Raced(_)) if races < RACES_APPLIED_AGAIN => races += 1,
                _ => return Some(result),
            }
        }
    }

    /// Replaces `consumer` by one that takes up to `prefetch` deliveries at once.
    async fn open_window(
        &self,
        channel: &lapin::Channel,
        consumer: &lapin::Consumer,
        queue: &str,
        prefetch: u16,
    ) -> lapin::Result<lapin::Consumer> {
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await?;
        subscribe(channel, queue).await
    }

    /// Before consuming `queue`: waits until the database answers a ping (backing off from 200 ms
    /// to 5 s), or shutdown (false).
    async fn wait_until_database_answers(&self, queue: &str) -> bool {
        const FIRST: std::time::Duration = std::time::Duration::from_millis(200);
        const MAX: std::time::Duration = std::time::Duration::from_secs(5);
        let mut pause = FIRST;
        let mut said = false;
        while crate::repository::ping(&self.db).await.is_err() {
            if !said {
                tracing::warn!(
                    queue,
                    "database out of reach; not consuming until it answers"
                );
                said = true;
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX);
        }
        true
    }

    /// Holds a batch until the database answers a ping (backing off from 200 ms to 5 s), or
    /// shutdown (false).
    async fn wait_for_database(&self, events: &[QueuedEvent], failure: &ApplyError) -> bool {
        const FIRST: std::time::Duration = std::time::Duration::from_millis(200);
        const MAX: std::time::Duration = std::time::Duration::from_secs(5);
        let first = events.first().map_or("?", |event| event.event_id.as_str());
        tracing::warn!(event_id = first, events = events.len(), error = %failure, "database out of reach; holding the events until it is back");
        let waiting = metrics::gauge!(metric::WORKER_WAITING_FOR_DATABASE);
        waiting.increment(events.len() as f64);
        let mut pause = FIRST;
        let back = loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break false,
                () = tokio::time::sleep(pause) => {}
            }
            if crate::repository::ping(&self.db).await.is_ok() {
                break true;
            }
            pause = (pause * 2).min(MAX);
        };
        waiting.decrement(events.len() as f64);
        back
    }

    /// Sends a failed delivery to its next retry tier, or to the dead-letter queue, then acks it.
    async fn fail(&self, delivery: &Delivery, failure: &ApplyError, event: Option<&QueuedEvent>) {
        let topology = self.broker.topology();
        let received = headers_json(&delivery.properties);
        let attempt = header_int(&received, headers::ATTEMPTS).unwrap_or(0) + 1;
        let now = chrono::Utc::now().to_rfc3339();
        let first_failure_at = header_text(&received, headers::FIRST_FAILURE_AT)
            .map_or_else(|| now.clone(), str::to_owned);
        let text = |name: &str, value: String| (name.to_owned(), HeaderValue::text(value));
        let mut extra = vec![
            (headers::ATTEMPTS.to_owned(), HeaderValue::Int(attempt)),
            text(headers::FIRST_FAILURE_AT, first_failure_at),
            text(headers::LAST_FAILURE_AT, now),
            text(headers::LAST_ERROR, failure.to_string()),
        ];
        let step = retry::next_step(
            failure.retryable(),
            u32::try_from(attempt).unwrap_or(u32::MAX),
            self.max_attempts,
            topology.retry_queues.len(),
        );
        let (message, result_label) = match step {
            NextStep::Retry { tier } => (
                OutgoingMessage::republish(delivery, "", &topology.retry_queues[tier].name, extra),
                "retried",
            ),
            NextStep::DeadLetter => {
                extra.push(text(headers::REASON, failure.reason().to_owned()));
                // Named by the delivery it comes from: if this delivery's ack is lost and it is
                // dead-lettered again, the dead-letter consumer records it once.
                let key = header_text(&received, headers::PUBLISH_ID)
                    .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
                extra.push(text(headers::DEAD_LETTER_KEY, key));
                (
                    OutgoingMessage::republish(delivery, "", &topology.dead_letter_queue, extra),
                    "dead_lettered",
                )
            }
        };
        let event_id = event.map_or("?", |e| e.event_id.as_str());
        match self.move_on(&message).await {
            Ok(()) => {
                metrics::counter!(metric::WORKER_MESSAGES, "result" => result_label).increment(1);
                if step == NextStep::DeadLetter {
                    metrics::counter!(metric::DEAD_LETTERS, "reason" => failure.reason())
                        .increment(1);
                    tracing::warn!(event_id, attempt, reason = failure.reason(), error = %failure, "event dead-lettered");
                } else {
                    tracing::info!(event_id, attempt, queue = %message.routing_key, error = %failure, "event will be retried");
                }
                ack(delivery, "failed event moved on").await;
            }
            Err(error) => {
                // Not acked: the broker redelivers it (its delivery limit is the last net).
                tracing::error!(event_id, error = %error, "could not move a failed event; leaving it to be redelivered");
                nack_requeue(delivery, "failed event").await;
            }
        }
    }

    /// Publishes a failed delivery's copy to its retry tier or the DLQ. While the broker blocks
    /// publishers (a memory or disk alarm) the delivery is held and the publish tried again,
    /// backing off: a nack would bring it straight back, spinning against the alarm and spending
    /// the queue's delivery limit on no fault of the message's.
    async fn move_on(&self, message: &OutgoingMessage) -> Result<(), PublishError> {
        const FIRST: std::time::Duration = std::time::Duration::from_millis(200);
        const MAX: std::time::Duration = std::time::Duration::from_secs(5);
        let mut pause = FIRST;
        loop {
            match self.broker.publish_all(std::slice::from_ref(message)).await {
                Err(PublishError::Blocked | PublishError::ConfirmTimeout(_))
                    if !self.shutdown.is_cancelled() =>
                {
                    tokio::select! {
                        () = self.shutdown.cancelled() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(MAX);
                }
                result => return result,
            }
        }
    }
}

/// Runs a handler's work, turning a panic into `ApplyError::Panicked`: a bug must cost one
/// delivery an attempt, not the worker a prefetch slot (a panic that escaped would drop the
/// delivery without an ack or a nack, and the slot would stay taken until the channel closed).
async fn guarded<F, T>(work: F) -> Result<T, ApplyError>
where
    F: Future<Output = Result<T, ApplyError>>,
{
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            metrics::counter!(metric::WORKER_PANICS).increment(1);
            Err(ApplyError::Panicked(panic_message(panic.as_ref())))
        })
}

/// The text a panic carried (`panic!("…")` gives a `&str` or a `String`).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_that_goes_down_the_retry_path() {
        let failed: Result<Outcome, _> =
            guarded(async { panic!("stored amount is negative") }).await;
        let Err(error) = failed else {
            panic!("a panic is an error");
        };
        assert!(matches!(&error, ApplyError::Panicked(m) if m == "stored amount is negative"));
        assert!(error.retryable());
        assert_eq!(error.reason(), "panicked");
        let owned: Result<Outcome, _> = guarded(async { panic!("{} is not a status", "X") }).await;
        assert!(matches!(owned, Err(ApplyError::Panicked(m)) if m == "X is not a status"));
        assert_eq!(
            guarded(async { Ok(Outcome::Applied) }).await.unwrap(),
            Outcome::Applied
        );
    }
}
