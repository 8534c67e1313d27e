//! `settle events replay <provider> <event id>`: re-drives an event archived in the inbox.
//!
//! The inbox row is deleted and the event re-queued in one database transaction that commits only
//! after the broker confirmed the message: a failure leaves the inbox as it was. The worker's
//! inbox check share-locks the row it finds, so it waits for this transaction, finds the row gone,
//! and cannot skip the replayed event as a duplicate.
//! Re-applying is safe: effects derive from state, and outbox and notification rows are keyed by
//! the event, so nothing is sent twice.

use anyhow::Context;
use sqlx::PgPool;

use super::shared::parse_provider;
use super::shared::{EXIT_NOTHING_MATCHED, EXIT_OK};
use crate::config::Settings;
use crate::envelope::QueuedEvent;
use crate::provider::Provider;
use crate::repository::inbox;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Re-drive an event archived in the inbox: it is applied again (its effects are idempotent).
    Replay {
        /// stripe or gocardless.
        #[arg(value_parser = parse_provider)]
        provider: Provider,
        event_id: String,
    },
}

/// Runs `settle events <command>`.
pub async fn run(command: Command, db: &PgPool, settings: &Settings) -> anyhow::Result<u8> {
    match command {
        Command::Replay { provider, event_id } => replay(db, settings, provider, &event_id).await,
    }
}

pub async fn replay(
    db: &PgPool,
    settings: &Settings,
    provider: Provider,
    event_id: &str,
) -> anyhow::Result<u8> {
    let mut tx = db.begin().await?;
    let Some(archived) = inbox::take_for_replay(&mut tx, provider, event_id).await? else {
        eprintln!(
            "no archived event {provider} {event_id} (the inbox keeps events retention.inbox_days)"
        );
        return Ok(EXIT_NOTHING_MATCHED);
    };
    let event_type = archived.event_type.clone();
    let event = QueuedEvent::new(
        provider,
        event_id.to_owned(),
        archived.event_type,
        archived.received_at,
        archived.payload.into_bytes(),
    )
    .context("the archived event cannot be queued")?
    // Routed as the original delivery was: an event from a connection's own endpoint may name
    // no account in its body, and would otherwise go to the default account.
    .via_connection(archived.connection_id.as_deref());
    // The replay starts a trace of its own: the worker's spans and the reconciliation events
    // it causes join it.
    let span = tracing::info_span!("replay", %provider, trace_id = tracing::field::Empty);
    crate::trace::continue_in(&span, None);
    let event = event.in_trace_of(&span);
    let broker = super::shared::connect_broker(settings).await?;
    let message = event.to_work_queue_message(broker.topology(), &settings.keyring()?);
    let published = broker.publish_all(std::slice::from_ref(&message)).await;
    broker.close().await;
    published?;
    tx.commit().await?;
    println!("re-queued {provider} event {event_id} ({event_type})");
    Ok(EXIT_OK)
}
