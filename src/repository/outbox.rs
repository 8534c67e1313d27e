//! The outbox: reconciliation events written in the worker's transaction, published afterwards by
//! the relay (`crate::outbox`), so none is lost when a process dies between commit and publish.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::{PgConnection, PgExecutor, Postgres};

/// A reconciliation event to publish: its stable id, routing key and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub message_id: String,
    pub routing_key: &'static str,
    pub payload: String,
    /// The `traceparent` the message is published with.
    pub trace: Option<String>,
}

impl OutboxRow {
    /// The row that publishes `message`.
    pub fn of(
        message: &crate::reconcile::reconciliation_events::Message<'_>,
    ) -> serde_json::Result<Self> {
        Ok(Self {
            message_id: message.id.as_str().to_owned(),
            routing_key: message.event_type,
            payload: serde_json::to_string(message)?,
            trace: crate::trace::traceparent_of(&tracing::Span::current()),
        })
    }

    /// Published in the trace `trace` names (the provider event's, in a batch of several).
    pub fn in_trace(mut self, trace: Option<&str>) -> Self {
        if let Some(trace) = trace {
            self.trace = Some(trace.to_owned());
        }
        self
    }

    /// Binds `outbox_insert!`'s first parameters, in order: the account, then the rows as three
    /// arrays. Its last, the rows' traces, is bound by `bind_traces` wherever the statement
    /// numbers it.
    pub(crate) fn bind<'q>(
        query: sqlx::query::Query<'q, Postgres, PgArguments>,
        account_id: &'q str,
        rows: &'q [Self],
    ) -> sqlx::query::Query<'q, Postgres, PgArguments> {
        let ids: Vec<&str> = rows.iter().map(|r| r.message_id.as_str()).collect();
        let types: Vec<&str> = rows.iter().map(|r| r.routing_key).collect();
        let payloads: Vec<&str> = rows.iter().map(|r| r.payload.as_str()).collect();
        query.bind(account_id).bind(ids).bind(types).bind(payloads)
    }

    /// Binds `outbox_insert!`'s traces array.
    pub(crate) fn bind_traces<'q>(
        query: sqlx::query::Query<'q, Postgres, PgArguments>,
        rows: &'q [Self],
    ) -> sqlx::query::Query<'q, Postgres, PgArguments> {
        query.bind(rows.iter().map(|r| r.trace.as_deref()).collect::<Vec<_>>())
    }
}

/// Inserts outbox rows given as parameters: the account, then arrays of ids, routing keys, JSON
/// bodies and traces (`traceparent`, or NULL), and puts each new row's id on the relay's work list (`outbox_pending`). A row whose
/// id is there already (a replayed event) is skipped. A macro of two common table expressions, so
/// that a statement writing other effects can include the same insert (`WITH …, outbox_insert!()
/// SELECT …`).
macro_rules! outbox_insert {
    ($account:literal, $ids:literal, $types:literal, $payloads:literal, $traces:literal) => {
        concat!(
            "outbox_rows AS (INSERT INTO outbox (account_id, message_id, routing_key, payload, traceparent) SELECT ",
            $account,
            ", * FROM UNNEST(",
            $ids,
            "::text[], ",
            $types,
            "::text[], ",
            $payloads,
            "::text[]::json[], ",
            $traces,
            "::text[]) ON CONFLICT (message_id) DO NOTHING RETURNING id),
             outbox_pending_rows AS (INSERT INTO outbox_pending (id) SELECT id FROM outbox_rows)"
        )
    };
}
pub(crate) use outbox_insert;

pub async fn insert(
    tx: &mut PgConnection,
    account_id: &str,
    rows: &[OutboxRow],
) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let query = OutboxRow::bind(
        sqlx::query(concat!(
            "WITH ",
            outbox_insert!("$1", "$2", "$3", "$4", "$5"),
            " SELECT 1"
        )),
        account_id,
        rows,
    );
    OutboxRow::bind_traces(query, rows).execute(tx).await?;
    Ok(())
}

/// An unpublished row, locked by the relay's transaction.
#[derive(Debug)]
pub struct PendingMessage {
    pub id: i64,
    pub account_id: String,
    pub message_id: String,
    pub routing_key: String,
    pub payload: String,
    /// Published as the message's `traceparent` header.
    pub traceparent: Option<String>,
}

/// Takes up to `limit` unpublished rows in order, leaving out the parked ones and those waiting
/// out a retry's backoff. Each payload gets `data.sequence`, the row's id: the worker writes an
/// invoice's (a payout's, a customer's method's) outbox rows while it holds that row's lock, so
/// the ids of one subject's events grow in the order they were committed, and a subscriber can
/// tell an event that arrives after a later one of the same invoice (a redelivery, a retry). Only the relay's lease holder calls this, on the lease's own session,
/// so nobody else should hold these rows; if a stale transaction still does (a holder that lost
/// its lease mid-pass), `NOWAIT` fails the pass rather than skip past them, which would send
/// later events of the same invoices first.
pub async fn lock_unpublished(
    tx: &mut PgConnection,
    limit: i64,
) -> sqlx::Result<Vec<PendingMessage>> {
    sqlx::query_as!(
        PendingMessage,
        r#"SELECT o.id, o.account_id, o.message_id, o.routing_key,
                jsonb_set(o.payload::jsonb, '{data,sequence}', to_jsonb(o.id))::text AS "payload!",
                o.traceparent
         FROM outbox_pending p JOIN outbox o ON o.id = p.id
         WHERE p.parked_reason IS NULL AND (p.not_before IS NULL OR p.not_before <= now())
         ORDER BY p.id LIMIT $1 FOR UPDATE OF p NOWAIT"#,
        limit,
    )
    .fetch_all(tx)
    .await
}

