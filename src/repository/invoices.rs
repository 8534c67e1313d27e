//! Invoices and billing schedules, as the billing system registers them. Every function takes the
//! account and reads or writes only its rows.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgExecutor};

use crate::reconcile::invoice::{InvoiceFigures, InvoiceStatus};
use crate::reconcile::ledger::RefundState;
use crate::reconcile::money::{Currency, MinorUnits};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvoiceRow {
    pub id: String,
    pub account_id: String,
    pub customer_id: String,
    pub billing_schedule_id: Option<String>,
    pub number: String,
    pub currency: Currency,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_refunded: i64,
    pub amount_in_dispute: i64,
    pub refund_state: RefundState,
    pub status: InvoiceStatus,
    pub due_date: Option<NaiveDate>,
    pub payment_link: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub struct NewInvoice<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    pub customer_id: &'a str,
    pub billing_schedule_id: Option<&'a str>,
    pub number: &'a str,
    pub currency: Currency,
    pub amount_due: MinorUnits,
    pub due_date: Option<NaiveDate>,
    pub payment_link: Option<&'a str>,
}

const COLUMNS: &str = "id, account_id, customer_id, billing_schedule_id, number, currency, \
    amount_due, amount_paid, amount_refunded, amount_in_dispute, refund_state, status, due_date, \
    payment_link, created_at, updated_at";

impl InvoiceRow {
    /// The figures the worker last derived from the invoice's ledger.
    pub fn figures(&self) -> InvoiceFigures {
        InvoiceFigures {
            amount_paid: self.amount_paid,
            amount_refunded: self.amount_refunded,
            amount_in_dispute: self.amount_in_dispute,
            refund_state: self.refund_state,
            status: self.status,
            overpaid: self.amount_paid > self.amount_due,
        }
    }
}

pub async fn insert(db: impl PgExecutor<'_>, invoice: &NewInvoice<'_>) -> sqlx::Result<InvoiceRow> {
    sqlx::query_as(&format!(
        "INSERT INTO invoices (id, account_id, customer_id, billing_schedule_id, number, currency,
             amount_due, due_date, payment_link)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         RETURNING {COLUMNS}"
    ))
    .bind(invoice.id)
    .bind(invoice.account_id)
    .bind(invoice.customer_id)
    .bind(invoice.billing_schedule_id)
    .bind(invoice.number)
    .bind(invoice.currency)
    .bind(invoice.amount_due.get())
    .bind(invoice.due_date)
    .bind(invoice.payment_link)
    .fetch_one(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    account_id: &str,
    id: &str,
) -> sqlx::Result<Option<InvoiceRow>> {
    super::rows::by_id(
        db,
        "invoices",
        COLUMNS,
        account_id,
        id,
        super::rows::Read::Plain,
    )
    .await
}

/// The invoice, locked for the rest of the caller's transaction: the lock every writer of an
/// invoice's payments and totals takes first (`invoice_state::record_and_lock`), so they apply
/// one at a time and never wait for each other in opposite orders.
pub async fn lock(
    tx: &mut PgConnection,
    account_id: &str,
    id: &str,
) -> sqlx::Result<Option<InvoiceRow>> {
    super::rows::by_id(
        tx,
        "invoices",
        COLUMNS,
        account_id,
        id,
        super::rows::Read::ForUpdate,
    )
    .await
}

/// A page of the account's invoices in id order, after `after` (the cursor), optionally filtered.
pub async fn list(
    db: impl PgExecutor<'_>,
    account_id: &str,
    customer_id: Option<&str>,
    status: Option<InvoiceStatus>,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<InvoiceRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices
         WHERE account_id = $5
           AND ($1::text IS NULL OR customer_id = $1)
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR id > $3)
         ORDER BY id
         LIMIT $4"
    ))
    .bind(customer_id)
    .bind(status)
    .bind(after)
    .bind(limit)
    .bind(account_id)
    .fetch_all(db)
    .await
}

pub async fn insert_billing_schedule(
    db: impl PgExecutor<'_>,
    id: &str,
    account_id: &str,
    customer_id: &str,
    name: Option<&str>,
) -> sqlx::Result<BillingScheduleRow> {
    sqlx::query_as!(
        BillingScheduleRow,
        "INSERT INTO billing_schedules (id, account_id, customer_id, name) VALUES ($1, $2, $3, $4)
         RETURNING id, account_id, customer_id, name, created_at",
        id,
        account_id,
        customer_id,
        name,
    )
    .fetch_one(db)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BillingScheduleRow {
    pub id: String,
    pub account_id: String,
    pub customer_id: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn get_billing_schedule(
    db: impl PgExecutor<'_>,
    account_id: &str,
    id: &str,
) -> sqlx::Result<Option<BillingScheduleRow>> {
    let columns = "id, account_id, customer_id, name, created_at";
    super::rows::by_id(
        db,
        "billing_schedules",
        columns,
        account_id,
        id,
        super::rows::Read::Plain,
    )
    .await
}

/// What linking a provider's invoice to one of settle's did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Linked,
    /// Linked before (to this invoice or, logged by the caller, another).
    AlreadyLinked,
    /// Settle's invoice is not registered (yet).
    NoInvoice,
}

/// Links the provider's invoice `provider_invoice_id` to settle's `invoice_id`, both of the
/// account (the first link wins).
pub async fn link_provider_invoice(
    tx: &mut PgConnection,
    account_id: &str,
    provider: crate::provider::Provider,
    provider_invoice_id: &str,
    invoice_id: &str,
    event_id: &str,
) -> sqlx::Result<Link> {
    let found = sqlx::query!(
        r#"WITH invoice AS (SELECT 1 FROM invoices WHERE account_id = $5 AND id = $3),
         linked AS (
             INSERT INTO provider_invoice_links (account_id, provider, provider_invoice_id,
                 invoice_id, event_id)
             SELECT $5, $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM invoice)
             ON CONFLICT (account_id, provider, provider_invoice_id) DO NOTHING
             RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM invoice) AS "invoice_exists!",
                EXISTS (SELECT 1 FROM linked) AS "linked!""#,
        provider.stored_name(),
        provider_invoice_id,
        invoice_id,
        event_id,
        account_id,
    )
    .fetch_one(tx)
    .await?;
    Ok(match (found.invoice_exists, found.linked) {
        (_, true) => Link::Linked,
        (false, false) => Link::NoInvoice,
        (true, false) => Link::AlreadyLinked,
    })
}

/// The invoices of id `id` among `accounts` (an id is unique within an account only).
pub async fn find_in(
    db: impl PgExecutor<'_>,
    accounts: &[String],
    id: &str,
) -> sqlx::Result<Vec<InvoiceRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE account_id = ANY($1) AND id = $2 ORDER BY account_id"
    ))
    .bind(accounts)
    .bind(id)
    .fetch_all(db)
    .await
}

/// How many invoices, across accounts, were paid more than they owe.
pub async fn overpaid_count(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM invoices WHERE amount_paid > amount_due")
        .fetch_one(db)
        .await
}
