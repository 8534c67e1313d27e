//! Billing schedules, invoices and payment attempts: what the billing system registers before the
//! providers' webhooks arrive.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, Caller};
use super::validate;
use crate::reconcile::methods::MethodProvider;
use crate::reconcile::money::{Currency, MinorUnits};
use crate::reconcile::settings::EffectiveSettings;
use crate::repository::invoices::{self as repo, BillingScheduleRow, InvoiceRow, NewInvoice};
use crate::repository::payments::{self as payments_repo, NewPayment, PaymentRow};
use crate::repository::{customers, settings};
use crate::startup::AppState;

const MAX_PAGE: i64 = 200;
const DEFAULT_PAGE: i64 = 50;

fn check_id(field: &str, id: &str) -> Result<(), ApiError> {
    validate::id(id).map_err(|m| ApiError::validation(field, m))
}

// ---- billing schedules ----

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
pub async fn create_billing_schedule(
    _: Caller,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateBillingSchedule>,
) -> Result<(StatusCode, axum::Json<BillingSchedule>), ApiError> {
    check_id("id", &request.id)?;
    if !customers::exists(&state.db, &request.customer_id).await? {
        return Err(ApiError::not_found("customer", &request.customer_id));
    }
    let row = repo::insert_billing_schedule(
        &state.db,
        &request.id,
        &state.settings.account.id,
        &request.customer_id,
        request.name.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(row.into())))
}

/// Read a billing schedule.
#[utoipa::path(get, path = "/billing-schedules/{id}", tag = "billing schedules",
    params(("id" = String, Path)), responses((status = 200, body = BillingSchedule), (status = 404)))]
pub async fn get_billing_schedule(
    _: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<BillingSchedule>, ApiError> {
    repo::get_billing_schedule(&state.db, &id)
        .await?
        .map(|row| axum::Json(row.into()))
        .ok_or_else(|| ApiError::not_found("billing schedule", &id))
}

// ---- invoices ----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateInvoice {
    pub id: String,
    pub customer_id: String,
    pub billing_schedule_id: Option<String>,
    pub number: String,
    /// ISO 4217, upper case.
    #[schema(value_type = String, example = "GBP")]
    pub currency: Currency,
    /// Minor units (pence, cents), ≥ 0.
    #[schema(value_type = i64, example = 12500)]
    pub amount_due: MinorUnits,
    pub due_date: Option<NaiveDate>,
    pub payment_link: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub id: String,
    pub sequence_account_id: String,
    pub invoice_id: String,
    pub provider: String,
    pub provider_payment_id: String,
    pub amount: i64,
    pub currency: String,
    /// REGISTERED, PENDING, SUCCEEDED, FAILED, CANCELED or REVERSED.
    pub status: String,
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

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    pub id: String,
    pub sequence_account_id: String,
    pub customer_id: String,
    pub billing_schedule_id: Option<String>,
    pub number: String,
    pub currency: String,
    pub amount_due: i64,
    pub amount_paid: i64,
    /// OPEN, PARTIALLY_PAID, PAID or PAYMENT_FAILED.
    pub status: String,
    pub due_date: Option<NaiveDate>,
    pub payment_link: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<InvoiceRow> for Invoice {
    fn from(row: InvoiceRow) -> Self {
        Self {
            id: row.id,
            sequence_account_id: row.account_id,
            customer_id: row.customer_id,
            billing_schedule_id: row.billing_schedule_id,
            number: row.number,
            currency: row.currency,
            amount_due: row.amount_due,
            amount_paid: row.amount_paid,
            status: row.status,
            due_date: row.due_date,
            payment_link: row.payment_link,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// An invoice with its payments and effective payment settings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceDetail {
    #[serde(flatten)]
    pub invoice: Invoice,
    pub payments: Vec<Payment>,
    pub payment_settings: EffectiveSettings,
}

/// Register an invoice when it is issued.
#[utoipa::path(post, path = "/invoices", tag = "invoices", request_body = CreateInvoice,
    responses((status = 201, body = InvoiceDetail), (status = 400), (status = 404), (status = 409)))]
pub async fn create_invoice(
    caller: Caller,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateInvoice>,
) -> Result<(StatusCode, axum::Json<InvoiceDetail>), ApiError> {
    check_id("id", &request.id)?;
    validate::non_empty(&request.number).map_err(|m| ApiError::validation("number", m))?;
    if !customers::exists(&state.db, &request.customer_id).await? {
        return Err(ApiError::not_found("customer", &request.customer_id));
    }
    if let Some(schedule_id) = &request.billing_schedule_id {
        let schedule = repo::get_billing_schedule(&state.db, schedule_id)
            .await?
            .ok_or_else(|| ApiError::not_found("billing schedule", schedule_id))?;
        if schedule.customer_id != request.customer_id {
            return Err(ApiError::validation(
                "billingScheduleId",
                format!("billing schedule `{schedule_id}` belongs to another customer"),
            ));
        }
    }
    let row = repo::insert(
        &state.db,
        &NewInvoice {
            id: &request.id,
            account_id: &state.settings.account.id,
            customer_id: &request.customer_id,
            billing_schedule_id: request.billing_schedule_id.as_deref(),
            number: &request.number,
            currency: request.currency.as_str(),
            amount_due: request.amount_due.get(),
            due_date: request.due_date,
            payment_link: request.payment_link.as_deref(),
        },
    )
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(db) if db.constraint() == Some("invoices_account_id_number_key") => {
            ApiError::Conflict(format!(
                "invoice number `{}` is already used",
                request.number
            ))
        }
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ApiError::Conflict(format!("invoice `{}` already exists", request.id))
        }
        _ => error.into(),
    })?;
    let id = row.id.clone();
    let detail = detail(&state, row).await?;
    tracing::info!(invoice = %id, caller = %caller.key_id, "invoice registered");
    Ok((StatusCode::CREATED, axum::Json(detail)))
}

