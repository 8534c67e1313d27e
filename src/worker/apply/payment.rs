//! The shell around the planners for the events of an invoice's money (payments, refunds,
//! disputes): lock, read, plan, write.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{ApplyError, Policy, outbox_rows};
use crate::provider::Provider;
use crate::reconcile::events::{DisputeEvent, PaymentEvent, RefundEvent};
use crate::reconcile::outcome::Outcome;
use crate::reconcile::plan::{
    DisputeNotice, Effects, FailureNotification, InvoiceState, PlanError, plan, plan_dispute,
    plan_refund,
};
use crate::repository::customers::CustomerRow;
use crate::repository::inbox::{self, InboxEntry};
use crate::repository::invoice_state::{self, InvoiceKey, Locked, RecordedBy};
use crate::repository::invoices::InvoiceRow;
use crate::repository::{customers, new_id, notifications};

/// An event of an invoice's money.
pub(super) enum MoneyEvent {
    Payment(PaymentEvent),
    Refund(RefundEvent),
    Dispute(DisputeEvent),
}

impl MoneyEvent {
    fn provider(&self) -> Provider {
        match self {
            Self::Payment(e) => e.provider,
            Self::Refund(e) => e.provider,
            Self::Dispute(e) => e.provider,
        }
    }

    fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::Payment(e) => e.occurred_at,
            Self::Refund(e) => e.occurred_at,
            Self::Dispute(e) => e.occurred_at,
        }
    }

    /// What names the event's invoice.
    fn key(&self) -> InvoiceKey<'_> {
        match self {
            Self::Payment(e) => InvoiceKey {
                provider_payment_id: Some(&e.provider_payment_id),
                invoice_ref: e.invoice_ref.as_deref(),
                provider_invoice_id: e.provider_invoice_id.as_deref(),
                ..InvoiceKey::default()
            },
            Self::Refund(e) => InvoiceKey {
                provider_payment_id: e.provider_payment_id.as_deref(),
                provider_refund_id: e.refunds.first().map(|r| r.provider_refund_id.as_str()),
                ..InvoiceKey::default()
            },
            Self::Dispute(e) => InvoiceKey {
                provider_payment_id: Some(&e.provider_payment_id),
                ..InvoiceKey::default()
            },
        }
    }

    fn plan(&self, state: InvoiceState) -> Result<(InvoiceState, Effects), PlanError> {
        match self {
            Self::Payment(e) => plan(state, e, || new_id("pay")),
            Self::Refund(e) => plan_refund(state, e, || new_id("ref")),
            Self::Dispute(e) => plan_dispute(state, e, || new_id("dsp")),
        }
    }
}

