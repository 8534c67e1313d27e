//! The payment planner: what one payment event does to an invoice, decided over plain values.
//!
//! `plan(state, event) -> (new state, effects)`. The state is everything the decision reads about
//! one invoice (its totals, all its payments, its effective settings); the effects are everything
//! the worker then writes (the payment's row, the invoice's totals, the reconciliation events, the
//! failure notification) and the outcome it records. The worker only reads the state under the
//! invoice's lock, calls this, and writes the effects; folding a batch of events over a map of
//! states gives the same result as applying them one by one.
//!
//! The rules, in order:
//! 1. An event in another currency than its invoice is refused (`PlanError::CurrencyMismatch`).
//! 2. The payment's transition comes from `payment::decide` (ordering, then the table).
//!    A recorded-only event is `Recorded`, an older one `Stale`, a refused move `Unchanged`;
//!    none of them changes anything, except that a payment settle sees for the first time is
//!    registered.
//! 3. The amount: the success that collects a payment carries the amount that moved (the
//!    event's); otherwise the payment keeps its amount; a payment seen for the first time takes
//!    the event's amount, else (a GoCardless event carries none) what the invoice still owes.
//! 4. The money: a payment that becomes succeeded adds `COLLECTED` to the ledger; a late failure
//!    `COLLECTION_REVERSED`; a chargeback `DISPUTE_WITHDRAWN`, its cancellation
//!    `DISPUTE_REINSTATED` (`reconcile::ledger`). Refunds and disputes have planners of their
//!    own (`plan::money_back`) on the same ledger.
//! 5. The invoice's figures follow from the ledger (`invoice::figures`); it is `PAYMENT_FAILED`
//!    when nothing is paid and the attempt with the latest provider event failed.
//! 6. Events: `payment.succeeded` when a payment becomes succeeded, `payment.failed` on every
//!    applied failure, and the invoice's changes (`invoice::status_events`).
//! 7. A failure on an invoice that is still not paid notifies the customer and the business, with
//!    the outlook of a retry.
//! 8. One failed attempt is one failure: a failure of the attempt the payment's last failure
//!    already recorded (`PaymentEvent::attempt_id`, the failing Stripe charge) is `Unchanged`, so
//!    `payment_intent.payment_failed` and `charge.failed` of one decline announce and mail once.

use chrono::{DateTime, Utc};

mod money_back;

pub use money_back::{plan_dispute, plan_refund};

use super::dispute::DisputeStatus;
use super::events::{Failure, PaymentEvent};
use super::invoice::{self, InvoiceChange, InvoiceFigures, InvoiceStatus};
use super::ledger::{Ledger, Movement, MovementKind};
use super::money::{Currency, MinorUnits};
use super::outcome::Outcome;
use super::payment::{Decision, PaymentSignal, PaymentStatus, decide};
use super::reconciliation_events::{
    AmountSource, FiguresData, InvoiceData, PaymentData, ReconciliationEvent,
};
use super::refund::RefundStatus;
use super::settings::EffectiveSettings;
use crate::provider::{PaymentProvider, Provider};

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

/// A refund of one of the invoice's payments.
#[derive(Debug, Clone, PartialEq)]
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

