//! The retention statements: each deletes at most `batch` rows past their window, oldest first,
//! skipping rows another process is deleting (several workers run retention at once).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Unmatched events received before `before` that no registration claimed: recorded `expired`
/// with `reason`, and no longer waiting, so a registration of their payment leaves them be. At
/// most `batch` of them, skipping any a registration holds; how many.
pub async fn expire_unmatched(
    db: &PgPool,
    before: DateTime<Utc>,
    batch: i64,
    reason: &str,
) -> sqlx::Result<u64> {
    Ok(sqlx::query!(
        "UPDATE webhook_events SET outcome = 'expired', outcome_reason = $3,
             unmatched_provider_payment_id = NULL, unmatched_occurred_at = NULL,
             processed_at = now()
         WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM webhook_events
             WHERE unmatched_provider_payment_id IS NOT NULL AND received_at < $1
             LIMIT $2 FOR UPDATE SKIP LOCKED))",
        before,
        batch,
        reason,
    )
    .execute(db)
    .await?
    .rows_affected())
}

/// How many unmatched events wait, and when the oldest of them arrived.
pub async fn unmatched_backlog(db: &PgPool) -> sqlx::Result<(i64, Option<DateTime<Utc>>)> {
    let backlog = sqlx::query!(
        r#"SELECT count(*) AS "waiting!", min(received_at) AS oldest FROM webhook_events
         WHERE unmatched_provider_payment_id IS NOT NULL"#,
    )
    .fetch_one(db)
    .await?;
    Ok((backlog.waiting, backlog.oldest))
}

/// What retention deletes, a table each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiring {
    /// Inbox rows (the payload and the dedupe key), except unmatched events still waiting for
    /// their payment: their row is the event itself.
    Inbox,
    /// Published outbox rows; unpublished ones are never deleted.
    PublishedOutbox,
    /// Mails sent or given up on; pending ones are never deleted.
    Notifications,
    /// Dead letters replayed; those never replayed wait for an operator.
    ReplayedDeadLetters,
}

impl Expiring {
    pub const ALL: [Self; 4] = [
        Self::Inbox,
        Self::PublishedOutbox,
        Self::Notifications,
        Self::ReplayedDeadLetters,
    ];

    pub fn table(self) -> &'static str {
        match self {
            Self::Inbox => "webhook_events",
            Self::PublishedOutbox => "outbox",
            Self::Notifications => "notifications",
            Self::ReplayedDeadLetters => "dead_letters",
        }
    }

    /// Deletes at most `batch` rows that expired before `before`; how many it deleted.
    pub async fn delete(self, db: &PgPool, before: DateTime<Utc>, batch: i64) -> sqlx::Result<u64> {
        // The inbox is found by age through its BRIN index on received_at (no order: a BRIN
        // index cannot give one, and any expired row will do); the others oldest first by key.
        let sql = match self {
            Self::Inbox => {
                "DELETE FROM webhook_events WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM webhook_events
                     WHERE received_at < $1 AND unmatched_provider_payment_id IS NULL
                     LIMIT $2 FOR UPDATE SKIP LOCKED))"
            }
            Self::PublishedOutbox => {
                // Published: off the relay's work list (`outbox_pending`). Rows are published
                // within moments of their creation, so their age is the creation's.
                "DELETE FROM outbox WHERE id = ANY(ARRAY(
                     SELECT id FROM outbox o WHERE created_at < $1
                       AND NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.id = o.id)
                     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED))"
            }
            Self::Notifications => {
                "DELETE FROM notifications WHERE id = ANY(ARRAY(
                     SELECT id FROM notifications
                     WHERE status <> 'PENDING' AND COALESCE(sent_at, created_at) < $1
                     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED))"
            }
            Self::ReplayedDeadLetters => {
                "DELETE FROM dead_letters WHERE id = ANY(ARRAY(
                     SELECT id FROM dead_letters WHERE replayed_at < $1
                     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED))"
            }
        };
        Ok(sqlx::query(sql)
            .bind(before)
            .bind(batch)
            .execute(db)
            .await?
            .rows_affected())
    }
}
