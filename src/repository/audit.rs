//! The self-audit's SQL: a scratch schema holding a copy of every table, the registrations the
//! audited invoices started from, and the diff of what a replay of their events rebuilt there
//! against the live tables (`ops::audit` runs it).
//!
//! Every table is shadowed in the scratch schema, so a connection whose `search_path` puts the
//! scratch schema first reads and writes nothing live, whichever table the worker's path
//! touches (views, such as `invoice_settings`, only read); the configuration the path reads
//! (accounts, connections, customers, settings, payment methods) is copied whole.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// Tables the replay reads as they are: copied whole into the scratch schema.
const COPIED: [&str; 7] = [
    "accounts",
    "provider_connections",
    "customers",
    "billing_schedules",
    "payment_settings",
    "payment_methods",
    "provider_invoice_links",
];

/// An invoice the audit rebuilds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Audited {
    pub account_id: String,
    pub invoice_id: String,
}

/// The invoices whose money moved, or whose payments changed, since `since`.
pub async fn audited(db: &mut PgConnection, since: DateTime<Utc>) -> sqlx::Result<Vec<Audited>> {
    sqlx::query_as(
        "SELECT account_id, invoice_id FROM money_movements WHERE recorded_at >= $1
         UNION
         SELECT account_id, invoice_id FROM payments WHERE updated_at >= $1
         ORDER BY 1, 2",
    )
    .bind(since)
    .fetch_all(db)
    .await
}

/// A scratch schema's name: `settle_audit_` and random hex, so audits never share one.
pub fn scratch_name() -> String {
    format!("settle_audit_{}", uuid::Uuid::new_v4().simple())
}

/// Creates `schema` in `tx` with a copy of every live table (their columns, defaults, checks
/// and indexes; no foreign keys), the configuration copied whole, and `audited`'s invoices,
/// payments and refunds as they were registered: every figure the worker derives from events
/// reset.
pub async fn create_scratch(
    tx: &mut PgConnection,
    schema: &str,
    audited: &[Audited],
) -> sqlx::Result<()> {
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *tx)
        .await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables
         WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations'
         ORDER BY 1",
    )
    .fetch_all(&mut *tx)
    .await?;
    for table in &tables {
        sqlx::query(&format!(
            "CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)"
        ))
        .execute(&mut *tx)
        .await?;
    }
    for table in COPIED {
        sqlx::query(&format!(
            "INSERT INTO {schema}.{table} SELECT * FROM public.{table}"
        ))
        .execute(&mut *tx)
        .await?;
    }
    let accounts: Vec<&str> = audited.iter().map(|a| a.account_id.as_str()).collect();
    let invoices: Vec<&str> = audited.iter().map(|a| a.invoice_id.as_str()).collect();
    let which = "(account_id, invoice_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))";
    sqlx::query(&format!(
        "INSERT INTO {schema}.invoices SELECT * FROM public.invoices
         WHERE (account_id, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
    ))
    .bind(&accounts)
    .bind(&invoices)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "UPDATE {schema}.invoices SET amount_paid = 0, amount_refunded = 0,
             amount_in_dispute = 0, status = 'OPEN', refund_state = 'NONE'"
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {schema}.payments SELECT * FROM public.payments WHERE {which}"
    ))
    .bind(&accounts)
    .bind(&invoices)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "UPDATE {schema}.payments SET status = 'REGISTERED', collected = false,
             failure_code = NULL, failure_message = NULL, last_event_at = NULL,
             failure_attempt_id = NULL, hold_expires_at = NULL"
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {schema}.refunds SELECT r.* FROM public.refunds r
         JOIN {schema}.payments p ON p.account_id = r.account_id AND p.id = r.payment_id"
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "UPDATE {schema}.refunds SET status = 'REGISTERED', failure_reason = NULL,
             last_event_at = NULL"
    ))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Drops the scratch schema and everything in it.
pub async fn drop_scratch(db: &PgPool, schema: &str) -> sqlx::Result<()> {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(db)
        .await?;
    Ok(())
}

/// An archived event the audit replays.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Archived {
    pub provider: crate::provider::Provider,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub received_at: DateTime<Utc>,
    pub connection_id: Option<String>,
}

