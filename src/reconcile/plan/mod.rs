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

mod figures;
mod money_back;
mod state;

use self::figures::{conclude, invoice_events};
pub use self::money_back::{plan_dispute, plan_refund};
pub use self::state::{
    DisputeFacts, DisputeNotice, DisputeNoticeKind, Effects, FailureNotification, InvoiceFacts,
    InvoiceState, PaymentFacts, PaymentWrite, PlanError, RefundFacts, RetryOutlook,
};

use super::events::PaymentEvent;
use super::invoice::{self, InvoiceStatus};
use super::ledger::MovementKind;
use super::money::MinorUnits;
use super::outcome::Outcome;
use super::payment::{Decision, PaymentSignal, PaymentStatus, decide};
use super::reconciliation_events::{AmountSource, PaymentData, ReconciliationEvent};
use crate::provider::PaymentProvider;

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
            // The worker's charging step dates the next attempt (`charging::outlook`).
            retry_at: None,
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

#[cfg(test)]
mod tests;
