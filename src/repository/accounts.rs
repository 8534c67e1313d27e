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
    /// Where the business's copies of its mails go (`None`: nowhere).
    pub business_email: Option<String>,
    pub created_at: DateTime<Utc>,
}

const ACCOUNT_COLUMNS: &str = "id, name, business_email, created_at";

/// Inserts the account; false when one with that id exists.
pub async fn create(
    db: impl PgExecutor<'_>,
    id: &str,
    name: Option<&str>,
    business_email: Option<&str>,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        "INSERT INTO accounts (id, name, business_email) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO NOTHING",
        id,
        name,
        business_email,
    )
    .execute(db)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Account>> {
    sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"
    ))
    .fetch_all(db)
    .await
}

pub async fn find(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<Option<Account>> {
    sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
    ))
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

/// What a sealed column of a connection holds.
#[derive(Debug, Clone, Copy)]
pub enum SealedField {
    WebhookSecret,
    ApiKey,
}

/// The context a connection's secret is sealed under: bound to its row and column, so a sealed
/// value copied to another connection, or from `api_key` to `webhook_secrets`, does not open.
pub fn seal_context(connection_id: &str, field: SealedField) -> String {
    let field = match field {
        SealedField::WebhookSecret => "webhook_secret",
        SealedField::ApiKey => "api_key",
    };
    format!("provider_connections/{connection_id}/{field}")
}

const CONNECTION_COLUMNS: &str = "id, account_id, provider, mode, external_id, webhook_secrets, \
     api_key, created_at, updated_at";

/// Inserts the connection; false when the provider account in that mode already has one.
pub async fn add_connection(
    db: impl PgExecutor<'_>,
    connection: &Connection,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        "INSERT INTO provider_connections
             (id, account_id, provider, mode, external_id, webhook_secrets, api_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (provider, mode, external_id) DO NOTHING",
        connection.id,
        connection.account_id,
        connection.provider,
        connection.mode,
        connection.external_id,
        &connection.webhook_secrets,
        connection.api_key,
    )
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
    select_connection(db, id, "").await
}

/// The connection, its row locked for the caller's transaction.
pub async fn connection_for_update(
    db: impl PgExecutor<'_>,
    id: &str,
) -> sqlx::Result<Option<Connection>> {
    select_connection(db, id, "FOR UPDATE").await
}

async fn select_connection(
    db: impl PgExecutor<'_>,
    id: &str,
    lock: &str,
) -> sqlx::Result<Option<Connection>> {
    sqlx::query_as(&format!(
        "SELECT {CONNECTION_COLUMNS} FROM provider_connections WHERE id = $1 {lock}"
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
    let updated = sqlx::query!(
        "UPDATE provider_connections SET webhook_secrets = $2, updated_at = now() WHERE id = $1",
        id,
        secrets,
    )
    .execute(db)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Replaces every sealed value of the connection (after a reseal).
pub async fn set_sealed(
    db: impl PgExecutor<'_>,
    id: &str,
    webhook_secrets: &[String],
    api_key: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE provider_connections SET webhook_secrets = $2, api_key = $3, updated_at = now()
         WHERE id = $1",
        id,
        webhook_secrets,
        api_key,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn remove_connection(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<bool> {
    let deleted = sqlx::query!("DELETE FROM provider_connections WHERE id = $1", id)
        .execute(db)
        .await?
        .rows_affected();
    Ok(deleted == 1)
}

/// The account an event routes to through one connection, with the connection's mode and what
/// the account's mails need.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Route {
    pub connection_id: String,
    pub mode: String,
    pub account_id: String,
    pub account_name: Option<String>,
    pub business_email: Option<String>,
}

const ROUTE_SELECT: &str = "SELECT c.id AS connection_id, c.mode, c.account_id,
            a.name AS account_name, a.business_email
     FROM provider_connections c JOIN accounts a ON a.id = c.account_id";

/// The route through the connection `id` of `provider` (its own endpoint).
pub async fn route_by_connection(
    db: impl PgExecutor<'_>,
    provider: &str,
    id: &str,
) -> sqlx::Result<Option<Route>> {
    sqlx::query_as(&format!(
        "{ROUTE_SELECT} WHERE c.id = $1 AND c.provider = $2"
    ))
    .bind(id)
    .bind(provider)
    .fetch_optional(db)
    .await
}

/// The routes to the provider's account `external_id` (`acct_…`, `OR…`), one per mode at most.
pub async fn routes_by_external_id(
    db: impl PgExecutor<'_>,
    provider: &str,
    external_id: &str,
) -> sqlx::Result<Vec<Route>> {
    sqlx::query_as(&format!(
        "{ROUTE_SELECT} WHERE c.provider = $1 AND c.external_id = $2 ORDER BY c.mode"
    ))
    .bind(provider)
    .bind(external_id)
    .fetch_all(db)
    .await
}

/// Every connection with webhook secrets, for the receiver's cache: (id, provider, sealed
/// secrets).
pub async fn webhook_secrets(
    db: impl PgExecutor<'_>,
) -> sqlx::Result<Vec<(String, String, Vec<String>)>> {
    let rows = sqlx::query!(
        "SELECT id, provider, webhook_secrets FROM provider_connections
         WHERE cardinality(webhook_secrets) > 0",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.id, row.provider, row.webhook_secrets))
        .collect())
}

/// Sets the account's waits between automatic charge attempts (`None`: the configured ones);
/// whether the account exists.
pub async fn set_charge_retry_days(
    db: impl PgExecutor<'_>,
    id: &str,
    days: Option<&[i16]>,
) -> sqlx::Result<bool> {
    let updated = sqlx::query("UPDATE accounts SET charge_retry_days = $2 WHERE id = $1")
        .bind(id)
        .bind(days)
        .execute(db)
        .await?
        .rows_affected();
    Ok(updated == 1)
}
