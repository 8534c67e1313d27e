//! Payment attempts: `POST /invoices/{id}/payments` registers one before its webhooks arrive,
//! `GET /payments/{id}` reads it, `GET /payments/unmatched` lists the events that arrived before
//! their payment was registered and named no invoice.
//!
//! A registration applies those events itself, exactly once, in its own transaction: it locks the
//! invoice, inserts the payment, then runs each waiting event through the worker's apply path
//! (`worker::apply::apply_waiting`), which claims the event's inbox row. Of two registrations of
//! one provider payment the second waits (on the invoice's lock, or on the payment's unique key)
//! and gets 409. A redelivery of a waiting event that the worker handles meanwhile is serialized
//! with the registration on the event's inbox row: whichever claims it first, it applies once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, unique_constraint};
use super::extract::{ApiJson, ApiQuery, Caller};
use super::ledger::Money;
use super::state::ApiState;
use super::validate;
use crate::provider::Provider;
use crate::reconcile::invoice;
use crate::reconcile::money::{Currency, MinorUnits};
use crate::reconcile::payment::PaymentStatus;
use crate::repository::ledger::Of;
use crate::repository::payments::{self as repo, NewPayment, PaymentRow};
use crate::repository::{inbox, invoices};
use crate::worker::apply;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub id: String,
    pub sequence_account_id: String,
    pub invoice_id: String,
    pub provider: Provider,
    pub provider_payment_id: String,
    pub amount: i64,
    #[schema(value_type = String, example = "GBP")]
    pub currency: Currency,
    pub status: PaymentStatus,
    /// Whether the amount counts towards the invoice's amountPaid.
    pub collected: bool,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub last_event_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `AUTHORISED`: the amount is held on the customer's card, collected by a capture; the hold
    /// lapses at this time unless captured (`null` when the provider did not say, or the payment
    /// is not authorised).
    pub hold_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<PaymentRow> for Payment {
    fn from(row: PaymentRow) -> Self {
        Self {
            id: row.id,
            sequence_account_id: row.account_id,
            invoice_id: row.invoice_id,
            provider: row.provider,
            provider_payment_id: row.provider_payment_id,
            amount: row.amount,
            currency: row.currency,
            status: row.status,
            collected: row.collected,
            failure_code: row.failure_code,
            failure_message: row.failure_message,
            last_event_at: row.last_event_at,
            hold_expires_at: row
                .hold_expires_at
                .filter(|_| row.status == PaymentStatus::Authorised),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A payment with its money: what it collected, refunded and has in dispute, derived from its
/// movements, and those movements, refunds and disputes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentDetail {
    #[serde(flatten)]
    pub payment: Payment,
    /// Collected, less what disputes and chargebacks hold or took.
    pub amount_paid: i64,
    pub amount_refunded: i64,
    /// Paid less refunded.
    pub amount_net: i64,
    #[serde(flatten)]
    pub money: Money,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatePayment {
    /// Optional; settle makes one (`pay_…`) when left out.
    pub id: Option<String>,
    pub provider: Provider,
    /// Stripe PaymentIntent id (`pi_…`) or GoCardless payment id (`PM…`).
    pub provider_payment_id: String,
    #[schema(value_type = i64)]
    pub amount: MinorUnits,
    #[schema(value_type = String, example = "GBP")]
    pub currency: Currency,
    /// An attempt for more than the invoice still owes is refused unless this is true.
    #[serde(default)]
    pub allow_overpayment: bool,
}

/// Register a payment attempt, usually before its webhooks arrive. Events of it that came first
/// and named no invoice (`GET /payments/unmatched`) are applied in the same transaction: the
/// answer shows the payment after them.
#[utoipa::path(post, path = "/invoices/{id}/payments", tag = "payments",
    params(("id" = String, Path)), request_body = CreatePayment,
    responses((status = 201, body = Payment), (status = 400), (status = 404), (status = 409)))]
pub async fn create(
    caller: Caller,
    State(state): State<ApiState>,
    Path(invoice_id): Path<String>,
    ApiJson(request): ApiJson<CreatePayment>,
) -> Result<(StatusCode, axum::Json<Payment>), ApiError> {
    let id = match request.id {
        Some(id) if id == UNMATCHED_PATH => {
            return Err(ApiError::validation(
                "id",
                format!(
                    "`{UNMATCHED_PATH}` is reserved: `GET /payments/{UNMATCHED_PATH}` lists unmatched events"
                ),
            ));
        }
        Some(id) => {
            validate::check_id("id", &id)?;
            id
        }
        None => crate::repository::new_id("pay"),
    };
    validate::provider_payment_id(request.provider, &request.provider_payment_id)
        .map_err(|message| ApiError::validation("providerPaymentId", message))?;
    let mut tx = state.db.begin().await?;
    // The invoice's lock first, as the worker takes it before it writes a payment: a worker
    // applying another event of this invoice meanwhile finishes first, and nothing waits in the
    // opposite order (the payment's unique key, then the invoice).
    let invoice = invoices::lock(&mut tx, &caller.account_id, &invoice_id)
        .await?
        .ok_or_else(|| ApiError::not_found("invoice", &invoice_id))?;
    if invoice.currency != request.currency {
        return Err(ApiError::validation(
            "currency",
            format!(
                "{} differs from the invoice's currency {}",
                request.currency, invoice.currency
            ),
        ));
    }
    // Inserted before the amount is checked: a payment registered already is a conflict, even
    // when its own events have since paid the invoice (a rolled-back insert costs nothing).
    repo::insert(
        &mut *tx,
        &NewPayment {
            id: &id,
            account_id: &invoice.account_id,
            invoice_id: &invoice.id,
            provider: request.provider,
            provider_payment_id: &request.provider_payment_id,
            amount: request.amount,
            currency: request.currency,
        },
    )
    .await
    .map_err(|error| match unique_constraint(&error) {
        Some("payments_account_provider_payment_key") => ApiError::Conflict(format!(
            "{} payment `{}` is already registered",
            request.provider.stored_name(),
            request.provider_payment_id
        )),
        Some(_) => ApiError::Conflict(format!("payment `{id}` already exists")),
        None => error.into(),
    })?;
    invoice::check_attempt(
        request.amount.get(),
        invoice::outstanding(invoice.amount_due, invoice.amount_paid),
        request.allow_overpayment,
    )
    .map_err(|message| ApiError::validation("amount", message))?;
    let policy = apply::policy_for(&mut tx, &state.policy, &invoice.account_id).await?;
    apply::apply_waiting(
        &mut tx,
        &policy,
        request.provider,
        &request.provider_payment_id,
    )
    .await?;
    let row = repo::get(&mut *tx, &invoice.account_id, &id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("payment `{id}` vanished in its own transaction"))?;
    tx.commit().await?;
    tracing::info!(payment = %id, invoice = %invoice.id, caller = %caller.key_id, "payment registered");
    Ok((StatusCode::CREATED, axum::Json(row.into())))
}

/// The path segment of `GET /payments/unmatched`, which no payment id may take (the route wins
/// over `GET /payments/{id}`).
const UNMATCHED_PATH: &str = "unmatched";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnmatchedQuery {
    /// How many, 1 to 200 (default 50).
    pub limit: Option<i64>,
}

/// A provider event that named no invoice and arrived before its payment was registered: it waits
/// for that registration, which applies it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnmatchedEvent {
    pub provider: Provider,
    pub event_id: String,
    pub event_type: String,
    /// The payment it waits for: `POST /invoices/{id}/payments` with this id applies the event.
    pub provider_payment_id: String,
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// When it happened, by the provider's clock.
    pub occurred_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<inbox::UnmatchedEvent> for UnmatchedEvent {
    fn from(row: inbox::UnmatchedEvent) -> Self {
        Self {
            provider: row.provider,
            event_id: row.event_id,
            event_type: row.event_type,
            provider_payment_id: row.provider_payment_id,
            received_at: row.received_at,
            occurred_at: row.occurred_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UnmatchedEvents {
    /// Newest first.
    pub data: Vec<UnmatchedEvent>,
}

/// List the events waiting for their payment's registration, newest first.
#[utoipa::path(get, path = "/payments/unmatched", tag = "payments", params(UnmatchedQuery),
    responses((status = 200, body = UnmatchedEvents), (status = 400)))]
pub async fn unmatched(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<UnmatchedQuery>,
) -> Result<axum::Json<UnmatchedEvents>, ApiError> {
    let limit = validate::page_limit(query.limit)?;
    let rows =
        inbox::list_unmatched(state.reads.pool(), Some(&caller.account_id), None, limit).await?;
    Ok(axum::Json(UnmatchedEvents {
        data: rows.into_iter().map(UnmatchedEvent::from).collect(),
    }))
}

/// Read a payment, with the movements of its money, its refunds and disputes.
#[utoipa::path(get, path = "/payments/{id}", tag = "payments",
    params(("id" = String, Path)), responses((status = 200, body = PaymentDetail), (status = 404)))]
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<PaymentDetail>, ApiError> {
    let row = repo::get(&state.db, &caller.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment", &id))?;
    let money = Money::read(&state.db, &row.account_id, Of::Payment(&row.id)).await?;
    let sums = money.sums();
    Ok(axum::Json(PaymentDetail {
        payment: row.into(),
        amount_paid: sums.paid(),
        amount_refunded: sums.refunded(),
        amount_net: sums.paid() - sums.refunded(),
        money,
    }))
}