async fn detail(state: &AppState, row: InvoiceRow) -> Result<InvoiceDetail, ApiError> {
    let payments = payments_repo::for_invoice(&state.db, &row.id).await?;
    let payment_settings =
        settings::effective_for_invoice(&state.db, &row.id, state.settings.account.defaults())
            .await?
            .ok_or_else(|| ApiError::not_found("invoice", &row.id))?;
    Ok(InvoiceDetail {
        invoice: row.into(),
        payments: payments.into_iter().map(Payment::from).collect(),
        payment_settings,
    })
}

/// Read an invoice: status, amounts, payments and effective payment settings.
#[utoipa::path(get, path = "/invoices/{id}", tag = "invoices",
    params(("id" = String, Path)), responses((status = 200, body = InvoiceDetail), (status = 404)))]
pub async fn get_invoice(
    _: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<InvoiceDetail>, ApiError> {
    let row = repo::get(&state.db, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("invoice", &id))?;
    Ok(axum::Json(detail(&state, row).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct InvoiceQuery {
    pub customer_id: Option<String>,
    /// OPEN, PARTIALLY_PAID, PAID or PAYMENT_FAILED.
    pub status: Option<String>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvoicePage {
    pub data: Vec<Invoice>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

const STATUSES: [&str; 4] = ["OPEN", "PARTIALLY_PAID", "PAID", "PAYMENT_FAILED"];

/// List invoices, filtered by customer and status, with cursor pagination.
#[utoipa::path(get, path = "/invoices", tag = "invoices", params(InvoiceQuery),
    responses((status = 200, body = InvoicePage), (status = 400)))]
pub async fn list_invoices(
    _: Caller,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<InvoiceQuery>,
) -> Result<axum::Json<InvoicePage>, ApiError> {
    if let Some(status) = &query.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(ApiError::validation(
            "status",
            format!("`{status}` is not one of {}", STATUSES.join(", ")),
        ));
    }
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::validation(
            "limit",
            format!("must be 1 to {MAX_PAGE}"),
        ));
    }
    let after = query
        .cursor
        .as_deref()
        .map(|cursor| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(cursor)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| ApiError::validation("cursor", "not a cursor returned by this API"))
        })
        .transpose()?;
    // One extra row tells whether another page follows.
    let mut rows = repo::list(
        &state.db,
        query.customer_id.as_deref(),
        query.status.as_deref(),
        after.as_deref(),
        limit + 1,
    )
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more.then(|| {
        let last = &rows.last().expect("a full page").id;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)
    });
    Ok(axum::Json(InvoicePage {
        data: rows.into_iter().map(Invoice::from).collect(),
        next_cursor,
    }))
}