/// Every archived event that names an object of `audited`'s payments (the payment, its refunds,
/// its disputes), oldest first.
pub async fn events(db: &mut PgConnection, audited: &[Audited]) -> sqlx::Result<Vec<Archived>> {
    let accounts: Vec<&str> = audited.iter().map(|a| a.account_id.as_str()).collect();
    let invoices: Vec<&str> = audited.iter().map(|a| a.invoice_id.as_str()).collect();
    sqlx::query_as(
        "WITH payments AS (
             SELECT account_id, id, provider_payment_id FROM payments
             WHERE (account_id, invoice_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
         ), objects AS (
             SELECT account_id, provider_payment_id AS object FROM payments
             UNION SELECT r.account_id, r.provider_refund_id FROM refunds r
                   JOIN payments p ON p.account_id = r.account_id AND p.id = r.payment_id
             UNION SELECT d.account_id, d.provider_dispute_id FROM disputes d
                   JOIN payments p ON p.account_id = d.account_id AND p.id = d.payment_id
         )
         SELECT e.provider, e.event_id, e.event_type, e.payload::text AS payload, e.received_at,
                e.connection_id
         FROM webhook_events e
         WHERE e.object_ids && (SELECT array_agg(object) FROM objects o
                                WHERE o.account_id = e.account_id)
         ORDER BY e.received_at, e.provider, e.event_id",
    )
    .bind(&accounts)
    .bind(&invoices)
    .fetch_all(db)
    .await
}

/// What the audit compares, of one schema: each audited invoice's figures, its payments'
/// states, and its ledger, as comparable lines (`invoice inv_1 amount_paid 1000`).
pub async fn figures(
    db: impl sqlx::PgExecutor<'_>,
    schema: &str,
    audited: &[Audited],
) -> sqlx::Result<Vec<String>> {
    let accounts: Vec<&str> = audited.iter().map(|a| a.account_id.as_str()).collect();
    let invoices: Vec<&str> = audited.iter().map(|a| a.invoice_id.as_str()).collect();
    sqlx::query_scalar(&format!(
        "WITH audited AS (SELECT * FROM unnest($1::text[], $2::text[]) AS a(account_id, id))
         SELECT format('invoice %s/%s: status %s, paid %s, refunded %s, in dispute %s, refunds %s',
                       i.account_id, i.id, i.status, i.amount_paid, i.amount_refunded,
                       i.amount_in_dispute, i.refund_state)
         FROM {schema}.invoices i JOIN audited a USING (account_id, id)
         UNION ALL
         SELECT format('payment %s/%s (%s %s) of invoice %s: status %s, collected %s',
                       p.account_id, p.id, p.provider, p.provider_payment_id, p.invoice_id,
                       p.status, p.collected)
         FROM {schema}.payments p
         JOIN audited a ON a.account_id = p.account_id AND a.id = p.invoice_id
         UNION ALL
         SELECT format('ledger %s/%s: %s %s #%s %s %s', m.account_id, m.invoice_id, m.kind,
                       m.provider_object_id, m.seq, m.amount, m.currency)
         FROM {schema}.money_movements m
         JOIN audited a ON a.account_id = m.account_id AND a.id = m.invoice_id
         ORDER BY 1"
    ))
    .bind(&accounts)
    .bind(&invoices)
    .fetch_all(db)
    .await
}

/// Stores an audit's findings.
pub async fn record_run(
    db: &PgPool,
    since: DateTime<Utc>,
    started_at: DateTime<Utc>,
    invoices: usize,
    events: usize,
    differences: &[String],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_runs (since, started_at, invoices, events, differences)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(since)
    .bind(started_at)
    .bind(i32::try_from(invoices).unwrap_or(i32::MAX))
    .bind(i32::try_from(events).unwrap_or(i32::MAX))
    .bind(sqlx::types::Json(differences))
    .execute(db)
    .await?;
    Ok(())
}

/// An audit as the console shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Run {
    pub since: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub invoices: i32,
    pub events: i32,
    pub differences: sqlx::types::Json<Vec<String>>,
}

/// The `limit` newest audits.
pub async fn runs(db: impl sqlx::PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<Run>> {
    sqlx::query_as(
        "SELECT since, finished_at, invoices, events, differences FROM audit_runs
         ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}
