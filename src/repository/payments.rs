use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentRow {
    pub id: String,
    pub account_id: String,
    pub invoice_id: String,
    pub provider: String,
    pub provider_payment_id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub collected: bool,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub effective_provider: Option<String>,
    pub effective_auto_charge: Option<bool>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub struct NewPayment<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    pub invoice_id: &'a str,
    pub provider: &'a str,
    pub provider_payment_id: &'a str,
    pub amount: i64,
    pub currency: &'a str,
}

const COLUMNS: &str = "id, account_id, invoice_id, provider, provider_payment_id, amount, currency, \
    status, collected, failure_code, failure_message, last_event_at, effective_provider, \
    effective_auto_charge, created_at, updated_at";

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
    .bind(payment.amount)
    .bind(payment.currency)
    .fetch_one(db)
    .await
}

pub async fn get(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<Option<PaymentRow>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM payments WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn for_invoice(
    db: impl PgExecutor<'_>,
    invoice_id: &str,
) -> sqlx::Result<Vec<PaymentRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM payments WHERE invoice_id = $1 ORDER BY created_at, id"
    ))
    .bind(invoice_id)
    .fetch_all(db)
    .await
}

pub async fn find_by_provider_id(
    db: impl PgExecutor<'_>,
    provider: &str,
    provider_payment_id: &str,
) -> sqlx::Result<Option<PaymentRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM payments WHERE provider = $1 AND provider_payment_id = $2"
    ))
    .bind(provider)
    .bind(provider_payment_id)
    .fetch_optional(db)
    .await
}
