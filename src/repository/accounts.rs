//! Accounts and their provider connections. Secrets arrive here sealed and leave sealed: only
//! the operator commands and the receiver's cache open them (`sealed`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub id: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Inserts the account; false when one with that id exists.
pub async fn create(db: impl PgExecutor<'_>, id: &str, name: Option<&str>) -> sqlx::Result<bool> {
    let inserted =
        sqlx::query("INSERT INTO accounts (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(id)
            .bind(name)
            .execute(db)
            .await?
            .rows_affected();
    Ok(inserted == 1)
}

pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Account>> {
    sqlx::query_as("SELECT id, name, created_at FROM accounts ORDER BY id")
        .fetch_all(db)
        .await
}

pub async fn find(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<Option<Account>> {
    sqlx::query_as("SELECT id, name, created_at FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// A connection as stored: its secrets sealed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Connection {
    pub id: String,
    pub account_id: String,
    /// `STRIPE` or `GOCARDLESS`.
    pub provider: String,
    /// `live` or `test`.
    pub mode: String,
    pub external_id: String,
    pub webhook_secrets: Vec<String>,
    pub api_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const CONNECTION_COLUMNS: &str = "id, account_id, provider, mode, external_id, webhook_secrets, \
     api_key, created_at, updated_at";

/// Inserts the connection; false when the provider account in that mode already has one.
pub async fn add_connection(
    db: impl PgExecutor<'_>,
    connection: &Connection,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO provider_connections
             (id, account_id, provider, mode, external_id, webhook_secrets, api_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (provider, mode, external_id) DO NOTHING",
    )
    .bind(&connection.id)
    .bind(&connection.account_id)
    .bind(&connection.provider)
    .bind(&connection.mode)
    .bind(&connection.external_id)
    .bind(&connection.webhook_secrets)
    .bind(&connection.api_key)
    .execute(db)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Connections, of one account or of all.
pub async fn connections(
    db: impl PgExecutor<'_>,
    account: Option<&str>,
) -> sqlx::Result<Vec<Connection>> {
    sqlx::query_as(&format!(
        "SELECT {CONNECTION_COLUMNS} FROM provider_connections
         WHERE $1::text IS NULL OR account_id = $1 ORDER BY account_id, created_at, id"
    ))
    .bind(account)
    .fetch_all(db)
    .await
}

pub async fn connection(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<Option<Connection>> {
    sqlx::query_as(&format!(
        "SELECT {CONNECTION_COLUMNS} FROM provider_connections WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Replaces the connection's webhook secrets (sealed, newest first); false when it is gone.
pub async fn set_webhook_secrets(
    db: impl PgExecutor<'_>,
    id: &str,
    secrets: &[String],
) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        "UPDATE provider_connections SET webhook_secrets = $2, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(secrets)
    .execute(db)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

pub async fn remove_connection(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<bool> {
    let deleted = sqlx::query("DELETE FROM provider_connections WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?
        .rows_affected();
    Ok(deleted == 1)
}
