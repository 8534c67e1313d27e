//! The sweeper's cursors (`backfill_cursors`).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::provider::Provider;

/// Until when the source's list was swept; `None` before its first sweep.
pub async fn swept_until(
    db: impl PgExecutor<'_>,
    provider: Provider,
    source: &str,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!(
        "SELECT swept_until FROM backfill_cursors WHERE provider = $1 AND source = $2",
        provider.stored_name(),
        source,
    )
    .fetch_optional(db)
    .await
}

/// Records a successful sweep of the source up to `until` (never moving the cursor back).
pub async fn record_sweep(
    db: impl PgExecutor<'_>,
    provider: Provider,
    source: &str,
    until: DateTime<Utc>,
    missed: i32,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO backfill_cursors
             (provider, source, swept_until, last_missed, gap_events, gap_at)
         VALUES ($1, $2, $3, $4, $4, CASE WHEN $4 > 0 THEN now() END)
         ON CONFLICT (provider, source) DO UPDATE
         SET swept_until = GREATEST(backfill_cursors.swept_until, EXCLUDED.swept_until),
             last_success_at = now(), last_missed = EXCLUDED.last_missed,
             gap_events = CASE WHEN EXCLUDED.last_missed > 0 THEN EXCLUDED.last_missed
                               ELSE backfill_cursors.gap_events END,
             gap_at = CASE WHEN EXCLUDED.last_missed > 0 THEN now()
                           ELSE backfill_cursors.gap_at END",
    )
    .bind(provider)
    .bind(source)
    .bind(until)
    .bind(missed)
    .execute(db)
    .await?;
    Ok(())
}

/// A source's cursor as the console shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Cursor {
    pub provider: String,
    pub source: String,
    pub swept_until: DateTime<Utc>,
    pub last_success_at: DateTime<Utc>,
    /// Events the last successful sweep found that no webhook delivered.
    pub last_missed: i32,
    /// The last sweep that found any: how many, and when.
    pub gap_events: i32,
    pub gap_at: Option<DateTime<Utc>>,
}

/// Every source's cursor.
pub async fn cursors(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Cursor>> {
    sqlx::query_as("SELECT * FROM backfill_cursors ORDER BY provider, source")
        .fetch_all(db)
        .await
}
