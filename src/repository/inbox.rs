//! The worker's inbox, `webhook_events`: one row per (provider, event id), inserted in the same
//! transaction as the event's effects, so an event is applied exactly once however often it is
//! delivered. The row keeps the event as it arrived, for `settle events replay`.
//!
//! One outcome is not final: `unmatched`, a payment event that names no invoice, for a payment
//! nobody has registered yet. Its row keeps the provider payment id it waits for
//! (`invoice_state::write`), and whoever applies it first claims the row (`INBOX_INSERT` updates an
//! unmatched row instead of skipping it): the registration of that payment
//! (`waiting_for`, in the registering transaction), or a redelivery of the event. Claiming is an
//! update of the row, so a second claimant waits for the first one's transaction and then finds
//! the row applied: a duplicate. Only the row's own account claims it: an event routed to another
//! account that carries the same id (a tenant signs any id it likes) is a duplicate, and the
//! waiting event stays for its own payment's registration.
//!
//! The key stays (provider, event id), not the account's too: provider event ids are unique at
//! the provider (Stripe's and GoCardless's are random), and the dedupe must not depend on where
//! an event was routed, or the same event routed differently on a later delivery (a connection
//! added between a dead letter and its replay) would apply twice. A tenant cannot pre-empt
//! another account's event id it cannot predict, and cannot claim one that is waiting.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::{PgConnection, PgExecutor, Postgres};

use crate::provider::Provider;
use crate::reconcile::outcome::Outcome;

/// An event to record.
#[derive(Debug, Clone, Copy)]
pub struct InboxEntry<'a> {
    pub provider: Provider,
    pub event_id: &'a str,
    pub account_id: &'a str,
    pub event_type: &'a str,
    /// The event's JSON exactly as it arrived.
    pub payload: &'a str,
    pub received_at: DateTime<Utc>,
    /// The connection whose endpoint it came through (`None`: the platform's), so a replay
    /// routes it as this delivery was routed.
    pub connection_id: Option<&'a str>,
    /// The ids an operator finds it by (`providers::Rules::object_ids`).
    pub object_ids: &'a [String],
    /// The `traceparent` of the work applying it: the reconciliation events it causes carry it.
    pub trace: Option<&'a str>,
}

/// Records the event as applied (the common case; another outcome is written over it later):
/// $1 provider, $2 event id, $3 account, $4 type, $5 raw JSON, $6 received time, $7 connection,
/// $8 the ids it is found by.
/// Writes nothing when the event is there already, unless it is there as `unmatched` for the same
/// account: then this claims it (see the module doc). Events that are not about an invoice's
/// money are recorded by it; a run of money events writes its inbox rows in its write statement,
/// the same way, in bulk (`invoice_state::write`).
///
/// Why an update and not a delete-and-insert or a `FOR UPDATE` read first: one statement, the
/// same one for every event, and PostgreSQL's `ON CONFLICT DO UPDATE` locks the conflicting row
/// and evaluates the `WHERE` on its latest committed version. Of two claimants the second waits
/// for the first to commit (it then sees `applied` and writes nothing) or to roll back (it then
/// claims the row itself). A plain redelivery of a processed event is still a duplicate; it holds
/// the row's lock until its transaction, which writes nothing, ends.
const INBOX_INSERT: &str = "INSERT INTO webhook_events (provider, event_id, account_id, event_type, payload, received_at, connection_id, object_ids, outcome)
         VALUES ($1, $2, $3, $4, $5::json, $6, $7, $8, 'applied')
         ON CONFLICT (provider, event_id) DO UPDATE SET outcome = 'applied', outcome_reason = NULL,
             unmatched_provider_payment_id = NULL, unmatched_occurred_at = NULL, processed_at = now()
         WHERE webhook_events.outcome = 'unmatched'
           AND webhook_events.account_id = EXCLUDED.account_id";

