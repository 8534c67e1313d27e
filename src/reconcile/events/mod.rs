//! What provider events mean to settle: the domain events each provider's interpreter
//! (`providers::{stripe,gocardless}::interpret`, pure functions over the provider's JSON) reads an
//! event as, and the helpers they read JSON with. Unknown types and actions are
//! `Ignored`, never errors: a new provider event type must not need a release, nor end in the
//! dead-letter queue. JSON pointers, not typed structs, so Stripe's schema drift never breaks a
//! parse.
//!
//! Provider text is data: whatever characters it holds, it becomes a field as it is, except the
//! one PostgreSQL cannot store (`storable`). Every text the interpreters read goes through `text`,
//! and the JSON they keep whole through `storable_json`.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::dispute::DisputeStatus;
use super::money::{Currency, MinorUnits};
use super::payment::PaymentSignal;
use super::refund::RefundStatus;
use crate::provider::Provider;

#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    Payment(PaymentEvent),
    /// Money going back to the customer, or its reversal.
    Refund(RefundEvent),
    /// A dispute (Stripe) opened, moved funds, or closed.
    Dispute(DisputeEvent),
    Method(MethodEvent),
    /// A provider's invoice belongs to settle's invoice (Stripe Billing: see `stripe`).
    Link(InvoiceLink),
    /// A payout (a bank deposit) was sent, can be listed, or failed.
    Payout(PayoutEvent),
    /// Recorded in the inbox with this reason and acknowledged; nothing else happens.
    Ignored(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PaymentEvent {
    pub provider: Provider,
    /// Stripe PaymentIntent id (every Stripe event of one payment keys on it) or GoCardless `PM…`.
    pub provider_payment_id: String,
    /// The billing system's invoice id from the provider's metadata, when present.
    pub invoice_ref: Option<String>,
    /// The provider's own invoice the payment paid (Stripe `invoice_payment.paid`'s `in_…`),
    /// linked to settle's invoice by an earlier `InvoiceLink`.
    pub provider_invoice_id: Option<String>,
    pub signal: PaymentSignal,
    /// Stripe gives amounts; GoCardless events carry none.
    pub amount: Option<MinorUnits>,
    pub currency: Option<Currency>,
    pub occurred_at: DateTime<Utc>,
    /// The provider's reason, on a failure.
    pub failure: Option<Failure>,
    /// The attempt a failure belongs to (Stripe: the failing charge, which the PaymentIntent, the
    /// charge and the old-shape invoice events all name). `None`: the event is its own attempt.
    pub attempt_id: Option<String>,
    /// GoCardless `details.will_attempt_retry` (`Some(false)` for a final cancellation).
    pub provider_will_retry: Option<bool>,
    /// When an authorisation's hold lapses if not captured (Stripe's charge
    /// `payment_method_details.card.capture_before`).
    pub hold_expires_at: Option<DateTime<Utc>>,
    /// The automatic attempt that created the payment: its idempotency key, which settle put in
    /// the payment's metadata (`settle_charge`).
    pub charge_key: Option<String>,
}

/// The provider's invoice `provider_invoice_id` is settle's invoice `invoice_ref`.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceLink {
    pub provider: Provider,
    pub provider_invoice_id: String,
    pub invoice_ref: String,
    pub occurred_at: DateTime<Utc>,
}

