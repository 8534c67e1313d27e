//! The sweeper's cursors (`backfill_cursors`) and the lock that lets one sweeper run at a time.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use crate::provider::Provider;

/// The advisory lock key of the sweep: one sweeper at a time across every worker process.
/// (`'sett' 'le.b'` as two big-endian i32s, so it collides with no other user's number.)
const SWEEP_LOCK: i64 = 0x7365_7474_6c65_2e62;

/// Until when the source's list was swept; `None` before its first sweep.
pub async fn swept_until(
    db: impl PgExecutor<'_>,
    provider: Provider,
    source: &str,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT swept_until FROM backfill_cursors WHERE provider = $1 AND source = $2",
    )
    .bind(provider.stored_name())
    .bind(source)
    .fetch_optional(db)
    .await
}

/// Records a successful sweep of the source up to `until` (never moving the cursor back).
pub async fn record_sweep(
    db: impl PgExecutor<'_>,
    provider: Provider,
    source: &str,
    until: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO backfill_cursors (provider, source, swept_until) VALUES ($1, $2, $3)
         ON CONFLICT (provider, source) DO UPDATE
         SET swept_until = GREATEST(backfill_cursors.swept_until, EXCLUDED.swept_until),
             last_success_at = now()",
    )
    .bind(provider.stored_name())
    .bind(source)
    .bind(until)
    .execute(db)
    .await?;
    Ok(())
}

/// Takes the sweep's lock on `session` (a connection of its own, not the pool's: the lock lives
/// as long as the session, so a process that dies mid-sweep lets it go); false when another
/// process holds it.
pub async fn try_lock_sweep(session: &mut PgConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(SWEEP_LOCK)
        .fetch_one(session)
        .await
}