/// A dispute of one of the invoice's payments.
#[derive(Debug, Clone, PartialEq)]
pub struct DisputeFacts {
    pub id: String,
    pub payment_id: String,
    pub provider: Provider,
    pub provider_dispute_id: String,
    pub amount: i64,
    pub status: DisputeStatus,
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
    fn nothing(outcome: Outcome, provider_mismatch: bool) -> Self {
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
    /// Auto-charge is on and the customer has a usable method on file.
    RetryWithMethodOnFile,
    /// Auto-charge is on, but there is nothing to charge.
    NoUsableMethod,
    AutoChargeOff,
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

/// Plans one payment event (see the module doc). `new_payment_id` names a payment settle sees for
/// the first time.
pub fn plan(
    mut state: InvoiceState,
    event: &PaymentEvent,
    new_payment_id: impl FnOnce() -> String,
) -> Result<(InvoiceState, Effects), PlanError> {
    if let Some(currency) = event.currency
        && currency != state.invoice.currency
    {
        return Err(PlanError::CurrencyMismatch {
            provider: event.provider,
            provider_payment_id: event.provider_payment_id.clone(),
            payment: currency,
            invoice_id: state.invoice.id.clone(),
            invoice: state.invoice.currency,
        });
    }
    let effective_provider = state.settings.payment_provider.value;
    let provider_mismatch = PaymentProvider::from(event.provider) != effective_provider;
    let index = state.payments.iter().position(|payment| {
        payment.provider == event.provider
            && payment.provider_payment_id == event.provider_payment_id
    });
    let known = index.map(|i| &state.payments[i]);

    let current = known.map_or(PaymentStatus::Registered, |p| p.status);
    let decision = decide(
        current,
        known.and_then(|p| p.last_event_at),
        event.signal,
        event.occurred_at,
    );
    // A failure of the attempt already recorded as the payment's last failure is the same decline
    // reported by another event type. A Stripe event that names no attempt (a Checkout Session's
    // `async_payment_failed`), or a recorded failure that named none, is the same decline when it
    // is stamped the same second as the recorded one: Stripe stamps one decline's events alike.
    let recorded_attempt = known.and_then(|p| p.failure_attempt.as_ref());
    let same_second = known.and_then(|p| p.last_event_at) == Some(event.occurred_at);
    let repeated_attempt = current == PaymentStatus::Failed
        && match (recorded_attempt, event.attempt_id.as_ref()) {
            (Some(recorded), Some(attempt)) => event.signal.is_failure() && recorded == attempt,
            _ => event.signal == PaymentSignal::AttemptFailed && same_second,
        };
    // The same decline, now named: kept, so a later report naming it is known too.
    let learned_attempt =
        repeated_attempt && recorded_attempt.is_none() && event.attempt_id.is_some();
    let applied = matches!(decision, Decision::Apply(_)) && !repeated_attempt;
    let next = match decision {
        Decision::Apply(_) if repeated_attempt => current,
        Decision::Apply(next) => next,
        Decision::Stale | Decision::NoChange => current,
    };

    let (previous_amount, amount_source) = match (known, event.amount) {
        (Some(payment), Some(_)) => (payment.amount, AmountSource::Event),
        (Some(payment), None) => (payment.amount, AmountSource::RegisteredPayment),
        (None, Some(amount)) => (amount.get(), AmountSource::Event),
        (None, None) => (
            invoice::outstanding(state.invoice.amount_due, state.invoice.figures.amount_paid),
            AmountSource::InvoiceOutstanding,
        ),
    };
    // The success that collects the payment carries the amount that moved; once collected, the
    // amount is the ledger's and later confirmations do not move it.
    let collects = applied && next.is_collected() && !current.is_collected();
    // An authorisation carries the amount held; the capture that follows, what it collected.
    let holds = applied && next == PaymentStatus::Authorised;
    let amount = match event.amount {
        Some(amount) if collects && current != PaymentStatus::Reversed => amount.get(),
        Some(amount) if holds => amount.get(),
        _ => previous_amount,
    };
    let failure = event
        .failure
        .clone()
        .filter(|_| next == PaymentStatus::Failed);
    let updated = PaymentFacts {
        id: known.map_or_else(new_payment_id, |p| p.id.clone()),
        provider: event.provider,
        provider_payment_id: event.provider_payment_id.clone(),
        amount,
        status: next,
        last_event_at: match (known.and_then(|p| p.last_event_at), applied) {
            (Some(last), true) => Some(last.max(event.occurred_at)),
            (None, true) => Some(event.occurred_at),
            (last, false) => last,
        },
        failure: failure
            .clone()
            .or_else(|| known.and_then(|p| p.failure.clone())),
        failure_attempt: match next {
            PaymentStatus::Failed if applied || learned_attempt => event.attempt_id.clone(),
            _ => known.and_then(|p| p.failure_attempt.clone()),
        },
        hold_expires_at: if holds {
            event.hold_expires_at
        } else {
            known.and_then(|p| p.hold_expires_at)
        },
    };
    let is_new = known.is_none();
    let write = PaymentWrite {
        payment: updated.clone(),
        is_new,
        settings: state.settings,
    };

    if !applied {
        let outcome = match (event.signal, decision) {
            (PaymentSignal::Recorded, _) => Outcome::Recorded,
            (_, Decision::Stale) => Outcome::Stale,
            _ => Outcome::Unchanged,
        };
        let mut effects = Effects::nothing(outcome, provider_mismatch);
        // A payment settle has not seen before is registered even when no event applies to it;
        // a decline's attempt learned from a later report is kept.
        match index {
            None => {
                effects.payment = Some(write);
                state.payments.push(updated);
            }
            Some(i) if learned_attempt => {
                effects.payment = Some(write);
                state.payments[i] = updated;
            }
            Some(_) => {}
        }
        return Ok((state, effects));
    }

    let movement = payment_movement(current, next).map(|kind| {
        state.ledger.next(
            &updated.id,
            event.provider,
            &event.provider_payment_id,
            kind,
            amount,
            amount_source.as_str(),
        )
    });
    let payment_index = match index {
        Some(i) => {
            state.payments[i] = updated.clone();
            i
        }
        None => {
            state.payments.push(updated.clone());
            state.payments.len() - 1
        }
    };
    state.ledger.movements.extend(movement.clone());
    let change = conclude(&mut state, payment_index);

    let invoice = &state.invoice;
    let mut events = Vec::new();
    let payment_data = || PaymentData {
        payment_id: updated.id.clone(),
        invoice_id: invoice.id.clone(),
        provider: event.provider,
        provider_payment_id: event.provider_payment_id.clone(),
        amount,
        currency: invoice.currency,
        amount_source,
        status: next,
        failure_code: failure.as_ref().and_then(|f| f.code.clone()),
        failure_message: failure.as_ref().and_then(|f| f.message.clone()),
        provider_will_retry: event.provider_will_retry,
        effective_payment_provider: effective_provider,
        provider_mismatch,
        hold_expires_at: updated
            .hold_expires_at
            .filter(|_| next == PaymentStatus::Authorised),
    };
    match next {
        PaymentStatus::Authorised if current != PaymentStatus::Authorised => {
            events.push(ReconciliationEvent::PaymentAuthorised(payment_data()));
        }
        PaymentStatus::Succeeded if current != PaymentStatus::Succeeded => {
            events.push(ReconciliationEvent::PaymentSucceeded(payment_data()));
        }
        PaymentStatus::Canceled if current != PaymentStatus::Canceled => {
            events.push(ReconciliationEvent::PaymentCanceled(payment_data()));
        }
        PaymentStatus::Failed => events.push(ReconciliationEvent::PaymentFailed(payment_data())),
        _ => {}
    }
    events.extend(invoice_events(&state, &change, &updated.id, event.provider));

    // A failure on an invoice that is still not paid tells the customer and the business.
    let figures = state.invoice.figures;
    let notification = (next == PaymentStatus::Failed && figures.status != InvoiceStatus::Paid)
        .then(|| FailureNotification {
            payment_id: updated.id.clone(),
            attempt_id: event.attempt_id.clone(),
            amount: MinorUnits::new(amount).unwrap_or(MinorUnits::ZERO),
            currency: state.invoice.currency,
            provider: event.provider,
            provider_payment_id: event.provider_payment_id.clone(),
            failure: event.failure.clone().unwrap_or_default(),
            outlook: RetryOutlook::new(
                event.provider_will_retry,
                state.settings.auto_charge.value,
                state.usable_method_on_file,
            ),
        });

    let effects = Effects {
        outcome: Outcome::Applied,
        payment: Some(write),
        movements: movement.into_iter().collect(),
        invoice_figures: change.changed().then_some(figures),
        events,
        notification,
        overpaid: figures.overpaid,
        ..Effects::nothing(Outcome::Applied, provider_mismatch)
    };
    Ok((state, effects))
}

/// The ledger movement of a payment's move from `current` to `next`, if money moved.
fn payment_movement(current: PaymentStatus, next: PaymentStatus) -> Option<MovementKind> {
    use PaymentStatus as P;
    match (current, next) {
        (P::Reversed, P::Succeeded) => Some(MovementKind::DisputeReinstated),
        (P::Succeeded, P::Reversed) => Some(MovementKind::DisputeWithdrawn),
        (P::Succeeded, P::Failed) => Some(MovementKind::CollectionReversed),
        (current, P::Succeeded) if !current.is_collected() => Some(MovementKind::Collected),
        _ => None,
    }
}

/// The invoice's figures before and after an event.
struct FiguresChange {
    before: InvoiceFigures,
    after: InvoiceFigures,
}

impl FiguresChange {
    fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// Re-derives the invoice's figures from its ledger and disputes after an event of the payment at
/// `payment_index`, and stores them in the state.
fn conclude(state: &mut InvoiceState, payment_index: usize) -> FiguresChange {
    let amount_in_dispute = state
        .disputes
        .iter()
        .filter(|d| d.status.is_pending())
        .map(|d| d.amount)
        .fold(0_i64, i64::saturating_add);
    let after = invoice::figures(
        state.invoice.amount_due,
        state.ledger.sums(None),
        amount_in_dispute,
        latest_attempt_failed(&state.payments, payment_index),
    );
    let before = std::mem::replace(&mut state.invoice.figures, after);
    FiguresChange { before, after }
}

/// Whether the invoice's latest attempt failed: the payment with the latest provider event, the
/// one at `preferred` on a tie (the payment the event is about).
fn latest_attempt_failed(payments: &[PaymentFacts], preferred: usize) -> bool {
    let Some(this) = payments.get(preferred) else {
        return false;
    };
    let latest_other = payments
        .iter()
        .enumerate()
        .filter(|(i, p)| *i != preferred && p.last_event_at.is_some())
        .map(|(_, p)| p)
        .max_by_key(|p| p.last_event_at);
    match latest_other {
        Some(other) if other.last_event_at > this.last_event_at => {
            other.status == PaymentStatus::Failed
        }
        _ => this.status == PaymentStatus::Failed,
    }
}

/// The invoice events a change of its figures announces, caused by an event of `payment_id`.
fn invoice_events(
    state: &InvoiceState,
    change: &FiguresChange,
    payment_id: &str,
    provider: Provider,
) -> Vec<ReconciliationEvent> {
    let invoice = &state.invoice;
    let effective_provider = state.settings.payment_provider.value;
    let data = || InvoiceData {
        invoice_id: invoice.id.clone(),
        customer_id: invoice.customer_id.clone(),
        number: invoice.number.clone(),
        currency: invoice.currency,
        figures: figures_data(invoice),
        payment_id: payment_id.to_owned(),
        provider,
        effective_payment_provider: effective_provider,
        provider_mismatch: PaymentProvider::from(provider) != effective_provider,
    };
    invoice::status_events(&change.before, &change.after)
        .into_iter()
        .map(|change| match change {
            InvoiceChange::Reopened => ReconciliationEvent::InvoiceReopened(data()),
            InvoiceChange::Paid => ReconciliationEvent::InvoicePaid(data()),
            InvoiceChange::PartiallyPaid => ReconciliationEvent::InvoicePartiallyPaid(data()),
            InvoiceChange::PaymentFailed => ReconciliationEvent::InvoicePaymentFailed(data()),
            InvoiceChange::Disputed => ReconciliationEvent::InvoiceDisputed(data()),
            InvoiceChange::Refunded => ReconciliationEvent::InvoiceRefunded(data()),
        })
        .collect()
}

/// The invoice's figures as events carry them.
fn figures_data(invoice: &InvoiceFacts) -> FiguresData {
    let figures = &invoice.figures;
    FiguresData {
        status: figures.status,
        amount_due: invoice.amount_due,
        amount_paid: figures.amount_paid,
        amount_refunded: figures.amount_refunded,
        amount_in_dispute: figures.amount_in_dispute,
        amount_net: figures.amount_net(),
        refund_state: figures.refund_state,
        overpaid: figures.overpaid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::settings::{SettingsSource, Sourced};
    use InvoiceStatus as I;
    use PaymentSignal as S;
    use PaymentStatus as P;

    const T0: i64 = 1_800_000_000;

    pub(super) fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(T0 + seconds, 0).unwrap()
    }

    pub(super) fn gbp() -> Currency {
        Currency::parse("GBP").unwrap()
    }

    fn settings(provider: PaymentProvider, auto_charge: bool) -> EffectiveSettings {
        EffectiveSettings {
            payment_provider: Sourced {
                value: provider,
                source: SettingsSource::Customer,
            },
            auto_charge: Sourced {
                value: auto_charge,
                source: SettingsSource::AccountDefault,
            },
        }
    }

    pub(super) fn payment(
        id: &str,
        provider_payment_id: &str,
        amount: i64,
        status: P,
    ) -> PaymentFacts {
        PaymentFacts {
            id: id.into(),
            provider: Provider::Stripe,
            provider_payment_id: provider_payment_id.into(),
            amount,
            status,
            last_event_at: (status != P::Registered).then(|| at(0)),
            failure: None,
            failure_attempt: None,
            hold_expires_at: None,
        }
    }

    /// An invoice of 10.00 with `payments`, its ledger and figures consistent with them: a
    /// succeeded payment was collected, a reversed one collected and charged back.
    pub(super) fn state(payments: Vec<PaymentFacts>) -> InvoiceState {
        let mut ledger = Ledger::default();
        for p in &payments {
            let kinds: &[MovementKind] = match p.status {
                P::Succeeded => &[MovementKind::Collected],
                P::Reversed => &[MovementKind::Collected, MovementKind::DisputeWithdrawn],
                _ => &[],
            };
            for kind in kinds {
                let movement = ledger.next(
                    &p.id,
                    p.provider,
                    &p.provider_payment_id,
                    *kind,
                    p.amount,
                    "event",
                );
                ledger.movements.push(movement);
            }
        }
        let latest_failed = payments
            .iter()
            .max_by_key(|p| p.last_event_at)
            .is_some_and(|p| p.status == P::Failed);
        let figures = invoice::figures(1000, ledger.sums(None), 0, latest_failed);
        InvoiceState {
            invoice: InvoiceFacts {
                id: "inv_1".into(),
                customer_id: "cust_1".into(),
                number: "INV-1".into(),
                currency: gbp(),
                amount_due: 1000,
                figures,
            },
            payments,
            ledger,
            refunds: Vec::new(),
            disputes: Vec::new(),
            settings: settings(PaymentProvider::Stripe, false),
            usable_method_on_file: false,
        }
    }

    fn event(signal: S, seconds: i64) -> PaymentEvent {
        PaymentEvent {
            provider: Provider::Stripe,
            provider_payment_id: "pi_1".into(),
            invoice_ref: Some("inv_1".into()),
            provider_invoice_id: None,
            signal,
            amount: Some(MinorUnits::new(1000).unwrap()),
            currency: Some(gbp()),
            occurred_at: at(seconds),
            failure: signal.is_failure().then(|| Failure {
                code: Some("insufficient_funds".into()),
                message: Some("No money.".into()),
            }),
            attempt_id: None,
            provider_will_retry: None,
            hold_expires_at: None,
        }
    }

    fn run(state: InvoiceState, event: &PaymentEvent) -> (InvoiceState, Effects) {
        plan(state, event, || "pay_new".into()).unwrap()
    }

    pub(super) fn types(effects: &Effects) -> Vec<&'static str> {
        effects
            .events
            .iter()
            .map(ReconciliationEvent::event_type)
            .collect()
    }

    const PS: &str = "payment.succeeded";
    const PF: &str = "payment.failed";
    const IP: &str = "invoice.paid";
    const IPF: &str = "invoice.payment_failed";
    const IR: &str = "invoice.reopened";
    const PA: &str = "payment.authorised";
    const PC: &str = "payment.canceled";

    /// (payment before (None: not known), signal) → (outcome, payment after, invoice after,
    /// events, notifies). Written out by hand, not computed: every pair the planner handles.
    #[expect(clippy::type_complexity, reason = "a table of plain values reads best inline")]
    #[rustfmt::skip]
    const TABLE: &[(Option<P>, S, Outcome, P, I, &[&str], bool)] = &[
        (None, S::Pending, Outcome::Applied, P::Pending, I::Open, &[], false),
        (None, S::Succeeded, Outcome::Applied, P::Succeeded, I::Paid, &[PS, IP], false),
        (None, S::Failed, Outcome::Applied, P::Failed, I::PaymentFailed, &[PF, IPF], true),
        (None, S::Canceled, Outcome::Applied, P::Canceled, I::Open, &[PC], false),
        (None, S::ChargedBack, Outcome::Unchanged, P::Registered, I::Open, &[], false),
        (None, S::ChargebackCancelled, Outcome::Unchanged, P::Registered, I::Open, &[], false),
        (None, S::Recorded, Outcome::Recorded, P::Registered, I::Open, &[], false),
        (Some(P::Registered), S::Pending, Outcome::Applied, P::Pending, I::Open, &[], false),
        (Some(P::Registered), S::Succeeded, Outcome::Applied, P::Succeeded, I::Paid, &[PS, IP], false),
        (Some(P::Registered), S::Failed, Outcome::Applied, P::Failed, I::PaymentFailed, &[PF, IPF], true),
        (Some(P::Registered), S::Canceled, Outcome::Applied, P::Canceled, I::Open, &[PC], false),
        (Some(P::Registered), S::ChargedBack, Outcome::Unchanged, P::Registered, I::Open, &[], false),
        (Some(P::Registered), S::ChargebackCancelled, Outcome::Unchanged, P::Registered, I::Open, &[], false),
        (Some(P::Registered), S::Recorded, Outcome::Recorded, P::Registered, I::Open, &[], false),
        (Some(P::Pending), S::Pending, Outcome::Applied, P::Pending, I::Open, &[], false),
        (Some(P::Pending), S::Succeeded, Outcome::Applied, P::Succeeded, I::Paid, &[PS, IP], false),
        (Some(P::Pending), S::Failed, Outcome::Applied, P::Failed, I::PaymentFailed, &[PF, IPF], true),
        (Some(P::Pending), S::Canceled, Outcome::Applied, P::Canceled, I::Open, &[PC], false),
        (Some(P::Pending), S::ChargedBack, Outcome::Unchanged, P::Pending, I::Open, &[], false),
        (Some(P::Pending), S::ChargebackCancelled, Outcome::Unchanged, P::Pending, I::Open, &[], false),
        (Some(P::Pending), S::Recorded, Outcome::Recorded, P::Pending, I::Open, &[], false),
        (Some(P::Succeeded), S::Pending, Outcome::Unchanged, P::Succeeded, I::Paid, &[], false),
        (Some(P::Succeeded), S::Succeeded, Outcome::Applied, P::Succeeded, I::Paid, &[], false),
        (Some(P::Succeeded), S::Failed, Outcome::Applied, P::Failed, I::PaymentFailed, &[PF, IR, IPF], true),
        (Some(P::Succeeded), S::Canceled, Outcome::Unchanged, P::Succeeded, I::Paid, &[], false),
        (Some(P::Succeeded), S::ChargedBack, Outcome::Applied, P::Reversed, I::Open, &[IR], false),
        (Some(P::Succeeded), S::ChargebackCancelled, Outcome::Unchanged, P::Succeeded, I::Paid, &[], false),
        (Some(P::Succeeded), S::Recorded, Outcome::Recorded, P::Succeeded, I::Paid, &[], false),
        (Some(P::Failed), S::Pending, Outcome::Applied, P::Pending, I::Open, &[], false),
        (Some(P::Failed), S::Succeeded, Outcome::Applied, P::Succeeded, I::Paid, &[PS, IP], false),
        (Some(P::Failed), S::Failed, Outcome::Applied, P::Failed, I::PaymentFailed, &[PF], true),
        (Some(P::Failed), S::Canceled, Outcome::Applied, P::Canceled, I::Open, &[PC], false),
        (Some(P::Failed), S::ChargedBack, Outcome::Unchanged, P::Failed, I::PaymentFailed, &[], false),
        (Some(P::Failed), S::ChargebackCancelled, Outcome::Unchanged, P::Failed, I::PaymentFailed, &[], false),
        (Some(P::Failed), S::Recorded, Outcome::Recorded, P::Failed, I::PaymentFailed, &[], false),
        (Some(P::Canceled), S::Pending, Outcome::Unchanged, P::Canceled, I::Open, &[], false),
        (Some(P::Canceled), S::Succeeded, Outcome::Applied, P::Succeeded, I::Paid, &[PS, IP], false),
        (Some(P::Canceled), S::Failed, Outcome::Unchanged, P::Canceled, I::Open, &[], false),
        (Some(P::Canceled), S::Canceled, Outcome::Applied, P::Canceled, I::Open, &[], false),
        (Some(P::Canceled), S::ChargedBack, Outcome::Unchanged, P::Canceled, I::Open, &[], false),
        (Some(P::Canceled), S::ChargebackCancelled, Outcome::Unchanged, P::Canceled, I::Open, &[], false),
        (Some(P::Canceled), S::Recorded, Outcome::Recorded, P::Canceled, I::Open, &[], false),
        (Some(P::Reversed), S::Pending, Outcome::Unchanged, P::Reversed, I::Open, &[], false),
        (Some(P::Reversed), S::Succeeded, Outcome::Unchanged, P::Reversed, I::Open, &[], false),
        (Some(P::Reversed), S::Failed, Outcome::Unchanged, P::Reversed, I::Open, &[], false),
        (Some(P::Reversed), S::Canceled, Outcome::Unchanged, P::Reversed, I::Open, &[], false),
        (Some(P::Reversed), S::ChargedBack, Outcome::Applied, P::Reversed, I::Open, &[], false),
        (Some(P::Reversed), S::ChargebackCancelled, Outcome::Applied, P::Succeeded, I::Paid, &[PS, IP], false),
        (Some(P::Reversed), S::Recorded, Outcome::Recorded, P::Reversed, I::Open, &[], false),
        // A Stripe attempt's failure: like a failure, except that a success stays a success.
        (None, S::AttemptFailed, Outcome::Applied, P::Failed, I::PaymentFailed, &[PF, IPF], true),
        (Some(P::Registered), S::AttemptFailed, Outcome::Applied, P::Failed, I::PaymentFailed, &[PF, IPF], true),
        (Some(P::Pending), S::AttemptFailed, Outcome::Applied, P::Failed, I::PaymentFailed, &[PF, IPF], true),
        (Some(P::Succeeded), S::AttemptFailed, Outcome::Unchanged, P::Succeeded, I::Paid, &[], false),
        (Some(P::Failed), S::AttemptFailed, Outcome::Applied, P::Failed, I::PaymentFailed, &[PF], true),
        (Some(P::Canceled), S::AttemptFailed, Outcome::Unchanged, P::Canceled, I::Open, &[], false),
        (Some(P::Reversed), S::AttemptFailed, Outcome::Unchanged, P::Reversed, I::Open, &[], false),
        // An authorisation holds the amount and pays nothing; its capture collects it.
        (None, S::Authorised, Outcome::Applied, P::Authorised, I::Open, &[PA], false),
        (Some(P::Registered), S::Authorised, Outcome::Applied, P::Authorised, I::Open, &[PA], false),
        (Some(P::Pending), S::Authorised, Outcome::Applied, P::Authorised, I::Open, &[PA], false),
        (Some(P::Succeeded), S::Authorised, Outcome::Unchanged, P::Succeeded, I::Paid, &[], false),
        (Some(P::Failed), S::Authorised, Outcome::Applied, P::Authorised, I::Open, &[PA], false),
        (Some(P::Canceled), S::Authorised, Outcome::Unchanged, P::Canceled, I::Open, &[], false),
        (Some(P::Reversed), S::Authorised, Outcome::Unchanged, P::Reversed, I::Open, &[], false),
        (Some(P::Authorised), S::Pending, Outcome::Unchanged, P::Authorised, I::Open, &[], false),
        (Some(P::Authorised), S::Authorised, Outcome::Applied, P::Authorised, I::Open, &[], false),
        (Some(P::Authorised), S::Succeeded, Outcome::Applied, P::Succeeded, I::Paid, &[PS, IP], false),
        (Some(P::Authorised), S::Failed, Outcome::Applied, P::Failed, I::PaymentFailed, &[PF, IPF], true),
        (Some(P::Authorised), S::AttemptFailed, Outcome::Applied, P::Failed, I::PaymentFailed, &[PF, IPF], true),
        (Some(P::Authorised), S::Canceled, Outcome::Applied, P::Canceled, I::Open, &[PC], false),
        (Some(P::Authorised), S::ChargedBack, Outcome::Unchanged, P::Authorised, I::Open, &[], false),
        (Some(P::Authorised), S::ChargebackCancelled, Outcome::Unchanged, P::Authorised, I::Open, &[], false),
        (Some(P::Authorised), S::Recorded, Outcome::Recorded, P::Authorised, I::Open, &[], false),
    ];

    #[test]
    fn every_payment_state_and_signal_pair_plans_as_the_table_says() {
        assert_eq!(TABLE.len(), 8 * PaymentSignal::ALL.len());
        for &(before, signal, outcome, after, invoice_after, events, notifies) in TABLE {
            let known: Vec<_> = before
                .map(|s| payment("pay_1", "pi_1", 1000, s))
                .into_iter()
                .collect();
            let initial = state(known);
            let (next, effects) = run(initial.clone(), &event(signal, 10));
            let case = format!("{before:?} × {signal:?}");
            assert_eq!(effects.outcome, outcome, "{case}");
            assert_eq!(
                next.payments.len(),
                1,
                "{case}: the payment is known afterwards"
            );
            assert_eq!(next.payments[0].status, after, "{case}");
            assert_eq!(next.invoice.figures.status, invoice_after, "{case}");
            assert_eq!(types(&effects), events, "{case}");
            assert_eq!(effects.notification.is_some(), notifies, "{case}");
            // Written: an applied event, or a payment seen for the first time.
            let written = outcome == Outcome::Applied || before.is_none();
            assert_eq!(effects.payment.is_some(), written, "{case}");
            if let Some(write) = &effects.payment {
                assert_eq!(
                    write.payment, next.payments[0],
                    "{case}: the write is the new state"
                );
                assert_eq!(write.is_new, before.is_none(), "{case}");
            }
            // The invoice's totals are written exactly when they changed.
            let changed = next.invoice.figures != initial.invoice.figures;
            assert_eq!(effects.invoice_figures.is_some(), changed, "{case}");
            if outcome != Outcome::Applied {
                assert_eq!(next.invoice, initial.invoice, "{case}: nothing applied");
            }
        }
    }

    #[test]
    fn an_older_event_is_stale_in_every_state_and_recorded_only_events_stay_recorded() {
        for status in PaymentStatus::ALL {
            for signal in PaymentSignal::ALL {
                let initial = state(vec![payment("pay_1", "pi_1", 1000, status)]);
                let mut known = initial.clone();
                known.payments[0].last_event_at = Some(at(100));
                let (next, effects) = run(known.clone(), &event(signal, 50));
                let expected = if signal == S::Recorded {
                    Outcome::Recorded
                } else {
                    Outcome::Stale
                };
                assert_eq!(effects.outcome, expected, "{status:?} × {signal:?}");
                assert_eq!(next, known, "nothing changes");
                assert!(effects.payment.is_none() && effects.events.is_empty());
            }
        }
    }

    #[test]
    fn a_same_second_event_goes_through_the_table() {
        let known = state(vec![payment("pay_1", "pi_1", 1000, P::Pending)]);
        let (next, effects) = run(known, &event(S::Succeeded, 0));
        assert_eq!(effects.outcome, Outcome::Applied);
        assert_eq!(next.invoice.figures.status, I::Paid);
    }

    #[test]
    fn a_payment_in_another_currency_is_refused() {
        let mut eur = event(S::Succeeded, 10);
        eur.currency = Some(Currency::parse("EUR").unwrap());
        let refused = plan(state(vec![]), &eur, || "pay_new".into()).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "stripe payment pi_1 is in EUR, invoice inv_1 is in GBP"
        );
        // No currency at all (GoCardless) is fine.
        let mut none = event(S::Succeeded, 10);
        none.currency = None;
        assert!(plan(state(vec![]), &none, || "pay_new".into()).is_ok());
    }

    fn payment_data(effects: &Effects) -> &PaymentData {
        effects
            .events
            .iter()
            .find_map(|e| match e {
                ReconciliationEvent::PaymentSucceeded(d)
                | ReconciliationEvent::PaymentFailed(d) => Some(d),
                _ => None,
            })
            .expect("a payment event")
    }

    #[test]
    fn the_amount_comes_from_the_event_the_registered_payment_or_what_is_owed() {
        // A success carries the amount that moved.
        let registered = state(vec![payment("pay_1", "pi_1", 1000, P::Registered)]);
        let mut partial = event(S::Succeeded, 10);
        partial.amount = Some(MinorUnits::new(400).unwrap());
        let (next, effects) = run(registered.clone(), &partial);
        assert_eq!(next.payments[0].amount, 400);
        assert_eq!(next.invoice.figures.amount_paid, 400);
        assert_eq!(next.invoice.figures.status, I::PartiallyPaid);
        assert_eq!(payment_data(&effects).amount_source, AmountSource::Event);
        assert_eq!(types(&effects), [PS, "invoice.partially_paid"]);

        // A failure keeps the attempt's registered amount.
        let mut failed = event(S::Failed, 10);
        failed.amount = Some(MinorUnits::new(1).unwrap());
        let (next, _) = run(registered.clone(), &failed);
        assert_eq!(next.payments[0].amount, 1000);

        // GoCardless gives none: the registered payment's, else what the invoice still owes.
        let mut no_amount = event(S::Succeeded, 10);
        no_amount.amount = None;
        let (_, effects) = run(registered, &no_amount);
        assert_eq!(
            payment_data(&effects).amount_source,
            AmountSource::RegisteredPayment
        );
        let mut owing = state(vec![payment("pay_0", "pi_0", 300, P::Succeeded)]);
        owing.invoice.figures.status = I::PartiallyPaid;
        let (next, effects) = run(owing, &no_amount);
        assert_eq!(payment_data(&effects).amount, 700);
        assert_eq!(
            payment_data(&effects).amount_source,
            AmountSource::InvoiceOutstanding
        );
        assert_eq!(next.invoice.figures.status, I::Paid);
        assert_eq!(next.payments[1].id, "pay_new");
    }

    #[test]
    fn over_payment_is_flagged_and_a_provider_mismatch_is_said() {
        let mut over = event(S::Succeeded, 10);
        over.amount = Some(MinorUnits::new(1500).unwrap());
        let mut gocardless_invoice = state(vec![]);
        gocardless_invoice.settings = settings(PaymentProvider::GoCardless, true);
        let (next, effects) = run(gocardless_invoice, &over);
        assert_eq!(next.invoice.figures.amount_paid, 1500);
        assert!(effects.overpaid && effects.provider_mismatch);
        for event in &effects.events {
            match event {
                ReconciliationEvent::InvoicePaid(data) => {
                    assert!(data.figures.overpaid && data.provider_mismatch);
                    assert_eq!(data.effective_payment_provider, PaymentProvider::GoCardless);
                }
                ReconciliationEvent::PaymentSucceeded(data) => assert!(data.provider_mismatch),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_latest_attempt_decides_whether_an_unpaid_invoice_shows_a_failure() {
        // Another attempt failed later than this one's failure: still PAYMENT_FAILED; a success
        // of this one pays.
        let mut other_failed = payment("pay_0", "pi_0", 1000, P::Failed);
        other_failed.last_event_at = Some(at(50));
        let (next, _) = run(state(vec![other_failed.clone()]), &event(S::Pending, 10));
        assert_eq!(
            next.invoice.figures.status,
            I::PaymentFailed,
            "the other attempt is the latest"
        );
        let (next, _) = run(state(vec![other_failed]), &event(S::Pending, 60));
        assert_eq!(
            next.invoice.figures.status,
            I::Open,
            "this attempt is the latest and pending"
        );
    }

    #[test]
    fn a_chargeback_with_another_payment_collected_leaves_the_invoice_partly_paid() {
        let other = payment("pay_0", "pi_0", 400, P::Succeeded);
        let this = payment("pay_1", "pi_1", 600, P::Succeeded);
        let (next, effects) = run(state(vec![other, this]), &event(S::ChargedBack, 10));
        assert_eq!(next.invoice.figures.amount_paid, 400);
        assert_eq!(next.invoice.figures.status, I::PartiallyPaid);
        assert_eq!(types(&effects), [IR, "invoice.partially_paid"]);
        let figures = effects.invoice_figures.unwrap();
        assert_eq!(
            (figures.amount_paid, figures.status),
            (400, I::PartiallyPaid)
        );
    }

    #[test]
    fn a_failure_keeps_the_reason_and_a_later_event_keeps_the_last_one() {
        let (next, effects) = run(state(vec![]), &event(S::Failed, 10));
        let reason = next.payments[0].failure.clone().unwrap();
        assert_eq!(reason.code.as_deref(), Some("insufficient_funds"));
        assert_eq!(
            payment_data(&effects).failure_code.as_deref(),
            Some("insufficient_funds")
        );
        let (next, effects) = run(next, &event(S::Pending, 20));
        assert_eq!(
            next.payments[0].failure,
            Some(reason),
            "kept for the record"
        );
        assert!(effects.events.is_empty());
    }

    #[test]
    fn one_failed_attempt_reported_by_two_event_types_is_one_failure() {
        let mut declined = event(S::AttemptFailed, 10);
        declined.attempt_id = Some("ch_1".into());
        let (state, first) = run(state(vec![]), &declined);
        assert_eq!(types(&first), [PF, IPF]);
        assert_eq!(
            first.notification.unwrap().attempt_id.as_deref(),
            Some("ch_1")
        );
        assert_eq!(state.payments[0].failure_attempt.as_deref(), Some("ch_1"));
        // The same decline as charge.failed, a second later: nothing new to say.
        let mut same = declined.clone();
        same.occurred_at = at(11);
        let (after, second) = run(state.clone(), &same);
        assert_eq!(second.outcome, Outcome::Unchanged);
        assert!(second.events.is_empty() && second.notification.is_none());
        assert!(second.payment.is_none(), "nothing to write");
        assert_eq!(after, state);
        // Another attempt (a retry on a new charge) fails on its own: announced and mailed again.
        let mut retry = declined.clone();
        retry.attempt_id = Some("ch_2".into());
        retry.occurred_at = at(20);
        let (after, third) = run(state.clone(), &retry);
        assert_eq!(types(&third), [PF]);
        assert!(third.notification.is_some());
        assert_eq!(after.payments[0].failure_attempt.as_deref(), Some("ch_2"));
        // An event that names no attempt (Checkout) is the same decline when stamped the same
        // second, else an attempt of its own.
        let mut unnamed = declined.clone();
        unnamed.attempt_id = None;
        let (_, fourth) = run(state.clone(), &unnamed);
        assert_eq!(fourth.outcome, Outcome::Unchanged);
        unnamed.occurred_at = at(12);
        let (_, fifth) = run(state, &unnamed);
        assert_eq!(types(&fifth), [PF]);
        // Checkout's report first, the charge's the same second: one decline, its charge kept.
        let mut checkout = declined.clone();
        checkout.attempt_id = None;
        let (state, first) = run(super::tests::state(vec![]), &checkout);
        assert_eq!(types(&first), [PF, IPF]);
        let (state, second) = run(state, &declined);
        assert_eq!(second.outcome, Outcome::Unchanged);
        assert!(second.events.is_empty() && second.notification.is_none());
        assert_eq!(
            second.payment.unwrap().payment.failure_attempt.as_deref(),
            Some("ch_1")
        );
        let mut later = declined.clone();
        later.occurred_at = at(13);
        let (_, third) = run(state, &later);
        assert_eq!(
            third.outcome,
            Outcome::Unchanged,
            "the charge's own event, later"
        );
    }

    #[test]
    fn the_retry_outlook_follows_the_provider_then_auto_charge_and_the_method_on_file() {
        use RetryOutlook as R;
        let cases = [
            (Some(true), false, false, R::ProviderRetries, true),
            (Some(false), true, true, R::ProviderWillNotRetry, false),
            (None, true, true, R::RetryWithMethodOnFile, true),
            (None, true, false, R::NoUsableMethod, false),
            (None, false, true, R::AutoChargeOff, false),
        ];
        for (provider_says, auto_charge, usable, outlook, will_retry) in cases {
            let mut known = state(vec![]);
            known.settings = settings(PaymentProvider::Stripe, auto_charge);
            known.usable_method_on_file = usable;
            let mut failed = event(S::Failed, 10);
            failed.provider_will_retry = provider_says;
            let (_, effects) = run(known, &failed);
            let notification = effects.notification.unwrap();
            assert_eq!(notification.outlook, outlook);
            assert_eq!(outlook.will_retry(), will_retry);
            assert_eq!(
                notification.failure.code.as_deref(),
                Some("insufficient_funds")
            );
        }
    }

    #[test]
    fn events_of_one_invoice_fold_over_the_state_as_if_applied_one_by_one() {
        let events = [
            event(S::Pending, 1),
            event(S::Failed, 2),
            event(S::Succeeded, 3),
        ];
        let mut state = state(vec![]);
        let mut all = Vec::new();
        for event in &events {
            let (next, effects) = run(state, event);
            state = next;
            all.extend(types(&effects));
        }
        assert_eq!(state.invoice.figures.status, I::Paid);
        assert_eq!(all, [PF, IPF, PS, IP]);
    }
}
