//! Billing schedules: `POST /billing-schedules`, `GET /billing-schedules/{id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{ApiJson, Caller};
use super::state::ApiState;
use super::validate::{self, MAX_TEXT};
use crate::repository::customers;
use crate::repository::invoices::{self as repo, BillingScheduleRow};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateBillingSchedule {
    pub id: String,
    pub customer_id: String,
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BillingSchedule {
    pub id: String,
    pub sequence_account_id: String,
    pub customer_id: String,
    pub name: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<BillingScheduleRow> for BillingSchedule {
    fn from(row: BillingScheduleRow) -> Self {
        Self {
            id: row.id,
            sequence_account_id: row.account_id,
            customer_id: row.customer_id,
            name: row.name,
            created_at: row.created_at,
        }
    }
}

/// Register a billing schedule.
#[utoipa::path(post, path = "/billing-schedules", tag = "billing schedules",
    request_body = CreateBillingSchedule,
    responses((status = 201, body = BillingSchedule), (status = 400), (status = 404), (status = 409)))]
pub async fn create(
    caller: Caller,
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<CreateBillingSchedule>,
) -> Result<(StatusCode, axum::Json<BillingSchedule>), ApiError> {
    validate::check_id("id", &request.id)?;
    validate::check_id("customerId", &request.customer_id)?;
    if let Some(name) = &request.name {
        validate::at_most(name, MAX_TEXT).map_err(|m| ApiError::validation("name", m))?;
    }
    // The customer is held until the schedule is in: a delete or merge of it waits.
    let mut tx = state.db.begin().await?;
    if !customers::hold(&mut tx, &caller.account_id, &request.customer_id).await? {
        return Err(ApiError::not_found("customer", &request.customer_id));
    }
    let row = repo::insert_billing_schedule(
        &mut *tx,
        &request.id,
        &caller.account_id,
        &request.customer_id,
        request.name.as_deref(),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(row.into())))
}

/// Read a billing schedule.
#[utoipa::path(get, path = "/billing-schedules/{id}", tag = "billing schedules",
    params(("id" = String, Path)), responses((status = 200, body = BillingSchedule), (status = 404)))]
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<BillingSchedule>, ApiError> {
    repo::get_billing_schedule(&state.db, &caller.account_id, &id)
        .await?
        .map(|row| axum::Json(row.into()))
        .ok_or_else(|| ApiError::not_found("billing schedule", &id))
}
