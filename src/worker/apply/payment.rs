//! The shell around the planners for the events of an invoice's money (payments, refunds,
//! disputes), over a run of such events of one account: lock, read, fold, write — three
//! statements however long the run (`repository::invoice_state`).
//!
//! The fold runs the pure planners over the run's events in their order, each on the state the
//! ones before it left (two events of one invoice apply in sequence, as two transactions would),
//! and collects their effects; the write sends each changed row once, in its last state. An event
//! the fold refuses (its invoice not registered yet, a currency mismatch) contributes nothing and
//! is reported alone: its neighbours are written all the same.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::charge;
use super::policy::{ApplyError, Policy, outbox_rows};
use crate::provider::Provider;
use crate::reconcile::events::{DisputeEvent, PaymentEvent, RefundEvent};
use crate::reconcile::outcome::Outcome;
use crate::reconcile::plan::{
    DisputeNotice, Effects, FailureNotification, InvoiceState, PlanError, plan, plan_dispute,
    plan_refund,
};
use crate::repository::customers::CustomerRow;
use crate::repository::inbox::InboxEntry;
use crate::repository::invoice_state::{
    self, Applied, InboxRecord, InvoiceKey, LockRequest, RecordedBy,
};
use crate::repository::invoices::InvoiceRow;
use crate::repository::outbox::OutboxRow;
use crate::repository::{customers, new_id, notifications};

/// An event of an invoice's money.
#[derive(Clone, Copy)]
pub(super) enum MoneyEvent<'a> {
    Payment(&'a PaymentEvent),
    Refund(&'a RefundEvent),
    Dispute(&'a DisputeEvent),
}

impl MoneyEvent<'_> {
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

    /// What an event whose invoice is not known waits for: the link of its provider invoice, else
    /// the registration of its payment (a GoCardless refund event: of its refund).
    fn waits_for(&self) -> Option<&str> {
        let key = self.key();
        key.provider_invoice_id
            .or(key.provider_payment_id)
            .or(key.provider_refund_id)
    }

    fn plan(&self, state: InvoiceState) -> Result<(InvoiceState, Effects), PlanError> {
        match self {
            Self::Payment(e) => plan(state, e, || new_id("pay")),
            Self::Refund(e) => plan_refund(state, e, || new_id("ref")),
            Self::Dispute(e) => plan_dispute(state, e, || new_id("dsp")),
        }
    }
}

/// A money event of a run, with its inbox row.
pub(super) struct MoneyItem<'a> {
    pub entry: InboxEntry<'a>,
    pub event: MoneyEvent<'a>,
}

/// What the fold decided for one event.
enum Decided {
    /// In the inbox already.
    Duplicate,
    /// Refused: nothing of it is written.
    Failed(ApplyError),
    /// No invoice: recorded with this outcome (`Unmatched`: waiting).
    NoInvoice(Outcome),
    /// Planned against its invoice.
    Planned {
        /// Its index in the run's locked invoices.
        invoice: usize,
        effects: Box<Effects>,
        outbox: Vec<OutboxRow>,
    },
}

/// The invoice states of a run as the fold moves them: the locked invoices, and the state of
/// each (`None`: no settings row, which the schema makes impossible).
struct Fold<'r> {
    policy: &'r Policy,
    invoices: Vec<&'r InvoiceRow>,
    states: Vec<Option<InvoiceState>>,
}