impl<'a> InboxEntry<'a> {
    /// Binds `INBOX_INSERT`'s parameters, $1 to $8.
    pub(crate) fn bind(
        &self,
        query: sqlx::query::Query<'a, Postgres, PgArguments>,
    ) -> sqlx::query::Query<'a, Postgres, PgArguments> {
        query
            .bind(self.provider)
            .bind(self.event_id)
            .bind(self.account_id)
            .bind(self.event_type)
            .bind(self.payload)
            .bind(self.received_at)
            .bind(self.connection_id)
            .bind(self.object_ids)
    }

    /// The ids as one text for a bulk write's array of rows (`string_to_array(…, chr(31))`):
    /// an id holds no control character (`providers::lookup`), so the unit separator splits
    /// them back exactly.
    pub(crate) fn joined_object_ids(&self) -> String {
        self.object_ids.join("\u{1f}")
    }
}

/// Records the event; false when it was there already (a redelivery).
pub async fn record(tx: &mut PgConnection, entry: &InboxEntry<'_>) -> sqlx::Result<bool> {
    let inserted = entry
        .bind(sqlx::query(INBOX_INSERT))
        .execute(tx)
        .await?
        .rows_affected();
    Ok(inserted == 1)
}

/// Writes an outcome other than `applied`, with the reason of an ignored event.
pub async fn set_outcome(
    tx: &mut PgConnection,
    entry: &InboxEntry<'_>,
    outcome: Outcome,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE webhook_events SET outcome = $3, outcome_reason = $4
         WHERE provider = $1 AND event_id = $2",
        entry.provider.stored_name(),
        entry.event_id,
        outcome.as_str(),
        outcome.reason(),
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// An event waiting for its payment's registration, as the registration applies it.
#[derive(Debug)]
pub struct WaitingEvent {
    pub event_id: String,
    pub event_type: String,
    /// The event's JSON exactly as it arrived.
    pub payload: String,
    pub received_at: DateTime<Utc>,
}

/// The account's events of `provider` waiting for its payment `provider_payment_id`, oldest
/// provider time first (the order the worker applies out-of-order events in). Applying one
/// claims it. Another account's event waiting for the same provider id is not this payment's.
pub async fn waiting_for(
    tx: &mut PgConnection,
    account_id: &str,
    provider: Provider,
    provider_payment_id: &str,
) -> sqlx::Result<Vec<WaitingEvent>> {
    sqlx::query_as!(
        WaitingEvent,
        r#"SELECT event_id, event_type, payload::text AS "payload!", received_at
         FROM webhook_events
         WHERE account_id = $1 AND provider = $2 AND unmatched_provider_payment_id = $3
         ORDER BY unmatched_occurred_at, received_at, event_id"#,
        account_id,
        provider.stored_name(),
        provider_payment_id,
    )
    .fetch_all(tx)
    .await
}

/// An unmatched event, as operators list it.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnmatchedEvent {
    pub account_id: String,
    pub provider: Provider,
    pub event_id: String,
    pub event_type: String,
    /// The provider payment it waits for.
    pub provider_payment_id: String,
    pub received_at: DateTime<Utc>,
    /// The event's provider time.
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Unmatched events, newest first, at most `limit` of them: an account's (the API's), or every
/// account's (an operator's), of one provider or all.
pub async fn list_unmatched(
    db: impl PgExecutor<'_>,
    account_id: Option<&str>,
    provider: Option<Provider>,
    limit: i64,
) -> sqlx::Result<Vec<UnmatchedEvent>> {
    sqlx::query_as!(
        UnmatchedEvent,
        r#"SELECT account_id, provider AS "provider: Provider", event_id, event_type,
             unmatched_provider_payment_id AS "provider_payment_id!", received_at,
             unmatched_occurred_at AS occurred_at
         FROM webhook_events
         WHERE unmatched_provider_payment_id IS NOT NULL
           AND ($1::text IS NULL OR account_id = $1)
           AND ($2::text IS NULL OR provider = $2)
         ORDER BY received_at DESC, provider, event_id
         LIMIT $3"#,
        account_id,
        provider.map(Provider::stored_name),
        limit,
    )
    .fetch_all(db)
    .await
}

/// An unmatched event and the body it arrived with, for `settle unmatched show`.
pub async fn unmatched_event(
    db: impl PgExecutor<'_>,
    provider: Provider,
    event_id: &str,
) -> sqlx::Result<Option<(UnmatchedEvent, String)>> {
    let row = sqlx::query!(
        r#"SELECT account_id, event_type, unmatched_provider_payment_id AS "provider_payment_id!",
             received_at, unmatched_occurred_at AS occurred_at, payload::text AS "payload!"
         FROM webhook_events
         WHERE provider = $1 AND event_id = $2 AND unmatched_provider_payment_id IS NOT NULL"#,
        provider.stored_name(),
        event_id,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| {
        let event = UnmatchedEvent {
            account_id: row.account_id,
            provider,
            event_id: event_id.to_owned(),
            event_type: row.event_type,
            provider_payment_id: row.provider_payment_id,
            received_at: row.received_at,
            occurred_at: row.occurred_at,
        };
        (event, row.payload)
    }))
}

