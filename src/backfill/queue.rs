//! Queues what a source lists and the inbox does not hold, as the receiver would have.

use sqlx::PgPool;

use crate::broker::Broker;
use crate::envelope::QueuedEvent;
use crate::provider::IncomingEvent;
use crate::providers::Window;
use crate::providers::source::Source;

/// The value of the `source` header on backfilled events.
pub const SOURCE: &str = "backfill";
/// Events published per confirmed batch.
const PUBLISH_BATCH: usize = 100;

/// What one source's backfill did.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub source: String,
    /// Listed by the provider in the window.
    pub found: usize,
    /// Of those, already in the inbox.
    pub known: usize,
    /// Queued (or, in a dry run, that would be).
    pub queued: usize,
    /// Not queued: the broker refused them, or the listing failed (`error`).
    pub failed: usize,
    pub error: Option<String>,
}

/// Lists the source's events in the window and queues those the inbox does not hold.
#[tracing::instrument(name = "backfill", skip_all, fields(trace_id = tracing::field::Empty))]
pub async fn run(
    db: &PgPool,
    broker: Option<&Broker>,
    keyring: &crate::sealed::Keyring,
    source: &Source,
    window: Window,
    types: &[String],
) -> Report {
    // A run starts a trace: the events it queues, and what the worker makes of them, join it.
    crate::trace::continue_in(&tracing::Span::current(), None);
    let mut report = Report {
        source: source.name().to_owned(),
        ..Report::default()
    };
    let events = match source.list(window, types).await {
        Ok(events) => events,
        Err(error) => {
            report.error = Some(error.to_string());
            return report;
        }
    };
    report.found = events.len();
    let ids: Vec<String> = events.iter().map(|event| event.id.clone()).collect();
    let known = match crate::repository::inbox::known(db, source.provider, &ids).await {
        Ok(known) => known,
        Err(error) => {
            report.failed = events.len();
            report.error = Some(format!("reading the inbox: {error}"));
            return report;
        }
    };
    let missed: Vec<IncomingEvent> = events
        .into_iter()
        .filter(|event| !known.contains(&event.id))
        .collect();
    report.known = report.found - missed.len();
    let Some(broker) = broker else {
        // A dry run: what would be queued.
        report.queued = missed.len();
        return report;
    };
    let received_at = chrono::Utc::now();
    for batch in missed.chunks(PUBLISH_BATCH) {
        let messages: Result<Vec<_>, _> = batch
            .iter()
            .map(|event| {
                QueuedEvent::new(
                    source.provider,
                    event.id.clone(),
                    event.event_type.clone(),
                    received_at,
                    event.body.clone(),
                )
                .map(|queued| {
                    queued
                        .via_connection(source.connection_id.as_deref())
                        .from_source(SOURCE)
                        .in_trace_of(&tracing::Span::current())
                        .to_webhook_message(broker.topology(), keyring)
                })
            })
            .collect();
        let published = match messages {
            Ok(messages) => broker
                .publish_all(&messages)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match published {
            Ok(()) => report.queued += batch.len(),
            Err(error) => {
                report.failed += batch.len();
                report.error = Some(error);
            }
        }
    }
    report
}
