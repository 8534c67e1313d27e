//! Payment methods on file: set by the API, kept current by the worker's provider events. A
//! provider reference (a Stripe method, a GoCardless mandate) is matched within the account. A
//! method on a gateway settle does not reconcile has no provider: it is kept, never charged.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

use crate::provider::Provider;
use crate::reconcile::payment_methods::{Gateway, MethodStatus};
use crate::reconcile::reconciliation_events::PaymentMethodData;

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
    /// The provider settle reconciles the method's payments with; `None` on another gateway.
    pub provider: Option<Provider>,
    pub gateway: Gateway,
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
    /// The billing system's own string map.
    pub metadata: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PaymentMethodRow {
    /// What `payment_method.updated` tells subscribers about the method as it now is.
    pub fn announced(&self) -> PaymentMethodData {
        PaymentMethodData {
            customer_id: self.customer_id.clone(),
            payment_method_id: self.id.clone(),
            provider: self.provider,
            gateway: self.gateway,
            method_type: self.method_type.clone(),
            reference_id: self.reference_id.clone(),
            status: self.status,
            on_file: self.on_file,
        }
    }
}

pub struct MethodWrite<'a> {
    pub account_id: &'a str,
    pub customer_id: &'a str,
    /// The gateway; its provider, if settle reconciles it, is stored with it.
    pub gateway: Gateway,
    pub method_type: &'a str,
    pub reference_id: &'a str,
    pub status: MethodStatus,
    pub billing_details: Option<serde_json::Value>,
    pub card_exp_month: Option<i16>,
    pub card_exp_year: Option<i16>,
    pub details: serde_json::Value,
    /// `None` keeps the stored map; `Some` replaces it.
    pub metadata: Option<serde_json::Value>,
}

const COLUMNS: &str = "id, account_id, customer_id, provider, gateway, type, reference_id, status, \
    on_file, billing_details, card_exp_month, card_exp_year, details, metadata, created_at, \
    updated_at";

/// Makes `method` the customer's method on file (inserting or updating it by reference) and takes
/// every other method of the customer off file. Run inside a transaction.
pub async fn put_on_file(
    tx: &mut PgConnection,
    method: &MethodWrite<'_>,
) -> sqlx::Result<PaymentMethodRow> {
    sqlx::query(
        "UPDATE payment_methods SET on_file = false, updated_at = now()
         WHERE account_id = $1 AND customer_id = $2 AND on_file
           AND NOT (gateway = $3 AND reference_id = $4)",
    )
    .bind(method.account_id)
    .bind(method.customer_id)
    .bind(method.gateway)
    .bind(method.reference_id)
    .execute(&mut *tx)
    .await?;
    upsert(&mut *tx, method, true).await
}

/// Inserts or updates a method by (account, customer, gateway, reference), leaving `on_file` as it is for
/// an existing row unless `on_file` is true.
pub async fn upsert(
    db: impl PgExecutor<'_>,
    method: &MethodWrite<'_>,
    on_file: bool,
) -> sqlx::Result<PaymentMethodRow> {
    sqlx::query_as(&format!(
        "INSERT INTO payment_methods (id, account_id, customer_id, provider, type, reference_id,
             status, on_file, billing_details, card_exp_month, card_exp_year, details,
             on_file_since, gateway, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, CASE WHEN $8 THEN now() END,
             $13, COALESCE($14, '{{}}'))
         ON CONFLICT (account_id, customer_id, gateway, reference_id) DO UPDATE SET
             type = EXCLUDED.type,
             status = EXCLUDED.status,
             on_file = payment_methods.on_file OR EXCLUDED.on_file,
             on_file_since = CASE WHEN EXCLUDED.on_file AND NOT payment_methods.on_file
                 THEN now() ELSE payment_methods.on_file_since END,
             billing_details = COALESCE(EXCLUDED.billing_details, payment_methods.billing_details),
             card_exp_month = COALESCE(EXCLUDED.card_exp_month, payment_methods.card_exp_month),
             card_exp_year = COALESCE(EXCLUDED.card_exp_year, payment_methods.card_exp_year),
             details = payment_methods.details || EXCLUDED.details,
             metadata = COALESCE($14, payment_methods.metadata),
             updated_at = now()
         RETURNING {COLUMNS}"
    ))
    .bind(super::rows::new_id("pm"))
    .bind(method.account_id)
    .bind(method.customer_id)
    .bind(method.gateway.provider())
    .bind(method.method_type)
    .bind(method.reference_id)
    .bind(method.status)
    .bind(on_file)
    .bind(method.billing_details.as_ref().map(Json))
    .bind(method.card_exp_month)
    .bind(method.card_exp_year)
    .bind(Json(&method.details))
    .bind(method.gateway)
    .bind(method.metadata.as_ref().map(Json))
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

