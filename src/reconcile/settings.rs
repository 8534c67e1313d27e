//! Payment-provider settings and their override order. Each field resolves on its own: invoice,
//! else billing schedule, else customer, else the account. The account level is the account's own
//! stored row (`PUT /payments/settings/account`), and config's `[account]` values
//! (`AccountDefaults`) are the fallback for a field that row does not set (or when there is no
//! row); both are the account's level and are reported as `ACCOUNT_DEFAULT`. The result says
//! which level each value came from.

use serde::Serialize;
use strum::{EnumString, IntoStaticStr, VariantArray};

use crate::provider::PaymentProvider;

/// A level settings are stored on, most specific first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[derive(Serialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum SettingsLevel {
    Invoice,
    BillingSchedule,
    Customer,
    /// The account's own row; its target is the account.
    Account,
}

impl SettingsLevel {
    /// The stored name (`BILLING_SCHEDULE`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where an effective value came from: a stored level, or the account's level (its stored row,
/// else config's defaults).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    IntoStaticStr,
    VariantArray
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum SettingsSource {
    Invoice,
    BillingSchedule,
    Customer,
    AccountDefault,
}

impl From<SettingsLevel> for SettingsSource {
    fn from(level: SettingsLevel) -> Self {
        match level {
            SettingsLevel::Invoice => Self::Invoice,
            SettingsLevel::BillingSchedule => Self::BillingSchedule,
            SettingsLevel::Customer => Self::Customer,
            SettingsLevel::Account => Self::AccountDefault,
        }
    }
}

/// The settings stored at one level; `None` means "not set here".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelSettings {
    pub payment_provider: Option<PaymentProvider>,
    pub auto_charge: Option<bool>,
}

/// Config's `[account]` defaults: every field has a value. The fallback, for every account, of a
/// field the account's own row does not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountDefaults {
    pub payment_provider: PaymentProvider,
    pub auto_charge: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    pub source: SettingsSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSettings {
    pub payment_provider: Sourced<PaymentProvider>,
    pub auto_charge: Sourced<bool>,
}

/// The stored settings of an invoice's four levels; a level that stores nothing (or does not
/// apply, an invoice without a billing schedule) is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvoiceLevels {
    pub invoice: Option<LevelSettings>,
    pub billing_schedule: Option<LevelSettings>,
    pub customer: Option<LevelSettings>,
    /// The account's own row.
    pub account: Option<LevelSettings>,
}

impl InvoiceLevels {
    pub fn resolve(self, defaults: AccountDefaults) -> EffectiveSettings {
        resolve(self, defaults)
    }
}

