//! `settle dlq list|show|replay|purge`: dead letters as the DLQ consumer copied them into the
//! `dead_letters` table.
//!
//! Replay republishes each dead letter to the work queue with confirms and only then marks it
//! replayed: an interrupted replay never loses a message, at worst it sends one twice, which the
//! worker's inbox absorbs.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::{EXIT_NOTHING_MATCHED, EXIT_OK, EXIT_PARTLY_FAILED};
use crate::config::Settings;

/// Which dead letters a command applies to.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Filters {
    /// Only this provider (stripe or gocardless).
    #[arg(long)]
    pub provider: Option<String>,
    /// Only this reason (invoice_not_found, currency_mismatch, unparseable, …).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only those dead-lettered since: an RFC 3339 time or a duration back from now (24h, 7d).
    #[arg(long, value_parser = super::parse_since)]
    pub since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
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

const COLUMNS: &str = "id, message_id, provider, event_id, event_type, reason, last_error, attempts, \
    first_failure_at, last_failure_at, dead_lettered_at, replayed_at, replay_count";

async fn select(
    db: &PgPool,
    ids: &[i64],
    filters: &Filters,
    limit: i64,
) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dead_letters
         WHERE (cardinality($1::bigint[]) = 0 OR id = ANY($1))
           AND ($2::text IS NULL OR provider = $2)
           AND ($3::text IS NULL OR reason = $3)
           AND ($4::timestamptz IS NULL OR dead_lettered_at >= $4)
         ORDER BY id
         LIMIT $5"
    ))
    .bind(ids)
    .bind(filters.provider.as_deref().map(str::to_lowercase))
    .bind(&filters.reason)
    .bind(filters.since)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn list(
    db: &PgPool,
    filters: &Filters,
    limit: i64,
    output: Output,
) -> anyhow::Result<u8> {
    let rows = select(db, &[], filters, limit).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Table => {
            println!(
                "{:>6}  {:<28}  {:<10}  {:<36}  {:<22}  {:>8}  {:<20}  replayed",
                "id", "event id", "provider", "type", "reason", "attempts", "dead-lettered at"
            );
            for row in &rows {
                println!(
                    "{:>6}  {:<28}  {:<10}  {:<36}  {:<22}  {:>8}  {:<20}  {}",
                    row.id,
                    row.event_id.as_deref().unwrap_or("-"),
                    row.provider.as_deref().unwrap_or("-"),
                    row.event_type.as_deref().unwrap_or("-"),
                    row.reason,
                    row.attempts,
                    row.dead_lettered_at.format("%Y-%m-%d %H:%M:%S"),
                    row.replay_count,
                );
            }
        }
    }
    Ok(if rows.is_empty() {
        EXIT_NOTHING_MATCHED
    } else {
        EXIT_OK
    })
}

pub async fn show(db: &PgPool, id: i64) -> anyhow::Result<u8> {
    let Some(row) = select(db, &[id], &Filters::default(), 1).await?.pop() else {
        eprintln!("no dead letter {id}");
        return Ok(EXIT_NOTHING_MATCHED);
    };
    let (headers, body): (serde_json::Value, Vec<u8>) =
        sqlx::query_as("SELECT headers, body FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_one(db)
            .await?;
    let payload = serde_json::from_slice::<serde_json::Value>(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    let shown = serde_json::json!({
        "deadLetter": row,
        "failureHistory": {
            "reason": row.reason,
            "attempts": row.attempts,
            "firstFailureAt": row.first_failure_at,
            "lastFailureAt": row.last_failure_at,
            "lastError": row.last_error,
            "replayCount": row.replay_count,
            "replayedAt": row.replayed_at,
        },
        "headers": headers,
        "payload": payload,
    });
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(EXIT_OK)
}

pub async fn replay(
    db: &PgPool,
    settings: &Settings,
    ids: &[i64],
    filters: &Filters,
    dry_run: bool,
) -> anyhow::Result<u8> {
    let rows = select(db, ids, filters, i64::MAX).await?;
    if rows.is_empty() {
        eprintln!("no dead letter matched");
        return Ok(EXIT_NOTHING_MATCHED);
    }
    if dry_run {
        for row in &rows {
            println!(
                "would replay {} ({} {})",
                row.id,
                row.event_id.as_deref().unwrap_or("-"),
                row.reason
            );
        }
        return Ok(EXIT_OK);
    }
    let broker = super::connect_broker(settings).await?;
    let mut failed = 0;
    for row in &rows {
        match replay_one(db, &broker, row).await {
            Ok(()) => println!(
                "replayed {} ({})",
                row.id,
                row.event_id.as_deref().unwrap_or("-")
            ),
            Err(error) => {
                failed += 1;
                eprintln!("could not replay {}: {error:#}", row.id);
            }
        }
    }
    broker.close().await;
    Ok(if failed == 0 {
        EXIT_OK
    } else {
        EXIT_PARTLY_FAILED
    })
}

async fn replay_one(
    db: &PgPool,
    broker: &crate::broker::Broker,
    row: &DeadLetter,
) -> anyhow::Result<()> {
    let (headers, body): (serde_json::Value, Vec<u8>) =
        sqlx::query_as("SELECT headers, body FROM dead_letters WHERE id = $1")
            .bind(row.id)
            .fetch_one(db)
            .await?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let message = super::requeue_message(
        broker.topology(),
        row.message_id.as_deref().unwrap_or_default(),
        &header(crate::broker::headers::PROVIDER),
        &header(crate::broker::headers::EVENT_ID),
        &header(crate::broker::headers::EVENT_TYPE),
        &header(crate::broker::headers::RECEIVED_AT),
        body,
    );
    // Confirmed first, marked second: a crash between the two replays it again, never loses it.
    broker.publish_all(std::slice::from_ref(&message)).await?;
    sqlx::query("UPDATE dead_letters SET replayed_at = now(), replay_count = replay_count + 1 WHERE id = $1")
        .bind(row.id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn purge(
    db: &PgPool,
    ids: &[i64],
    older_than: Option<chrono::Duration>,
) -> anyhow::Result<u8> {
    let cutoff = older_than.map(|age| Utc::now() - age);
    let deleted = sqlx::query(
        "DELETE FROM dead_letters
         WHERE (cardinality($1::bigint[]) = 0 OR id = ANY($1))
           AND ($2::timestamptz IS NULL OR dead_lettered_at < $2)",
    )
    .bind(ids)
    .bind(cutoff)
    .execute(db)
    .await?
    .rows_affected();
    println!("purged {deleted} dead letter(s)");
    Ok(if deleted == 0 {
        EXIT_NOTHING_MATCHED
    } else {
        EXIT_OK
    })
}