impl Fold<'_> {
    /// The invoice of an event whose payment (or refund) an earlier event of the run, or the
    /// database, holds on a locked invoice: the registered payment wins over the event's own
    /// references, as in the lock statement.
    fn invoice_in_run(&self, event: &MoneyEvent<'_>) -> Option<usize> {
        let key = event.key();
        let provider = event.provider();
        self.states.iter().position(|state| {
            let Some(state) = state else {
                return false;
            };
            let has_payment = key.provider_payment_id.is_some_and(|id| {
                state
                    .payments
                    .iter()
                    .any(|p| p.provider == provider && p.provider_payment_id == id)
            });
            let has_refund = key.provider_refund_id.is_some_and(|id| {
                state
                    .refunds
                    .iter()
                    .any(|r| r.provider == provider && r.provider_refund_id == id)
            });
            has_payment || has_refund
        })
    }

    fn decide(&mut self, item: &MoneyItem<'_>, locked: Option<&str>) -> Decided {
        let event = &item.event;
        let locked = locked.and_then(|id| self.invoices.iter().position(|i| i.id == id));
        let Some(invoice) = self.invoice_in_run(event).or(locked) else {
            return match (event.key().invoice_ref, event.waits_for()) {
                (Some(invoice_ref), _) => {
                    Decided::Failed(ApplyError::InvoiceNotFound(invoice_ref.to_owned()))
                }
                (None, Some(_)) => Decided::NoInvoice(Outcome::Unmatched),
                (None, None) => Decided::NoInvoice(Outcome::Ignored("names no payment")),
            };
        };
        let Some(state) = &self.states[invoice] else {
            return Decided::Failed(ApplyError::Permanent {
                reason: "database_error",
                detail: format!("invoice {} has no settings row", self.invoices[invoice].id),
            });
        };
        let (next, effects) = match event.plan(state.clone()) {
            Ok(planned) => planned,
            Err(mismatch) => {
                return Decided::Failed(ApplyError::Permanent {
                    reason: "currency_mismatch",
                    detail: mismatch.to_string(),
                });
            }
        };
        let outbox = match outbox_rows(
            &effects.events,
            &item.entry,
            event.occurred_at(),
            &self.policy.account_id,
        ) {
            Ok(rows) => rows,
            Err(failure) => return Decided::Failed(failure),
        };
        self.states[invoice] = Some(next);
        Decided::Planned {
            invoice,
            effects: Box::new(effects),
            outbox,
        }
    }
}

/// What a run did: one result per item, in order, and the payments it registered itself (their
/// invoice named by metadata or a linked provider invoice), for which unmatched events may wait.
pub(super) struct RunApplied {
    pub outcomes: Vec<Result<Outcome, ApplyError>>,
    pub waiting: Vec<(Provider, String)>,
}

