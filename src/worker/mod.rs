//! 2. Consume `<prefix>.reconcile`: each delivery is applied in one database transaction
//!    (`apply`), and only then acknowledged. A failure that may pass (database down, invoice not
//!    registered yet) is re-published to a delayed retry tier with the attempt count in a header;
//!    one that cannot (unparseable, currency mismatch), or one out of attempts, is re-published to
//!    the dead-letter queue with why. Either way the re-publish is confirmed before the original
//!    is acked, so a message is never lost between the two (at worst duplicated, which the inbox
//!    absorbs). A healthy message never waits behind a failing one: the failing one leaves the
//!    work queue at once.
//!
//!    The same loop runs the dead-letter consumer (`dead_letters`), and the outbox relay runs
//!    beside it (`crate::outbox`).

pub mod apply;
pub mod dead_letters;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio_util::task::TaskTracker;

use crate::broker::{HeaderValue, OutgoingMessage, header_int, header_text, headers};
use crate::reconcile::methods::MethodProvider;
use crate::startup::AppState;
use apply::{ApplyError, Envelope, Outcome};

/// Runs every consumer of a worker process until shutdown.
pub async fn run(state: AppState) {
    let tasks = TaskTracker::new();
    match crate::notify::sender::Sender::new(state.clone()) {
        Ok(sender) => {
            tasks.spawn(sender.run());
        }
        Err(error) => tracing::error!(
            error = format!("{error:#}"),
            "notification sender not started"
        ),
    }
    let relay = crate::outbox::Relay::new(state.clone());
    let notify = relay.notifier();
    tasks.spawn(relay.run());
    let work_queue = state.broker.topology().reconcile_queue.clone();
    tasks.spawn(consume_forever(
        state.clone(),
        work_queue,
        move |state, delivery| {
            let notify = notify.clone();
            async move { handle(state, delivery, notify).await }
        },
    ));
    let dead_queue = state.broker.topology().dead_letter_queue.clone();
    tasks.spawn(consume_forever(
        state.clone(),
        dead_queue,
        dead_letters::handle,
    ));
    tasks.close();
    tasks.wait().await;
}

/// Consumes `queue` with `handler`, resubscribing after every connection loss, until shutdown.
async fn consume_forever<H, F>(state: AppState, queue: String, handler: H)
where
    H: Fn(AppState, Delivery) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        let connected = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            connected = state.broker.connected() => match connected {
                Some(connected) => connected,
                None => return,
            },
        };
        if let Err(error) = consume(&state, &connected.connection, &queue, handler.clone()).await {
            tracing::warn!(error = %error, queue = %queue, "consumer stopped; resubscribing");
        }
        if state.shutdown.is_cancelled() {
            return;
        }
    }
}

