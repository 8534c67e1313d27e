//! Payment-provider settings and their override order. Each field resolves on its own: invoice,
//! else billing schedule, else customer, else the account default from config; the result says
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
}

impl SettingsLevel {
    /// The stored name (`BILLING_SCHEDULE`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where an effective value came from: a stored level, or the account's defaults.
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
        }
    }
}

/// The settings stored at one level; `None` means "not set here".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelSettings {
    pub payment_provider: Option<PaymentProvider>,
    pub auto_charge: Option<bool>,
}

/// The account's defaults: every field has a value.
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

/// The stored settings of an invoice's three levels; a level that stores nothing (or does not
/// apply, an invoice without a billing schedule) is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvoiceLevels {
    pub invoice: Option<LevelSettings>,
    pub billing_schedule: Option<LevelSettings>,
    pub customer: Option<LevelSettings>,
}

impl InvoiceLevels {
    pub fn resolve(self, defaults: AccountDefaults) -> EffectiveSettings {
        resolve(self.invoice, self.billing_schedule, self.customer, defaults)
    }
}

/// Resolves each field on its own, most specific level first. A level that does not apply (an
/// invoice without a billing schedule) is passed as `None`.
pub fn resolve(
    invoice: Option<LevelSettings>,
    billing_schedule: Option<LevelSettings>,
    customer: Option<LevelSettings>,
    defaults: AccountDefaults,
) -> EffectiveSettings {
    let levels = [
        (SettingsSource::Invoice, invoice.unwrap_or_default()),
        (
            SettingsSource::BillingSchedule,
            billing_schedule.unwrap_or_default(),
        ),
        (SettingsSource::Customer, customer.unwrap_or_default()),
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

    /// Every way one level can hold one field: absent level, level without the field, or a value.
    fn field_states<T: Copy>(value: T) -> [Option<Option<T>>; 3] {
        [None, Some(None), Some(Some(value))]
    }

    #[test]
    fn each_field_resolves_independently_over_every_combination() {
        let providers = [
            (SettingsSource::Invoice, PaymentProvider::Stripe, true),
            (
                SettingsSource::BillingSchedule,
                PaymentProvider::GoCardless,
                false,
            ),
            (SettingsSource::Customer, PaymentProvider::None, true),
        ];
        // 3 states per field per level, 2 fields, 3 levels: 3^6 = 729 combinations.
        let mut checked = 0;
        for inv_p in field_states(providers[0].1) {
            for inv_a in field_states(providers[0].2) {
                for sch_p in field_states(providers[1].1) {
                    for sch_a in field_states(providers[1].2) {
                        for cus_p in field_states(providers[2].1) {
                            for cus_a in field_states(providers[2].2) {
                                let level =
                                    |p: Option<Option<PaymentProvider>>,
                                     a: Option<Option<bool>>| {
                                        (p.is_some() || a.is_some()).then(|| LevelSettings {
                                            payment_provider: p.flatten(),
                                            auto_charge: a.flatten(),
                                        })
                                    };
                                let effective = resolve(
                                    level(inv_p, inv_a),
                                    level(sch_p, sch_a),
                                    level(cus_p, cus_a),
                                    DEFAULTS,
                                );
                                // The expected value: the first level, in override order, that sets it.
                                let expected_provider = [
                                    (inv_p.flatten(), SettingsSource::Invoice),
                                    (sch_p.flatten(), SettingsSource::BillingSchedule),
                                    (cus_p.flatten(), SettingsSource::Customer),
                                ]
                                .into_iter()
                                .find_map(|(v, s)| v.map(|v| (v, s)))
                                .unwrap_or((
                                    DEFAULTS.payment_provider,
                                    SettingsSource::AccountDefault,
                                ));
                                let expected_auto = [
                                    (inv_a.flatten(), SettingsSource::Invoice),
                                    (sch_a.flatten(), SettingsSource::BillingSchedule),
                                    (cus_a.flatten(), SettingsSource::Customer),
                                ]
                                .into_iter()
                                .find_map(|(v, s)| v.map(|v| (v, s)))
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
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 729);
    }

    #[test]
    fn the_issue_example_resolves_as_documented() {
        let effective = resolve(
            Some(LevelSettings::default()),
            Some(LevelSettings {
                payment_provider: Some(PaymentProvider::GoCardless),
                auto_charge: None,
            }),
            Some(LevelSettings {
                payment_provider: Some(PaymentProvider::Stripe),
                auto_charge: Some(true),
            }),
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
