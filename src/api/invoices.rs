//! Invoices: `POST /invoices` when one is issued, `GET /invoices/{id}` with its payments and
//! effective settings, `GET /invoices` with cursor pagination.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::charges::{ChargeView, NextChargeView};
use super::error::{ApiError, unique_constraint};
use super::extract::{ApiJson, ApiQuery, Caller};
use super::ledger::Money;
use super::payments::Payment;
use super::payouts::InvoicePayoutView;
use super::schema::EffectivePaymentSettings;
use super::state::ApiState;
use super::validate::{self, MAX_TEXT};
use crate::reconcile::invoice::InvoiceStatus;
use crate::reconcile::ledger::RefundState;
use crate::reconcile::money::{Currency, MinorUnits};
use crate::repository::invoices::{self as repo, InvoiceRow, NewInvoice};
use crate::repository::ledger::Of;
use crate::repository::{charges, customers, payments, settings};

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
    /// Where the customer can pay: an absolute `https://` URL, linked from failure mails.
    #[schema(example = "https://pay.example/inv_2026_0042")]
    pub payment_link: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    pub id: String,
    pub sequence_account_id: String,
    pub customer_id: String,
    pub billing_schedule_id: Option<String>,
    pub number: String,
    #[schema(value_type = String, example = "GBP")]
    pub currency: Currency,
    pub amount_due: i64,
    /// Collected, less what disputes and chargebacks hold or took.
    pub amount_paid: i64,
    pub amount_refunded: i64,
    /// What open disputes claim.
    pub amount_in_dispute: i64,
    /// Paid less refunded.
    pub amount_net: i64,
    pub refund_state: RefundState,
    pub status: InvoiceStatus,
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
            amount_refunded: row.amount_refunded,
            amount_in_dispute: row.amount_in_dispute,
            amount_net: row.amount_paid - row.amount_refunded,
            refund_state: row.refund_state,
            status: row.status,
            due_date: row.due_date,
            payment_link: row.payment_link,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// An invoice with its payments, its money's movements, refunds and disputes, and effective
/// payment settings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceDetail {
    #[serde(flatten)]
    pub invoice: Invoice,
    pub payments: Vec<Payment>,
    #[serde(flatten)]
    pub money: Money,
    pub payment_settings: EffectivePaymentSettings,
    /// The payouts that carried its money to the bank (`FAILED`: it did not arrive).
    pub payouts: Vec<InvoicePayoutView>,
    /// Automatic charges made or scheduled (`docs/charging.md`), in order.
    pub charges: Vec<ChargeView>,
    pub next_charge: NextChargeView,
}

/// Register an invoice when it is issued.
#[utoipa::path(post, path = "/invoices", tag = "invoices", request_body = CreateInvoice,
    responses((status = 201, body = InvoiceDetail), (status = 400), (status = 404), (status = 409)))]
pub async fn create(
    caller: Caller,
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<CreateInvoice>,
) -> Result<(StatusCode, axum::Json<InvoiceDetail>), ApiError> {
    validate::check_id("id", &request.id)?;
    validate::check_id("customerId", &request.customer_id)?;
    validate::non_empty(&request.number, MAX_TEXT)
        .map_err(|m| ApiError::validation("number", m))?;
    if let Some(link) = &request.payment_link {
        validate::https_url(link).map_err(|m| ApiError::validation("paymentLink", m))?;
    }
    let account = caller.account_id.as_str();
    // Registration is when an invoice is issued, and an issued invoice is ready to collect: its
    // first automatic attempt is decided in the same transaction, so it is never lost between
    // the two (the charger sends it). The customer is held from the start: a delete or a merge
    // of it waits, so the invoice never lands on a customer deleted meanwhile.
    let mut tx = state.db.begin().await?;
    if !customers::hold(&mut tx, account, &request.customer_id).await? {
        return Err(ApiError::not_found("customer", &request.customer_id));
    }
    if let Some(schedule_id) = &request.billing_schedule_id {
        let schedule = repo::get_billing_schedule(&mut *tx, account, schedule_id)
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
        &mut *tx,
        &NewInvoice {
            id: &request.id,
            account_id: account,
            customer_id: &request.customer_id,
            billing_schedule_id: request.billing_schedule_id.as_deref(),
            number: &request.number,
            currency: request.currency,
            amount_due: request.amount_due,
            due_date: request.due_date,
            payment_link: request.payment_link.as_deref(),
        },
    )
    .await
    .map_err(|error| match unique_constraint(&error) {
        Some("invoices_account_id_number_key") => ApiError::Conflict(format!(
            "invoice number `{}` is already used",
            request.number
        )),
        Some(_) => ApiError::Conflict(format!("invoice `{}` already exists", request.id)),
        None => error.into(),
    })?;
    charges::decide(&mut tx, &state.policy.charging, account, &row.id, None).await?;
    tx.commit().await?;
    let id = row.id.clone();
    let detail = detail(&state, account, row).await?;
    tracing::info!(invoice = %id, caller = %caller.key_id, "invoice registered");
    Ok((StatusCode::CREATED, axum::Json(detail)))
}

