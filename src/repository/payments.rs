//! Payment attempts: registered by the billing system, moved by the worker. Read within an
//! account: a payment id is unique there, not across accounts.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::provider::{PaymentProvider, Provider};
use crate::reconcile::money::{Currency, MinorUnits};
use crate::reconcile::payment::PaymentStatus;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentRow {
    pub id: String,
    pub account_id: String,
    pub invoice_id: String,
    pub provider: Provider,
    pub provider_payment_id: String,
    pub amount: i64,
    pub currency: Currency,
    pub status: PaymentStatus,
    pub collected: bool,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub hold_expires_at: Option<DateTime<Utc>>,
    pub effective_provider: Option<PaymentProvider>,
    pub effective_auto_charge: Option<bool>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub struct NewPayment<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    pub invoice_id: &'a str,
    pub provider: Provider,
    pub provider_payment_id: &'a str,
    pub amount: MinorUnits,
    pub currency: Currency,
}

const COLUMNS: &str = "id, account_id, invoice_id, provider, provider_payment_id, amount, currency, \
    status, collected, failure_code, failure_message, last_event_at, hold_expires_at, \
    effective_provider, effective_auto_charge, created_at, updated_at";

pub async fn insert(db: impl PgExecutor<'_>, payment: &NewPayment<'_>) -> sqlx::Result<PaymentRow> {
    sqlx::query_as(&format!(
        "INSERT INTO payments (id, account_id, invoice_id, provider, provider_payment_id, amount, currency)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING {COLUMNS}"
    ))
    .bind(payment.id)
    .bind(payment.account_id)
    .bind(payment.invoice_id)
    .bind(payment.provider)
    .bind(payment.provider_payment_id)
    .bind(payment.amount.get())
    .bind(payment.currency)
    .fetch_one(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    account_id: &str,
    id: &str,
) -> sqlx::Result<Option<PaymentRow>> {
    super::rows::by_id(
        db,
        "payments",
        COLUMNS,
        account_id,
        id,
        super::rows::Read::Plain,
    )
    .await
}

pub async fn for_invoice(
    db: impl PgExecutor<'_>,
    account_id: &str,
    invoice_id: &str,
) -> sqlx::Result<Vec<PaymentRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM payments WHERE account_id = $1 AND invoice_id = $2
         ORDER BY created_at, id"
    ))
    .bind(account_id)
    .bind(invoice_id)
    .fetch_all(db)
    .await
}

/// The Stripe PaymentIntents registered against the account's unpaid invoices that no event has
/// settled yet (registered or pending): what `backfill --verify-open-invoices` asks Stripe about.
pub async fn unsettled_on_open_invoices(
    db: impl PgExecutor<'_>,
    account_id: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "SELECT p.provider_payment_id FROM payments p
         JOIN invoices i ON i.account_id = p.account_id AND i.id = p.invoice_id
         WHERE p.account_id = $1 AND p.provider = 'STRIPE'
           AND p.status IN ('REGISTERED', 'PENDING', 'AUTHORISED') AND i.status <> 'PAID'
         ORDER BY p.created_at, p.id",
        account_id,
    )
    .fetch_all(db)
    .await
}
