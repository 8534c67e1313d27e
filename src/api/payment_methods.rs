//! Payment methods on file, in Chargebee's `update_payment_method` shapes: `PUT
//! /customers/{id}/payment-method` with a `type`, the `gateway` holding the method (or the seeds'
//! `provider`), its `referenceId` in Chargebee's format for that gateway, and Stripe's updatable
//! parts (billing details, card expiry, metadata); `GET /customers/{id}/payment-methods`; and
//! `DELETE /customers/{id}/payment-methods/{method}`, after which the next method takes over.
//! Every change is announced to subscribers as `payment_method.updated`.

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{ApiJson, Caller};
use super::state::ApiState;
use super::validate::{self, MAX_SHORT, MAX_TEXT};
use crate::provider::Provider;
use crate::reconcile::payment_methods::{
    Gateway, MethodReference, MethodStatus, MethodType, validate_card_expiry,
};
use crate::reconcile::reconciliation_events::{Message, ReconciliationEvent};
use crate::repository::outbox::{self, OutboxRow};
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
    /// Chargebee's types (`card`, `direct_debit`, `paypal_express_checkout`, `amazon_payments`),
    /// and `bank_account`, `sepa_debit`, `bacs_debit`.
    #[serde(rename = "type")]
    pub method_type: MethodType,
    /// The gateway holding the method, in Chargebee's names (`stripe`, `gocardless`,
    /// `braintree`, `adyen`, `authorize_net`, `paypal_express_checkout`, `amazon_payments`, …).
    /// One of `gateway` and `provider` is required; given both, they must agree.
    pub gateway: Option<Gateway>,
    /// `STRIPE` or `GOCARDLESS`: the seeds' way to say `gateway`.
    pub provider: Option<Provider>,
    /// The gateway's permanent reference, in Chargebee's format: Stripe `cus_…`, `cus_…/pm_…`,
    /// `cus_…/card_…`, `cus_…/ba_…`; GoCardless mandate `MD…`; Braintree
    /// `customer_id/payment_method_token`; Authorize.Net `customer_profile_id/payment_profile_id`;
    /// Adyen `shopperReference/recurringDetailReference`; PayPal billing agreement `B-…`; Amazon
    /// Pay billing agreement `B01-…-…`; another gateway's token.
    pub reference_id: String,
    pub billing_details: Option<BillingDetails>,
    pub card: Option<CardExpiry>,
    /// At most 50 keys of at most 40 characters, each value at most 500: replaces the method's map.
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentMethod {
    pub id: String,
    pub sequence_account_id: String,
    pub customer_id: String,
    /// The provider settle reconciles the method's payments with; `null` on another gateway.
    pub provider: Option<Provider>,
    /// Chargebee's name of the gateway holding the method.
    pub gateway: Gateway,
    /// Whether settle reconciles this gateway's payments and may charge the method. A method on
    /// another gateway is kept on file for the billing system, and settle never charges it.
    pub reconciled: bool,
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
    pub metadata: std::collections::BTreeMap<String, String>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<PaymentMethodRow> for PaymentMethod {
    fn from(row: PaymentMethodRow) -> Self {
        Self {
            id: row.id,
            sequence_account_id: row.account_id,
            customer_id: row.customer_id,
            provider: row.provider,
            gateway: row.gateway,
            reconciled: row.provider.is_some(),
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
            metadata: serde_json::from_value(row.metadata.0).unwrap_or_default(),
            updated_at: row.updated_at,
        }
    }
}

impl PutPaymentMethod {
    /// Validates the request: the gateway, and the parsed Stripe or GoCardless reference the
    /// handler checks further.
    fn validate(&self) -> Result<(Gateway, Option<MethodReference>), ApiError> {
        let gateway = match (self.gateway, self.provider) {
            (Some(gateway), Some(provider)) if gateway.provider() != Some(provider) => {
                return Err(ApiError::validation(
                    "gateway",
                    format!(
                        "`{}` is not provider {}",
                        gateway.as_str(),
                        provider.stored_name()
                    ),
                ));
            }
            (Some(gateway), _) => gateway,
            (None, Some(provider)) => Gateway::of_provider(provider),
            (None, None) => {
                return Err(ApiError::validation(
                    "gateway",
                    "is required (or `provider`): the gateway holding the method",
                ));
            }
        };
        validate::at_most(&self.reference_id, MAX_TEXT)
            .map_err(|m| ApiError::validation("referenceId", m))?;
        let reference = gateway
            .parse_reference(&self.reference_id)
            .map_err(|m| ApiError::validation("referenceId", m))?;
        if !gateway.allows(reference.as_ref(), self.method_type) {
            return Err(ApiError::validation(
                "type",
                format!(
                    "`{}` does not fit gateway `{}` with reference `{}`",
                    self.method_type.as_str(),
                    gateway.as_str(),
                    self.reference_id
                ),
            ));
        }
        if let Some(metadata) = &self.metadata {
            validate::metadata(metadata)?;
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
        Ok((gateway, reference))
    }
}

/// Set the customer's payment method on file (inserted, or updated by its gateway and reference).
#[utoipa::path(put, path = "/customers/{id}/payment-method", tag = "payment methods",
    params(("id" = String, Path)), request_body = PutPaymentMethod,
    responses((status = 200, body = PaymentMethod), (status = 400), (status = 404)))]
