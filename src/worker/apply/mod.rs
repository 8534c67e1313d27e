//! The worker's transaction: a batch of provider events in, their effects out, atomically.
//!
//! ```text
//! BEGIN
//!   route each event to its account (a round trip only for a connected account's event)
//!   for each run of consecutive money events of one account (payment.rs):
//!     resolve and lock their invoices (FOR UPDATE, in id order),
//!       + which are in the inbox already, one statement            → one run per invoice at a time
//!     read every locked invoice's state, one statement             → sees every earlier commit
//!     fold reconcile::plan::{plan, plan_refund, plan_dispute}
//!       over the run's events, in order                            → pure: outcomes, writes, events
//!     write the inbox rows (an `unmatched` one is claimed), payments,
//!       ledger rows, refunds, disputes, invoice figures, outbox
//!       rows: one statement, each table once                       → reconciliation events, stable ids
//!     (a failure on an unpaid invoice, a dispute) notification rows
//!     (a payment settle registered itself, a provider invoice linked)
//!       the unmatched events waiting for it, each in a savepoint   → applied once, here
//!   any other event (payment method, invoice link, ignored): on its own, in a savepoint
//! COMMIT                                                           → then ack the batch
//! ```
//!
//! Payments, refunds and disputes share this shell (`payment.rs`): the same lock, read and write,
//! one planner each. Three round trips for a run of money events, however long, besides BEGIN and
//! COMMIT (`repository::invoice_state` says why the read cannot join the lock).
//!
//! Why effects happen once, batch or not:
//! - A crash anywhere before COMMIT applies nothing of the batch, and acks nothing; the
//!   redeliveries start again.
//! - A redelivery after COMMIT finds its inbox row (the lock statement reads it, after waiting for
//!   a replay that is deleting it) and changes nothing.
//! - Two deliveries of one event in flight at once: both lock its invoice, so the second reads
//!   after the first committed. Whatever the timing, the write statement inserts an inbox row only
//!   where there is none (or claims an `unmatched` one) and counts what it wrote: a shortfall
//!   means another transaction recorded one of the run's events meanwhile, and the whole batch is
//!   rolled back (`ApplyError::Raced`) and applied again at once (the worker's `apply_held`),
//!   where the other transaction's events are duplicates: no attempt is spent on a race.
//! - Two deliveries of one event in the same batch: the second is a duplicate of the first.
//! - An event the fold refuses contributes nothing to the write, so it is not half-applied.
//!
//! Lock order: a run locks its invoices in id order, so two runs never deadlock on each other.
//! Events of other kinds, and the waiting events a run applies, lock as they go; a deadlock that
//! this allows is detected by PostgreSQL, fails the batch as a whole, and its events are applied
//! one per transaction.
//!
//! A payment event that names no invoice, for a payment nobody has registered yet, is kept as
//! `unmatched` (DESIGN §5 said "not ours"; the billing system may register the payment a moment
//! later). The registration of that payment runs the same path over the waiting events, inside
//! the registering transaction (`apply_waiting`); an inbox row is claimed by whoever applies it
//! first (`repository::inbox`).

mod charge;
mod method;
mod payment;
mod payout;
mod policy;

use std::borrow::Cow;

use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};

use self::payment::{MoneyEvent, MoneyItem};
pub use self::policy::{ApplyError, Policy, policy_for};
use self::policy::{internal, unparseable};
use crate::envelope::QueuedEvent;
use crate::provider::Provider;
use crate::providers;
use crate::reconcile::events::{DomainEvent, InvoiceLink};
use crate::reconcile::outcome::Outcome;
use crate::reconcile::routing::Unrouted;
use crate::repository::inbox::{self, InboxEntry};

/// Applies one event in one transaction and returns what happened to it.
pub async fn apply(
    db: &PgPool,
    policy: &Policy,
    event: &QueuedEvent,
) -> Result<Outcome, ApplyError> {
    only(apply_batch(db, policy, std::slice::from_ref(event)).await?)
}

/// The result of a batch of one event.
pub fn only(mut results: Vec<Result<Outcome, ApplyError>>) -> Result<Outcome, ApplyError> {
    results
        .pop()
        .unwrap_or_else(|| Err(internal("a batch of one event gave no result")))
}

