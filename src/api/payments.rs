//! Payment attempts: `POST /invoices/{id}/payments` registers one before its webhooks arrive,
//! `GET /payments/{id}` reads it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::error::{ApiError, unique_constraint};
use super::extract::{ApiJson, Caller};
use super::ledger::Money;
use super::validate;
use crate::provider::Provider;
use crate::reconcile::invoice;
use crate::reconcile::money::{Currency, MinorUnits};
use crate::reconcile::payment::PaymentStatus;
use crate::repository::invoices;
use crate::repository::ledger::Of;
use crate::repository::payments::{self as repo, NewPayment, PaymentRow};

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

/// Register a payment attempt before its webhooks arrive.
#[utoipa::path(post, path = "/invoices/{id}/payments", tag = "payments",
    params(("id" = String, Path)), request_body = CreatePayment,
    responses((status = 201, body = Payment), (status = 400), (status = 404), (status = 409)))]
pub async fn create(
    _: Caller,
    State(state): State<ApiState>,
    Path(invoice_id): Path<String>,
    ApiJson(request): ApiJson<CreatePayment>,
) -> Result<(StatusCode, axum::Json<Payment>), ApiError> {
    let id = match request.id {
        Some(id) => {
            validate::check_id("id", &id)?;
            id
        }
        None => crate::repository::new_id("pay"),
    };
    validate::provider_payment_id(request.provider, &request.provider_payment_id)
        .map_err(|message| ApiError::validation("providerPaymentId", message))?;
    let invoice = invoices::get(&state.db, &invoice_id)
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
    invoice::check_attempt(
        request.amount.get(),
        invoice::outstanding(invoice.amount_due, invoice.amount_paid),
        request.allow_overpayment,
    )
    .map_err(|message| ApiError::validation("amount", message))?;
    let row = repo::insert(
        &state.db,
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
        Some("payments_provider_provider_payment_id_key") => ApiError::Conflict(format!(
            "{} payment `{}` is already registered",
            request.provider.stored_name(),
            request.provider_payment_id
        )),
        Some(_) => ApiError::Conflict(format!("payment `{id}` already exists")),
        None => error.into(),
    })?;
    Ok((StatusCode::CREATED, axum::Json(row.into())))
}

/// Read a payment, with the movements of its money, its refunds and disputes.
#[utoipa::path(get, path = "/payments/{id}", tag = "payments",
    params(("id" = String, Path)), responses((status = 200, body = PaymentDetail), (status = 404)))]
pub async fn get(
    _: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<PaymentDetail>, ApiError> {
    let row = repo::get(&state.db, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment", &id))?;
    let money = Money::read(&state.db, Of::Payment(&row.id)).await?;
    let sums = money.sums();
    Ok(axum::Json(PaymentDetail {
        payment: row.into(),
        amount_paid: sums.paid(),
        amount_refunded: sums.refunded(),
        amount_net: sums.paid() - sums.refunded(),
        money,
    }))
}
