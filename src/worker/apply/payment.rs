//! The shell around the planner for payment events: lock, read, plan, write.

use sqlx::PgConnection;

use super::{ApplyError, Policy, outbox_rows};
use crate::reconcile::events::PaymentEvent;
use crate::reconcile::outcome::Outcome;
use crate::reconcile::plan::{FailureNotification, plan};
use crate::repository::inbox::{self, InboxEntry};
use crate::repository::invoice_state::{self, Locked};
use crate::repository::invoices::InvoiceRow;
use crate::repository::{customers, new_id, notifications};

pub(super) async fn apply(
    tx: &mut PgConnection,
    policy: &Policy,
    entry: &InboxEntry<'_>,
    event: PaymentEvent,
) -> Result<Outcome, ApplyError> {
    let locked = invoice_state::record_and_lock(
        tx,
        entry,
        &event.provider_payment_id,
        event.invoice_ref.as_deref(),
    )
    .await?;
    let invoice = match locked {
        Locked::Duplicate => return Ok(Outcome::Duplicate),
        Locked::Invoice(invoice) => invoice,
        Locked::NoInvoice => {
            return match event.invoice_ref {
                Some(invoice_ref) => Err(ApplyError::InvoiceNotFound(invoice_ref)),
                // No registered payment and no invoice reference: it waits for the payment's
                // registration, which applies it.
                None => {
                    inbox::mark_unmatched(tx, entry, &event.provider_payment_id, event.occurred_at)
                        .await?;
                    Ok(Outcome::Unmatched)
                }
            };
        }
    };
    let state = invoice_state::read(tx, &invoice, policy.defaults).await?;
    let (_, effects) =
        plan(state, &event, || new_id("pay")).map_err(|mismatch| ApplyError::Permanent {
            reason: "currency_mismatch",
            detail: mismatch.to_string(),
        })?;
    let outbox = outbox_rows(
        &effects.events,
        event.provider,
        entry.event_id,
        event.occurred_at,
        &policy.account_id,
    )?;
    invoice_state::write(tx, &invoice, &effects, &outbox).await?;
    if let Some(notification) = &effects.notification {
        notify_failure(tx, policy, entry, &invoice, notification).await?;
    }
    if effects.overpaid {
        tracing::warn!(invoice = %invoice.id, amount_due = invoice.amount_due, "invoice overpaid");
    }
    if effects.provider_mismatch {
        tracing::info!(invoice = %invoice.id, provider = %event.provider, "payment from a provider other than the effective one");
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
    let customer = customers::get(&mut *tx, &invoice.customer_id)
        .await?
        .ok_or_else(|| ApplyError::Permanent {
            reason: "database_error",
            detail: format!(
                "invoice {}'s customer {} is missing",
                invoice.id, invoice.customer_id
            ),
        })?;
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
