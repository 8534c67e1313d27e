//! An invoice's figures after an event: re-derived from its ledger, and the events their change
//! announces.

use super::state::{InvoiceFacts, InvoiceState, PaymentFacts};
use crate::provider::{PaymentProvider, Provider};
use crate::reconcile::invoice::{self, InvoiceChange, InvoiceFigures};
use crate::reconcile::payment::PaymentStatus;
use crate::reconcile::reconciliation_events::{FiguresData, InvoiceData, ReconciliationEvent};

/// The invoice's figures before and after an event.
pub(super) struct FiguresChange {
    before: InvoiceFigures,
    after: InvoiceFigures,
}

impl FiguresChange {
    pub(super) fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// Re-derives the invoice's figures from its ledger and disputes after an event of the payment at
/// `payment_index`, and stores them in the state.
pub(super) fn conclude(state: &mut InvoiceState, payment_index: usize) -> FiguresChange {
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
pub(super) fn latest_attempt_failed(payments: &[PaymentFacts], preferred: usize) -> bool {
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
pub(super) fn invoice_events(
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
pub(super) fn figures_data(invoice: &InvoiceFacts) -> FiguresData {
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