/// Which unmatched events an operator discards.
pub struct Discarding<'a> {
    /// Of one account, or of all.
    pub account_id: Option<&'a str>,
    pub provider: Option<Provider>,
    /// These events (with `provider`), or every one that matches the rest.
    pub event_ids: Option<&'a [String]>,
    /// Received before this time.
    pub received_before: Option<DateTime<Utc>>,
}

/// Stops the chosen unmatched events waiting: recorded `discarded` with `reason`, so a
/// registration of their payment leaves them be. Skips any a registration holds at this moment.
/// The events discarded, or with `dry_run` those that would be, writing nothing.
pub async fn discard_unmatched(
    db: impl PgExecutor<'_>,
    which: &Discarding<'_>,
    reason: &str,
    dry_run: bool,
) -> sqlx::Result<Vec<UnmatchedEvent>> {
    sqlx::query_as!(
        UnmatchedEvent,
        r#"WITH chosen AS (
             SELECT account_id, provider, event_id, event_type, unmatched_provider_payment_id,
                 received_at, unmatched_occurred_at
             FROM webhook_events
             WHERE unmatched_provider_payment_id IS NOT NULL
               AND ($1::text IS NULL OR account_id = $1)
               AND ($2::text IS NULL OR provider = $2)
               AND ($3::text[] IS NULL OR event_id = ANY($3))
               AND ($4::timestamptz IS NULL OR received_at < $4)
             FOR UPDATE SKIP LOCKED
         ), discarded AS (
             UPDATE webhook_events w SET outcome = 'discarded', outcome_reason = $5,
                 unmatched_provider_payment_id = NULL, unmatched_occurred_at = NULL,
                 processed_at = now()
             FROM chosen c
             WHERE NOT $6 AND w.provider = c.provider AND w.event_id = c.event_id
         )
         SELECT account_id AS "account_id!", provider AS "provider!: Provider",
             event_id AS "event_id!", event_type AS "event_type!",
             unmatched_provider_payment_id AS "provider_payment_id!",
             received_at AS "received_at!", unmatched_occurred_at AS occurred_at
         FROM chosen ORDER BY received_at, provider, event_id"#,
        which.account_id,
        which.provider.map(Provider::stored_name),
        which.event_ids,
        which.received_before,
        reason,
        dry_run,
    )
    .fetch_all(db)
    .await
}

/// An archived event, as `settle events replay` re-drives it.
#[derive(Debug)]
pub struct ArchivedEvent {
    pub event_type: String,
    pub payload: String,
    pub received_at: DateTime<Utc>,
    /// The connection whose endpoint it came through; `None`: the platform's.
    pub connection_id: Option<String>,
}

/// Deletes the event's inbox row and returns it: replaying it lets the worker apply it again.
pub async fn take_for_replay(
    tx: &mut PgConnection,
    provider: Provider,
    event_id: &str,
) -> sqlx::Result<Option<ArchivedEvent>> {
    sqlx::query_as!(
        ArchivedEvent,
        r#"DELETE FROM webhook_events WHERE provider = $1 AND event_id = $2
         RETURNING event_type, payload::text AS "payload!", received_at, connection_id"#,
        provider.stored_name(),
        event_id,
    )
    .fetch_optional(tx)
    .await
}

/// Which of `event_ids` of `provider` the inbox holds (applied, or waiting as unmatched): the
/// events a backfill must not queue again.
pub async fn known(
    db: impl PgExecutor<'_>,
    provider: Provider,
    event_ids: &[String],
) -> sqlx::Result<std::collections::HashSet<String>> {
    let ids = sqlx::query_scalar!(
        "SELECT event_id FROM webhook_events WHERE provider = $1 AND event_id = ANY($2)",
        provider.stored_name(),
        event_ids,
    )
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().collect())
}
