//! The money of an invoice or a payment as the API shows it: the ledger's movements, the refunds
//! and the disputes (`GET /invoices/{id}`, `GET /payments/{id}`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use crate::provider::Provider;
use crate::reconcile::dispute::DisputeStatus;
use crate::reconcile::ledger::{MovementKind, Sums};
use crate::reconcile::money::Currency;
use crate::reconcile::refund::RefundStatus;
use crate::repository::ledger::{self as repo, DisputeRow, MovementRow, Of, RefundRow};

/// One movement of money: what moved, of which provider object, and the event that recorded it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Movement {
    pub id: i64,
    pub payment_id: String,
    pub provider: Provider,
    /// The provider's money object: the payment (`pi_…`, `PM…`), refund (`re_…`, `RF…`) or
    /// dispute (`dp_…`).
    pub provider_object_id: String,
    pub kind: MovementKind,
    pub amount: i64,
    #[schema(value_type = String, example = "GBP")]
    pub currency: Currency,
    /// `event`, `registered_payment`, `invoice_outstanding`, `registered_refund`,
    /// `payment_remainder` or `migrated`.
    pub amount_source: String,
    /// Provider time of the event that recorded it.
    pub occurred_at: DateTime<Utc>,
    pub event_id: String,
}

impl From<MovementRow> for Movement {
    fn from(row: MovementRow) -> Self {
        Self {
            id: row.id,
            payment_id: row.payment_id,
            provider: row.provider,
            provider_object_id: row.provider_object_id,
            kind: row.kind,
            amount: row.amount,
            currency: row.currency,
            amount_source: row.amount_source,
            occurred_at: row.occurred_at,
            event_id: row.event_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Refund {
    pub id: String,
    pub payment_id: String,
    pub provider: Provider,
    pub provider_refund_id: String,
    /// `null`: registered without one; the payment's refundable remainder when it moves.
    pub amount: Option<i64>,
    pub amount_source: Option<String>,
    pub status: RefundStatus,
    pub failure_reason: Option<String>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<RefundRow> for Refund {
    fn from(row: RefundRow) -> Self {
        Self {
            id: row.id,
            payment_id: row.payment_id,
            provider: row.provider,
            provider_refund_id: row.provider_refund_id,
            amount: row.amount,
            amount_source: row.amount_source,
            status: row.status,
            failure_reason: row.failure_reason,
            last_event_at: row.last_event_at,
            created_at: row.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dispute {
    pub id: String,
    pub payment_id: String,
    pub provider: Provider,
    pub provider_dispute_id: String,
    /// The disputed amount (the dispute's own).
    pub amount: i64,
    pub status: DisputeStatus,
    /// The provider's own status (`needs_response`, …).
    pub provider_status: Option<String>,
    pub reason: Option<String>,
    pub evidence_due_by: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<DisputeRow> for Dispute {
    fn from(row: DisputeRow) -> Self {
        Self {
            id: row.id,
            payment_id: row.payment_id,
            provider: row.provider,
            provider_dispute_id: row.provider_dispute_id,
            amount: row.amount,
            status: row.status,
            provider_status: row.provider_status,
            reason: row.reason,
            evidence_due_by: row.evidence_due_by,
            last_event_at: row.last_event_at,
            created_at: row.created_at,
        }
    }
}

/// The movements, refunds and disputes of an invoice or a payment.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Money {
    pub movements: Vec<Movement>,
    pub refunds: Vec<Refund>,
    pub disputes: Vec<Dispute>,
}

impl Money {
    /// The money of the account's invoice or payment.
    pub async fn read(db: &sqlx::PgPool, account_id: &str, of: Of<'_>) -> Result<Self, ApiError> {
        Self::read_in(&mut *db.acquire().await?, account_id, of).await
    }

    /// As `read`, in the caller's transaction.
    pub async fn read_in(
        db: &mut sqlx::PgConnection,
        account_id: &str,
        of: Of<'_>,
    ) -> Result<Self, ApiError> {
        let (movements, refunds, disputes) = repo::read(db, account_id, of).await?;
        Ok(Self {
            movements: movements.into_iter().map(Movement::from).collect(),
            refunds: refunds.into_iter().map(Refund::from).collect(),
            disputes: disputes.into_iter().map(Dispute::from).collect(),
        })
    }

    /// The sums of these movements, for a payment's derived figures.
    pub fn sums(&self) -> Sums {
        Sums::of(self.movements.iter().map(|m| (m.kind, m.amount)))
    }
}
