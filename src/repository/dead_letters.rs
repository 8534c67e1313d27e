//! Dead letters copied off the DLQ, so operators can list, inspect and replay them
//! (`settle dlq …`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

/// A dead letter as the DLQ consumer received it.
#[derive(Debug)]
pub struct NewDeadLetter<'a> {
    /// Set by whoever dead-lettered the message: a redelivered dead letter is copied once.
    pub key: &'a str,
    pub message_id: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub routing_key: &'a str,
    pub headers: &'a serde_json::Value,
    pub body: &'a [u8],
    pub reason: &'a str,
    pub last_error: Option<&'a str>,
    pub attempts: i32,
    pub first_failure_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
}

pub async fn insert(db: impl PgExecutor<'_>, letter: &NewDeadLetter<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO dead_letters (dead_letter_key, message_id, provider, event_id, event_type,
             routing_key, headers, body, reason, last_error, attempts, first_failure_at, last_failure_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (dead_letter_key) DO NOTHING",
        letter.key,
        letter.message_id,
        letter.provider,
        letter.event_id,
        letter.event_type,
        letter.routing_key,
        letter.headers,
        letter.body,
        letter.reason,
        letter.last_error,
        letter.attempts,
        letter.first_failure_at,
        letter.last_failure_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Which dead letters an operator command applies to.
#[derive(Debug, Default, Clone)]
pub struct Selection<'a> {
    /// These ids only (none: any id).
    pub ids: &'a [i64],
    /// Wire name (`stripe`, `gocardless`).
    pub provider: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    /// Leave out those already replayed.
    pub not_replayed: bool,
    pub limit: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: i64,
    pub message_id: Option<String>,
    pub provider: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub reason: String,
    pub last_error: Option<String>,
    pub attempts: i32,
    pub first_failure_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub dead_lettered_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
    pub replay_count: i32,
}

pub async fn select(
    db: impl PgExecutor<'_>,
    selection: &Selection<'_>,
) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as!(
        DeadLetter,
        "SELECT id, message_id, provider, event_id, event_type, reason, last_error, attempts,
             first_failure_at, last_failure_at, dead_lettered_at, replayed_at, replay_count
         FROM dead_letters
         WHERE (cardinality($1::bigint[]) = 0 OR id = ANY($1))
           AND ($2::text IS NULL OR provider = $2)
           AND ($3::text IS NULL OR reason = $3)
           AND ($4::timestamptz IS NULL OR dead_lettered_at >= $4)
           AND (NOT $6 OR replayed_at IS NULL)
         ORDER BY id
         LIMIT $5",
        selection.ids,
        selection.provider,
        selection.reason,
        selection.since,
        selection.limit,
        selection.not_replayed,
    )
    .fetch_all(db)
    .await
}

/// A dead letter's stored headers and body.
pub async fn message(
    db: impl PgExecutor<'_>,
    id: i64,
) -> sqlx::Result<(serde_json::Value, Vec<u8>)> {
    let row = sqlx::query!("SELECT headers, body FROM dead_letters WHERE id = $1", id)
        .fetch_one(db)
        .await?;
    Ok((row.headers, row.body))
}

pub async fn mark_replayed(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE dead_letters SET replayed_at = now(), replay_count = replay_count + 1
         WHERE id = $1",
        id,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes the given ids (none: any id) dead-lettered before `cutoff` (none: any time).
pub async fn purge(
    db: impl PgExecutor<'_>,
    ids: &[i64],
    cutoff: Option<DateTime<Utc>>,
) -> sqlx::Result<u64> {
    Ok(sqlx::query!(
        "DELETE FROM dead_letters
         WHERE (cardinality($1::bigint[]) = 0 OR id = ANY($1))
           AND ($2::timestamptz IS NULL OR dead_lettered_at < $2)",
        ids,
        cutoff,
    )
    .execute(db)
    .await?
    .rows_affected())
}

/// The dead letters of one event, oldest first.
pub async fn of_event(
    db: impl PgExecutor<'_>,
    provider: &str,
    event_id: &str,
) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as(
        "SELECT id, message_id, provider, event_id, event_type, reason, last_error, attempts,
             first_failure_at, last_failure_at, dead_lettered_at, replayed_at, replay_count
         FROM dead_letters WHERE provider = $1 AND event_id = $2 ORDER BY id",
    )
    .bind(provider)
    .bind(event_id)
    .fetch_all(db)
    .await
}

/// Dead letters of one reason: how many, how many still wait for a replay, the newest.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasonGroup {
    pub reason: String,
    pub letters: i64,
    pub waiting: i64,
    pub oldest: DateTime<Utc>,
    pub newest: DateTime<Utc>,
}

/// The dead letters grouped by reason, the most waiting first.
pub async fn by_reason(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<ReasonGroup>> {
    sqlx::query_as(
        "SELECT reason, count(*) AS letters, count(*) FILTER (WHERE replayed_at IS NULL) AS waiting,
             min(dead_lettered_at) AS oldest, max(dead_lettered_at) AS newest
         FROM dead_letters GROUP BY reason ORDER BY waiting DESC, letters DESC, reason",
    )
    .fetch_all(db)
    .await
}

/// The newest `limit` dead letters of a provider (its wire name) and a reason (none: any), only
/// those still waiting for a replay when `waiting_only`, and how many of them wait in all: what
/// the console lists, bounded however many there are.
pub async fn newest(
    db: &sqlx::PgPool,
    provider: Option<&str>,
    reason: Option<&str>,
    waiting_only: bool,
    limit: i64,
) -> sqlx::Result<(Vec<DeadLetter>, i64)> {
    const WHERE: &str = "($1::text IS NULL OR provider = $1) AND ($2::text IS NULL OR reason = $2)";
    let letters = sqlx::query_as(&format!(
        "SELECT id, message_id, provider, event_id, event_type, reason, last_error, attempts,
             first_failure_at, last_failure_at, dead_lettered_at, replayed_at, replay_count
         FROM dead_letters WHERE {WHERE} AND (NOT $3 OR replayed_at IS NULL)
         ORDER BY id DESC LIMIT $4"
    ))
    .bind(provider)
    .bind(reason)
    .bind(waiting_only)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let waiting = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM dead_letters WHERE {WHERE} AND replayed_at IS NULL"
    ))
    .bind(provider)
    .bind(reason)
    .fetch_one(db)
    .await?;
    Ok((letters, waiting))
}
