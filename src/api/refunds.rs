//! Refunds the billing system registers: `POST /payments/{id}/refunds`. GoCardless refund events
//! name only the refund (`links.refund`) and carry no amount, so settle learns from the
//! registration which payment a refund belongs to and, when given, its amount (else the payment's
//! refundable remainder counts when the refund moves). Refund events that arrived first wait as
//! unmatched, and the registration applies them, once, in its own transaction.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::{ApiError, unique_constraint};
use super::extract::{ApiJson, Caller};
use super::ledger::{Money, Refund};
use super::state::ApiState;
use super::validate;
use crate::reconcile::money::MinorUnits;
use crate::repository::ledger::{self as repo, NewRefund, Of};
use crate::repository::{invoices, payments};
use crate::worker::apply;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateRefund {
    /// Optional; settle makes one (`ref_…`) when left out.
    pub id: Option<String>,
    /// The provider's refund id (GoCardless `RF…`, Stripe `re_…`).
    pub provider_refund_id: String,
    /// Minor units. Left out: the payment's refundable remainder when the refund moves.
    #[schema(value_type = Option<i64>)]
    pub amount: Option<MinorUnits>,
}

/// Register a refund of a payment before its provider events arrive (GoCardless's name no
/// payment and no amount).
#[utoipa::path(post, path = "/payments/{id}/refunds", tag = "payments",
    params(("id" = String, Path)), request_body = CreateRefund,
    responses((status = 201, body = Refund), (status = 400), (status = 404), (status = 409)))]
pub async fn create(
    caller: Caller,
    State(state): State<ApiState>,
    Path(payment_id): Path<String>,
    ApiJson(request): ApiJson<CreateRefund>,
) -> Result<(StatusCode, axum::Json<Refund>), ApiError> {
    let id = match request.id {
        Some(id) => {
            validate::check_id("id", &id)?;
            id
        }
        None => crate::repository::new_id("ref"),
    };
    validate::check_id("providerRefundId", &request.provider_refund_id)?;
    let payment = payments::get(&state.db, &caller.account_id, &payment_id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment", &payment_id))?;
    let mut tx = state.db.begin().await?;
    // The invoice's lock first, as the worker takes it before it writes a refund.
    invoices::lock(&mut tx, &payment.account_id, &payment.invoice_id).await?;
    if let Some(amount) = request.amount {
        let sums = Money::read_in(&mut tx, &payment.account_id, Of::Payment(&payment.id))
            .await?
            .sums();
        if amount.get() > sums.refundable() {
            return Err(ApiError::validation(
                "amount",
                format!(
                    "{} is more than the {} left to refund of payment {}",
                    amount.get(),
                    sums.refundable(),
                    payment.id
                ),
            ));
        }
    }
    let row = repo::insert_refund(
        &mut tx,
        &NewRefund {
            id: &id,
            account_id: &payment.account_id,
            payment_id: &payment.id,
            provider: payment.provider,
            provider_refund_id: &request.provider_refund_id,
            amount: request.amount.map(MinorUnits::get),
        },
    )
    .await
    .map_err(|error| match unique_constraint(&error) {
        Some("refunds_account_provider_refund_key") => ApiError::Conflict(format!(
            "{} refund `{}` is already registered",
            payment.provider.stored_name(),
            request.provider_refund_id
        )),
        Some(_) => ApiError::Conflict(format!("refund `{id}` already exists")),
        None => error.into(),
    })?;
    let policy = apply::policy_for(&mut tx, &state.policy, &payment.account_id).await?;
    apply::apply_waiting(
        &mut tx,
        &policy,
        payment.provider,
        &request.provider_refund_id,
    )
    .await?;
    let refund = repo::get_refund(&mut *tx, &payment.account_id, &row.id)
        .await?
        .unwrap_or(row);
    tx.commit().await?;
    tracing::info!(refund = %refund.id, payment = %payment.id, caller = %caller.key_id, "refund registered");
    Ok((StatusCode::CREATED, axum::Json(refund.into())))
}
