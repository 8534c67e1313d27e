//! Payouts: `GET /payouts` (the caller's account's, filtered by status and since when settle
//! recorded them, with cursor pagination) and `GET /payouts/{id}` (one, by the provider's payout
//! id, with its lines). What each bank deposit pays is settle's own finding (`crate::payouts`):
//! the API only reads it.

use axum::extract::{Path, State};
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::extract::{ApiQuery, Caller};
use super::state::ApiState;
use super::validate;
use crate::provider::Provider;
use crate::reconcile::money::Currency;
use crate::reconcile::payout::PayoutStatus;
use crate::repository::payouts::{self as repo, After, InvoicePayout, LineRow, PayoutRow};

/// A payout: the deposit, and what its lines come to.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Payout {
    /// The provider's payout id (`po_…`, `PO…`).
    pub id: String,
    pub provider: Provider,
    pub sequence_account_id: String,
    pub status: PayoutStatus,
    /// Why it is `FAILED` or `UNLISTABLE`, or why its listing waits.
    pub status_reason: Option<String>,
    /// The deposit in minor units; `null` for a GoCardless payout not listed yet.
    pub amount: Option<i64>,
    #[schema(value_type = Option<String>, example = "GBP")]
    pub currency: Option<Currency>,
    pub arrival_date: Option<NaiveDate>,
    /// Its lines' sums (the payout's own line left out), rounded after summing.
    pub lines_gross: Option<i64>,
    pub lines_fees: Option<i64>,
    pub lines_net: Option<i64>,
    /// `amount` less `linesNet`: 0 when the lines explain the deposit exactly.
    pub difference: Option<i64>,
    pub unmatched_lines: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<PayoutRow> for Payout {
    fn from(row: PayoutRow) -> Self {
        Self {
            id: row.provider_payout_id,
            provider: row.provider,
            sequence_account_id: row.account_id,
            status: row.status,
            status_reason: row.status_reason,
            amount: row.amount,
            currency: row.currency,
            arrival_date: row.arrival_date,
            lines_gross: row.lines_gross,
            lines_fees: row.lines_fees,
            lines_net: row.lines_net,
            difference: row.difference,
            unmatched_lines: row.unmatched_lines,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// One line of a payout: what moved the money, and whose invoice it was.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayoutLine {
    /// The provider's: Stripe's `reporting_category` (`charge`, `refund`, `dispute`, `fee`,
    /// `payout`, …), GoCardless's item `type` (`payment_paid_out`, `gocardless_fee`, …).
    pub category: String,
    /// The charge, refund, dispute or GoCardless payment it moved money for.
    pub source_id: Option<String>,
    /// `MATCHED` (settle's payment), `PROVIDER` (the provider's own fee or the payout's own line)
    /// or `UNMATCHED` (nothing settle knows explains it).
    pub explained: String,
    pub payment_id: Option<String>,
    /// `null` when unmatched.
    pub invoice_id: Option<String>,
    pub customer_id: Option<String>,
    /// In minor units; a GoCardless item may come to a tenth of one.
    #[schema(value_type = f64)]
    #[serde(serialize_with = "number")]
    pub gross: Decimal,
    #[schema(value_type = f64)]
    #[serde(serialize_with = "number")]
    pub fee: Decimal,
    #[schema(value_type = f64)]
    #[serde(serialize_with = "number")]
    pub net: Decimal,
}

/// A decimal written as a JSON number: a whole one as an integer (`1500`), a fraction as a
/// float (`37.5`), exact to a tenth of a minor unit at any realistic size.
fn number<S: serde::Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
    match value.fract().is_zero().then(|| value.to_i64()).flatten() {
        Some(whole) => serializer.serialize_i64(whole),
        None => serializer.serialize_f64(value.to_f64().unwrap_or(f64::NAN)),
    }
}

impl From<LineRow> for PayoutLine {
    fn from(row: LineRow) -> Self {
        Self {
            category: row.category,
            source_id: row.source_id,
            explained: row.explained,
            payment_id: row.payment_id,
            invoice_id: row.invoice_id,
            customer_id: row.customer_id,
            gross: row.gross.normalize(),
            fee: row.fee.normalize(),
            net: row.net.normalize(),
        }
    }
}

/// A payout with its lines, in the provider's order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayoutDetail {
    #[serde(flatten)]
    pub payout: Payout,
    pub lines: Vec<PayoutLine>,
}