pub(super) async fn apply(
    tx: &mut PgConnection,
    policy: &Policy,
    entry: &InboxEntry<'_>,
    event: MoneyEvent,
) -> Result<Outcome, ApplyError> {
    let key = event.key();
    let locked = invoice_state::record_and_lock(tx, entry, key).await?;
    let invoice = match locked {
        Locked::Duplicate => return Ok(Outcome::Duplicate),
        Locked::Invoice(invoice) => invoice,
        Locked::NoInvoice => {
            let waits_for = key
                .provider_invoice_id
                .or(key.provider_payment_id)
                .or(key.provider_refund_id);
            return match (key.invoice_ref, waits_for) {
                (Some(invoice_ref), _) => Err(ApplyError::InvoiceNotFound(invoice_ref.to_owned())),
                // No registered payment (or refund), no invoice reference, no linked provider
                // invoice: it waits for the link of its provider invoice, else the registration of
                // its payment (a GoCardless refund event: of its refund), which applies it.
                (None, Some(waits_for)) => {
                    inbox::mark_unmatched(tx, entry, waits_for, event.occurred_at()).await?;
                    Ok(Outcome::Unmatched)
                }
                (None, None) => Ok(Outcome::Ignored("names no payment")),
            };
        }
    };
    let state = invoice_state::read(tx, &invoice, policy.defaults).await?;
    let (_, effects) = event
        .plan(state)
        .map_err(|mismatch| ApplyError::Permanent {
            reason: "currency_mismatch",
            detail: mismatch.to_string(),
        })?;
    let outbox = outbox_rows(
        &effects.events,
        event.provider(),
        entry.event_id,
        event.occurred_at(),
        &policy.account_id,
    )?;
    let recorded_by = RecordedBy {
        event_id: entry.event_id,
        occurred_at: event.occurred_at(),
    };
    let waiting = invoice_state::write(tx, &invoice, &effects, &outbox, recorded_by).await?;
    // A payment settle registered itself (its invoice named by metadata or a linked provider
    // invoice) that unmatched events wait for: they apply now. Boxed: that runs the worker's
    // apply again.
    if let Some(write) = effects.payment.as_ref().filter(|_| waiting) {
        let payment = &write.payment;
        Box::pin(super::apply_waiting(
            tx,
            policy,
            payment.provider,
            &payment.provider_payment_id,
        ))
        .await?;
    }
    if let Some(notification) = &effects.notification {
        notify_failure(tx, policy, entry, &invoice, notification).await?;
    }
    for notice in &effects.dispute_notices {
        notify_dispute(tx, policy, entry, &invoice, &effects, notice).await?;
    }
    if effects.overpaid {
        tracing::warn!(invoice = %invoice.id, amount_due = invoice.amount_due, "invoice overpaid");
    }
    if effects.provider_mismatch {
        tracing::info!(invoice = %invoice.id, provider = %event.provider(), "payment from a provider other than the effective one");
    }
    Ok(effects.outcome)
}

/// Writes the failure mails (one to the customer's billing emails, one to the business), keyed by
/// (payment, failure event): redeliveries and replays write nothing new.
async fn notify_failure(
    tx: &mut PgConnection,
    policy: &Policy,
    entry: &InboxEntry<'_>,
    invoice: &InvoiceRow,
    notification: &FailureNotification,
) -> Result<(), ApplyError> {
    let customer = customer(tx, invoice).await?;
    let mails = crate::notify::compose(
        notification,
        invoice,
        &customer,
        entry.event_id,
        &policy.business_name,
        policy.business_email.as_deref(),
    )
    .map_err(|error| ApplyError::Permanent {
        reason: "internal_error",
        detail: format!("a failure mail did not render: {error}"),
    })?;
    notifications::insert(tx, &policy.account_id, &mails).await?;
    Ok(())
}

/// Writes the business's mail about a dispute, keyed by (payment, dispute, kind): once each.
async fn notify_dispute(
    tx: &mut PgConnection,
    policy: &Policy,
    entry: &InboxEntry<'_>,
    invoice: &InvoiceRow,
    effects: &Effects,
    notice: &DisputeNotice,
) -> Result<(), ApplyError> {
    let customer = customer(tx, invoice).await?;
    let amount_paid = effects
        .invoice_figures
        .map_or(invoice.amount_paid, |figures| figures.amount_paid);
    let mail = crate::notify::compose_dispute(
        notice,
        invoice,
        amount_paid,
        &customer,
        entry.event_id,
        policy.business_email.as_deref(),
    )
    .map_err(|error| ApplyError::Permanent {
        reason: "internal_error",
        detail: format!("a dispute mail did not render: {error}"),
    })?;
    notifications::insert(tx, &policy.account_id, mail.as_slice()).await?;
    Ok(())
}

/// The invoice's customer, which the schema guarantees.
async fn customer(tx: &mut PgConnection, invoice: &InvoiceRow) -> Result<CustomerRow, ApplyError> {
    customers::get(&mut *tx, &invoice.account_id, &invoice.customer_id)
        .await?
        .ok_or_else(|| ApplyError::Permanent {
            reason: "database_error",
            detail: format!(
                "invoice {}'s customer {} is missing",
                invoice.id, invoice.customer_id
            ),
        })
}
