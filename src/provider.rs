//! The payment providers settle reconciles, and the one place their names are spelled.
//!
//! A provider has two spellings, each fixed by a contract settle does not own:
//! - the *wire name* (`stripe`, `gocardless`): webhook paths, message ids, routing keys, AMQP
//!   headers and the ids of reconciliation events;
//! - the *stored name* (`STRIPE`, `GOCARDLESS`): database columns and the API's JSON, as the seed
//!   billing product's `paymentProvider` spells it.
//!
//! Everything else converts through [`Provider`]; nothing upper- or lower-cases a name by hand.
//! What each provider knows beyond its name is in `providers`, one folder per provider.

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "UPPERCASE")]
#[strum(serialize_all = "UPPERCASE")]
pub enum Provider {
    Stripe,
    GoCardless,
}

impl Provider {
    /// `stripe`, `gocardless`: URLs, message ids, routing keys, AMQP headers.
    pub fn wire_name(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::GoCardless => "gocardless",
        }
    }

    pub fn from_wire_name(name: &str) -> Option<Self> {
        <Self as strum::VariantArray>::VARIANTS
            .iter()
            .copied()
            .find(|provider| provider.wire_name() == name)
    }

    /// `STRIPE`, `GOCARDLESS`: database columns and the API's JSON.
    pub fn stored_name(self) -> &'static str {
        self.into()
    }

    /// `Stripe`, `GoCardless`: for sentences people read.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Stripe => "Stripe",
            Self::GoCardless => "GoCardless",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.wire_name())
    }
}

/// The `paymentProvider` setting: which provider an invoice is collected with, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "UPPERCASE")]
#[strum(serialize_all = "UPPERCASE")]
pub enum PaymentProvider {
    Stripe,
    GoCardless,
    None,
}

impl PaymentProvider {
    pub fn stored_name(self) -> &'static str {
        self.into()
    }
}

impl From<Provider> for PaymentProvider {
    fn from(provider: Provider) -> Self {
        match provider {
            Provider::Stripe => Self::Stripe,
            Provider::GoCardless => Self::GoCardless,
        }
    }
}

/// When a GoCardless payment counts as collected: a choice about the provider's lifecycle that
/// the operator makes in configuration (`worker.gocardless_collected_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoCardlessCollectedAt {
    /// At `confirmed`: the bank did not return an error in time (a late failure may still come).
    Confirmed,
    /// Only at `paid_out`: the money reached the merchant's account.
    PaidOut,
}

/// One provider event as its provider's wire format splits it out of a webhook body or an API
/// list (`providers::Rules::events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingEvent {
    pub id: String,
    pub event_type: String,
    /// The event's exact JSON as the provider sent it.
    pub body: Vec<u8>,
}

/// Why a body could not be split into events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the event has no `{0}`")]
    MissingField(&'static str),
    #[error("a batch holds at most {0} events")]
    TooManyEvents(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    #[test]
    fn each_provider_has_one_wire_name_and_one_stored_name() {
        for provider in Provider::VARIANTS.iter().copied() {
            assert_eq!(
                Provider::from_wire_name(provider.wire_name()),
                Some(provider)
            );
            assert_eq!(provider.stored_name().parse(), Ok(provider));
            assert_eq!(provider.wire_name().to_uppercase(), provider.stored_name());
            // serde (the API's JSON) and the stored name are the same spelling.
            assert_eq!(
                serde_json::to_value(provider).unwrap(),
                provider.stored_name()
            );
        }
        assert_eq!(Provider::from_wire_name("STRIPE"), None);
        assert_eq!(Provider::from_wire_name("paypal"), None);
    }

    #[test]
    fn payment_provider_settings_spell_as_the_seed_contract() {
        for setting in PaymentProvider::VARIANTS.iter().copied() {
            assert_eq!(
                serde_json::to_value(setting).unwrap(),
                setting.stored_name()
            );
            assert_eq!(setting.stored_name().parse(), Ok(setting));
        }
        assert_eq!(PaymentProvider::GoCardless.stored_name(), "GOCARDLESS");
        assert_eq!(
            PaymentProvider::from(Provider::GoCardless),
            PaymentProvider::GoCardless
        );
    }
}
