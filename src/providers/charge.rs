//! Creating a payment at a provider for an automatic charge: what settle asks for, and what the
//! answer means for the attempt. Each provider's `charge` module builds its request and reads its
//! answer into a `ChargeAnswer`; the charger (`charger`) decides what to store.

use std::time::Duration;

use crate::reconcile::money::Currency;

/// One send of an automatic attempt. Every send of one attempt carries the same key and terms.
#[derive(Debug, Clone)]
pub struct ChargeRequest<'a> {
    pub idempotency_key: &'a str,
    pub amount: i64,
    pub currency: Currency,
    /// The method on file: Stripe `cus_…` or `cus_…/pm_…` (`card_…`, `ba_…`), GoCardless `MD…`.
    pub method_reference: &'a str,
    /// settle's invoice: the payment's metadata names it, so its webhooks find the invoice.
    pub invoice_id: &'a str,
    /// For the statement a person reads (GoCardless `description`).
    pub invoice_number: &'a str,
}

/// The metadata keys every automatic payment carries back in its webhooks.
pub const METADATA_INVOICE: &str = "invoice_id";
pub const METADATA_CHARGE: &str = "settle_charge";

/// What the provider's answer to a create call means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeAnswer {
    /// It created the payment: succeeded already, or in progress; its webhooks say how it ends.
    Created {
        provider_payment_id: String,
        succeeded: bool,
    },
    /// It declined the charge (a card declined, insufficient funds): a failed attempt.
    Declined {
        provider_payment_id: Option<String>,
        code: Option<String>,
        message: Option<String>,
    },
    /// The card needs its holder to authenticate: no off-session attempt can pass.
    NeedsAuthentication { provider_payment_id: Option<String> },
    /// Down, rate-limiting, or unreachable: the same request goes again later (`after`, when
    /// the provider said), and the attempt is not a failure.
    Later {
        after: Option<Duration>,
        detail: String,
    },
    /// It refused the request itself (a 400, an unknown method, a mandate that cannot be
    /// charged): sending it again would be refused again.
    Refused { detail: String },
}

impl ChargeAnswer {
    /// No answer came (unreachable, or one too large to read): the request goes again later.
    pub fn unanswered(error: &super::client::ProviderApiError) -> Self {
        Self::Later {
            after: None,
            detail: error.to_string(),
        }
    }
}

/// Test values: an answer, and a request for attempt `settle-charge-0123` of invoice `inv_1`.
#[cfg(test)]
pub(crate) mod examples {
    use super::ChargeRequest;
    use crate::providers::client::Posted;

    pub fn answered(status: u16, body: serde_json::Value) -> Posted {
        Posted {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            retry_after: None,
            body: serde_json::to_vec(&body).unwrap(),
        }
    }

    pub fn request(method_reference: &str) -> ChargeRequest<'_> {
        ChargeRequest {
            idempotency_key: "settle-charge-0123",
            amount: 12_500,
            currency: "GBP".parse().unwrap(),
            method_reference,
            invoice_id: "inv_1",
            invoice_number: "2026-0042",
        }
    }
}
