//! Payment methods on file: `PUT /customers/{id}/payment-method` in the seeds' three shapes (a
//! Stripe customer or card/payment-method/bank-account reference, or a GoCardless mandate), and
//! `GET /customers/{id}/payment-methods`.

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{ApiJson, Caller};
use super::state::ApiState;
use super::validate::{self, MAX_SHORT, MAX_TEXT};
use crate::provider::Provider;
use crate::reconcile::payment_methods::{
    MethodReference, MethodStatus, MethodType, validate_card_expiry,
};
use crate::repository::payment_methods::{self as repo, MethodWrite, PaymentMethodRow};
use crate::repository::{charges, customers};

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BillingAddress {
    pub city: Option<String>,
    pub country: Option<String>,
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub postal_code: Option<String>,
    pub state: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BillingDetails {
    pub address: Option<BillingAddress>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardExpiry {
    pub exp_month: i32,
    pub exp_year: i32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutPaymentMethod {
    #[serde(rename = "type")]
    pub method_type: MethodType,
    pub provider: Provider,
    /// Stripe `cus_…`, `cus_…/pm_…`, `cus_…/card_…`, `cus_…/ba_…`, or GoCardless mandate `MD…`.
    pub reference_id: String,
    pub billing_details: Option<BillingDetails>,
    pub card: Option<CardExpiry>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentMethod {
    pub id: String,
    pub sequence_account_id: String,
    pub customer_id: String,
    pub provider: Provider,
    /// The provider's type: `card`, `direct_debit`, … (Stripe may report others, `sepa_debit`,
    /// `us_bank_account`).
    #[serde(rename = "type")]
    pub method_type: String,
    pub reference_id: String,
    /// INACTIVE for a cancelled mandate, a detached card.
    pub status: MethodStatus,
    /// The method a retry or auto-charge would use.
    pub on_file: bool,
    pub billing_details: Option<BillingDetails>,
    pub card: Option<CardExpiry>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<PaymentMethodRow> for PaymentMethod {
    fn from(row: PaymentMethodRow) -> Self {
        Self {
            id: row.id,
            sequence_account_id: row.account_id,
            customer_id: row.customer_id,
            provider: row.provider,
            method_type: row.method_type,
            reference_id: row.reference_id,
            status: row.status,
            on_file: row.on_file,
            billing_details: row
                .billing_details
                .and_then(|details| serde_json::from_value(details.0).ok()),
            card: row
                .card_exp_month
                .zip(row.card_exp_year)
                .map(|(m, y)| CardExpiry {
                    exp_month: m.into(),
                    exp_year: y.into(),
                }),
            updated_at: row.updated_at,
        }
    }
}

impl PutPaymentMethod {
    /// Validates the request; the parsed reference is what the handler checks further.
    fn validate(&self) -> Result<MethodReference, ApiError> {
        validate::at_most(&self.reference_id, MAX_TEXT)
            .map_err(|m| ApiError::validation("referenceId", m))?;
        let reference = MethodReference::parse(self.provider, &self.reference_id)
            .map_err(|m| ApiError::validation("referenceId", m))?;
        if !reference.allows(self.method_type) {
            return Err(ApiError::validation(
                "type",
                format!(
                    "`{}` does not fit reference `{}`",
                    self.method_type.as_str(),
                    self.reference_id
                ),
            ));
        }
        if let Some(details) = &self.billing_details {
            let bounded = |field: &str, value: &Option<String>, max: usize| match value {
                Some(value) => {
                    validate::at_most(value, max).map_err(|m| ApiError::validation(field, m))
                }
                None => Ok(()),
            };
            bounded("billingDetails.name", &details.name, MAX_TEXT)?;
            bounded("billingDetails.phone", &details.phone, MAX_SHORT)?;
            if let Some(email) = &details.email {
                validate::email(email)
                    .map_err(|m| ApiError::validation("billingDetails.email", m))?;
            }
            if let Some(address) = &details.address {
                for (field, value) in [
                    ("billingDetails.address.city", &address.city),
                    ("billingDetails.address.line1", &address.line1),
                    ("billingDetails.address.line2", &address.line2),
                    ("billingDetails.address.postalCode", &address.postal_code),
                    ("billingDetails.address.state", &address.state),
                ] {
                    bounded(field, value, MAX_TEXT)?;
                }
                if let Some(country) = address.country.as_deref() {
                    validate::country(country)
                        .map_err(|m| ApiError::validation("billingDetails.address.country", m))?;
                }
            }
        }
        match (self.card, self.method_type) {
            (Some(card), MethodType::Card) => validate_card_expiry(
                card.exp_month,
                card.exp_year,
                chrono::Utc::now().date_naive(),
            )
            .map_err(|(field, message)| ApiError::validation(field, message))?,
            (Some(_), _) => {
                return Err(ApiError::validation(
                    "card",
                    "only a method of type `card` has card details",
                ));
            }
            (None, _) => {}
        }
        Ok(reference)
    }
}

/// Set the customer's payment method on file.
#[utoipa::path(put, path = "/customers/{id}/payment-method", tag = "payment methods",
    params(("id" = String, Path)), request_body = PutPaymentMethod,
    responses((status = 200, body = PaymentMethod), (status = 400), (status = 404)))]
pub async fn put(
    caller: Caller,
    State(state): State<ApiState>,
    Path(customer_id): Path<String>,
    ApiJson(request): ApiJson<PutPaymentMethod>,
) -> Result<axum::Json<PaymentMethod>, ApiError> {
    let reference = request.validate()?;
    let account = caller.account_id.as_str();
    let mut tx = state.db.begin().await?;
    let customer = customers::get(&mut *tx, account, &customer_id)
        .await?
        .ok_or_else(|| ApiError::not_found("customer", &customer_id))?;
    // The same lock as the worker's method events: one writer of a customer's methods at a time.
    customers::lock(&mut tx, account, &customer_id).await?;
    // A Stripe reference must name this customer's own Stripe customer, when one is registered.
    if let (
        MethodReference::StripeCustomer { customer: stripe }
        | MethodReference::StripeMethod {
            customer: stripe, ..
        },
        Some(registered),
    ) = (&reference, customer.stripe_customer_id.as_deref())
        && stripe != registered
    {
        return Err(ApiError::validation(
            "referenceId",
            format!("`{stripe}` is not this customer's Stripe customer ({registered})"),
        ));
    }
    let row = repo::put_on_file(
        &mut tx,
        &MethodWrite {
            account_id: account,
            customer_id: &customer_id,
            provider: request.provider,
            method_type: request.method_type.as_str(),
            reference_id: &request.reference_id,
            status: MethodStatus::Active,
            billing_details: request
                .billing_details
                .as_ref()
                .map(serde_json::to_value)
                .transpose()
                .map_err(|error| ApiError::Internal(error.into()))?,
            // validate_card_expiry keeps both in range (1–12, 1000–9999).
            card_exp_month: request.card.map(|c| c.exp_month as i16),
            card_exp_year: request.card.map(|c| c.exp_year as i16),
            details: serde_json::json!({}),
        },
    )
    .await?;
    charges::decide_for_customer(&mut tx, &state.policy.charging, account, &customer_id).await?;
    tx.commit().await?;
    Ok(axum::Json(row.into()))
}

/// List the customer's payment methods, the one on file first.
#[utoipa::path(get, path = "/customers/{id}/payment-methods", tag = "payment methods",
    params(("id" = String, Path)), responses((status = 200, body = Vec<PaymentMethod>), (status = 404)))]
pub async fn list(
    caller: Caller,
    State(state): State<ApiState>,
    Path(customer_id): Path<String>,
) -> Result<axum::Json<Vec<PaymentMethod>>, ApiError> {
    let account = caller.account_id.as_str();
    if !customers::exists(&state.db, account, &customer_id).await? {
        return Err(ApiError::not_found("customer", &customer_id));
    }
    let rows = repo::for_customer(&state.db, account, &customer_id).await?;
    Ok(axum::Json(
        rows.into_iter().map(PaymentMethod::from).collect(),
    ))
}
