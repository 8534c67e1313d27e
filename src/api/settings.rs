//! Payment settings, the seed API's contract kept exactly:
//! `PUT /payments/settings/customers/{id}` with `{"paymentProvider":"STRIPE"}` answers
//! `{"id":…,"sequenceAccountId":…,"customerId":…,"paymentProvider":"STRIPE"}`; the same for
//! billing schedules and invoices. `autoCharge` may be set too (it appears in the answer once set),
//! and `null` clears a field. `PUT /payments/settings/account` sets the caller's account's own
//! level in the same shape (no target id: `sequenceAccountId` names it); a field it leaves unset
//! falls back to config's `[account]` defaults. `GET /invoices/{id}/payment-settings` gives the
//! effective values. Every level and target is the caller's account's: another account's ids are
//! 404.

use axum::extract::{Path, State};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{ApiJson, Caller, SequenceVersion};
use super::schema::EffectivePaymentSettings;
use super::state::ApiState;
use crate::provider::PaymentProvider;
use crate::reconcile::settings::SettingsLevel;
use crate::repository::settings::{self as repo, StoredSettings};

/// Distinguishes a field that is absent (`None`) from one that is `null` (`Some(None)`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettingsUpdate {
    /// Required; `null` clears it so the next level down decides.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<PaymentProvider>)]
    pub payment_provider: Option<Option<PaymentProvider>>,
    /// Optional; left out means unchanged, `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<bool>)]
    pub auto_charge: Option<Option<bool>>,
}

/// The stored settings of one level, in the seed's shape. Exactly one of the three id fields is
/// present, naming the level; none for the account's own level.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentSettings {
    pub id: String,
    pub sequence_account_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_schedule_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,
    pub payment_provider: Option<PaymentProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_charge: Option<bool>,
}

impl PaymentSettings {
    fn new(level: SettingsLevel, stored: StoredSettings) -> Self {
        let target = Some(stored.target_id);
        let (customer_id, billing_schedule_id, invoice_id) = match level {
            SettingsLevel::Customer => (target, None, None),
            SettingsLevel::BillingSchedule => (None, target, None),
            SettingsLevel::Invoice => (None, None, target),
            SettingsLevel::Account => (None, None, None),
        };
        Self {
            id: stored.id,
            sequence_account_id: stored.account_id,
            customer_id,
            billing_schedule_id,
            invoice_id,
            payment_provider: stored.payment_provider,
            auto_charge: stored.auto_charge,
        }
    }
}

fn settings_of(level: SettingsLevel) -> &'static str {
    match level {
        SettingsLevel::Customer => "payment settings of customer",
        SettingsLevel::BillingSchedule => "payment settings of billing schedule",
        SettingsLevel::Invoice => "payment settings of invoice",
        SettingsLevel::Account => "payment settings of account",
    }
}

fn level_name(level: SettingsLevel) -> &'static str {
    match level {
        SettingsLevel::Customer => "customer",
        SettingsLevel::BillingSchedule => "billing schedule",
        SettingsLevel::Invoice => "invoice",
        SettingsLevel::Account => "account",
    }
}

async fn put(
    state: &ApiState,
    account_id: &str,
    level: SettingsLevel,
    target_id: &str,
    update: SettingsUpdate,
) -> Result<axum::Json<PaymentSettings>, ApiError> {
    let payment_provider = update.payment_provider.ok_or_else(|| {
        ApiError::validation(
            "paymentProvider",
            "is required: one of STRIPE, GOCARDLESS, NONE, or null to clear it",
        )
    })?;
    let mut tx = state.db.begin().await?;
    if !repo::target_exists(&mut *tx, account_id, level, target_id).await? {
        return Err(ApiError::not_found(level_name(level), target_id));
    }
    let stored = repo::upsert(
        &mut *tx,
        account_id,
        level,
        target_id,
        payment_provider,
        update.auto_charge,
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(PaymentSettings::new(level, stored)))
}

async fn get(
    state: &ApiState,
    account_id: &str,
    level: SettingsLevel,
    target_id: &str,
) -> Result<axum::Json<PaymentSettings>, ApiError> {
    if !repo::target_exists(&state.db, account_id, level, target_id).await? {
        return Err(ApiError::not_found(level_name(level), target_id));
    }
    let stored = repo::get(&state.db, account_id, level, target_id)
        .await?
        .ok_or_else(|| ApiError::not_found(settings_of(level), target_id))?;
    Ok(axum::Json(PaymentSettings::new(level, stored)))
}

