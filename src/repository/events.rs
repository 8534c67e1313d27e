//! Finding events again: the inbox searched by any id an event names (`object_ids`, the GIN index
//! the worker fills), by an invoice's payments, and by its columns, newest first a page at a
//! time; one event with what it did (its ledger movements and the reconciliation events it
//! published). What the console's event pages read.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

/// What to find.
#[derive(Debug, Clone, Default)]
pub struct EventSearch<'a> {
    /// An operator's scope; `None`: every account.
    pub scope: Option<&'a [String]>,
    /// The accounts a term's invoice is looked for in (the scope, or every account there is:
    /// `payments`' index leads with the account).
    pub accounts: &'a [String],
    /// An event id, any id the event names, or an invoice id (its payments' ids).
    pub term: Option<&'a str>,
    /// Stored provider names (`STRIPE`); none: every provider.
    pub provider: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub outcome: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The last row of the previous page.
    pub after: Option<EventCursor>,
    pub limit: i64,
}

/// Where a page ends: (received_at, provider, event_id) of its last row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCursor {
    pub received_at: DateTime<Utc>,
    pub provider: String,
    pub event_id: String,
}

/// One event as listed.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    pub provider: String,
    pub event_id: String,
    pub account_id: String,
    pub event_type: String,
    pub outcome: String,
    pub outcome_reason: Option<String>,
    pub received_at: DateTime<Utc>,
    pub processed_at: DateTime<Utc>,
    pub connection_id: Option<String>,
}

impl EventRow {
    pub fn cursor(&self) -> EventCursor {
        EventCursor {
            received_at: self.received_at,
            provider: self.provider.clone(),
            event_id: self.event_id.clone(),
        }
    }
}

const COLUMNS: &str = "w.provider, w.event_id, w.account_id, w.event_type, w.outcome, \
                       w.outcome_reason, w.received_at, w.processed_at, w.connection_id";

/// A page of events, newest first. With a term: the events that name it (through the GIN index
/// on `object_ids`) or are it (through the primary key), and those that name a payment of the
/// invoice of that id. The events found are gathered first (a materialized set: a handful of
/// rows), then filtered and ordered; without a term, the newest are read backwards through the
/// b-tree on received_at (by type: on account, type and received_at), filtered as they come.
pub async fn search(
    db: &PgPool,
    search: &EventSearch<'_>,
    providers: &[&str],
) -> sqlx::Result<Vec<EventRow>> {
    let ids = match search.term {
        Some(term) => {
            let mut ids: Vec<String> = sqlx::query_scalar(
                "SELECT provider_payment_id FROM payments
                 WHERE account_id = ANY($1) AND invoice_id = $2",
            )
            .bind(search.accounts)
            .bind(term)
            .fetch_all(db)
            .await?;
            ids.push(term.to_owned());
            Some(ids)
        }
        None => None,
    };
    let (found, joined) = match ids {
        Some(_) => (
            "WITH found AS MATERIALIZED (
                 SELECT provider, event_id FROM webhook_events WHERE object_ids && $2
                 UNION
                 SELECT provider, event_id FROM webhook_events
                 WHERE provider = ANY($11) AND event_id = ANY($2)
             )",
            "JOIN found f ON f.provider = w.provider AND f.event_id = w.event_id",
        ),
        None => ("", ""),
    };
    let sql = format!(
        "{found}
         SELECT {COLUMNS} FROM webhook_events w {joined}
         WHERE ($1::text[] IS NULL OR w.account_id = ANY($1))
           AND ($3::text IS NULL OR w.provider = $3)
           AND ($4::text IS NULL OR w.event_type = $4)
           AND ($5::text IS NULL OR w.outcome = $5)
           AND ($6::timestamptz IS NULL OR w.received_at >= $6)
           AND ($7::timestamptz IS NULL OR w.received_at < $7)
           AND ($8::timestamptz IS NULL OR (w.received_at, w.provider, w.event_id) < ($8, $9, $10))
           -- The term's ids and the providers, which only the gathering above reads: every
           -- query binds the same list.
           AND ($2::text[] IS NULL OR $11::text[] IS NOT NULL)
         ORDER BY w.received_at DESC, w.provider DESC, w.event_id DESC
         LIMIT $12"
    );
    let after = search.after.as_ref();
    sqlx::query_as(&sql)
        .bind(search.scope)
        .bind(ids)
        .bind(search.provider)
        .bind(search.event_type)
        .bind(search.outcome)
        .bind(search.since)
        .bind(search.until)
        .bind(after.map(|cursor| cursor.received_at))
        .bind(after.map(|cursor| cursor.provider.as_str()))
        .bind(after.map(|cursor| cursor.event_id.as_str()))
        .bind(providers)
        .bind(search.limit)
        .fetch_all(db)
        .await
}