/// Counts a publish the broker refused or did not confirm against each of `ids`: the row waits
/// a backoff (1 s, doubling, at most `MAX_RETRY_WAIT_SECS`) before the next, and after
/// `max_attempts` it is parked with `reason`. How many were parked.
pub async fn count_refused(
    tx: &mut PgConnection,
    ids: &[i64],
    reason: &str,
    max_attempts: i32,
) -> sqlx::Result<u64> {
    let parked = sqlx::query_scalar!(
        r#"WITH counted AS (
             UPDATE outbox_pending
             SET attempts = attempts + 1,
                 not_before = now() + make_interval(secs => least(power(2, attempts), $4)),
                 parked_reason = CASE WHEN attempts + 1 >= $3 THEN $2 END
             WHERE id = ANY($1)
             RETURNING parked_reason
           )
           SELECT count(*) AS "parked!" FROM counted WHERE parked_reason IS NOT NULL"#,
        ids,
        reason,
        max_attempts,
        MAX_RETRY_WAIT_SECS,
    )
    .fetch_one(tx)
    .await?;
    Ok(u64::try_from(parked).unwrap_or_default())
}

/// The longest a refused row waits before the relay tries it again.
pub const MAX_RETRY_WAIT_SECS: f64 = 300.0;

/// A row the relay gave up on.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedMessage {
    pub id: i64,
    pub account_id: String,
    pub message_id: String,
    pub routing_key: String,
    pub attempts: i32,
    pub reason: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The parked rows, oldest first.
pub async fn parked(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<ParkedMessage>> {
    sqlx::query_as!(
        ParkedMessage,
        r#"SELECT o.id, o.account_id, o.message_id, o.routing_key, p.attempts,
                  p.parked_reason AS "reason!", o.created_at
         FROM outbox_pending p JOIN outbox o ON o.id = p.id
         WHERE p.parked_reason IS NOT NULL
         ORDER BY p.id LIMIT $1"#,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Puts parked rows (`ids`, or every one when `None`) back on the relay's work list with their
/// attempts reset; how many.
pub async fn unpark(db: impl PgExecutor<'_>, ids: Option<&[i64]>) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "UPDATE outbox_pending SET attempts = 0, not_before = NULL, parked_reason = NULL
         WHERE parked_reason IS NOT NULL AND ($1::bigint[] IS NULL OR id = ANY($1))",
        ids as Option<&[i64]>,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Takes published rows off the relay's work list (the outbox row itself is never updated).
pub async fn mark_published(tx: &mut PgConnection, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM outbox_pending WHERE id = ANY($1)", ids)
        .execute(tx)
        .await?;
    Ok(())
}

/// The channel on which processes without the relay's lease tell its holder they committed
/// outbox rows.
pub const OUTBOX_CHANNEL: &str = "settle_outbox";

/// Tells the process relaying that outbox rows were committed (it `LISTEN`s on `OUTBOX_CHANNEL`).
pub async fn notify_relay(db: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query!("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
        .execute(db)
        .await?;
    Ok(())
}

/// When the oldest reconciliation event still waiting for the relay (not parked) was written:
/// how far the relay is behind.
pub async fn oldest_waiting(db: impl PgExecutor<'_>) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT min(o.created_at) FROM outbox_pending p JOIN outbox o ON o.id = p.id
         WHERE p.parked_reason IS NULL",
    )
    .fetch_one(db)
    .await
}

/// Rows waiting to be published, and rows parked.
pub async fn backlog(db: impl PgExecutor<'_>) -> sqlx::Result<(i64, i64)> {
    let counts = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE parked_reason IS NULL) AS "waiting!",
                  count(*) FILTER (WHERE parked_reason IS NOT NULL) AS "parked!"
           FROM outbox_pending"#
    )
    .fetch_one(db)
    .await?;
    Ok((counts.waiting, counts.parked))
}

/// Puts the account's published reconciliation event `message_id` back on the relay's work list,
/// to be published again with the same id (subscribers dedupe on it): Some(true) when it was
/// put back, Some(false) when it is waiting already, None when the account has no such event.
pub async fn resend(
    db: impl PgExecutor<'_>,
    account_id: &str,
    message_id: &str,
) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar(
        "WITH row AS (SELECT id FROM outbox WHERE account_id = $1 AND message_id = $2),
              queued AS (INSERT INTO outbox_pending (id) SELECT id FROM row
                         ON CONFLICT (id) DO NOTHING RETURNING id)
         SELECT EXISTS (SELECT 1 FROM queued) FROM row",
    )
    .bind(account_id)
    .bind(message_id)
    .fetch_optional(db)
    .await
}