pub async fn put(
    caller: Caller,
    State(state): State<ApiState>,
    Path(customer_id): Path<String>,
    ApiJson(request): ApiJson<PutPaymentMethod>,
) -> Result<axum::Json<PaymentMethod>, ApiError> {
    let (gateway, reference) = request.validate()?;
    let account = caller.account_id.as_str();
    let mut tx = state.db.begin().await?;
    // The same lock as the worker's method events: one writer of a customer's methods at a time
    // (and a delete or merge of it waits, or came first and is seen).
    customers::lock(&mut tx, account, &customer_id).await?;
    if !customers::exists(&mut *tx, account, &customer_id).await? {
        return Err(ApiError::not_found("customer", &customer_id));
    }
    // A Stripe reference must name a Stripe customer that is this one's (its own, or one merged
    // into it), or no customer's while this one has none registered.
    if let Some(
        MethodReference::StripeCustomer { customer: stripe }
        | MethodReference::StripeMethod {
            customer: stripe, ..
        },
    ) = &reference
    {
        let holder =
            customers::find_by_provider_customer_id(&mut *tx, account, Provider::Stripe, stripe)
                .await?;
        let own = customers::get(&mut *tx, account, &customer_id).await?;
        let registered = own.and_then(|own| own.stripe_customer_id);
        match (holder, registered) {
            (Some(holder), _) if holder.id == customer_id => {}
            (None, None) => {}
            (_, registered) => {
                return Err(ApiError::validation(
                    "referenceId",
                    format!(
                        "`{stripe}` is not this customer's Stripe customer ({})",
                        registered.as_deref().unwrap_or("none registered")
                    ),
                ));
            }
        }
    }
    let row = repo::put_on_file(
        &mut tx,
        &MethodWrite {
            account_id: account,
            customer_id: &customer_id,
            gateway,
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
            metadata: request
                .metadata
                .as_ref()
                .map(serde_json::to_value)
                .transpose()
                .map_err(|error| ApiError::Internal(error.into()))?,
        },
    )
    .await?;
    charges::decide_for_customer(&mut tx, &state.policy.charging, account, &customer_id).await?;
    announce(&mut tx, account, &[&row]).await?;
    tx.commit().await?;
    Ok(axum::Json(row.into()))
}

/// Queues `payment_method.updated` for each changed method, in the change's transaction: its id
/// names the method and the time of the change, one message per change.
async fn announce(
    tx: &mut sqlx::PgConnection,
    account: &str,
    rows: &[&PaymentMethodRow],
) -> Result<(), ApiError> {
    let mut outbox_rows = Vec::with_capacity(rows.len());
    for row in rows {
        let event = ReconciliationEvent::PaymentMethodUpdated(row.announced());
        let cause = format!(
            "{account}/payment_method/{}/{}",
            row.id,
            row.updated_at.timestamp_micros()
        );
        let message = Message::of_api(&event, &cause, row.updated_at, account);
        outbox_rows
            .push(OutboxRow::of(&message).map_err(|error| ApiError::Internal(error.into()))?);
    }
    outbox::insert(tx, account, &outbox_rows).await?;
    outbox::notify_relay(&mut *tx).await?;
    Ok(())
}

/// What `DELETE /customers/{id}/payment-methods/{method}` did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemovedPaymentMethod {
    /// The method, now `INACTIVE` and off file.
    pub removed: PaymentMethod,
    /// The method on file now: the next usable one took over if the removed one was on file.
    pub on_file: Option<PaymentMethod>,
}

/// Take a payment method out of use: it becomes `INACTIVE` and, if it was the one on file, the
/// customer's next usable method (the one on file most recently, else the one changed last)
/// takes over, as when a provider detaches a card or cancels a mandate. Both changes are
/// announced. Removing a method already inactive changes and announces nothing.
#[utoipa::path(delete, path = "/customers/{id}/payment-methods/{method}", tag = "payment methods",
    params(("id" = String, Path), ("method" = String, Path, description = "the method's id, `pm_…`")),
    responses((status = 200, body = RemovedPaymentMethod), (status = 404)))]
pub async fn remove(
    caller: Caller,
    State(state): State<ApiState>,
    Path((customer_id, method_id)): Path<(String, String)>,
) -> Result<axum::Json<RemovedPaymentMethod>, ApiError> {
    let account = caller.account_id.as_str();
    let mut tx = state.db.begin().await?;
    customers::lock(&mut tx, account, &customer_id).await?;
    if !customers::exists(&mut *tx, account, &customer_id).await? {
        return Err(ApiError::not_found("customer", &customer_id));
    }
    let methods = repo::for_customer(&mut *tx, account, &customer_id).await?;
    let method = methods
        .iter()
        .find(|row| row.id == method_id)
        .ok_or_else(|| ApiError::not_found("payment method", &method_id))?;
    if method.status == MethodStatus::Inactive {
        let on_file = methods.iter().find(|row| row.on_file).cloned();
        return Ok(axum::Json(RemovedPaymentMethod {
            removed: method.clone().into(),
            on_file: on_file.map(PaymentMethod::from),
        }));
    }
    let change = repo::deactivate(&mut tx, account, &customer_id, &method_id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment method", &method_id))?;
    let next = if change.left_no_method_on_file() {
        repo::promote_next(&mut tx, account, &customer_id).await?
    } else {
        None
    };
    let changed: Vec<&PaymentMethodRow> = std::iter::once(&change.row).chain(&next).collect();
    announce(&mut tx, account, &changed).await?;
    charges::decide_for_customer(&mut tx, &state.policy.charging, account, &customer_id).await?;
    let on_file = match next {
        Some(next) => Some(next),
        None => methods
            .into_iter()
            .find(|row| row.on_file && row.id != method_id),
    };
    tx.commit().await?;
    Ok(axum::Json(RemovedPaymentMethod {
        removed: change.row.into(),
        on_file: on_file.map(PaymentMethod::from),
    }))
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
