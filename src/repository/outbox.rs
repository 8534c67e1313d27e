//! The outbox: reconciliation events written in the worker's transaction, published afterwards by
//! the relay (`crate::outbox`), so none is lost when a process dies between commit and publish.

use sqlx::postgres::PgArguments;
use sqlx::{PgConnection, PgExecutor, Postgres};

/// A reconciliation event to publish: its stable id, routing key and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub message_id: String,
    pub routing_key: &'static str,
    pub payload: String,
}

impl OutboxRow {
    /// The row that publishes `message`.
    pub fn of(
        message: &crate::reconcile::reconciliation_events::Message<'_>,
    ) -> serde_json::Result<Self> {
        Ok(Self {
            message_id: message.id.clone(),
            routing_key: message.event_type,
            payload: serde_json::to_string(message)?,
        })
    }

    /// Binds `outbox_insert!`'s parameters, in order: the account, then the rows as three arrays.
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
}

/// Inserts outbox rows given as parameters: the account, then arrays of ids, routing keys and
/// JSON bodies, and puts each new row's id on the relay's work list (`outbox_pending`). A row whose
/// id is there already (a replayed event) is skipped. A macro of two common table expressions, so
/// that a statement writing other effects can include the same insert (`WITH …, outbox_insert!()
/// SELECT …`).
macro_rules! outbox_insert {
    ($account:literal, $ids:literal, $types:literal, $payloads:literal) => {
        concat!(
            "outbox_rows AS (INSERT INTO outbox (account_id, message_id, routing_key, payload) SELECT ",
            $account,
            ", * FROM UNNEST(",
            $ids,
            "::text[], ",
            $types,
            "::text[], ",
            $payloads,
            "::text[]::json[]) ON CONFLICT (message_id) DO NOTHING RETURNING id),
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
    OutboxRow::bind(
        sqlx::query(concat!(
            "WITH ",
            outbox_insert!("$1", "$2", "$3", "$4"),
            " SELECT 1"
        )),
        account_id,
        rows,
    )
    .execute(tx)
    .await?;
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
}

/// Takes up to `limit` unpublished rows in order. `FOR UPDATE SKIP LOCKED` lets several relays
/// (several worker processes) share the table without sending a row twice at the same time.
pub async fn lock_unpublished(
    tx: &mut PgConnection,
    limit: i64,
) -> sqlx::Result<Vec<PendingMessage>> {
    sqlx::query_as!(
        PendingMessage,
        r#"SELECT o.id, o.account_id, o.message_id, o.routing_key, o.payload::text AS "payload!"
         FROM outbox_pending p JOIN outbox o ON o.id = p.id
         ORDER BY p.id LIMIT $1 FOR UPDATE OF p SKIP LOCKED"#,
        limit,
    )
    .fetch_all(tx)
    .await
}

/// Takes published rows off the relay's work list (the outbox row itself is never updated).
pub async fn mark_published(tx: &mut PgConnection, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM outbox_pending WHERE id = ANY($1)", ids)
        .execute(tx)
        .await?;
    Ok(())
}

/// Tells the process relaying that outbox rows were committed (`LISTEN`ing on `channel`).
pub async fn notify_relay(db: impl PgExecutor<'_>, channel: &str) -> sqlx::Result<()> {
    sqlx::query!("SELECT pg_notify($1, '')", channel)
        .execute(db)
        .await?;
    Ok(())
}

/// Rows waiting to be published.
pub async fn backlog(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM outbox_pending"#)
        .fetch_one(db)
        .await
}