async fn detail(
    state: &ApiState,
    account_id: &str,
    row: InvoiceRow,
) -> Result<InvoiceDetail, ApiError> {
    let payments = payments::for_invoice(&state.db, account_id, &row.id).await?;
    let payment_settings =
        settings::effective_for_invoice(&state.db, account_id, &row.id, state.defaults)
            .await?
            .ok_or_else(|| ApiError::not_found("invoice", &row.id))?;
    let money = Money::read(&state.db, account_id, Of::Invoice(&row.id)).await?;
    let payouts = crate::repository::payouts::of_invoice(&state.db, account_id, &row.id).await?;
    let (charges, next_charge) =
        super::charges::of_invoice(&state.db, &state.policy.charging, account_id, &row.id)
            .await?
            .ok_or_else(|| ApiError::not_found("invoice", &row.id))?;
    Ok(InvoiceDetail {
        charges,
        next_charge,
        payouts: payouts.into_iter().map(InvoicePayoutView::from).collect(),
        invoice: row.into(),
        payments: payments.into_iter().map(Payment::from).collect(),
        money,
        payment_settings: payment_settings.into(),
    })
}

/// Read an invoice: status, figures, payments, the movements of its money, its refunds and
/// disputes, and effective payment settings.
#[utoipa::path(get, path = "/invoices/{id}", tag = "invoices",
    params(("id" = String, Path)), responses((status = 200, body = InvoiceDetail), (status = 404)))]
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<InvoiceDetail>, ApiError> {
    read(&state, &caller.account_id, &id)
        .await?
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found("invoice", &id))
}

/// The account's invoice `id` as `GET /invoices/{id}` answers it (the console shows the same).
pub async fn read(
    state: &ApiState,
    account_id: &str,
    id: &str,
) -> Result<Option<InvoiceDetail>, ApiError> {
    match repo::get(&state.db, account_id, id).await? {
        Some(row) => Ok(Some(detail(state, account_id, row).await?)),
        None => Ok(None),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct InvoiceQuery {
    pub customer_id: Option<String>,
    #[param(value_type = Option<InvoiceStatus>)]
    pub status: Option<InvoiceStatus>,
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

/// List invoices, filtered by customer and status, with cursor pagination.
#[utoipa::path(get, path = "/invoices", tag = "invoices", params(InvoiceQuery),
    responses((status = 200, body = InvoicePage), (status = 400)))]
pub async fn list(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<InvoiceQuery>,
) -> Result<axum::Json<InvoicePage>, ApiError> {
    let limit = validate::page_limit(query.limit)?;
    let after = super::pages::after(query.cursor.as_deref())?;
    // One extra row tells whether another page follows.
    let rows = repo::list(
        state.reads.pool(),
        &caller.account_id,
        query.customer_id.as_deref(),
        query.status,
        after.as_deref(),
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = super::pages::cut(rows, limit, |row| &row.id);
    Ok(axum::Json(InvoicePage {
        data: rows.into_iter().map(Invoice::from).collect(),
        next_cursor,
    }))
}