/// A payout that carried some of an invoice's money (`GET /invoices/{id}`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvoicePayoutView {
    pub payout_id: String,
    pub provider: Provider,
    pub status: PayoutStatus,
    pub arrival_date: Option<NaiveDate>,
    /// The invoice's lines' net in it, in minor units.
    #[schema(value_type = f64)]
    #[serde(serialize_with = "number")]
    pub net: Decimal,
}

impl From<InvoicePayout> for InvoicePayoutView {
    fn from(row: InvoicePayout) -> Self {
        Self {
            payout_id: row.provider_payout_id,
            provider: row.provider,
            status: row.status,
            arrival_date: row.arrival_date,
            net: row.net.normalize(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct PayoutQuery {
    #[param(value_type = Option<PayoutStatus>)]
    pub status: Option<String>,
    /// Recorded at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayoutPage {
    pub data: Vec<Payout>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// List payouts, filtered by status and by when settle recorded them, with cursor pagination.
#[utoipa::path(get, path = "/payouts", tag = "payouts", params(PayoutQuery),
    responses((status = 200, body = PayoutPage), (status = 400)))]
pub async fn list(
    caller: Caller,
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<PayoutQuery>,
) -> Result<axum::Json<PayoutPage>, ApiError> {
    let limit = validate::page_limit(query.limit)?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<PayoutStatus>)
        .transpose()
        .map_err(|_| ApiError::validation("status", format!("must be one of {}", statuses())))?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    // One extra row tells whether another page follows.
    let mut rows = repo::list(
        state.reads.pool(),
        &caller.account_id,
        status,
        query.since,
        after.as_ref(),
        limit + 1,
    )
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = rows.last().filter(|_| more).map(encode_cursor);
    Ok(axum::Json(PayoutPage {
        data: rows.into_iter().map(Payout::from).collect(),
        next_cursor,
    }))
}

/// Read a payout with its lines, each matched to settle's payment and invoice, or not.
#[utoipa::path(get, path = "/payouts/{id}", tag = "payouts",
    params(("id" = String, Path, description = "The provider's payout id")),
    responses((status = 200, body = PayoutDetail), (status = 404)))]
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<PayoutDetail>, ApiError> {
    let row = repo::find(&state.db, &caller.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("payout", &id))?;
    let lines = repo::lines(&state.db, &row.key()).await?;
    Ok(axum::Json(PayoutDetail {
        payout: row.into(),
        lines: lines.into_iter().map(PayoutLine::from).collect(),
    }))
}

fn encode_cursor(last: &PayoutRow) -> String {
    let text = format!(
        "{}\n{}\n{}",
        last.created_at.timestamp_micros(),
        last.provider.wire_name(),
        last.provider_payout_id
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn decode_cursor(cursor: &str) -> Result<After, ApiError> {
    let invalid = || ApiError::validation("cursor", "not a cursor returned by this API");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, '\n');
    let (Some(micros), Some(provider), Some(id)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    Ok(After {
        created_at: micros
            .parse()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(invalid)?,
        provider: Provider::from_wire_name(provider).ok_or_else(invalid)?,
        provider_payout_id: id.to_owned(),
    })
}

/// Every payout status, as the API spells it: `EXPECTED, LISTING, …`.
pub fn statuses() -> String {
    use strum::VariantArray;
    PayoutStatus::VARIANTS
        .iter()
        .map(|status| status.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