/// Applies a batch of events in one transaction: one result per event, in order. An event that
/// cannot be applied (`Err` in its place) wrote nothing, and the others are committed without
/// it. `Err` for the whole batch when the transaction failed (the database, or a race with
/// another transaction): nothing was committed.
///
/// Events are routed to their accounts, then applied in order: a run of consecutive money events
/// of one account through one lock, read and write (`payment::apply_run`), any other event on
/// its own, in a savepoint when it has neighbours (it writes as it goes, so one that fails half
/// way is rolled back alone).
pub async fn apply_batch(
    db: &PgPool,
    policy: &Policy,
    events: &[QueuedEvent],
) -> Result<Vec<Result<Outcome, ApplyError>>, ApplyError> {
    let mut tx = db.begin().await?;
    let mut results: Vec<Option<Result<Outcome, ApplyError>>> =
        std::iter::repeat_with(|| None).take(events.len()).collect();
    let mut prepared = Vec::with_capacity(events.len());
    let mut seen = std::collections::HashSet::new();
    for (i, event) in events.iter().enumerate() {
        // A second delivery of an event in the same batch: the first one stands for both.
        if !seen.insert((event.provider, event.event_id.as_str())) {
            results[i] = Some(Ok(Outcome::Duplicate));
            continue;
        }
        let routed = match route(&mut tx, policy, event).await {
            Ok(routed) => routed,
            Err(failure) if failure.is_the_batchs() => return Err(failure),
            Err(failure) => {
                results[i] = Some(Err(failure));
                continue;
            }
        };
        match Prepared::new(event, routed) {
            Ok(ready) => prepared.push((i, ready)),
            Err(failure) => results[i] = Some(Err(failure)),
        }
    }
    for (i, result) in apply_prepared(&mut tx, &prepared).await? {
        results[i] = Some(result);
    }
    let results: Vec<_> = results
        .into_iter()
        .map(|result| result.unwrap_or_else(|| Err(internal("an event of the batch was left out"))))
        .collect();
    // Nothing applied (duplicates, failures): dropping the transaction releases its locks.
    if results
        .iter()
        .any(|result| matches!(result, Ok(outcome) if *outcome != Outcome::Duplicate))
    {
        tx.commit().await?;
    }
    Ok(results)
}

/// An event parsed, interpreted and routed.
struct Prepared<'e, 'p> {
    event: &'e QueuedEvent,
    policy: Cow<'p, Policy>,
    /// The body as it arrived (the inbox keeps it; JSON is UTF-8, so this text is what parsed).
    /// Kept as received even when its text holds a NUL: JSON can carry one only escaped
    /// (`\u0000`; a raw control character does not parse), and the inbox's column is `json`,
    /// which stores the text as it is and accepts that escape (`jsonb` would refuse it). The
    /// fields the event becomes are `storable` (`reconcile::events`).
    raw_payload: &'e str,
    domain_event: DomainEvent,
    /// The ids the inbox row is found by.
    object_ids: Vec<String>,
}

impl<'e, 'p> Prepared<'e, 'p> {
    fn new(event: &'e QueuedEvent, policy: Cow<'p, Policy>) -> Result<Self, ApplyError> {
        let raw_payload = std::str::from_utf8(&event.body).map_err(unparseable)?;
        let payload: Value = serde_json::from_str(raw_payload).map_err(unparseable)?;
        let rules = providers::rules(event.provider);
        let domain_event = rules
            .interpret(&payload, policy.gocardless_collected_at)
            .map_err(unparseable)?;
        Ok(Self {
            event,
            policy,
            raw_payload,
            domain_event,
            object_ids: rules.object_ids(&payload),
        })
    }

    fn entry(&self) -> InboxEntry<'_> {
        InboxEntry {
            provider: self.event.provider,
            event_id: &self.event.event_id,
            account_id: &self.policy.account_id,
            event_type: &self.event.event_type,
            payload: self.raw_payload,
            received_at: self.event.received_at,
            connection_id: self.event.connection_id.as_deref(),
            object_ids: &self.object_ids,
            trace: self.event.trace.as_deref(),
        }
    }

    fn money(&self) -> Option<MoneyEvent<'_>> {
        match &self.domain_event {
            DomainEvent::Payment(event) => Some(MoneyEvent::Payment(event)),
            DomainEvent::Refund(event) => Some(MoneyEvent::Refund(event)),
            DomainEvent::Dispute(event) => Some(MoneyEvent::Dispute(event)),
            DomainEvent::Method(_)
            | DomainEvent::Link(_)
            | DomainEvent::Payout(_)
            | DomainEvent::Ignored(_) => None,
        }
    }
}