/// One event with its payload as it arrived.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventDetail {
    #[sqlx(flatten)]
    pub row: EventRow,
    pub payload: String,
    pub object_ids: Option<Vec<String>>,
}

/// The event `(provider, event_id)` when it belongs to one of `accounts`.
pub async fn one(
    db: impl PgExecutor<'_>,
    accounts: &[String],
    provider: &str,
    event_id: &str,
) -> sqlx::Result<Option<EventDetail>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS}, w.payload::text AS payload, w.object_ids FROM webhook_events w
         WHERE w.provider = $2 AND w.event_id = $3 AND w.account_id = ANY($1)"
    ))
    .bind(accounts)
    .bind(provider)
    .bind(event_id)
    .fetch_optional(db)
    .await
}

/// A ledger movement an event recorded.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedMovement {
    pub invoice_id: String,
    pub payment_id: String,
    pub provider_object_id: String,
    pub kind: String,
    pub amount: i64,
    pub currency: String,
    pub amount_source: String,
    pub occurred_at: DateTime<Utc>,
}

/// The movements the event recorded: keyed by the money objects it names (the ledger's unique
/// key leads with them), and recorded by this event.
pub async fn movements(
    db: impl PgExecutor<'_>,
    account_id: &str,
    provider: &str,
    event_id: &str,
    object_ids: &[String],
) -> sqlx::Result<Vec<RecordedMovement>> {
    sqlx::query_as(
        "SELECT invoice_id, payment_id, provider_object_id, kind, amount, currency, amount_source,
             occurred_at
         FROM money_movements
         WHERE provider = $2 AND provider_object_id = ANY($4) AND event_id = $3
           AND account_id = $1
         ORDER BY id",
    )
    .bind(account_id)
    .bind(provider)
    .bind(event_id)
    .bind(object_ids)
    .fetch_all(db)
    .await
}

/// A reconciliation event an event published (or will: its id is on the relay's work list).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedMessage {
    pub message_id: String,
    pub routing_key: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    /// Still on the relay's work list (`outbox_pending`).
    pub waiting: bool,
}

/// The outbox rows whose message id starts with `prefix` (`stripe:evt_…:`, as
/// `reconciliation_events` names them): a range of the unique index on message_id.
pub async fn published(
    db: impl PgExecutor<'_>,
    account_id: &str,
    prefix: &str,
) -> sqlx::Result<Vec<PublishedMessage>> {
    sqlx::query_as(
        "SELECT o.message_id, o.routing_key, o.payload::text AS payload, o.created_at,
             EXISTS (SELECT 1 FROM outbox_pending p WHERE p.id = o.id) AS waiting
         FROM outbox o
         WHERE o.message_id >= $2 AND o.message_id < $2 || chr(1114111) AND o.account_id = $1
         ORDER BY o.id",
    )
    .bind(account_id)
    .bind(prefix)
    .fetch_all(db)
    .await
}

/// How many events arrived since `since`, per outcome, of the scope's accounts (`None`: every
/// account), through the b-tree on received_at.
pub async fn outcomes_since(
    db: impl PgExecutor<'_>,
    scope: Option<&[String]>,
    since: DateTime<Utc>,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT outcome, count(*) FROM webhook_events
         WHERE received_at >= $2 AND ($1::text[] IS NULL OR account_id = ANY($1))
         GROUP BY outcome ORDER BY count(*) DESC, outcome",
    )
    .bind(scope)
    .bind(since)
    .fetch_all(db)
    .await
}

/// The invoices of the account's payments among `object_ids` (the payments an event names).
pub async fn invoices_of(
    db: impl PgExecutor<'_>,
    account_id: &str,
    provider: &str,
    object_ids: &[String],
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT DISTINCT invoice_id FROM payments
         WHERE account_id = $1 AND provider = $2 AND provider_payment_id = ANY($3)
         ORDER BY invoice_id",
    )
    .bind(account_id)
    .bind(provider)
    .bind(object_ids)
    .fetch_all(db)
    .await
}
