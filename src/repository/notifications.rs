//! Failure mails: rows written in the worker's transaction, one per (payment, failure event,
//! recipient kind), so redelivery never writes a second; sent afterwards by the sender.

use std::time::Duration;

use chrono::{DateTime, Utc};

use sqlx::{PgConnection, PgExecutor};

/// A rendered mail to send.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub payment_id: String,
    pub failure_event_id: String,
    /// `CUSTOMER` or `BUSINESS`.
    pub recipient_kind: &'static str,
    pub recipients: Vec<String>,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
}

/// Writes the rows in the caller's transaction; a row that exists already is left as it is.
pub async fn insert(
    tx: &mut PgConnection,
    account_id: &str,
    notifications: &[NewNotification],
) -> sqlx::Result<()> {
    for notification in notifications {
        sqlx::query!(
            "INSERT INTO notifications (account_id, payment_id, failure_event_id, recipient_kind,
                 recipients, subject, body_text, body_html)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (account_id, payment_id, failure_event_id, recipient_kind) DO NOTHING",
            account_id,
            notification.payment_id,
            notification.failure_event_id,
            notification.recipient_kind,
            &notification.recipients,
            notification.subject,
            notification.body_text,
            notification.body_html,
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// A mail that is due.
#[derive(Debug)]
pub struct PendingNotification {
    pub id: i64,
    pub recipients: Vec<String>,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    pub attempts: i32,
}

/// Locks the next due row for the caller's transaction (`SKIP LOCKED`: several senders share the
/// table, and never take the same row at once).
pub async fn lock_next_due(tx: &mut PgConnection) -> sqlx::Result<Option<PendingNotification>> {
    sqlx::query_as!(
        PendingNotification,
        "SELECT id, recipients, subject, body_text, body_html, attempts FROM notifications
         WHERE status = 'PENDING' AND next_attempt_at <= now()
         ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(tx)
    .await
}

pub async fn mark_sent(tx: &mut PgConnection, id: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE notifications SET status = 'SENT', sent_at = now(), attempts = attempts + 1,
             last_error = NULL
         WHERE id = $1",
        id,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Records a failed attempt: tried again after `backoff`, or marked `FAILED` when `give_up`.
pub async fn mark_attempt_failed(
    tx: &mut PgConnection,
    id: i64,
    attempts: i32,
    error: &str,
    give_up: bool,
    backoff: Duration,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE notifications SET attempts = $2, last_error = $3,
             status = CASE WHEN $4 THEN 'FAILED' ELSE 'PENDING' END,
             next_attempt_at = now() + make_interval(secs => $5)
         WHERE id = $1",
        id,
        attempts,
        error,
        give_up,
        backoff.as_secs_f64(),
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Seconds the oldest pending mail has waited (0 when none waits).
pub async fn oldest_pending_age(db: impl PgExecutor<'_>) -> sqlx::Result<f64> {
    sqlx::query_scalar!(
        "SELECT EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM notifications
         WHERE status = 'PENDING'",
    )
    .fetch_one(db)
    .await
    .map(|age| age.unwrap_or(0.0))
}

/// A mail written for one of an invoice's payments, as the console lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MailRow {
    pub payment_id: String,
    /// `CUSTOMER` or `BUSINESS`.
    pub recipient_kind: String,
    pub subject: String,
    /// `PENDING`, `SENT` or `FAILED`.
    pub status: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// The mails of these payments of the account, oldest first.
pub async fn of_payments(
    db: impl PgExecutor<'_>,
    account_id: &str,
    payment_ids: &[String],
) -> sqlx::Result<Vec<MailRow>> {
    sqlx::query_as(
        "SELECT payment_id, recipient_kind, subject, status, attempts, created_at, sent_at
         FROM notifications WHERE account_id = $1 AND payment_id = ANY($2)
         ORDER BY created_at, id",
    )
    .bind(account_id)
    .bind(payment_ids)
    .fetch_all(db)
    .await
}