/// What an event says about a payout.
#[derive(Debug, Clone, PartialEq)]
pub struct PayoutEvent {
    pub provider: Provider,
    pub provider_payout_id: String,
    pub stage: PayoutStage,
    /// Stripe's event carries the payout; GoCardless's only links it (listing it reads them).
    pub amount: Option<i64>,
    pub currency: Option<Currency>,
    pub arrival_date: Option<chrono::NaiveDate>,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PayoutStage {
    /// Sent, and expected in the bank (Stripe `payout.paid`): its lines may not be final yet.
    Expected,
    /// Its lines are final and can be listed (Stripe `payout.reconciliation_completed`,
    /// GoCardless `payouts.paid`).
    Listable,
    /// A payout the provider cannot list the lines of: Stripe's manual payouts (`automatic:
    /// false`), for which Stripe does not know which transactions it took.
    Unlistable(&'static str),
    /// The money did not reach the bank (Stripe `payout.failed`, possibly after `payout.paid`).
    Failed(Failure),
}

/// What an event says about one or more refunds of one payment (Stripe's `charge.refunded` lists
/// every refund of the charge; `refund.*` and GoCardless `refunds.*` name one).
#[derive(Debug, Clone, PartialEq)]
pub struct RefundEvent {
    pub provider: Provider,
    /// The refunded payment (Stripe PaymentIntent, or a legacy charge). GoCardless refund events
    /// name none: the refund the billing system registered links it.
    pub provider_payment_id: Option<String>,
    pub currency: Option<Currency>,
    pub occurred_at: DateTime<Utc>,
    pub refunds: Vec<RefundObservation>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RefundObservation {
    pub provider_refund_id: String,
    pub status: RefundStatus,
    /// Stripe gives it; GoCardless events carry none.
    pub amount: Option<MinorUnits>,
    /// Why it failed (Stripe `failure_reason`, GoCardless `details.cause`).
    pub failure_reason: Option<String>,
}

/// What an event says about one dispute.
#[derive(Debug, Clone, PartialEq)]
pub struct DisputeEvent {
    pub provider: Provider,
    pub provider_payment_id: String,
    pub provider_dispute_id: String,
    pub status: DisputeStatus,
    /// The provider's own status (`needs_response`).
    pub provider_status: String,
    /// The disputed amount: the dispute's own, which may differ from the charge's.
    pub amount: MinorUnits,
    pub currency: Option<Currency>,
    pub reason: Option<String>,
    pub evidence_due_by: Option<DateTime<Utc>>,
    /// The event reports funds moving (`funds_withdrawn`, `funds_reinstated`).
    pub funds: Option<DisputeFunds>,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeFunds {
    Withdrawn,
    Reinstated,
}

#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize
)]
pub struct Failure {
    pub code: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MethodEvent {
    /// A Stripe payment method attached to (or set up for) a customer: it becomes the method on
    /// file when `on_file`, and its details are refreshed either way.
    StripeMethod {
        customer: Option<String>,
        method_id: String,
        method_type: String,
        on_file: bool,
        exp_month: Option<i16>,
        exp_year: Option<i16>,
        billing_details: Option<Value>,
        details: Value,
        occurred_at: DateTime<Utc>,
    },
    StripeDetached {
        method_id: String,
        occurred_at: DateTime<Utc>,
    },
    /// A GoCardless mandate became usable or unusable.
    Mandate {
        mandate: String,
        usable: bool,
        occurred_at: DateTime<Utc>,
    },
    /// `replaced`: the customer's method switches to the new mandate.
    MandateReplaced {
        mandate: String,
        new_mandate: String,
        occurred_at: DateTime<Utc>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("the event has no usable `{0}`")]
    Missing(&'static str),
    #[error("`{field}` is invalid: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// Provider text as settle stores it. PostgreSQL refuses NUL (U+0000) in `text` (SQLSTATE 22021)
/// and in `jsonb` (22P05), and a NUL in one field failed the event's whole transaction, on every
/// retry and replay: a late failure whose description held one was never applied, and the invoice
/// stayed paid. It becomes U+FFFD, the replacement character; every other character is kept.
pub fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Provider JSON kept whole (billing details), with `storable` text in every string and key.
pub fn storable_json(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(storable(text).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(storable_json).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| (storable(key).into_owned(), storable_json(value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The non-empty text at `pointer`, `storable`.
pub fn text(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| storable(s).into_owned())
}

pub fn integer(value: &Value, pointer: &str) -> Option<i64> {
    value.pointer(pointer).and_then(Value::as_i64)
}

/// An amount in minor units at `pointer`, refused when out of bounds.
pub fn amount(
    value: &Value,
    pointer: &str,
    field: &'static str,
) -> Result<Option<MinorUnits>, EventError> {
    integer(value, pointer)
        .map(|amount| {
            MinorUnits::new(amount).map_err(|message| EventError::Invalid { field, message })
        })
        .transpose()
}

/// The test suite's provider-event builders (Stripe's and GoCardless's example objects), shared
/// with the integration tests.
#[cfg(test)]
#[path = "../../../tests/fixtures/events.rs"]
pub(crate) mod fixtures;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_becomes_the_replacement_character_and_nothing_else_changes() {
        assert!(matches!(storable("card declined é\t"), Cow::Borrowed(_)));
        assert_eq!(storable("a\u{0}b\u{0}"), "a\u{FFFD}b\u{FFFD}");
        let json = serde_json::json!({"name\u{0}": ["Ada\u{0}", 1, null, {"line1": "x\u{0}"}]});
        assert_eq!(
            storable_json(&json),
            serde_json::json!({"name\u{FFFD}": ["Ada\u{FFFD}", 1, null, {"line1": "x\u{FFFD}"}]})
        );
    }
}