/// Applies prepared events (each with the index of its result) inside the caller's transaction,
/// in order; see `apply_batch`.
async fn apply_prepared(
    tx: &mut PgConnection,
    prepared: &[(usize, Prepared<'_, '_>)],
) -> Result<Vec<(usize, Result<Outcome, ApplyError>)>, ApplyError> {
    let mut results = Vec::with_capacity(prepared.len());
    let mut rest = prepared;
    while let Some((first, others)) = rest.split_first() {
        let (_, ready) = first;
        if ready.money().is_some() {
            let account = &ready.policy.account_id;
            let length = rest
                .iter()
                .take_while(|(_, p)| p.money().is_some() && p.policy.account_id == *account)
                .count();
            let (run, after) = rest.split_at(length);
            let (indices, items): (Vec<usize>, Vec<MoneyItem<'_>>) = run
                .iter()
                .filter_map(|(i, p)| {
                    let event = p.money()?;
                    Some((
                        *i,
                        MoneyItem {
                            entry: p.entry(),
                            event,
                        },
                    ))
                })
                .unzip();
            let run = payment::apply_run(tx, &ready.policy, &items).await?;
            // Unmatched events waiting for the payments the run registered apply now, in the
            // same transaction. Boxed: that runs this path again.
            for (provider, payment) in &run.waiting {
                Box::pin(apply_waiting(tx, &ready.policy, *provider, payment)).await?;
            }
            results.extend(indices.into_iter().zip(run.outcomes));
            rest = after;
            continue;
        }
        let result = if prepared.len() == 1 {
            apply_other(tx, ready).await
        } else {
            let mut savepoint = tx.begin().await?;
            let result = apply_other(&mut savepoint, ready).await;
            match &result {
                Ok(_) => savepoint.commit().await?,
                Err(failure) if failure.is_the_batchs() => {}
                Err(_) => savepoint.rollback().await?,
            }
            result
        };
        match result {
            Err(failure) if failure.is_the_batchs() => return Err(failure),
            result => results.push((first.0, result)),
        }
        rest = others;
    }
    Ok(results)
}

/// Applies an event that is not about an invoice's money: a payment method's, a provider
/// invoice's link, a payout's, or one settle ignores. Each records its inbox row first.
async fn apply_other(
    tx: &mut PgConnection,
    ready: &Prepared<'_, '_>,
) -> Result<Outcome, ApplyError> {
    let entry = ready.entry();
    let policy = &ready.policy;
    if !inbox::record(tx, &entry).await? {
        return Ok(Outcome::Duplicate);
    }
    let outcome = match &ready.domain_event {
        DomainEvent::Method(method) => method::apply(tx, policy, &entry, method.clone()).await?,
        DomainEvent::Link(link) => link_invoice(tx, policy, &entry, link).await?,
        DomainEvent::Payout(payout) => {
            payout::record(tx, policy, ready.event, &entry, payout).await?;
            Outcome::Applied
        }
        DomainEvent::Ignored(reason) => Outcome::Ignored(reason),
        DomainEvent::Payment(_) | DomainEvent::Refund(_) | DomainEvent::Dispute(_) => {
            unreachable!("money events apply in runs")
        }
    };
    // The row was recorded `applied`.
    if outcome != Outcome::Applied {
        inbox::set_outcome(tx, &entry, outcome).await?;
    }
    Ok(outcome)
}

/// The policy for the account the event belongs to (`reconcile::routing`): the configured one
/// for the platform's own events, with no round trip; the account of the connection the event
/// came through or names otherwise. No such connection, or one in the other mode: dead-lettered
/// with the reason, so a replay applies it once the connection is there.
async fn route<'p>(
    tx: &mut PgConnection,
    policy: &'p Policy,
    event: &QueuedEvent,
) -> Result<Cow<'p, Policy>, ApplyError> {
    use crate::reconcile::routing::{Address, choose};
    use crate::repository::accounts;
    let addressed = providers::address(event.provider, &event.body, event.connection_id.as_deref());
    let provider = event.provider.stored_name();
    let (routes, named) = match &addressed.address {
        Address::Platform => return Ok(Cow::Borrowed(policy)),
        Address::Connected(external_id)
            if policy
                .own_provider_accounts
                .iter()
                .any(|(own, id)| *own == event.provider && id == external_id) =>
        {
            return Ok(Cow::Borrowed(policy));
        }
        Address::Connection(id) => (
            Vec::from_iter(accounts::route_by_connection(&mut *tx, provider, id).await?),
            format!("connection `{id}`"),
        ),
        Address::Connected(external_id) => (
            accounts::routes_by_external_id(&mut *tx, provider, external_id).await?,
            format!("{} account `{external_id}`", event.provider.display_name()),
        ),
    };
    let modes: Vec<&str> = routes.iter().map(|route| route.mode.as_str()).collect();
    match choose(&modes, addressed.livemode) {
        Ok(chosen) if routes[chosen].account_id == policy.account_id => Ok(Cow::Borrowed(policy)),
        Ok(chosen) => {
            let route = &routes[chosen];
            Ok(Cow::Owned(policy.for_account(
                &route.account_id,
                route.account_name.as_deref(),
                route.business_email.as_deref(),
            )))
        }
        Err(unrouted) => Err(ApplyError::Permanent {
            reason: unrouted.reason(),
            detail: match unrouted {
                Unrouted::UnknownAccount => format!("settle has no {named}"),
                Unrouted::LivemodeMismatch => format!(
                    "{named} is a {} connection; the event has livemode {}",
                    modes.join(" and "),
                    addressed.livemode.unwrap_or_default()
                ),
            },
        }),
    }
}

