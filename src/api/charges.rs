//! An invoice's automatic charges as `GET /invoices/{id}` shows them: each attempt, and what
//! comes next (`docs/charging.md`). `settle charges` prints the same views.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::provider::Provider;
use crate::reconcile::charging::{self, NextAttempt};
use crate::reconcile::money::Currency;
use crate::repository::charges::{self, ChargeRow, Rules};

/// One automatic attempt.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChargeView {
    /// The invoice's attempt number (1 for the first).
    pub attempt: i32,
    /// `SCHEDULED`, `SENDING`, `SENT`, `SUCCEEDED`, `FAILED`, `NEEDS_AUTHENTICATION`,
    /// `PROVIDER_RETRIES`, `REFUSED` (the provider refused the request: dead-lettered),
    /// `SKIPPED` (no longer to be sent when it came due), `CANCELLED` (by an operator).
    #[schema(value_type = String, example = "FAILED")]
    pub state: charging::ChargeState,
    pub due_at: DateTime<Utc>,
    /// Fixed when it is first sent.
    pub provider: Option<Provider>,
    pub amount: Option<i64>,
    #[schema(value_type = Option<String>, example = "GBP")]
    pub currency: Option<Currency>,
    /// The Stripe PaymentIntent or GoCardless payment it created.
    pub provider_payment_id: Option<String>,
    /// The provider's decline code, why it was skipped, refused or is sent again.
    pub reason: Option<String>,
    /// Sends so far (more than one: the provider was down, or a sender died, and the same
    /// request with the same idempotency key went again).
    pub sends: i32,
    pub idempotency_key: String,
    pub sent_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

impl From<ChargeRow> for ChargeView {
    fn from(row: ChargeRow) -> Self {
        Self {
            attempt: row.number,
            state: row.state,
            due_at: row.due_at,
            provider: row.provider,
            amount: row.amount,
            currency: row.currency,
            provider_payment_id: row.provider_payment_id,
            reason: row.reason,
            sends: row.sends,
            idempotency_key: row.idempotency_key,
            sent_at: row.sent_at,
            ended_at: row.ended_at,
        }
    }
}

/// What comes next: an attempt and when (`dueAt`: now or later), or why none follows.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NextChargeView {
    pub attempt: Option<u32>,
    pub due_at: Option<DateTime<Utc>>,
    /// Why no attempt follows: `nothing_owed`, `auto_charge_off`, `no_provider`,
    /// `no_usable_method`, `needs_authentication`, `provider_retries`, `in_flight`,
    /// `schedule_exhausted`, `refused`, `cancelled`.
    pub none_because: Option<&'static str>,
}

impl NextChargeView {
    pub fn of(next: NextAttempt, now: DateTime<Utc>) -> Self {
        let (attempt, due_at, none_because) = match next {
            NextAttempt::Now { number } => (Some(number), Some(now), None),
            NextAttempt::At { number, at } => (Some(number), Some(at), None),
            NextAttempt::None(why) => (None, None, Some(why.as_str())),
        };
        Self {
            attempt,
            due_at,
            none_because,
        }
    }
}

/// The invoice's attempts and what comes next, as of the rules' clock; `None` when the account
/// has no such invoice.
pub async fn of_invoice(
    db: &PgPool,
    rules: &Rules,
    account_id: &str,
    invoice_id: &str,
) -> sqlx::Result<Option<(Vec<ChargeView>, NextChargeView)>> {
    let mut connection = db.acquire().await?;
    let Some(inputs) =
        charges::inputs(&mut connection, rules, account_id, invoice_id, None).await?
    else {
        return Ok(None);
    };
    let now = rules.clock.now();
    let next = charging::next_attempt(&inputs.facts, &inputs.schedule, now);
    let attempts = inputs.attempts.into_iter().map(ChargeView::from).collect();
    Ok(Some((attempts, NextChargeView::of(next, now))))
}
