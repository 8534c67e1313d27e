//! What the planner reads (an invoice's state: its figures, payments, refunds, disputes and
//! settings) and what it decides (the effects the worker writes).

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::provider::Provider;
use crate::reconcile::dispute::DisputeStatus;
use crate::reconcile::events::Failure;
use crate::reconcile::invoice::InvoiceFigures;
use crate::reconcile::ledger::{Ledger, Movement};
use crate::reconcile::money::{Currency, MinorUnits};
use crate::reconcile::outcome::Outcome;
use crate::reconcile::payment::PaymentStatus;
use crate::reconcile::reconciliation_events::{AmountSource, ReconciliationEvent};
use crate::reconcile::refund::RefundStatus;
use crate::reconcile::settings::EffectiveSettings;

/// What the planner knows about one invoice.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceState {
    pub invoice: InvoiceFacts,
    /// Every payment of the invoice, in the order they were registered.
    pub payments: Vec<PaymentFacts>,
    /// Every movement of the invoice's money.
    pub ledger: Ledger,
    pub refunds: Vec<RefundFacts>,
    pub disputes: Vec<DisputeFacts>,
    pub settings: EffectiveSettings,
    /// The customer has an active payment method on file (a retry could use it).
    pub usable_method_on_file: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceFacts {
    pub id: String,
    pub customer_id: String,
    pub number: String,
    pub currency: Currency,
    pub amount_due: i64,
    /// As derived from the ledger when it last changed.
    pub figures: InvoiceFigures,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PaymentFacts {
    pub id: String,
    pub provider: Provider,
    pub provider_payment_id: String,
    pub amount: i64,
    pub status: PaymentStatus,
    /// Provider time of the last applied event: an older event never overrides a newer state.
    pub last_event_at: Option<DateTime<Utc>>,
    /// The provider's reason of the last failure.
    pub failure: Option<Failure>,
    /// The attempt of the last failure, when the provider names one.
    pub failure_attempt: Option<String>,
    /// When an authorised payment's hold lapses unless captured.
    pub hold_expires_at: Option<DateTime<Utc>>,
}

/// A refund of one of the invoice's payments, read as its row (`refunds`, as JSON).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RefundFacts {
    pub id: String,
    pub payment_id: String,
    pub provider: Provider,
    pub provider_refund_id: String,
    /// `None`: registered without one (the payment's refundable remainder when it moves).
    pub amount: Option<i64>,
    pub amount_source: Option<AmountSource>,
    pub status: RefundStatus,
    pub failure_reason: Option<String>,
    pub last_event_at: Option<DateTime<Utc>>,
}

/// A dispute of one of the invoice's payments, read as its row (`disputes`, as JSON).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DisputeFacts {
    pub id: String,
    pub payment_id: String,
    pub provider: Provider,
    pub provider_dispute_id: String,
    pub amount: i64,
    pub status: DisputeStatus,
    /// The provider's own word for it; stored as `NULL` when it said none.
    #[serde(deserialize_with = "null_as_empty")]
    pub provider_status: String,
    pub reason: Option<String>,
    pub evidence_due_by: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
}

/// What the worker writes for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Effects {
    pub outcome: Outcome,
    /// The payment's row as it must be after the event, when it changed.
    pub payment: Option<PaymentWrite>,
    /// New ledger rows.
    pub movements: Vec<Movement>,
    /// Refund rows to insert or update.
    pub refunds: Vec<RefundFacts>,
    /// The dispute's row, when it changed.
    pub dispute: Option<DisputeFacts>,
    /// The invoice's new figures, when they changed.
    pub invoice_figures: Option<InvoiceFigures>,
    /// Reconciliation events for the outbox, in order.
    pub events: Vec<ReconciliationEvent>,
    pub notification: Option<FailureNotification>,
    /// Mails to the business about a dispute.
    pub dispute_notices: Vec<DisputeNotice>,
    /// Paid more than due (for the log; the invoice events say so too).
    pub overpaid: bool,
    /// The money moved through another provider than the effective settings name.
    pub provider_mismatch: bool,
}

