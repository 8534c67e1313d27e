//! Payment methods on file: set by the API, kept current by the worker's provider events. A
//! provider reference (a Stripe method, a GoCardless mandate) is matched within the account.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

use crate::provider::Provider;
use crate::reconcile::payment_methods::MethodStatus;

/// Which stored references a provider event's method matches, as a `LIKE` pattern built only
/// here: the provider's id is escaped, so an id holding `%`, `_` or `\\` (a signed event can
/// carry any) matches that one reference, never a wildcard's worth of others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceMatch(String);

impl ReferenceMatch {
    /// The reference itself (a GoCardless mandate `MD…`).
    pub fn exact(reference: &str) -> Self {
        Self(like_literal(reference))
    }

    /// Any customer's Stripe method `method_id`: stored references are `cus_…/pm_…`, and
    /// Stripe's method events name the method, not its customer.
    pub fn stripe_method(method_id: &str) -> Self {
        Self(format!("%/{}", like_literal(method_id)))
    }
}

/// `text` as a `LIKE` pattern that matches it alone (PostgreSQL's default escape is `\\`).
fn like_literal(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentMethodRow {
    pub id: String,
    pub account_id: String,
    pub customer_id: String,
    pub provider: Provider,
    /// The provider's type (`card`, `sepa_debit`, …): Stripe has more than the API takes.
    #[sqlx(rename = "type")]
    pub method_type: String,
    pub reference_id: String,
    pub status: MethodStatus,
    pub on_file: bool,
    pub billing_details: Option<Json<serde_json::Value>>,
    pub card_exp_month: Option<i16>,
    pub card_exp_year: Option<i16>,
    pub details: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub struct MethodWrite<'a> {
    pub account_id: &'a str,
    pub customer_id: &'a str,
    pub provider: Provider,
    pub method_type: &'a str,
    pub reference_id: &'a str,
    pub status: MethodStatus,
    pub billing_details: Option<serde_json::Value>,
    pub card_exp_month: Option<i16>,
    pub card_exp_year: Option<i16>,
    pub details: serde_json::Value,
}

const COLUMNS: &str = "id, account_id, customer_id, provider, type, reference_id, status, on_file, \
    billing_details, card_exp_month, card_exp_year, details, created_at, updated_at";

/// Makes `method` the customer's method on file (inserting or updating it by reference) and takes
/// every other method of the customer off file. Run inside a transaction.
pub async fn put_on_file(
    tx: &mut PgConnection,
    method: &MethodWrite<'_>,
) -> sqlx::Result<PaymentMethodRow> {
    sqlx::query!(
        "UPDATE payment_methods SET on_file = false, updated_at = now()
         WHERE account_id = $4 AND customer_id = $1 AND on_file
           AND NOT (provider = $2 AND reference_id = $3)",
        method.customer_id,
        method.provider.stored_name(),
        method.reference_id,
        method.account_id,
    )
    .execute(&mut *tx)
    .await?;
    upsert(&mut *tx, method, true).await
}

/// Inserts or updates a method by (account, customer, provider, reference), leaving `on_file` as it is for
/// an existing row unless `on_file` is true.
pub async fn upsert(
    db: impl PgExecutor<'_>,
    method: &MethodWrite<'_>,
    on_file: bool,
) -> sqlx::Result<PaymentMethodRow> {
    sqlx::query_as(&format!(
        "INSERT INTO payment_methods (id, account_id, customer_id, provider, type, reference_id,
             status, on_file, billing_details, card_exp_month, card_exp_year, details,
             on_file_since)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, CASE WHEN $8 THEN now() END)
         ON CONFLICT (account_id, customer_id, provider, reference_id) DO UPDATE SET
             type = EXCLUDED.type,
             status = EXCLUDED.status,
             on_file = payment_methods.on_file OR EXCLUDED.on_file,
             on_file_since = CASE WHEN EXCLUDED.on_file AND NOT payment_methods.on_file
                 THEN now() ELSE payment_methods.on_file_since END,
             billing_details = COALESCE(EXCLUDED.billing_details, payment_methods.billing_details),
             card_exp_month = COALESCE(EXCLUDED.card_exp_month, payment_methods.card_exp_month),
             card_exp_year = COALESCE(EXCLUDED.card_exp_year, payment_methods.card_exp_year),
             details = payment_methods.details || EXCLUDED.details,
             updated_at = now()
         RETURNING {COLUMNS}"
    ))
    .bind(super::rows::new_id("pm"))
    .bind(method.account_id)
    .bind(method.customer_id)
    .bind(method.provider)
    .bind(method.method_type)
    .bind(method.reference_id)
    .bind(method.status)
    .bind(on_file)
    .bind(method.billing_details.as_ref().map(Json))
    .bind(method.card_exp_month)
    .bind(method.card_exp_year)
    .bind(Json(&method.details))
    .fetch_one(db)
    .await
}

