use sqlx::PgExecutor;

use crate::reconcile::settings::{
    AccountDefaults, EffectiveSettings, LevelSettings, PaymentProvider, SettingsSource, resolve,
};

/// A level's stored settings row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredSettings {
    pub id: String,
    pub account_id: String,
    pub target_id: String,
    pub payment_provider: Option<String>,
    pub auto_charge: Option<bool>,
}

impl StoredSettings {
    pub fn level(&self) -> LevelSettings {
        LevelSettings {
            payment_provider: self
                .payment_provider
                .as_deref()
                .and_then(PaymentProvider::parse),
            auto_charge: self.auto_charge,
        }
    }
}

/// Which table holds the target of a settings level.
fn target_table(level: SettingsSource) -> &'static str {
    match level {
        SettingsSource::Customer => "customers",
        SettingsSource::BillingSchedule => "billing_schedules",
        SettingsSource::Invoice => "invoices",
        SettingsSource::AccountDefault => unreachable!("account defaults live in config"),
    }
}

pub async fn target_exists(
    db: impl PgExecutor<'_>,
    level: SettingsSource,
    target_id: &str,
) -> sqlx::Result<bool> {
    let query = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE id = $1)",
        target_table(level)
    );
    sqlx::query_scalar(&query)
        .bind(target_id)
        .fetch_one(db)
        .await
}

/// Sets the payment provider (`None` clears it) and, when `auto_charge` is given, auto-charge
/// (`Some(None)` clears it; `None` leaves it as it is).
pub async fn upsert(
    db: impl PgExecutor<'_>,
    account_id: &str,
    level: SettingsSource,
    target_id: &str,
    payment_provider: Option<PaymentProvider>,
    auto_charge: Option<Option<bool>>,
) -> sqlx::Result<StoredSettings> {
    sqlx::query_as(
        "INSERT INTO payment_settings (id, account_id, level, target_id, payment_provider, auto_charge)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (level, target_id) DO UPDATE SET
             payment_provider = EXCLUDED.payment_provider,
             auto_charge = CASE WHEN $7 THEN EXCLUDED.auto_charge ELSE payment_settings.auto_charge END,
             updated_at = now()
         RETURNING id, account_id, target_id, payment_provider, auto_charge",
    )
    .bind(super::new_id("pset"))
    .bind(account_id)
    .bind(level.as_str())
    .bind(target_id)
    .bind(payment_provider.map(PaymentProvider::as_str))
    .bind(auto_charge.flatten())
    .bind(auto_charge.is_some())
    .fetch_one(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    level: SettingsSource,
    target_id: &str,
) -> sqlx::Result<Option<StoredSettings>> {
    sqlx::query_as(
        "SELECT id, account_id, target_id, payment_provider, auto_charge
         FROM payment_settings WHERE level = $1 AND target_id = $2",
    )
    .bind(level.as_str())
    .bind(target_id)
    .fetch_optional(db)
    .await
}

#[derive(sqlx::FromRow)]
struct InvoiceLevels {
    invoice_provider: Option<String>,
    invoice_auto: Option<bool>,
    schedule_provider: Option<String>,
    schedule_auto: Option<bool>,
    customer_provider: Option<String>,
    customer_auto: Option<bool>,
}

/// The effective settings of an invoice, resolved from its three levels in one query. `None` when
/// the invoice does not exist.
pub async fn effective_for_invoice(
    db: impl PgExecutor<'_>,
    invoice_id: &str,
    defaults: AccountDefaults,
) -> sqlx::Result<Option<EffectiveSettings>> {
    let levels: Option<InvoiceLevels> = sqlx::query_as(
        "SELECT i_s.payment_provider AS invoice_provider, i_s.auto_charge AS invoice_auto,
                b_s.payment_provider AS schedule_provider, b_s.auto_charge AS schedule_auto,
                c_s.payment_provider AS customer_provider, c_s.auto_charge AS customer_auto
         FROM invoices i
         LEFT JOIN payment_settings i_s ON i_s.level = 'INVOICE' AND i_s.target_id = i.id
         LEFT JOIN payment_settings b_s ON b_s.level = 'BILLING_SCHEDULE' AND b_s.target_id = i.billing_schedule_id
         LEFT JOIN payment_settings c_s ON c_s.level = 'CUSTOMER' AND c_s.target_id = i.customer_id
         WHERE i.id = $1",
    )
    .bind(invoice_id)
    .fetch_optional(db)
    .await?;
    Ok(levels.map(|l| {
        let level = |provider: Option<String>, auto_charge| LevelSettings {
            payment_provider: provider.as_deref().and_then(PaymentProvider::parse),
            auto_charge,
        };
        resolve(
            Some(level(l.invoice_provider, l.invoice_auto)),
            Some(level(l.schedule_provider, l.schedule_auto)),
            Some(level(l.customer_provider, l.customer_auto)),
            defaults,
        )
    }))
}