// ---- payments ----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatePayment {
    /// Optional; settle makes one (`pay_…`) when left out.
    pub id: Option<String>,
    pub provider: MethodProvider,
    /// Stripe PaymentIntent id (`pi_…`) or GoCardless payment id (`PM…`).
    pub provider_payment_id: String,
    #[schema(value_type = i64)]
    pub amount: MinorUnits,
    #[schema(value_type = String, example = "GBP")]
    pub currency: Currency,
}

/// Register a payment attempt before its webhooks arrive.
#[utoipa::path(post, path = "/invoices/{id}/payments", tag = "payments",
    params(("id" = String, Path)), request_body = CreatePayment,
    responses((status = 201, body = Payment), (status = 400), (status = 404), (status = 409)))]
pub async fn create_payment(
    _: Caller,
    State(state): State<AppState>,
    Path(invoice_id): Path<String>,
    ApiJson(request): ApiJson<CreatePayment>,
) -> Result<(StatusCode, axum::Json<Payment>), ApiError> {
    let id = match request.id {
        Some(id) => {
            check_id("id", &id)?;
            id
        }
        None => crate::repository::new_id("pay"),
    };
    let expected_prefix = match request.provider {
        MethodProvider::Stripe => "pi_",
        MethodProvider::GoCardless => "PM",
    };
    if !request.provider_payment_id.starts_with(expected_prefix)
        || request.provider_payment_id.len() <= expected_prefix.len()
    {
        return Err(ApiError::validation(
            "providerPaymentId",
            format!(
                "a {} payment id starts with `{expected_prefix}`",
                request.provider.as_str()
            ),
        ));
    }
    let invoice = repo::get(&state.db, &invoice_id)
        .await?
        .ok_or_else(|| ApiError::not_found("invoice", &invoice_id))?;
    if invoice.currency != request.currency.as_str() {
        return Err(ApiError::validation(
            "currency",
            format!(
                "{} differs from the invoice's currency {}",
                request.currency, invoice.currency
            ),
        ));
    }
    let row = payments_repo::insert(
        &state.db,
        &NewPayment {
            id: &id,
            account_id: &invoice.account_id,
            invoice_id: &invoice.id,
            provider: request.provider.as_str(),
            provider_payment_id: &request.provider_payment_id,
            amount: request.amount.get(),
            currency: request.currency.as_str(),
        },
    )
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(db)
            if db.constraint() == Some("payments_provider_provider_payment_id_key") =>
        {
            ApiError::Conflict(format!(
                "{} payment `{}` is already registered",
                request.provider.as_str(),
                request.provider_payment_id
            ))
        }
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ApiError::Conflict(format!("payment `{id}` already exists"))
        }
        _ => error.into(),
    })?;
    Ok((StatusCode::CREATED, axum::Json(row.into())))
}

/// Read a payment.
#[utoipa::path(get, path = "/payments/{id}", tag = "payments",
    params(("id" = String, Path)), responses((status = 200, body = Payment), (status = 404)))]
pub async fn get_payment(
    _: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Payment>, ApiError> {
    payments_repo::get(&state.db, &id)
        .await?
        .map(|row| axum::Json(row.into()))
        .ok_or_else(|| ApiError::not_found("payment", &id))
}
