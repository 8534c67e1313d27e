//! The ledger, refunds and disputes as the API reads them (the worker reads and writes them with
//! the rest of an invoice's state, in `invoice_state`).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::provider::Provider;
use crate::reconcile::dispute::DisputeStatus;
use crate::reconcile::ledger::MovementKind;
use crate::reconcile::money::Currency;
use crate::reconcile::refund::RefundStatus;

/// A movement of money.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MovementRow {
    pub id: i64,
    pub payment_id: String,
    pub provider: Provider,
    pub provider_object_id: String,
    pub kind: MovementKind,
    pub amount: i64,
    pub currency: Currency,
    pub amount_source: String,
    pub occurred_at: DateTime<Utc>,
    pub event_id: String,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundRow {
    pub id: String,
    pub payment_id: String,
    pub provider: Provider,
    pub provider_refund_id: String,
    pub amount: Option<i64>,
    pub amount_source: Option<String>,
    pub status: RefundStatus,
    pub failure_reason: Option<String>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DisputeRow {
    pub id: String,
    pub payment_id: String,
    pub provider: Provider,
    pub provider_dispute_id: String,
    pub amount: i64,
    pub status: DisputeStatus,
    pub provider_status: Option<String>,
    pub reason: Option<String>,
    pub evidence_due_by: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Whose money: one invoice's or one payment's.
#[derive(Debug, Clone, Copy)]
pub enum Of<'a> {
    Invoice(&'a str),
    Payment(&'a str),
}

impl Of<'_> {
    /// The filter on a table with `account_id` and `payment_id` (aliased `t`), and its parameter
    /// $1 (the account is $2).
    fn filter(self) -> (&'static str, String) {
        match self {
            Self::Invoice(id) => (
                "t.account_id = $2 AND t.payment_id IN
                     (SELECT id FROM payments WHERE account_id = $2 AND invoice_id = $1)",
                id.to_owned(),
            ),
            Self::Payment(id) => ("t.account_id = $2 AND t.payment_id = $1", id.to_owned()),
        }
    }
}

/// The ledger, refunds and disputes of an invoice or a payment of the account, oldest first.
pub async fn read(
    db: &mut sqlx::PgConnection,
    account_id: &str,
    of: Of<'_>,
) -> sqlx::Result<(Vec<MovementRow>, Vec<RefundRow>, Vec<DisputeRow>)> {
    let (filter, id) = of.filter();
    let movements = sqlx::query_as(&format!(
        "SELECT id, payment_id, provider, provider_object_id, kind, amount, currency, amount_source,
             occurred_at, event_id, recorded_at
         FROM money_movements t WHERE {filter} ORDER BY id"
    ))
    .bind(&id)
    .bind(account_id)
    .fetch_all(&mut *db)
    .await?;
    let refunds = sqlx::query_as(&format!(
        "SELECT {REFUND_COLUMNS} FROM refunds t WHERE {filter} ORDER BY created_at, id"
    ))
    .bind(&id)
    .bind(account_id)
    .fetch_all(&mut *db)
    .await?;
    let disputes = sqlx::query_as(&format!(
        "SELECT id, payment_id, provider, provider_dispute_id, amount, status, provider_status,
             reason, evidence_due_by, last_event_at, created_at, updated_at
         FROM disputes t WHERE {filter} ORDER BY created_at, id"
    ))
    .bind(&id)
    .bind(account_id)
    .fetch_all(&mut *db)
    .await?;
    Ok((movements, refunds, disputes))
}

/// A refund the billing system registers before its provider events arrive.
pub struct NewRefund<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    pub payment_id: &'a str,
    pub provider: Provider,
    pub provider_refund_id: &'a str,
    pub amount: Option<i64>,
}

const REFUND_COLUMNS: &str = "id, payment_id, provider, provider_refund_id, amount, amount_source, \
    status, failure_reason, last_event_at, created_at, updated_at";

pub async fn insert_refund(
    tx: &mut sqlx::PgConnection,
    refund: &NewRefund<'_>,
) -> sqlx::Result<RefundRow> {
    sqlx::query_as(&format!(
        "INSERT INTO refunds (id, account_id, payment_id, provider, provider_refund_id, amount,
             amount_source)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6 IS NULL THEN NULL ELSE 'registered_refund' END)
         RETURNING {REFUND_COLUMNS}"
    ))
    .bind(refund.id)
    .bind(refund.account_id)
    .bind(refund.payment_id)
    .bind(refund.provider)
    .bind(refund.provider_refund_id)
    .bind(refund.amount)
    .fetch_one(tx)
    .await
}

pub async fn get_refund(
    db: impl PgExecutor<'_>,
    account_id: &str,
    id: &str,
) -> sqlx::Result<Option<RefundRow>> {
    super::rows::by_id(
        db,
        "refunds",
        REFUND_COLUMNS,
        account_id,
        id,
        super::rows::Read::Plain,
    )
    .await
}
