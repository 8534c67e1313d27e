//! Payment methods on file: the references the billing system sends, in Chargebee's shapes (a
//! `type`, the `gateway` holding the method, its `referenceId`), validated so a stored reference
//! is always one the gateway could have issued.

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
    PaypalExpressCheckout,
    AmazonPayments,
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
            } => !matches!(
                method_type,
                MethodType::PaypalExpressCheckout | MethodType::AmazonPayments
            ),
        }
    }
}

/// The gateway holding a method, in Chargebee's names (its `gateway` enum). Only Stripe's and
/// GoCardless's methods are reconciled and charged by settle; a method on another gateway is
/// kept as the customer's method on file for the billing system, and said to be unreconciled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Gateway {
    Stripe,
    Gocardless,
    Braintree,
    Adyen,
    AuthorizeNet,
    PaypalExpressCheckout,
    AmazonPayments,
    Paypal,
    PaypalPro,
    PaypalPayflowPro,
    Chargebee,
    ChargebeePayments,
    Wepay,
    Pin,
    Eway,
    EwayRapid,
    Worldpay,
    BalancedPayments,
    Beanstream,
    Bluepay,
    Elavon,
    FirstDataGlobal,
    Hdfc,
    Migs,
    Nmi,
    Ogone,
    Paymill,
    SagePay,
    Tco,
    Wirecard,
    Orbital,
    MonerisUs,
    Moneris,
    Bluesnap,
    Cybersource,
    Vantiv,
    CheckoutCom,
    IngenicoDirect,
    Exact,
    Mollie,
    Quickbooks,
    Razorpay,
    GlobalPayments,
    BankOfAmerica,
    Ecentric,
    MetricsGlobal,
    Windcave,
    PayCom,
    Ebanx,
    Dlocal,
    Nuvei,
    Solidgate,
    Paystack,
    JpMorgan,
    DeutscheBank,
    Ezidebit,
    Twikey,
    Tempus,
    Moyasar,
}

impl Gateway {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The provider settle reconciles this gateway's payments with, if any.
    pub fn provider(self) -> Option<Provider> {
        match self {
            Self::Stripe => Some(Provider::Stripe),
            Self::Gocardless => Some(Provider::GoCardless),
            _ => None,
        }
    }

    pub fn of_provider(provider: Provider) -> Self {
        match provider {
            Provider::Stripe => Self::Stripe,
            Provider::GoCardless => Self::Gocardless,
        }
    }

    /// Checks `reference` is in the format Chargebee documents for this gateway's permanent
    /// tokens; for Stripe and GoCardless, the parsed reference the charger uses.
    pub fn parse_reference(self, reference: &str) -> Result<Option<MethodReference>, String> {
        if let Some(provider) = self.provider() {
            return MethodReference::parse(provider, reference).map(Some);
        }
        let gateway = self.as_str();
        let pair = |what: &str, part: fn(&str) -> bool| match reference.split_once('/') {
            Some((left, right)) if part(left) && part(right) => Ok(None),
            _ => Err(format!(
                "`{reference}` is not a {gateway} reference: expected `{what}`"
            )),
        };
        match self {
            Self::Braintree => pair("customer_id/payment_method_token", |part| {
                (1..=36).contains(&part.len())
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }),
            Self::AuthorizeNet => pair("customer_profile_id/payment_profile_id", |part| {
                !part.is_empty() && part.len() <= 20 && part.bytes().all(|b| b.is_ascii_digit())
            }),
            Self::Adyen => pair("shopperReference/recurringDetailReference", is_opaque_token),
            // A PayPal billing agreement: `B-` and 17 letters or digits.
            Self::PaypalExpressCheckout => {
                let valid = reference.strip_prefix("B-").is_some_and(|rest| {
                    rest.len() == 17 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
                });
                if valid {
                    Ok(None)
                } else {
                    Err(format!(
                        "`{reference}` is not a PayPal billing agreement id: expected `B-` and 17 letters or digits"
                    ))
                }
            }
            // An Amazon Pay billing agreement: `B01-1234567-1234567` (or `C…`).
            Self::AmazonPayments => {
                let parts: Vec<&str> = reference.split('-').collect();
                let valid = matches!(
                    parts.as_slice(),
                    [region, first, second]
                        if region.len() == 3
                            && region.starts_with(['B', 'C'])
                            && region[1..].bytes().all(|b| b.is_ascii_digit())
                            && [first, second].iter().all(|p| p.len() == 7
                                && p.bytes().all(|b| b.is_ascii_digit()))
                );
                if valid {
                    Ok(None)
                } else {
                    Err(format!(
                        "`{reference}` is not an Amazon Pay billing agreement id: expected `B01-1234567-1234567`"
                    ))
                }
            }
            _ if is_opaque_token(reference) => Ok(None),
            _ => Err(format!(
                "`{reference}` is not a {gateway} reference: expected the gateway's permanent token (letters, digits and `-_./:|`, no spaces)"
            )),
        }
    }

