//! `POST /customers/{id}/merge`: another customer of the account becomes this one. Its invoices
//! (their payments with them), billing schedules, payment methods, payment settings and external
//! ids move here in one transaction, it is deleted, and `customer.merged` tells subscribers. A
//! conflict the caller must settle first (payment settings that differ, a different method on file
//! on each) is refused with 409, each named.

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::customers::Customer;
use super::error::ApiError;
use super::extract::{ApiJson, Caller};
use super::state::ApiState;
use super::validate;
use crate::reconcile::customer_merge::Bounds;
use crate::reconcile::reconciliation_events::{CustomerMergedData, Message, ReconciliationEvent};
use crate::repository::charges;
use crate::repository::customer_merge::{self, Refused};
use crate::repository::outbox::{self, OutboxRow};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MergeCustomer {
    /// The customer to merge into this one; it is deleted.
    pub customer_id: String,
    /// This customer's version as the caller read it: the merge is refused (409) if it changed.
    pub version: Option<i32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MergedCustomer {
    /// This customer after the merge (its version one more).
    pub customer: Customer,
    pub merged_customer_id: String,
    pub invoice_ids: Vec<String>,
    pub billing_schedule_ids: Vec<String>,
    pub payment_method_ids: Vec<String>,
    /// Whether the merged customer's payment settings became this one's (it had none).
    pub settings_moved: bool,
}

/// Merge another customer into this one.
#[utoipa::path(post, path = "/customers/{id}/merge", tag = "customers",
    params(("id" = String, Path, description = "the customer that stays")),
    request_body = MergeCustomer,
    responses((status = 200, body = MergedCustomer), (status = 400), (status = 404), (status = 409)))]
pub async fn merge(
    caller: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<MergeCustomer>,
) -> Result<axum::Json<MergedCustomer>, ApiError> {
    validate::check_id("customerId", &request.customer_id)?;
    if request.customer_id == id {
        return Err(ApiError::validation(
            "customerId",
            "is this customer: name the other customer to merge into it",
        ));
    }
    let account = caller.account_id.as_str();
    let bounds = Bounds {
        list: validate::MAX_LIST,
        metadata_keys: validate::MAX_METADATA_KEYS,
    };
    let mut tx = state.db.begin().await?;
    let merged = match customer_merge::merge(&mut tx, account, &id, &request.customer_id, bounds)
        .await?
    {
        Ok(merged) => merged,
        Err(Refused::NotFound(missing)) => return Err(ApiError::not_found("customer", missing)),
        Err(Refused::Conflicts(conflicts)) => {
            return Err(ApiError::Conflict(format!(
                "customer {} cannot be merged into {id}: {}",
                request.customer_id,
                conflicts.join("; ")
            )));
        }
    };
    // The merge bumped the version once: anything else means another writer came first.
    if let Some(expected) = request.version
        && merged.survivor.version != expected + 1
    {
        return Err(ApiError::Conflict(format!(
            "customer {id} is at version {}, not {expected}: read it again and send that version",
            merged.survivor.version - 1
        )));
    }
    let event = ReconciliationEvent::CustomerMerged(CustomerMergedData {
        customer_id: id.clone(),
        merged_customer_id: request.customer_id.clone(),
        invoice_ids: merged.invoice_ids.clone(),
        billing_schedule_ids: merged.billing_schedule_ids.clone(),
        payment_method_ids: merged.payment_method_ids.clone(),
        settings_moved: merged.settings_moved,
        version: merged.survivor.version,
    });
    // A customer is merged away once: the pair names the change.
    let cause = format!("{account}/customer/{id}/merge/{}", request.customer_id);
    let message = Message::of_api(&event, &cause, merged.survivor.updated_at, account);
    let row = OutboxRow::of(&message).map_err(|error| ApiError::Internal(error.into()))?;
    outbox::insert(&mut tx, account, &[row]).await?;
    outbox::notify_relay(&mut *tx).await?;
    // Its invoices and methods are this customer's now: their charges are decided again.
    charges::decide_for_customer(&mut tx, &state.policy.charging, account, &id).await?;
    tx.commit().await?;
    Ok(axum::Json(MergedCustomer {
        customer: merged.survivor.into(),
        merged_customer_id: request.customer_id,
        invoice_ids: merged.invoice_ids,
        billing_schedule_ids: merged.billing_schedule_ids,
        payment_method_ids: merged.payment_method_ids,
        settings_moved: merged.settings_moved,
    }))
}