// One pair of handlers per level: the routes differ only in which level they address.
macro_rules! level_handlers {
    ($put:ident, $get:ident, $level:expr, $path:literal, $tag:literal) => {
        #[doc = concat!("Set the payment settings of a ", $tag, ".")]
        #[utoipa::path(put, path = $path, tag = "payment settings", request_body = SettingsUpdate,
            params(("id" = String, Path), ("Sequence-Version" = Option<String>, Header, description = "optional, 2024-07-30")),
            responses((status = 200, body = PaymentSettings), (status = 400), (status = 401), (status = 404), (status = 413)))]
        pub async fn $put(
            caller: Caller,
            _: SequenceVersion,
            State(state): State<ApiState>,
            Path(id): Path<String>,
            ApiJson(update): ApiJson<SettingsUpdate>,
        ) -> Result<axum::Json<PaymentSettings>, ApiError> {
            put(&state, &caller.account_id, $level, &id, update).await
        }

        #[doc = concat!("Read the payment settings stored on a ", $tag, ".")]
        #[utoipa::path(get, path = $path, tag = "payment settings",
            params(("id" = String, Path)),
            responses((status = 200, body = PaymentSettings), (status = 401), (status = 404, description = "no such target, or nothing stored on it")))]
        pub async fn $get(
            caller: Caller,
            _: SequenceVersion,
            State(state): State<ApiState>,
            Path(id): Path<String>,
        ) -> Result<axum::Json<PaymentSettings>, ApiError> {
            get(&state, &caller.account_id, $level, &id).await
        }
    };
}

level_handlers!(
    put_customer,
    get_customer,
    SettingsLevel::Customer,
    "/payments/settings/customers/{id}",
    "customer"
);
level_handlers!(
    put_billing_schedule,
    get_billing_schedule,
    SettingsLevel::BillingSchedule,
    "/payments/settings/billing-schedules/{id}",
    "billing schedule"
);
level_handlers!(
    put_invoice,
    get_invoice,
    SettingsLevel::Invoice,
    "/payments/settings/invoices/{id}",
    "invoice"
);

/// Set the payment settings of the caller's account: the level below the customer's. A field
/// left unset here falls back to the service's configured defaults.
#[utoipa::path(put, path = "/payments/settings/account", tag = "payment settings",
    request_body = SettingsUpdate,
    params(("Sequence-Version" = Option<String>, Header, description = "optional, 2024-07-30")),
    responses((status = 200, body = PaymentSettings), (status = 400), (status = 401), (status = 413)))]
pub async fn put_account(
    caller: Caller,
    _: SequenceVersion,
    State(state): State<ApiState>,
    ApiJson(update): ApiJson<SettingsUpdate>,
) -> Result<axum::Json<PaymentSettings>, ApiError> {
    // The default account may not have been written yet when the first request comes in.
    crate::repository::ensure_account(&state.db, &caller.account_id).await?;
    put(
        &state,
        &caller.account_id,
        SettingsLevel::Account,
        &caller.account_id,
        update,
    )
    .await
}

/// Read the payment settings stored on the caller's account.
#[utoipa::path(get, path = "/payments/settings/account", tag = "payment settings",
    responses((status = 200, body = PaymentSettings), (status = 401), (status = 404, description = "nothing stored on the account")))]
pub async fn get_account(
    caller: Caller,
    _: SequenceVersion,
    State(state): State<ApiState>,
) -> Result<axum::Json<PaymentSettings>, ApiError> {
    let account = &caller.account_id;
    repo::get(&state.db, account, SettingsLevel::Account, account)
        .await?
        .map(|stored| axum::Json(PaymentSettings::new(SettingsLevel::Account, stored)))
        .ok_or_else(|| ApiError::not_found(settings_of(SettingsLevel::Account), account))
}

/// The effective settings of an invoice, each field with the level it came from.
#[utoipa::path(get, path = "/invoices/{id}/payment-settings", tag = "payment settings",
    params(("id" = String, Path)),
    responses((status = 200, body = EffectivePaymentSettings), (status = 401), (status = 404)))]
pub async fn effective(
    caller: Caller,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<EffectivePaymentSettings>, ApiError> {
    repo::effective_for_invoice(&state.db, &caller.account_id, &id, state.defaults)
        .await?
        .map(|effective| axum::Json(effective.into()))
        .ok_or_else(|| ApiError::not_found("invoice", &id))
}
