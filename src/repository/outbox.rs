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
/// JSON bodies. A row whose id is there already (a replayed event) is skipped. A macro so that a
/// statement writing other effects can end with the same insert.
macro_rules! outbox_insert {
    ($account:literal, $ids:literal, $types:literal, $payloads:literal) => {
        concat!(
            "INSERT INTO outbox (account_id, message_id, routing_key, payload) SELECT ",
            $account,
            ", * FROM UNNEST(",
            $ids,
            "::text[], ",
            $types,
            "::text[], ",
            $payloads,
            "::text[]::json[]) ON CONFLICT (message_id) DO NOTHING"
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
        sqlx::query(outbox_insert!("$1", "$2", "$3", "$4")),
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
        r#"SELECT id, account_id, message_id, routing_key, payload::text AS "payload!" FROM outbox
         WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"#,
        limit,
    )
    .fetch_all(tx)
    .await
}

pub async fn mark_published(tx: &mut PgConnection, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE outbox SET published_at = now() WHERE id = ANY($1)",
        ids
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Rows waiting to be published.
pub async fn backlog(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM outbox WHERE published_at IS NULL"#)
        .fetch_one(db)
        .await
}