/// Applies a run of money events of `policy`'s account inside the caller's transaction; `Err`
/// for the whole run when the database failed (the caller rolls back).
pub(super) async fn apply_run(
    tx: &mut PgConnection,
    policy: &Policy,
    items: &[MoneyItem<'_>],
) -> Result<RunApplied, ApplyError> {
    let requests: Vec<LockRequest<'_>> = items
        .iter()
        .map(|item| LockRequest {
            provider: item.entry.provider,
            event_id: item.entry.event_id,
            key: item.event.key(),
        })
        .collect();
    let found = invoice_state::lock(tx, &policy.account_id, &requests).await?;
    let mut invoices: Vec<&InvoiceRow> = Vec::new();
    for invoice in found.iter().filter_map(|f| f.invoice.as_ref()) {
        if !invoices.iter().any(|known| known.id == invoice.id) {
            invoices.push(invoice);
        }
    }
    let mut states = invoice_state::read(tx, &invoices, policy.defaults).await?;
    let mut fold = Fold {
        policy,
        states: invoices.iter().map(|i| states.remove(&i.id)).collect(),
        invoices,
    };

    let mut decided: Vec<Decided> = Vec::with_capacity(items.len());
    // Unmatched events of this run, by index: a payment registered by a later event of the run
    // applies them there, as the registration of a payment applies the waiting events.
    let mut parked: Vec<usize> = Vec::new();
    // The planned events in the order the fold planned them: a parked event after the one that
    // registered its payment. Its effects are written in that order (a row's last state wins).
    let mut order: Vec<usize> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if found[i].recorded {
            decided.push(Decided::Duplicate);
            continue;
        }
        let locked = found[i].invoice.as_ref().map(|invoice| invoice.id.as_str());
        let decision = fold.decide(item, locked);
        let registered = match &decision {
            Decided::Planned { effects, .. } => effects
                .payment
                .as_ref()
                .filter(|write| write.is_new)
                .map(|write| {
                    (
                        write.payment.provider,
                        write.payment.provider_payment_id.clone(),
                    )
                }),
            _ => None,
        };
        match decision {
            Decided::NoInvoice(Outcome::Unmatched) => parked.push(i),
            Decided::Planned { .. } => order.push(i),
            _ => {}
        }
        decided.push(decision);
        if let Some((provider, payment)) = registered {
            let (now, still) = parked.into_iter().partition(|&k| {
                items[k].event.provider() == provider
                    && items[k].event.waits_for() == Some(payment.as_str())
            });
            parked = still;
            for k in now {
                let locked = found[k].invoice.as_ref().map(|invoice| invoice.id.as_str());
                decided[k] = fold.decide(&items[k], locked);
                if matches!(decided[k], Decided::Planned { .. }) {
                    order.push(k);
                }
            }
        }
    }

    let mut inbox = Vec::new();
    for (item, decision) in items.iter().zip(&decided) {
        let (outcome, waits_for) = match decision {
            Decided::Duplicate | Decided::Failed(_) => continue,
            Decided::NoInvoice(Outcome::Unmatched) => (
                Outcome::Unmatched,
                item.event
                    .waits_for()
                    .map(|id| (id, item.event.occurred_at())),
            ),
            Decided::NoInvoice(outcome) => (*outcome, None),
            Decided::Planned { effects, .. } => (effects.outcome, None),
        };
        inbox.push(InboxRecord {
            entry: &item.entry,
            outcome,
            waits_for,
        });
    }
    let mut applied = Vec::with_capacity(order.len());
    let mut outbox = Vec::new();
    for &i in &order {
        let Decided::Planned {
            invoice,
            effects,
            outbox: rows,
        } = &decided[i]
        else {
            continue;
        };
        applied.push((
            &items[i],
            Applied {
                invoice: fold.invoices[*invoice],
                effects,
                recorded_by: RecordedBy {
                    event_id: items[i].entry.event_id,
                    occurred_at: items[i].event.occurred_at(),
                },
            },
        ));
        outbox.extend(rows.iter().cloned());
    }
    let (applied_items, applied): (Vec<_>, Vec<_>) = applied.into_iter().unzip();
    let written = invoice_state::write(tx, &policy.account_id, &inbox, &applied, &outbox).await?;
    if written.inbox_rows != inbox.len() {
        return Err(ApplyError::Raced(format!(
            "{} of {} events were recorded by another transaction meanwhile",
            inbox.len() - written.inbox_rows,
            inbox.len()
        )));
    }
    for (item, a) in applied_items.iter().zip(&applied) {
        let mut notification = a.effects.notification.clone();
        if let MoneyEvent::Payment(event) = item.event {
            charge::after_payment(
                tx,
                policy,
                a.invoice,
                event,
                a.effects,
                notification.as_mut(),
            )
            .await?;
        }
        if let Some(notification) = &notification {
            notify_failure(tx, policy, &item.entry, a.invoice, notification).await?;
        }
        for notice in &a.effects.dispute_notices {
            notify_dispute(tx, policy, &item.entry, a.invoice, a.effects, notice).await?;
        }
        if a.effects.overpaid {
            tracing::warn!(invoice = %a.invoice.id, amount_due = a.invoice.amount_due, "invoice overpaid");
        }
        if a.effects.provider_mismatch {
            tracing::info!(invoice = %a.invoice.id, provider = %item.event.provider(), "payment from a provider other than the effective one");
        }
    }
    let outcomes = decided
        .into_iter()
        .map(|decision| match decision {
            Decided::Duplicate => Ok(Outcome::Duplicate),
            Decided::Failed(failure) => Err(failure),
            Decided::NoInvoice(outcome) => Ok(outcome),
            Decided::Planned { effects, .. } => Ok(effects.outcome),
        })
        .collect();
    Ok(RunApplied {
        outcomes,
        waiting: written.waiting,
    })
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
    customers::get_even_deleted(&mut *tx, &invoice.account_id, &invoice.customer_id)
        .await?
        .ok_or_else(|| ApplyError::Permanent {
            reason: "database_error",
            detail: format!(
                "invoice {}'s customer {} is missing",
                invoice.id, invoice.customer_id
            ),
        })
}
