//! Customers, as the billing system registers them, with the provider customer ids the worker
//! finds them by. A customer is the account's: every function takes the account and reads or
//! writes only its rows.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::types::Json;
use sqlx::{PgExecutor, Postgres};

use crate::provider::Provider;

/// Everything stored about a customer. `address` and `external_ids` are kept as the caller sent
/// them (validated); the two provider customer ids are also columns, for the worker's lookups.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerRow {
    pub id: String,
    pub account_id: String,
    pub legal_name: String,
    pub contact_name: Option<String>,
    pub email: Option<String>,
    pub billing_emails: Vec<String>,
    pub telephone: Option<String>,
    pub url: Option<String>,
    pub label: Option<String>,
    pub tax_status: Option<String>,
    pub address: Option<Json<serde_json::Value>>,
    pub customer_aliases: Vec<String>,
    pub external_ids: Json<serde_json::Value>,
    pub stripe_customer_id: Option<String>,
    pub gocardless_customer_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Values to write; on update, `None` leaves a column as it is.
#[derive(Debug, Clone, Default)]
pub struct CustomerWrite {
    pub legal_name: Option<String>,
    pub contact_name: Option<String>,
    pub email: Option<String>,
    pub billing_emails: Option<Vec<String>>,
    pub telephone: Option<String>,
    pub url: Option<String>,
    pub label: Option<String>,
    pub tax_status: Option<String>,
    pub address: Option<serde_json::Value>,
    pub customer_aliases: Option<Vec<String>>,
    pub external_ids: Option<serde_json::Value>,
    /// `Some(None)` clears the column (the external id was removed).
    pub stripe_customer_id: Option<Option<String>>,
    pub gocardless_customer_id: Option<Option<String>>,
}

const COLUMNS: &str = "id, account_id, legal_name, contact_name, email, billing_emails, telephone, \
    url, label, tax_status, address, customer_aliases, external_ids, stripe_customer_id, \
    gocardless_customer_id, created_at, updated_at";

pub async fn insert(
    db: impl PgExecutor<'_>,
    account_id: &str,
    id: &str,
    write: &CustomerWrite,
) -> sqlx::Result<CustomerRow> {
    let insert = format!(
        "INSERT INTO customers (id, account_id, legal_name, contact_name, email, billing_emails,
             telephone, url, label, tax_status, address, customer_aliases, external_ids,
             stripe_customer_id, gocardless_customer_id)
         VALUES ($1, $2, $3, $4, $5, COALESCE($6, '{{}}'), $7, $8, $9, $10, $11, COALESCE($12, '{{}}'),
             COALESCE($13, '[]'), CASE WHEN $14 THEN $15 END, CASE WHEN $16 THEN $17 END)
         RETURNING {COLUMNS}"
    );
    bind_write(sqlx::query_as(&insert), account_id, id, write)
        .fetch_one(db)
        .await
}

pub async fn update(
    db: impl PgExecutor<'_>,
    account_id: &str,
    id: &str,
    write: &CustomerWrite,
) -> sqlx::Result<Option<CustomerRow>> {
    let update = format!(
        "UPDATE customers SET
             legal_name = COALESCE($3, legal_name),
             contact_name = COALESCE($4, contact_name),
             email = COALESCE($5, email),
             billing_emails = COALESCE($6, billing_emails),
             telephone = COALESCE($7, telephone),
             url = COALESCE($8, url),
             label = COALESCE($9, label),
             tax_status = COALESCE($10, tax_status),
             address = COALESCE($11, address),
             customer_aliases = COALESCE($12, customer_aliases),
             external_ids = COALESCE($13, external_ids),
             stripe_customer_id = CASE WHEN $14 THEN $15 ELSE stripe_customer_id END,
             gocardless_customer_id = CASE WHEN $16 THEN $17 ELSE gocardless_customer_id END,
             updated_at = now()
         WHERE id = $1 AND account_id = $2
         RETURNING {COLUMNS}"
    );
    bind_write(sqlx::query_as(&update), account_id, id, write)
        .fetch_optional(db)
        .await
}

/// Binds a customer's write in the order `insert` and `update` number it: $1 the id, $2 the
/// account, $3 to $13 the values, then for each provider's customer id whether it is written
/// and what.
fn bind_write<'q>(
    query: QueryAs<'q, Postgres, CustomerRow, PgArguments>,
    account_id: &'q str,
    id: &'q str,
    write: &'q CustomerWrite,
) -> QueryAs<'q, Postgres, CustomerRow, PgArguments> {
    query
        .bind(id)
        .bind(account_id)
        .bind(&write.legal_name)
        .bind(&write.contact_name)
        .bind(&write.email)
        .bind(&write.billing_emails)
        .bind(&write.telephone)
        .bind(&write.url)
        .bind(&write.label)
        .bind(&write.tax_status)
        .bind(write.address.as_ref().map(Json))
        .bind(&write.customer_aliases)
        .bind(write.external_ids.as_ref().map(Json))
        .bind(write.stripe_customer_id.is_some())
        .bind(write.stripe_customer_id.clone().flatten())
        .bind(write.gocardless_customer_id.is_some())
        .bind(write.gocardless_customer_id.clone().flatten())
}

pub async fn get(
    db: impl PgExecutor<'_>,
    account_id: &str,
    id: &str,
) -> sqlx::Result<Option<CustomerRow>> {
    super::rows::by_id(
        db,
        "customers",
        COLUMNS,
        account_id,
        id,
        super::rows::Read::Plain,
    )
    .await
}

/// Locks the customer for the rest of the transaction: every writer of a customer's payment
/// methods holds this lock, so their events (and the API) apply one at a time and an older event
/// cannot overtake a newer one.
pub async fn lock(tx: &mut sqlx::PgConnection, account_id: &str, id: &str) -> sqlx::Result<()> {
    sqlx::query_scalar!(
        "SELECT id FROM customers WHERE account_id = $1 AND id = $2 FOR UPDATE",
        account_id,
        id
    )
    .fetch_optional(tx)
    .await?;
    Ok(())
}

pub async fn exists(db: impl PgExecutor<'_>, account_id: &str, id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM customers WHERE account_id = $1 AND id = $2) AS "exists!""#,
        account_id,
        id
    )
    .fetch_one(db)
    .await
}

/// The customer a provider event refers to, by the provider's customer id.
pub async fn find_by_provider_customer_id(
    db: impl PgExecutor<'_>,
    account_id: &str,
    provider: Provider,
    provider_customer_id: &str,
) -> sqlx::Result<Option<CustomerRow>> {
    let column = match provider {
        Provider::Stripe => "stripe_customer_id",
        Provider::GoCardless => "gocardless_customer_id",
    };
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM customers WHERE account_id = $1 AND {column} = $2"
    ))
    .bind(account_id)
    .bind(provider_customer_id)
    .fetch_optional(db)
    .await
}