/// Applies the unmatched events of `policy`'s account waiting for the payment
/// `provider_payment_id` of `provider`,
/// oldest provider time first, inside the transaction that has just registered that payment
/// (`POST /invoices/{id}/payments`, which locked the payment's invoice before inserting it, as
/// every writer of an invoice does). Each goes through the worker's own path (`apply_prepared`), which
/// claims its inbox row: an event the worker applied meanwhile is a duplicate here, and one
/// applied here is a duplicate to any later delivery.
///
/// Each event runs in a savepoint: one that cannot be applied (a currency mismatch, say) is
/// rolled back alone, logged, and stays unmatched for an operator (`settle events replay` sends
/// it through the worker, which dead-letters it with its reason); the registration goes on. A
/// failure that may pass (the database) fails the whole registration, which the caller retries.
pub async fn apply_waiting(
    tx: &mut PgConnection,
    policy: &Policy,
    provider: Provider,
    provider_payment_id: &str,
) -> Result<(), ApplyError> {
    for waiting in inbox::waiting_for(tx, &policy.account_id, provider, provider_payment_id).await?
    {
        let event = QueuedEvent {
            provider,
            event_id: waiting.event_id,
            event_type: waiting.event_type,
            received_at: waiting.received_at,
            body: waiting.payload.into_bytes(),
            connection_id: None,
            source: None,
            // Applied within the registration's request: its trace.
            trace: crate::trace::traceparent_of(&tracing::Span::current()),
        };
        let mut savepoint = tx.begin().await?;
        // Already routed: it waits in the account whose registration applies it now.
        let applied = match Prepared::new(&event, Cow::Borrowed(policy)) {
            Ok(ready) => Box::pin(apply_prepared(&mut savepoint, &[(0, ready)]))
                .await
                .and_then(|results| only(results.into_iter().map(|(_, r)| r).collect())),
            Err(failure) => Err(failure),
        };
        match applied {
            Ok(outcome) => {
                savepoint.commit().await?;
                log_reconciled(&event, outcome, "waited");
            }
            Err(failure) if failure.retryable() => return Err(failure),
            Err(failure) => {
                savepoint.rollback().await?;
                tracing::warn!(
                    provider = %event.provider,
                    event_id = %event.event_id,
                    reason = failure.reason(),
                    error = %failure,
                    "an unmatched event could not be applied at its payment's registration; it stays unmatched"
                );
            }
        }
    }
    Ok(())
}

/// Links a provider's invoice to settle's, and applies the events that waited for the link.
async fn link_invoice(
    tx: &mut PgConnection,
    policy: &Policy,
    entry: &InboxEntry<'_>,
    link: &InvoiceLink,
) -> Result<Outcome, ApplyError> {
    use crate::repository::invoices::{self, Link};
    match invoices::link_provider_invoice(
        tx,
        &policy.account_id,
        link.provider,
        &link.provider_invoice_id,
        &link.invoice_ref,
        entry.event_id,
    )
    .await?
    {
        Link::Linked => {
            // Boxed: applying a waiting event runs this function's caller again.
            Box::pin(apply_waiting(
                tx,
                policy,
                link.provider,
                &link.provider_invoice_id,
            ))
            .await?;
            Ok(Outcome::Applied)
        }
        Link::AlreadyLinked => Ok(Outcome::Unchanged),
        Link::NoInvoice => Err(ApplyError::InvoiceNotFound(link.invoice_ref.clone())),
    }
}

/// Logs what happened to an event; `by` says who applied it (the worker, or the registration of
/// the payment it waited for).
pub(crate) fn log_reconciled(event: &QueuedEvent, outcome: Outcome, by: &'static str) {
    tracing::info!(
        provider = %event.provider,
        event_id = %event.event_id,
        event_type = %event.event_type,
        outcome = outcome.as_str(),
        reason = outcome.reason(),
        by,
        "event reconciled"
    );
}