impl Effects {
    pub(super) fn nothing(outcome: Outcome, provider_mismatch: bool) -> Self {
        Self {
            outcome,
            payment: None,
            movements: Vec::new(),
            refunds: Vec::new(),
            dispute: None,
            invoice_figures: None,
            events: Vec::new(),
            notification: None,
            dispute_notices: Vec::new(),
            overpaid: false,
            provider_mismatch,
        }
    }
}

/// A payment's row to insert (`is_new`) or update, with the settings in force when it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentWrite {
    pub payment: PaymentFacts,
    pub is_new: bool,
    pub settings: EffectiveSettings,
}

/// A failed payment to tell the customer and the business about.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureNotification {
    pub payment_id: String,
    /// The failed attempt, when the provider names one: the mails are keyed by it.
    pub attempt_id: Option<String>,
    pub amount: MinorUnits,
    pub currency: Currency,
    pub provider: Provider,
    pub provider_payment_id: String,
    pub failure: Failure,
    pub outlook: RetryOutlook,
    /// When the next automatic attempt is due, when one follows (`charging::outlook`).
    pub retry_at: Option<DateTime<Utc>>,
}

/// A dispute to tell the business about, once per dispute and kind.
#[derive(Debug, Clone, PartialEq)]
pub struct DisputeNotice {
    pub kind: DisputeNoticeKind,
    pub dispute: DisputeFacts,
    pub currency: Currency,
    pub provider_payment_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeNoticeKind {
    /// A dispute or an inquiry opened: evidence is due.
    Opened,
    Lost,
}

impl DisputeNoticeKind {
    /// Part of the mail's key: one mail per dispute and kind.
    pub fn key(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Lost => "lost",
        }
    }
}

/// Whether a failed payment will be tried again, and why. The mails put it in words
/// (`notify/templates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOutlook {
    /// The provider said it will retry (GoCardless `will_attempt_retry`).
    ProviderRetries,
    /// The provider said it will not (or the payment was cancelled).
    ProviderWillNotRetry,
    /// Auto-charge is on and the customer has a usable method on file: settle charges it again
    /// (at `FailureNotification::retry_at`).
    RetryWithMethodOnFile,
    /// Auto-charge is on, but there is nothing to charge.
    NoUsableMethod,
    AutoChargeOff,
    /// The card needs its holder to authenticate: no automatic attempt can pass.
    NeedsAuthentication,
    /// Every automatic attempt of the schedule was made.
    AttemptsExhausted,
    /// The provider refused settle's charge request itself.
    ChargeRefused,
    /// An operator stopped the invoice's automatic charging.
    ChargingCancelled,
    /// Another payment of the invoice is under way.
    PaymentInFlight,
}

impl RetryOutlook {
    pub fn new(provider_will_retry: Option<bool>, auto_charge: bool, usable_method: bool) -> Self {
        match (provider_will_retry, auto_charge, usable_method) {
            (Some(true), _, _) => Self::ProviderRetries,
            (Some(false), _, _) => Self::ProviderWillNotRetry,
            (None, true, true) => Self::RetryWithMethodOnFile,
            (None, true, false) => Self::NoUsableMethod,
            (None, false, _) => Self::AutoChargeOff,
        }
    }

    pub fn will_retry(self) -> bool {
        matches!(self, Self::ProviderRetries | Self::RetryWithMethodOnFile)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "{provider} payment {provider_payment_id} is in {payment}, invoice {invoice_id} is in {invoice}"
    )]
    CurrencyMismatch {
        provider: Provider,
        provider_payment_id: String,
        payment: Currency,
        invoice_id: String,
        invoice: Currency,
    },
}

/// A text that may be stored as `NULL`, as the empty text.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(text: D) -> Result<String, D::Error> {
    Option::<String>::deserialize(text).map(Option::unwrap_or_default)
}