pub async fn for_customer(
    db: impl PgExecutor<'_>,
    account_id: &str,
    customer_id: &str,
) -> sqlx::Result<Vec<PaymentMethodRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM payment_methods WHERE account_id = $1 AND customer_id = $2
         ORDER BY on_file DESC, updated_at DESC"
    ))
    .bind(account_id)
    .bind(customer_id)
    .fetch_all(db)
    .await
}

/// Locks the account's customers that hold a method of `provider` matching `reference` (see
/// `customers::lock`), in id order so two transactions never wait on each other.
pub async fn lock_holders(
    tx: &mut PgConnection,
    account_id: &str,
    provider: Provider,
    reference: &ReferenceMatch,
) -> sqlx::Result<()> {
    sqlx::query_scalar!(
        "SELECT id FROM customers
         WHERE account_id = $1 AND id IN (SELECT customer_id FROM payment_methods
             WHERE account_id = $1 AND provider = $2 AND reference_id LIKE $3)
         ORDER BY id FOR UPDATE",
        account_id,
        provider.stored_name(),
        reference.0,
    )
    .fetch_all(tx)
    .await?;
    Ok(())
}

/// Whether a method of `provider` matching `reference` has seen an event newer than
/// `occurred_at`.
pub async fn newer_event_exists(
    tx: &mut PgConnection,
    account_id: &str,
    provider: Provider,
    reference: &ReferenceMatch,
    occurred_at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM payment_methods
                        WHERE account_id = $1 AND provider = $2 AND reference_id LIKE $3
                          AND last_event_at > $4) AS "newer!""#,
        account_id,
        provider.stored_name(),
        reference.0,
        occurred_at,
    )
    .fetch_one(tx)
    .await
}

/// Marks the method usable or not; an unusable method is no longer the one on file.
pub async fn set_usable(
    tx: &mut PgConnection,
    account_id: &str,
    provider: Provider,
    reference: &ReferenceMatch,
    usable: bool,
    occurred_at: DateTime<Utc>,
) -> sqlx::Result<Option<PaymentMethodRow>> {
    sqlx::query_as(&format!(
        "UPDATE payment_methods SET status = $3, on_file = on_file AND $4,
             last_event_at = GREATEST(last_event_at, $5), updated_at = now()
         WHERE account_id = $6 AND provider = $1 AND reference_id LIKE $2
         RETURNING {COLUMNS}"
    ))
    .bind(provider)
    .bind(&reference.0)
    .bind(MethodStatus::usable(usable))
    .bind(usable)
    .bind(occurred_at)
    .bind(account_id)
    .fetch_optional(tx)
    .await
}

/// Records the provider time of an event applied to the method.
pub async fn touch_last_event(
    tx: &mut PgConnection,
    account_id: &str,
    id: &str,
    occurred_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE payment_methods SET last_event_at = GREATEST(last_event_at, $3)
         WHERE account_id = $1 AND id = $2",
        account_id,
        id,
        occurred_at,
    )
    .execute(tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_id_matches_only_itself() {
        assert_eq!(ReferenceMatch::exact("MD_1").0, "MD\\_1");
        assert_eq!(ReferenceMatch::stripe_method("%").0, "%/\\%");
        assert_eq!(ReferenceMatch::exact("a\\b").0, "a\\\\b");
    }
}
