//! Payment methods on file: the provider references the billing system sends, validated so a
//! stored reference is always one the provider could have issued.

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

use crate::provider::Provider;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum MethodType {
    Card,
    DirectDebit,
    BankAccount,
    SepaDebit,
    BacsDebit,
}

impl MethodType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Whether a method can be charged: a cancelled mandate or a detached card is `Inactive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum MethodStatus {
    Active,
    Inactive,
}

impl MethodStatus {
    pub fn usable(usable: bool) -> Self {
        if usable { Self::Active } else { Self::Inactive }
    }
}

/// A validated provider reference: Stripe `cus_…` alone or `cus_…/card_…`, `cus_…/pm_…`,
/// `cus_…/ba_…`; GoCardless mandate `MD…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodReference {
    StripeCustomer {
        customer: String,
    },
    StripeMethod {
        customer: String,
        method: String,
        kind: StripeMethodKind,
    },
    GoCardlessMandate {
        mandate: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeMethodKind {
    Card,
    PaymentMethod,
    BankAccount,
}

fn is_id_tail(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl MethodReference {
    pub fn parse(provider: Provider, reference: &str) -> Result<Self, String> {
        match provider {
            Provider::Stripe => {
                let (customer, method) = match reference.split_once('/') {
                    Some((customer, method)) => (customer, Some(method)),
                    None => (reference, None),
                };
                if !customer.strip_prefix("cus_").is_some_and(is_id_tail) {
                    return Err(format!(
                        "`{reference}` is not a Stripe reference: expected `cus_…` or `cus_…/pm_…`, `cus_…/card_…`, `cus_…/ba_…`"
                    ));
                }
                let Some(method) = method else {
                    return Ok(Self::StripeCustomer {
                        customer: customer.to_owned(),
                    });
                };
                let kind = [
                    ("pm_", StripeMethodKind::PaymentMethod),
                    ("card_", StripeMethodKind::Card),
                    ("ba_", StripeMethodKind::BankAccount),
                ]
                .into_iter()
                .find(|(prefix, _)| method.strip_prefix(prefix).is_some_and(is_id_tail))
                .map(|(_, kind)| kind)
                .ok_or_else(|| {
                    format!("`{method}` is not a Stripe payment method id: expected `pm_…`, `card_…` or `ba_…`")
                })?;
                Ok(Self::StripeMethod {
                    customer: customer.to_owned(),
                    method: method.to_owned(),
                    kind,
                })
            }
            Provider::GoCardless => {
                let valid = reference.strip_prefix("MD").is_some_and(|rest| {
                    !rest.is_empty()
                        && rest
                            .bytes()
                            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                });
                if valid {
                    Ok(Self::GoCardlessMandate {
                        mandate: reference.to_owned(),
                    })
                } else {
                    Err(format!(
                        "`{reference}` is not a GoCardless mandate id: expected `MD` followed by upper-case letters and digits"
                    ))
                }
            }
        }
    }

    /// The method types this reference can carry.
    pub fn allows(&self, method_type: MethodType) -> bool {
        match self {
            Self::GoCardlessMandate { .. } => matches!(
                method_type,
                MethodType::DirectDebit | MethodType::SepaDebit | MethodType::BacsDebit
            ),
            Self::StripeMethod {
                kind: StripeMethodKind::Card,
                ..
            } => method_type == MethodType::Card,
            Self::StripeMethod {
                kind: StripeMethodKind::BankAccount,
                ..
            } => {
                matches!(
                    method_type,
                    MethodType::BankAccount | MethodType::DirectDebit
                )
            }
            Self::StripeCustomer { .. }
            | Self::StripeMethod {
                kind: StripeMethodKind::PaymentMethod,
                ..
            } => true,
        }
    }
}

/// Card expiry: month 1–12, a four-digit year, and not before the current month.
pub fn validate_card_expiry(
    month: i32,
    year: i32,
    today: chrono::NaiveDate,
) -> Result<(), (&'static str, String)> {
    use chrono::Datelike;
    if !(1..=12).contains(&month) {
        return Err(("card.expMonth", format!("{month} is not a month (1–12)")));
    }
    if !(1000..=9999).contains(&year) {
        return Err(("card.expYear", format!("{year} is not a four-digit year")));
    }
    if (year, month as u32) < (today.year(), today.month()) {
        return Err((
            "card.expYear",
            format!("the card expired in {month:02}/{year}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_references_in_every_seed_form() {
        assert!(matches!(
            MethodReference::parse(Provider::Stripe, "cus_ABC123").unwrap(),
            MethodReference::StripeCustomer { .. }
        ));
        for (reference, kind) in [
            ("cus_ABC/pm_123", StripeMethodKind::PaymentMethod),
            ("cus_ABC/card_123", StripeMethodKind::Card),
            ("cus_ABC/ba_123", StripeMethodKind::BankAccount),
        ] {
            match MethodReference::parse(Provider::Stripe, reference).unwrap() {
                MethodReference::StripeMethod {
                    kind: parsed,
                    customer,
                    ..
                } => {
                    assert_eq!(parsed, kind);
                    assert_eq!(customer, "cus_ABC");
                }
                other => panic!("{reference}: {other:?}"),
            }
        }
        for bad in [
            "",
            "cus_",
            "pm_123",
            "cus_ABC/",
            "cus_ABC/src_1",
            "cus_A B",
            "MD123",
            "cus_ABC/pm_1/x",
        ] {
            assert!(
                MethodReference::parse(Provider::Stripe, bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn gocardless_mandates() {
        assert!(MethodReference::parse(Provider::GoCardless, "MD0000XH9A3T4C").is_ok());
        for bad in ["", "MD", "md123", "MD12 3", "PM123", "cus_ABC"] {
            assert!(
                MethodReference::parse(Provider::GoCardless, bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn types_must_fit_the_reference() {
        let card = MethodReference::parse(Provider::Stripe, "cus_A/card_1").unwrap();
        assert!(card.allows(MethodType::Card));
        assert!(!card.allows(MethodType::DirectDebit));
        let mandate = MethodReference::parse(Provider::GoCardless, "MD1").unwrap();
        assert!(mandate.allows(MethodType::DirectDebit));
        assert!(!mandate.allows(MethodType::Card));
    }

    #[test]
    fn card_expiry_rules() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        assert!(validate_card_expiry(11, 2026, today).is_ok());
        assert!(validate_card_expiry(1, 2030, today).is_ok());
        for (month, year, field) in [
            (10, 2026, "card.expYear"),
            (0, 2030, "card.expMonth"),
            (13, 2030, "card.expMonth"),
            (5, 30, "card.expYear"),
        ] {
            let refused = validate_card_expiry(month, year, today).unwrap_err();
            assert_eq!(refused.0, field, "{month}/{year}");
        }
    }
}