    /// Whether a method of `method_type` can be held by this gateway under `reference` (the
    /// parsed Stripe or GoCardless reference, for those gateways).
    pub fn allows(self, reference: Option<&MethodReference>, method_type: MethodType) -> bool {
        if let Some(reference) = reference {
            return reference.allows(method_type);
        }
        match method_type {
            MethodType::PaypalExpressCheckout => {
                matches!(self, Self::PaypalExpressCheckout | Self::Braintree)
            }
            MethodType::AmazonPayments => self == Self::AmazonPayments,
            _ => !matches!(self, Self::PaypalExpressCheckout | Self::AmazonPayments),
        }
    }
}

/// A gateway's opaque permanent token: 1–200 printable ASCII characters from a safe set.
fn is_opaque_token(text: &str) -> bool {
    (1..=200).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:|".contains(&b))
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
    fn every_gateway_takes_references_in_chargebees_format() {
        for (gateway, good, bad) in [
            (Gateway::Braintree, "8jk2m1/7hx9kp", "8jk2m1"),
            (Gateway::AuthorizeNet, "1504320987/1503637215", "150432/abc"),
            (
                Gateway::Adyen,
                "shopper-42/8415718415566342",
                "shopper 42/1",
            ),
            (
                Gateway::PaypalExpressCheckout,
                "B-5YM63185LP1226425",
                "B-123",
            ),
            (
                Gateway::AmazonPayments,
                "B01-5271946-3412345",
                "B01-52719-3412345",
            ),
            (Gateway::Worldpay, "9f1c6c1e-token", "has space"),
            (Gateway::Stripe, "cus_A/pm_1", "pm_1"),
            (Gateway::Gocardless, "MD0001", "CU0001"),
        ] {
            assert!(gateway.parse_reference(good).is_ok(), "{gateway:?} {good}");
            assert!(gateway.parse_reference(bad).is_err(), "{gateway:?} {bad}");
        }
        assert!(
            Gateway::Gocardless
                .parse_reference("MD1")
                .unwrap()
                .is_some()
        );
        assert!(Gateway::Braintree.parse_reference("a/b").unwrap().is_none());
    }

    #[test]
    fn chargebees_types_fit_their_gateways() {
        use MethodType::*;
        assert!(Gateway::PaypalExpressCheckout.allows(None, PaypalExpressCheckout));
        assert!(Gateway::Braintree.allows(None, PaypalExpressCheckout));
        assert!(!Gateway::Adyen.allows(None, PaypalExpressCheckout));
        assert!(Gateway::AmazonPayments.allows(None, AmazonPayments));
        assert!(!Gateway::AmazonPayments.allows(None, Card));
        assert!(Gateway::Adyen.allows(None, DirectDebit));
        let stripe = Gateway::Stripe.parse_reference("cus_A/pm_1").unwrap();
        assert!(Gateway::Stripe.allows(stripe.as_ref(), Card));
        assert!(!Gateway::Stripe.allows(stripe.as_ref(), AmazonPayments));
        assert_eq!(
            Gateway::of_provider(Provider::GoCardless).as_str(),
            "gocardless"
        );
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
