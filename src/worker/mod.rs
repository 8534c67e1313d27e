//! 2. Consume `<prefix>.reconcile`: one delivery at a time per task, acked only after it has been
//!    handled. Reconnects by itself: when the broker goes away the consumer stream ends and the
//!    loop subscribes again on the next connection.

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use tokio_util::task::TaskTracker;

use crate::startup::AppState;

pub async fn run(state: AppState) {
    let queue = state.broker.topology().reconcile_queue.clone();
    loop {
        let connected = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            connected = state.broker.connected() => match connected {
                Some(connected) => connected,
                None => return,
            },
        };
        if let Err(error) = consume(&state, &connected.connection, &queue).await {
            tracing::warn!(error = %error, queue = %queue, "consumer stopped; resubscribing");
        }
        if state.shutdown.is_cancelled() {
            return;
        }
    }
}

/// Consumes until the stream ends (connection lost) or shutdown; in-flight deliveries are always
/// finished before returning.
async fn consume(
    state: &AppState,
    connection: &lapin::Connection,
    queue: &str,
) -> lapin::Result<()> {
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
    loop {
        let next = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            next = consumer.next() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                in_flight.spawn(handle(delivery));
            }
            Some(Err(error)) => {
                in_flight.close();
                in_flight.wait().await;
                return Err(error);
            }
            None => break,
        }
    }
    // Stop new deliveries first, then let the ones we hold finish and ack.
    let _ = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await;
    in_flight.close();
    in_flight.wait().await;
    let _ = channel.close(200, "consumer done".into()).await;
    Ok(())
}

async fn handle(delivery: Delivery) {
    let event_id = header_text(&delivery, "event-id").unwrap_or_default();
    let event_type = header_text(&delivery, "event-type").unwrap_or_default();
    let provider = header_text(&delivery, "provider").unwrap_or_default();
    tracing::info!(%provider, %event_id, %event_type, "event received");
    if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
        // Not acked: the broker redelivers it, which the reconciliation absorbs.
        tracing::warn!(%event_id, error = %error, "ack failed; the event will be redelivered");
    }
}

fn header_text(delivery: &Delivery, name: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}