/// Consumes until the stream ends (connection lost) or shutdown; in-flight deliveries are always
/// finished before returning.
async fn consume<H, F>(
    state: &AppState,
    connection: &lapin::Connection,
    queue: &str,
    handler: H,
) -> lapin::Result<()>
where
    H: Fn(AppState, Delivery) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let channel = connection.create_channel().await?;
    // Prefetch bounds how many deliveries this worker holds, and so its concurrency.
    channel
        .basic_qos(state.settings.worker.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let in_flight = TaskTracker::new();
    let result = loop {
        let next = tokio::select! {
            _ = state.shutdown.cancelled() => break Ok(()),
            next = consumer.next() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                in_flight.spawn(handler(state.clone(), delivery));
            }
            Some(Err(error)) => break Err(error),
            None => break Ok(()),
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

/// Acks, checking that the ack went through. A failed ack means the broker will redeliver; the
/// inbox makes that harmless, so it is logged, not retried.
pub(crate) async fn ack(delivery: &Delivery, what: &str) {
    if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
        tracing::warn!(error = %error, what, "ack failed; the message will be redelivered");
    }
}

fn envelope(delivery: &Delivery) -> Result<Envelope, String> {
    let properties = &delivery.properties;
    let provider = header_text(properties, headers::PROVIDER).ok_or("no provider header")?;
    let provider = match provider.as_str() {
        "stripe" => MethodProvider::Stripe,
        "gocardless" => MethodProvider::GoCardless,
        other => return Err(format!("unknown provider `{other}`")),
    };
    let event_id = header_text(properties, headers::EVENT_ID).ok_or("no event-id header")?;
    let event_type = header_text(properties, headers::EVENT_TYPE).ok_or("no event-type header")?;
    let received_at = header_text(properties, headers::RECEIVED_AT)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(chrono::Utc::now);
    Ok(Envelope {
        provider,
        event_id,
        event_type,
        received_at,
        body: delivery.data.clone(),
    })
}

async fn handle(state: AppState, delivery: Delivery, relay: Arc<tokio::sync::Notify>) {
    let started = Instant::now();
    let envelope = match envelope(&delivery) {
        Ok(envelope) => envelope,
        Err(error) => {
            let failure = ApplyError::Permanent {
                reason: "unparseable",
                detail: error,
            };
            return fail(&state, &delivery, &failure, None).await;
        }
    };
    let result = apply::apply(&state.db, &state.settings, &envelope).await;
    metrics::histogram!("settle_worker_processing_seconds").record(started.elapsed().as_secs_f64());
    match result {
        Ok(outcome) => {
            if outcome == Outcome::Applied {
                relay.notify_one();
                let end_to_end = chrono::Utc::now() - envelope.received_at;
                metrics::histogram!("settle_end_to_end_seconds")
                    .record(end_to_end.num_microseconds().unwrap_or(0) as f64 / 1e6);
            }
            metrics::counter!("settle_worker_messages_total", "result" => outcome.as_str())
                .increment(1);
            tracing::info!(
                provider = envelope.provider.as_str(),
                event_id = %envelope.event_id,
                event_type = %envelope.event_type,
                outcome = outcome.as_str(),
                "event reconciled"
            );
            ack(&delivery, "reconciled event").await;
        }
        Err(failure) => fail(&state, &delivery, &failure, Some(&envelope)).await,
    }
}

/// Sends a failed delivery to its next retry tier, or to the dead-letter queue, then acks it.
async fn fail(
    state: &AppState,
    delivery: &Delivery,
    failure: &ApplyError,
    envelope: Option<&Envelope>,
) {
    let topology = state.broker.topology();
    let attempts = header_int(&delivery.properties, headers::ATTEMPTS).unwrap_or(0) + 1;
    let now = chrono::Utc::now().to_rfc3339();
    let first_failure_at =
        header_text(&delivery.properties, headers::FIRST_FAILURE_AT).unwrap_or_else(|| now.clone());
    let mut extra = vec![
        (headers::ATTEMPTS.to_owned(), HeaderValue::Int(attempts)),
        (
            headers::FIRST_FAILURE_AT.to_owned(),
            HeaderValue::Text(first_failure_at),
        ),
        (headers::LAST_FAILURE_AT.to_owned(), HeaderValue::Text(now)),
        (
            headers::LAST_ERROR.to_owned(),
            HeaderValue::Text(failure.to_string()),
        ),
    ];
    let retryable = matches!(
        failure,
        ApplyError::Transient(_) | ApplyError::InvoiceNotFound(_)
    );
    let (message, result_label) =
        if retryable && attempts < i64::from(state.settings.worker.max_attempts) {
            let tiers = &topology.retry_queues;
            let tier = &tiers[(attempts as usize - 1).min(tiers.len() - 1)];
            (
                OutgoingMessage::republish(delivery, "", &tier.name, extra),
                "retried",
            )
        } else {
            extra.push((
                headers::REASON.to_owned(),
                HeaderValue::Text(failure.reason().to_owned()),
            ));
            extra.push((
                headers::DEAD_LETTER_KEY.to_owned(),
                HeaderValue::Text(uuid::Uuid::new_v4().to_string()),
            ));
            (
                OutgoingMessage::republish(delivery, "", &topology.dead_letter_queue, extra),
                "dead_lettered",
            )
        };
    let event_id = envelope.map(|e| e.event_id.as_str()).unwrap_or("?");
    match state
        .broker
        .publish_all(std::slice::from_ref(&message))
        .await
    {
        Ok(()) => {
            metrics::counter!("settle_worker_messages_total", "result" => result_label)
                .increment(1);
            if result_label == "dead_lettered" {
                metrics::counter!("settle_dead_letters_total", "reason" => failure.reason())
                    .increment(1);
                tracing::warn!(event_id, attempts, reason = failure.reason(), error = %failure, "event dead-lettered");
            } else {
                tracing::info!(event_id, attempts, queue = %message.routing_key, error = %failure, "event will be retried");
            }
            ack(delivery, "failed event moved on").await;
        }
        Err(error) => {
            // Not acked: the broker redelivers it (its delivery limit is the last net).
            tracing::error!(event_id, error = %error, "could not move a failed event; leaving it unacked");
            let _ = delivery
                .nack(lapin::options::BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
        }
    }
}
