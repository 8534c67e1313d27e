//! The console's operators, their sessions and the audit log (`operators`, `operator_sessions`,
//! `audit_log`). Secrets and session tokens arrive here already hashed: this module never sees
//! one in the clear.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// An operator as stored.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Operator {
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// `None`: every account.
    pub accounts: Option<Vec<String>>,
    #[serde(skip)]
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// Creates an operator; false when the name is taken.
pub async fn create(
    db: impl PgExecutor<'_>,
    name: &str,
    role: &str,
    accounts: Option<&[String]>,
    secret_hash: &str,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO operators (name, role, accounts, secret_hash) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(role)
    .bind(accounts)
    .bind(secret_hash)
    .execute(db)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Operator>> {
    sqlx::query_as("SELECT * FROM operators ORDER BY name")
        .fetch_all(db)
        .await
}

/// The operator of that name, disabled or not.
pub async fn find(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Option<Operator>> {
    sqlx::query_as("SELECT * FROM operators WHERE name = $1")
        .bind(name)
        .fetch_optional(db)
        .await
}

/// Disables an operator and ends its sessions; false when there is none of that name.
pub async fn disable(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<bool> {
    let disabled = sqlx::query(
        "WITH disabled AS (
             UPDATE operators SET disabled_at = coalesce(disabled_at, now()) WHERE name = $1
             RETURNING name
         ), ended AS (
             DELETE FROM operator_sessions WHERE operator IN (SELECT name FROM disabled)
         )
         SELECT 1 FROM disabled",
    )
    .bind(name)
    .fetch_optional(db)
    .await?;
    Ok(disabled.is_some())
}

/// Opens a session: the SHA-256 of its cookie token, its form token, when it ends.
pub async fn open_session(
    db: impl PgExecutor<'_>,
    token_sha256: &[u8],
    operator: &str,
    csrf_token: &str,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO operator_sessions (token_sha256, operator, csrf_token, expires_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(token_sha256)
    .bind(operator)
    .bind(csrf_token)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// A live session's operator (not disabled) and its form token.
pub async fn session(
    db: impl PgExecutor<'_>,
    token_sha256: &[u8],
) -> sqlx::Result<Option<(Operator, String)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        operator: Operator,
        csrf_token: String,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT o.*, s.csrf_token FROM operator_sessions s JOIN operators o ON o.name = s.operator
         WHERE s.token_sha256 = $1 AND s.expires_at > now() AND o.disabled_at IS NULL",
    )
    .bind(token_sha256)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| (row.operator, row.csrf_token)))
}

/// Ends a session, and any that have expired.
pub async fn close_session(db: impl PgExecutor<'_>, token_sha256: &[u8]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM operator_sessions WHERE token_sha256 = $1 OR expires_at < now()")
        .bind(token_sha256)
        .execute(db)
        .await?;
    Ok(())
}

/// One write an operator made.
#[derive(Debug, Clone)]
pub struct NewAuditEntry<'a> {
    pub operator: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub account_id: Option<&'a str>,
    pub reason: &'a str,
    pub outcome: &'a str,
}

pub async fn audit(db: impl PgExecutor<'_>, entry: &NewAuditEntry<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO audit_log (operator, action, target, account_id, reason, outcome)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(entry.operator)
    .bind(entry.action)
    .bind(entry.target)
    .bind(entry.account_id)
    .bind(entry.reason)
    .bind(entry.outcome)
    .fetch_one(db)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub operator: String,
    pub action: String,
    pub target: String,
    pub account_id: Option<String>,
    pub reason: String,
    pub outcome: String,
}

/// The newest entries first, before `before` (an id; none: from the newest), those touching
/// `accounts` only when given (an operator scoped to them).
pub async fn audit_log(
    db: impl PgExecutor<'_>,
    accounts: Option<&[String]>,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<AuditEntry>> {
    sqlx::query_as(
        "SELECT * FROM audit_log
         WHERE ($1::text[] IS NULL OR account_id = ANY($1))
           AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(accounts)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}