/// Resolves each field on its own, most specific level first: invoice, billing schedule,
/// customer, the account's row, then config's defaults. A level that does not apply (an invoice
/// without a billing schedule) is `None`.
pub fn resolve(levels: InvoiceLevels, defaults: AccountDefaults) -> EffectiveSettings {
    let levels = [
        (SettingsSource::Invoice, levels.invoice.unwrap_or_default()),
        (
            SettingsSource::BillingSchedule,
            levels.billing_schedule.unwrap_or_default(),
        ),
        (
            SettingsSource::Customer,
            levels.customer.unwrap_or_default(),
        ),
        (
            SettingsSource::AccountDefault,
            levels.account.unwrap_or_default(),
        ),
    ];
    fn first<T: Copy>(
        levels: &[(SettingsSource, LevelSettings)],
        field: impl Fn(&LevelSettings) -> Option<T>,
        default: T,
    ) -> Sourced<T> {
        levels
            .iter()
            .find_map(|(source, settings)| {
                field(settings).map(|value| Sourced {
                    value,
                    source: *source,
                })
            })
            .unwrap_or(Sourced {
                value: default,
                source: SettingsSource::AccountDefault,
            })
    }
    EffectiveSettings {
        payment_provider: first(&levels, |s| s.payment_provider, defaults.payment_provider),
        auto_charge: first(&levels, |s| s.auto_charge, defaults.auto_charge),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: AccountDefaults = AccountDefaults {
        payment_provider: PaymentProvider::None,
        auto_charge: false,
    };

    /// One level's state of both fields (see `field_states`).
    type LevelState = (Option<Option<PaymentProvider>>, Option<Option<bool>>);

    /// Every way one level can hold one field: absent level, level without the field, or a value.
    fn field_states<T: Copy>(value: T) -> [Option<Option<T>>; 3] {
        [None, Some(None), Some(Some(value))]
    }

    #[test]
    fn each_field_resolves_independently_over_every_combination() {
        // One value per level, distinct from the next level's, so the source is visible.
        let values = [
            (SettingsSource::Invoice, PaymentProvider::Stripe, true),
            (
                SettingsSource::BillingSchedule,
                PaymentProvider::GoCardless,
                false,
            ),
            (SettingsSource::Customer, PaymentProvider::None, true),
            (
                SettingsSource::AccountDefault,
                PaymentProvider::Stripe,
                false,
            ),
        ];
        // 3 states per field per level, 2 fields, 4 levels: 3^8 = 6561 combinations, counted
        // in base 3 (each level's provider and auto-charge state is two digits).
        let mut checked = 0;
        for combination in 0..3_usize.pow(8) {
            let digit = |i: usize| (combination / 3_usize.pow(i as u32)) % 3;
            let states: Vec<LevelState> = values
                .iter()
                .enumerate()
                .map(|(level, (_, provider, auto))| {
                    (
                        field_states(*provider)[digit(2 * level)],
                        field_states(*auto)[digit(2 * level + 1)],
                    )
                })
                .collect();
            let level = |(p, a): LevelState| {
                (p.is_some() || a.is_some()).then(|| LevelSettings {
                    payment_provider: p.flatten(),
                    auto_charge: a.flatten(),
                })
            };
            let effective = resolve(
                InvoiceLevels {
                    invoice: level(states[0]),
                    billing_schedule: level(states[1]),
                    customer: level(states[2]),
                    account: level(states[3]),
                },
                DEFAULTS,
            );
            // The expected value: the first level, in override order, that sets it, else config.
            let expected_provider = states
                .iter()
                .zip(&values)
                .find_map(|((p, _), (source, _, _))| p.flatten().map(|v| (v, *source)))
                .unwrap_or((DEFAULTS.payment_provider, SettingsSource::AccountDefault));
            let expected_auto = states
                .iter()
                .zip(&values)
                .find_map(|((_, a), (source, _, _))| a.flatten().map(|v| (v, *source)))
                .unwrap_or((DEFAULTS.auto_charge, SettingsSource::AccountDefault));
            assert_eq!(
                (
                    effective.payment_provider.value,
                    effective.payment_provider.source
                ),
                expected_provider
            );
            assert_eq!(
                (effective.auto_charge.value, effective.auto_charge.source),
                expected_auto
            );
            checked += 1;
        }
        assert_eq!(checked, 6561);
    }

    #[test]
    fn the_account_row_takes_over_from_config_field_by_field() {
        let effective = resolve(
            InvoiceLevels {
                account: Some(LevelSettings {
                    payment_provider: Some(PaymentProvider::GoCardless),
                    auto_charge: None,
                }),
                ..InvoiceLevels::default()
            },
            DEFAULTS,
        );
        assert_eq!(
            serde_json::to_value(effective).unwrap(),
            serde_json::json!({
                "paymentProvider": {"value": "GOCARDLESS", "source": "ACCOUNT_DEFAULT"},
                "autoCharge": {"value": false, "source": "ACCOUNT_DEFAULT"}
            })
        );
    }

    #[test]
    fn the_issue_example_resolves_as_documented() {
        let effective = resolve(
            InvoiceLevels {
                invoice: Some(LevelSettings::default()),
                billing_schedule: Some(LevelSettings {
                    payment_provider: Some(PaymentProvider::GoCardless),
                    auto_charge: None,
                }),
                customer: Some(LevelSettings {
                    payment_provider: Some(PaymentProvider::Stripe),
                    auto_charge: Some(true),
                }),
                account: None,
            },
            DEFAULTS,
        );
        assert_eq!(
            serde_json::to_value(effective).unwrap(),
            serde_json::json!({
                "paymentProvider": {"value": "GOCARDLESS", "source": "BILLING_SCHEDULE"},
                "autoCharge": {"value": true, "source": "CUSTOMER"}
            })
        );
    }
}