/// A method after a change of its status, and whether it was the one on file before.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StatusChange {
    #[sqlx(flatten)]
    pub row: PaymentMethodRow,
    pub was_on_file: bool,
}

impl StatusChange {
    /// Whether the change took the customer's method on file away: the next one should take over.
    pub fn left_no_method_on_file(&self) -> bool {
        self.was_on_file && !self.row.on_file
    }
}

/// The statement setting status `$2` on the account's (`$1`) methods `matching` (a SQL condition
/// on `m`, its parameters from `$4` on), keeping a provider event's time `$3` if given; an
/// inactive method is no longer on file.
fn status_change(matching: &str) -> String {
    format!(
        "WITH before AS (SELECT m.id, m.on_file FROM payment_methods m
                         WHERE m.account_id = $1 AND {matching} FOR UPDATE)
         UPDATE payment_methods m SET status = $2, on_file = m.on_file AND $2 = 'ACTIVE',
             last_event_at = GREATEST(m.last_event_at, $3), updated_at = now()
         FROM before WHERE m.account_id = $1 AND m.id = before.id
         RETURNING {}, before.on_file AS was_on_file",
        super::rows::qualified(COLUMNS, "m")
    )
}

/// Marks the method usable or not, as a provider event says; an unusable method is no longer
/// the one on file.
pub async fn set_usable(
    tx: &mut PgConnection,
    account_id: &str,
    provider: Provider,
    reference: &ReferenceMatch,
    usable: bool,
    occurred_at: DateTime<Utc>,
) -> sqlx::Result<Option<StatusChange>> {
    sqlx::query_as(&status_change("m.provider = $4 AND m.reference_id LIKE $5"))
        .bind(account_id)
        .bind(MethodStatus::usable(usable))
        .bind(Some(occurred_at))
        .bind(provider)
        .bind(&reference.0)
        .fetch_optional(tx)
        .await
}

/// Takes the customer's method `id` out of use (`DELETE …/payment-methods/{id}`): `None` when
/// the customer has no such method.
pub async fn deactivate(
    tx: &mut PgConnection,
    account_id: &str,
    customer_id: &str,
    id: &str,
) -> sqlx::Result<Option<StatusChange>> {
    sqlx::query_as(&status_change("m.customer_id = $4 AND m.id = $5"))
        .bind(account_id)
        .bind(MethodStatus::Inactive)
        .bind(None::<DateTime<Utc>>)
        .bind(customer_id)
        .bind(id)
        .fetch_optional(tx)
        .await
}

/// Puts the customer's next usable method on file when it has none: the one on file most
/// recently, else the one changed last. As a customer's card or mandate going away makes the
/// provider fall back to another it holds.
pub async fn promote_next(
    tx: &mut PgConnection,
    account_id: &str,
    customer_id: &str,
) -> sqlx::Result<Option<PaymentMethodRow>> {
    sqlx::query_as(&format!(
        "UPDATE payment_methods SET on_file = true, on_file_since = now(), updated_at = now()
         WHERE account_id = $1 AND id = (
             SELECT id FROM payment_methods
             WHERE account_id = $1 AND customer_id = $2 AND status = 'ACTIVE'
               AND NOT EXISTS (SELECT 1 FROM payment_methods
                               WHERE account_id = $1 AND customer_id = $2 AND on_file)
             ORDER BY on_file_since DESC NULLS LAST, updated_at DESC, id
             LIMIT 1)
         RETURNING {COLUMNS}"
    ))
    .bind(account_id)
    .bind(customer_id)
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
