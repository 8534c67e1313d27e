//! Payment settings: one row per (account, level, target), and the effective settings of an
//! invoice. The account's own level is the row whose target is the account itself.

use sqlx::PgExecutor;

use crate::provider::PaymentProvider;
use crate::reconcile::settings::{
    AccountDefaults, EffectiveSettings, InvoiceLevels, LevelSettings, SettingsLevel,
};

/// A level's stored settings row.
#[derive(Debug, Clone)]
pub struct StoredSettings {
    pub id: String,
    pub account_id: String,
    pub target_id: String,
    pub payment_provider: Option<PaymentProvider>,
    pub auto_charge: Option<bool>,
}

/// Which table holds the target of a settings level, and how a row of it is the account's.
fn target_table(level: SettingsLevel) -> (&'static str, &'static str) {
    match level {
        // A deleted customer keeps its row for its settled invoices, and takes no settings.
        SettingsLevel::Customer => ("customers", "account_id = $1 AND deleted_at IS NULL"),
        SettingsLevel::BillingSchedule => ("billing_schedules", "account_id = $1"),
        SettingsLevel::Invoice => ("invoices", "account_id = $1"),
        // The account level's target is the account itself.
        SettingsLevel::Account => ("accounts", "id = $1"),
    }
}

/// Whether the level's target exists in the account (the account level's target is the account),
/// held for the rest of the transaction: a customer's delete or merge waits for it.
pub async fn target_exists(
    db: impl PgExecutor<'_>,
    account_id: &str,
    level: SettingsLevel,
    target_id: &str,
) -> sqlx::Result<bool> {
    let (table, scope) = target_table(level);
    let query = format!("SELECT 1 FROM {table} WHERE {scope} AND id = $2 FOR SHARE");
    let held: Option<i32> = sqlx::query_scalar(&query)
        .bind(account_id)
        .bind(target_id)
        .fetch_optional(db)
        .await?;
    Ok(held.is_some())
}

/// Sets the payment provider (`None` clears it) and, when `auto_charge` is given, auto-charge
/// (`Some(None)` clears it; `None` leaves it as it is).
pub async fn upsert(
    db: impl PgExecutor<'_>,
    account_id: &str,
    level: SettingsLevel,
    target_id: &str,
    payment_provider: Option<PaymentProvider>,
    auto_charge: Option<Option<bool>>,
) -> sqlx::Result<StoredSettings> {
    sqlx::query_as!(
        StoredSettings,
        r#"INSERT INTO payment_settings (id, account_id, level, target_id, payment_provider, auto_charge)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (account_id, level, target_id) DO UPDATE SET
             payment_provider = EXCLUDED.payment_provider,
             auto_charge = CASE WHEN $7 THEN EXCLUDED.auto_charge ELSE payment_settings.auto_charge END,
             updated_at = now()
         RETURNING id, account_id, target_id,
             payment_provider AS "payment_provider: PaymentProvider", auto_charge"#,
        super::rows::new_id("pset"),
        account_id,
        level.as_str(),
        target_id,
        payment_provider.map(PaymentProvider::stored_name),
        auto_charge.flatten(),
        auto_charge.is_some(),
    )
    .fetch_one(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    account_id: &str,
    level: SettingsLevel,
    target_id: &str,
) -> sqlx::Result<Option<StoredSettings>> {
    sqlx::query_as!(
        StoredSettings,
        r#"SELECT id, account_id, target_id,
             payment_provider AS "payment_provider: PaymentProvider", auto_charge
         FROM payment_settings WHERE account_id = $1 AND level = $2 AND target_id = $3"#,
        account_id,
        level.as_str(),
        target_id,
    )
    .fetch_optional(db)
    .await
}

/// One row of the `invoice_settings` view: the stored settings of an invoice's four levels.
/// Every read of effective settings goes through it (the API here, the worker in
/// `invoice_state`), so the two cannot disagree.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvoiceLevelsRow {
    invoice_provider: Option<PaymentProvider>,
    invoice_auto: Option<bool>,
    schedule_provider: Option<PaymentProvider>,
    schedule_auto: Option<bool>,
    customer_provider: Option<PaymentProvider>,
    customer_auto: Option<bool>,
    account_provider: Option<PaymentProvider>,
    account_auto: Option<bool>,
}

/// The view's columns, for queries that join it.
pub(crate) const INVOICE_LEVELS_COLUMNS: &str = "s.invoice_provider, s.invoice_auto, \
    s.schedule_provider, s.schedule_auto, s.customer_provider, s.customer_auto, s.account_provider, \
    s.account_auto";

impl InvoiceLevelsRow {
    pub fn levels(&self) -> InvoiceLevels {
        let level = |payment_provider, auto_charge| {
            Some(LevelSettings {
                payment_provider,
                auto_charge,
            })
        };
        InvoiceLevels {
            invoice: level(self.invoice_provider, self.invoice_auto),
            billing_schedule: level(self.schedule_provider, self.schedule_auto),
            customer: level(self.customer_provider, self.customer_auto),
            account: level(self.account_provider, self.account_auto),
        }
    }
}

/// The effective settings of an invoice of the account. `None` when the invoice does not exist
/// there.
pub async fn effective_for_invoice(
    db: impl PgExecutor<'_>,
    account_id: &str,
    invoice_id: &str,
    defaults: AccountDefaults,
) -> sqlx::Result<Option<EffectiveSettings>> {
    let levels: Option<InvoiceLevelsRow> = sqlx::query_as(&format!(
        "SELECT {INVOICE_LEVELS_COLUMNS} FROM invoice_settings s
         WHERE s.account_id = $1 AND s.invoice_id = $2"
    ))
    .bind(account_id)
    .bind(invoice_id)
    .fetch_optional(db)
    .await?;
    Ok(levels.map(|row| row.levels().resolve(defaults)))
}
