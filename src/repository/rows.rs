//! What every table's module shares: the one read by id, and the ids settle chooses.

use sqlx::PgExecutor;

/// How `by_id` reads a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    Plain,
    /// Locked (`FOR UPDATE`) for the rest of the caller's transaction.
    ForUpdate,
}

/// The account's row `id` of `table`, its `columns` read as `T`: the one shape of every read by
/// id, so that none can forget the account (an id is unique within its account only).
pub(crate) async fn by_id<T>(
    db: impl PgExecutor<'_>,
    table: &str,
    columns: &str,
    account_id: &str,
    id: &str,
    read: Read,
) -> sqlx::Result<Option<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let lock = match read {
        Read::Plain => "",
        Read::ForUpdate => " FOR UPDATE",
    };
    sqlx::query_as(&format!(
        "SELECT {columns} FROM {table} WHERE account_id = $1 AND id = $2{lock}"
    ))
    .bind(account_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A fresh id for rows whose id settle chooses: `<prefix>_<32 hex digits>`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// `columns` (a `COLUMNS` list) each qualified by `alias`: `a, b` as `m.a, m.b`, for a statement
/// that joins its table to another.
pub fn qualified(columns: &str, alias: &str) -> String {
    columns
        .split(',')
        .map(|column| format!("{alias}.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
