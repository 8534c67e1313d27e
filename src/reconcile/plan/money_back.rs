//! The planners of money going back: refunds and disputes, on the invoice's ledger.
//!
//! Both find their payment among the invoice's (the worker locked the invoice through it), move
//! the refund's or the dispute's own state machine (`reconcile::refund`, `reconcile::dispute`),
//! add to the ledger only what it does not hold yet for that refund or dispute, and re-derive the
//! invoice's figures (`conclude`). A refund or a dispute the ledger already counted changes
//! nothing, whichever event type reports it again (`charge.refunded` and `refund.updated`;
//! `charge.dispute.created` and `charge.dispute.funds_withdrawn`).

use chrono::{DateTime, Utc};

use super::figures::{FiguresChange, conclude, figures_data, invoice_events};
use super::state::{
    DisputeFacts, DisputeNotice, DisputeNoticeKind, Effects, InvoiceState, PlanError, RefundFacts,
};
use crate::provider::{PaymentProvider, Provider};
use crate::reconcile::dispute::{self, DisputeStatus};
use crate::reconcile::events::{DisputeEvent, DisputeFunds, RefundEvent, RefundObservation};
use crate::reconcile::ledger::{Movement, MovementKind};
use crate::reconcile::money::Currency;
use crate::reconcile::outcome::Outcome;
use crate::reconcile::reconciliation_events::{
    AmountSource, DisputeData, ReconciliationEvent, RefundData,
};
use crate::reconcile::refund;

/// Refuses an event in another currency than the invoice.
fn check_currency(
    state: &InvoiceState,
    provider: Provider,
    object_id: &str,
    currency: Option<Currency>,
) -> Result<(), PlanError> {
    match currency {
        Some(currency) if currency != state.invoice.currency => Err(PlanError::CurrencyMismatch {
            provider,
            provider_payment_id: object_id.to_owned(),
            payment: currency,
            invoice_id: state.invoice.id.clone(),
            invoice: state.invoice.currency,
        }),
        _ => Ok(()),
    }
}

fn later(last: Option<DateTime<Utc>>, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(last.map_or(at, |last| last.max(at)))
}

/// What one refund observation changed, for the events written once the figures are known.
struct RefundChange {
    refund: RefundFacts,
    refunded: bool,
    failed: bool,
}

/// Plans a refund event: each refund it reports, in order. `new_refund_id` names a refund settle
/// sees for the first time.
pub fn plan_refund(
    mut state: InvoiceState,
    event: &RefundEvent,
    mut new_refund_id: impl FnMut() -> String,
) -> Result<(InvoiceState, Effects), PlanError> {
    let first = event.refunds.first().map(|r| r.provider_refund_id.as_str());
    check_currency(
        &state,
        event.provider,
        first.unwrap_or_default(),
        event.currency,
    )?;
    let provider_mismatch =
        PaymentProvider::from(event.provider) != state.settings.payment_provider.value;
    let mut effects = Effects::nothing(Outcome::Unchanged, provider_mismatch);
    let mut changes = Vec::new();
    let mut payment_index = None;
    for observation in &event.refunds {
        let Some((index, change, movement)) =
            plan_one_refund(&state, event, observation, &mut new_refund_id)
        else {
            continue;
        };
        payment_index = Some(index);
        match state.refunds.iter_mut().find(|r| r.id == change.refund.id) {
            Some(known) => *known = change.refund.clone(),
            None => state.refunds.push(change.refund.clone()),
        }
        if let Some(movement) = movement {
            state.ledger.movements.push(movement.clone());
            effects.movements.push(movement);
        }
        effects.refunds.push(change.refund.clone());
        changes.push(change);
    }
    let Some(payment_index) = payment_index else {
        return Ok((state, effects));
    };
    let change = conclude(&mut state, payment_index);
    let payment_id = state.payments[payment_index].id.clone();
    for RefundChange {
        refund,
        refunded,
        failed,
    } in &changes
    {
        let data = || refund_data(&state, refund);
        if *refunded {
            effects
                .events
                .push(ReconciliationEvent::PaymentRefunded(data()));
        }
        if *failed {
            effects
                .events
                .push(ReconciliationEvent::PaymentRefundFailed(data()));
        }
    }
    effects
        .events
        .extend(invoice_events(&state, &change, &payment_id, event.provider));
    finish(&mut effects, &state, &change);
    Ok((state, effects))
}

/// One refund: its payment's index, what changed and the movement, or `None` when nothing does.
fn plan_one_refund(
    state: &InvoiceState,
    event: &RefundEvent,
    observation: &RefundObservation,
    new_refund_id: &mut impl FnMut() -> String,
) -> Option<(usize, RefundChange, Option<Movement>)> {
    let known = state.refunds.iter().find(|r| {
        r.provider == event.provider && r.provider_refund_id == observation.provider_refund_id
    });
    let payment_index = state.payments.iter().position(|p| match known {
        Some(refund) => p.id == refund.payment_id,
        None => {
            p.provider == event.provider
                && Some(&p.provider_payment_id) == event.provider_payment_id.as_ref()
        }
    })?;
    let payment = &state.payments[payment_index];
    let next = refund::transition(known.map(|r| r.status), observation.status)?;
    let ledger = &state.ledger;
    let refund_id = &observation.provider_refund_id;
    let refunded_movement = ledger.find(event.provider, refund_id, MovementKind::Refunded);
    // The amount: the event's (Stripe), else the registered refund's (GoCardless events carry
    // none), else (registered without one) what is left to refund of the payment.
    let (amount, source) = match (observation.amount, known.and_then(|r| r.amount)) {
        (Some(amount), _) => (amount.get(), AmountSource::Event),
        (None, Some(amount)) => (
            amount,
            known
                .and_then(|r| r.amount_source)
                .unwrap_or(AmountSource::RegisteredRefund),
        ),
        (None, None) => (
            ledger.sums(Some(&payment.id)).refundable(),
            AmountSource::PaymentRemainder,
        ),
    };
    let movement = if next.is_issued() && refunded_movement.is_none() {
        Some(ledger.next(
            &payment.id,
            event.provider,
            refund_id,
            MovementKind::Refunded,
            amount,
            source.as_str(),
        ))
    } else if next.is_reversed()
        && let Some(refunded) = refunded_movement
        && !ledger.has(event.provider, refund_id, MovementKind::RefundReversed)
    {
        Some(ledger.next(
            &payment.id,
            event.provider,
            refund_id,
            MovementKind::RefundReversed,
            refunded.amount,
            refunded.amount_source,
        ))
    } else {
        None
    };
    let refund = RefundFacts {
        id: known.map_or_else(&mut *new_refund_id, |r| r.id.clone()),
        payment_id: payment.id.clone(),
        provider: event.provider,
        provider_refund_id: refund_id.clone(),
        amount: Some(amount),
        amount_source: Some(source),
        status: next,
        failure_reason: observation
            .failure_reason
            .clone()
            .or_else(|| known.and_then(|r| r.failure_reason.clone())),
        last_event_at: later(known.and_then(|r| r.last_event_at), event.occurred_at),
    };
    let change = RefundChange {
        refund,
        refunded: movement
            .as_ref()
            .is_some_and(|m| m.kind == MovementKind::Refunded),
        failed: next.is_reversed(),
    };
    Some((payment_index, change, movement))
}

fn refund_data(state: &InvoiceState, refund: &RefundFacts) -> RefundData {
    let payment = state.payments.iter().find(|p| p.id == refund.payment_id);
    RefundData {
        refund_id: refund.id.clone(),
        provider_refund_id: refund.provider_refund_id.clone(),
        payment_id: refund.payment_id.clone(),
        provider_payment_id: payment.map(|p| p.provider_payment_id.clone()),
        invoice_id: state.invoice.id.clone(),
        provider: refund.provider,
        amount: refund.amount.unwrap_or_default(),
        currency: state.invoice.currency,
        amount_source: refund.amount_source.unwrap_or(AmountSource::Event),
        status: refund.status,
        failure_reason: refund.failure_reason.clone(),
        invoice: figures_data(&state.invoice),
    }
}

/// Marks effects applied and records the figures to write when they changed.
fn finish(effects: &mut Effects, state: &InvoiceState, change: &FiguresChange) {
    effects.outcome = Outcome::Applied;
    effects.overpaid = state.invoice.figures.overpaid;
    if change.changed() {
        effects.invoice_figures = Some(state.invoice.figures);
    }
}

/// Plans a dispute event. `new_dispute_id` names a dispute settle sees for the first time.
pub fn plan_dispute(
    mut state: InvoiceState,
    event: &DisputeEvent,
    new_dispute_id: impl FnOnce() -> String,
) -> Result<(InvoiceState, Effects), PlanError> {
    check_currency(
        &state,
        event.provider,
        &event.provider_dispute_id,
        event.currency,
    )?;
    let provider_mismatch =
        PaymentProvider::from(event.provider) != state.settings.payment_provider.value;
    let mut effects = Effects::nothing(Outcome::Unchanged, provider_mismatch);
    let Some(payment_index) = state.payments.iter().position(|p| {
        p.provider == event.provider && p.provider_payment_id == event.provider_payment_id
    }) else {
        return Ok((state, effects));
    };
    let payment_id = state.payments[payment_index].id.clone();
    let known_index = state.disputes.iter().position(|d| {
        d.provider == event.provider && d.provider_dispute_id == event.provider_dispute_id
    });
    let known = known_index.map(|i| &state.disputes[i]);
    let next = dispute::transition(known.map(|d| d.status), event.status);
    let status = next.or(known.map(|d| d.status)).unwrap_or(event.status);

    // The money: one withdrawal and one reinstatement per dispute at most.
    let object = &event.provider_dispute_id;
    let ledger = &state.ledger;
    let withdrawn = ledger
        .find(event.provider, object, MovementKind::DisputeWithdrawn)
        .map(|m| m.amount);
    let mut movements = Vec::new();
    let withdraw = withdrawn.is_none()
        && (status.withdraws_funds() || event.funds == Some(DisputeFunds::Withdrawn));
    if withdraw {
        movements.push(ledger.next(
            &payment_id,
            event.provider,
            object,
            MovementKind::DisputeWithdrawn,
            event.amount.get(),
            AmountSource::Event.as_str(),
        ));
    }
    let held = withdrawn.or(withdraw.then(|| event.amount.get()));
    if let Some(held) = held
        && (status == DisputeStatus::Won || event.funds == Some(DisputeFunds::Reinstated))
        && !ledger.has(event.provider, object, MovementKind::DisputeReinstated)
    {
        movements.push(ledger.next(
            &payment_id,
            event.provider,
            object,
            MovementKind::DisputeReinstated,
            held,
            AmountSource::Event.as_str(),
        ));
    }
    if next.is_none() && movements.is_empty() {
        return Ok((state, effects));
    }

    let dispute = DisputeFacts {
        id: known.map_or_else(new_dispute_id, |d| d.id.clone()),
        payment_id: payment_id.clone(),
        provider: event.provider,
        provider_dispute_id: object.clone(),
        amount: event.amount.get(),
        status,
        provider_status: match next {
            Some(_) => event.provider_status.clone(),
            None => known.map_or_else(
                || event.provider_status.clone(),
                |d| d.provider_status.clone(),
            ),
        },
        reason: event
            .reason
            .clone()
            .or_else(|| known.and_then(|d| d.reason.clone())),
        evidence_due_by: event
            .evidence_due_by
            .or_else(|| known.and_then(|d| d.evidence_due_by)),
        last_event_at: later(known.and_then(|d| d.last_event_at), event.occurred_at),
    };
    let is_new = known.is_none();
    match known_index {
        Some(i) => state.disputes[i] = dispute.clone(),
        None => state.disputes.push(dispute.clone()),
    }
    state.ledger.movements.extend(movements.iter().cloned());
    let change = conclude(&mut state, payment_index);

    let data = || dispute_data(&state, &dispute);
    match next {
        Some(DisputeStatus::Inquiry | DisputeStatus::Open) => effects
            .events
            .push(ReconciliationEvent::PaymentDisputed(data())),
        Some(DisputeStatus::Won) => effects.events.push(ReconciliationEvent::DisputeWon(data())),
        Some(DisputeStatus::Lost) => effects
            .events
            .push(ReconciliationEvent::DisputeLost(data())),
        Some(DisputeStatus::InquiryClosed) | None => {}
    }
    effects
        .events
        .extend(invoice_events(&state, &change, &payment_id, event.provider));
    let notice = |kind| DisputeNotice {
        kind,
        dispute: dispute.clone(),
        currency: state.invoice.currency,
        provider_payment_id: event.provider_payment_id.clone(),
    };
    if is_new && matches!(status, DisputeStatus::Inquiry | DisputeStatus::Open) {
        effects
            .dispute_notices
            .push(notice(DisputeNoticeKind::Opened));
    }
    if next == Some(DisputeStatus::Lost) {
        effects
            .dispute_notices
            .push(notice(DisputeNoticeKind::Lost));
    }
    effects.movements = movements;
    effects.dispute = Some(dispute.clone());
    finish(&mut effects, &state, &change);
    Ok((state, effects))
}

fn dispute_data(state: &InvoiceState, dispute: &DisputeFacts) -> DisputeData {
    let payment = state.payments.iter().find(|p| p.id == dispute.payment_id);
    DisputeData {
        dispute_id: dispute.id.clone(),
        provider_dispute_id: dispute.provider_dispute_id.clone(),
        payment_id: dispute.payment_id.clone(),
        provider_payment_id: payment.map(|p| p.provider_payment_id.clone()),
        invoice_id: state.invoice.id.clone(),
        provider: dispute.provider,
        amount: dispute.amount,
        currency: state.invoice.currency,
        status: dispute.status,
        provider_status: dispute.provider_status.clone(),
        reason: dispute.reason.clone(),
        evidence_due_by: dispute.evidence_due_by,
        invoice: figures_data(&state.invoice),
    }
}

#[cfg(test)]
mod tests {
    use super::super::PaymentFacts;
    use super::super::tests::{at, gbp, payment, state, types};
    use super::*;
    use crate::reconcile::invoice::{self, InvoiceStatus as I};
    use crate::reconcile::ledger::RefundState;
    use crate::reconcile::money::MinorUnits;
    use crate::reconcile::payment::PaymentStatus as P;
    use crate::reconcile::refund::RefundStatus as R;
    use DisputeStatus as D;

    /// A paid invoice of 10.00: one Stripe payment pi_1 collected.
    fn paid() -> InvoiceState {
        state(vec![payment("pay_1", "pi_1", 1000, P::Succeeded)])
    }

    fn refund_event(refund: &str, status: R, amount: Option<i64>, seconds: i64) -> RefundEvent {
        RefundEvent {
            provider: Provider::Stripe,
            provider_payment_id: Some("pi_1".into()),
            currency: Some(gbp()),
            occurred_at: at(seconds),
            refunds: vec![RefundObservation {
                provider_refund_id: refund.into(),
                status,
                amount: amount.map(|a| MinorUnits::new(a).unwrap()),
                failure_reason: status.is_reversed().then(|| "declined".into()),
            }],
        }
    }

    fn refund(state: InvoiceState, event: &RefundEvent) -> (InvoiceState, Effects) {
        plan_refund(state, event, || "ref_new".into()).unwrap()
    }

    fn kinds(effects: &Effects) -> Vec<MovementKind> {
        effects.movements.iter().map(|m| m.kind).collect()
    }

    #[test]
    fn every_refund_state_and_observation_moves_the_money_once() {
        use MovementKind as K;
        let observed = [R::Pending, R::Succeeded, R::Failed, R::Canceled];
        // (refund before, the movements it already made) → per observation: movements now.
        type Row<'a> = (Option<R>, &'a [K], [&'a [K]; 4]);
        let rows: &[Row<'_>] = &[
            (None, &[], [&[K::Refunded], &[K::Refunded], &[], &[]]),
            (
                Some(R::Pending),
                &[K::Refunded],
                [&[], &[], &[K::RefundReversed], &[K::RefundReversed]],
            ),
            (
                Some(R::Succeeded),
                &[K::Refunded],
                [&[], &[], &[K::RefundReversed], &[K::RefundReversed]],
            ),
            (
                Some(R::Failed),
                &[K::Refunded, K::RefundReversed],
                [&[], &[], &[], &[]],
            ),
            (Some(R::Canceled), &[], [&[], &[], &[], &[]]),
        ];
        for (before, made, row) in rows {
            for (observation, expected) in observed.iter().zip(row) {
                let mut initial = paid();
                if let Some(status) = before {
                    initial.refunds.push(RefundFacts {
                        id: "ref_1".into(),
                        payment_id: "pay_1".into(),
                        provider: Provider::Stripe,
                        provider_refund_id: "re_1".into(),
                        amount: Some(300),
                        amount_source: Some(AmountSource::Event),
                        status: *status,
                        failure_reason: None,
                        last_event_at: Some(at(0)),
                    });
                }
                for kind in *made {
                    let m =
                        initial
                            .ledger
                            .next("pay_1", Provider::Stripe, "re_1", *kind, 300, "event");
                    initial.ledger.movements.push(m);
                }
                let case = format!("{before:?} × {observation:?}");
                let (next, effects) = refund(
                    initial.clone(),
                    &refund_event("re_1", *observation, Some(300), 10),
                );
                assert_eq!(kinds(&effects), *expected, "{case}");
                let refunded = next.ledger.sums(None).refunded();
                let counted = next.ledger.has(Provider::Stripe, "re_1", K::Refunded)
                    && !next.ledger.has(Provider::Stripe, "re_1", K::RefundReversed);
                assert_eq!(refunded, if counted { 300 } else { 0 }, "{case}");
                assert_eq!(
                    next.invoice.figures.status,
                    I::Paid,
                    "{case}: a refund leaves it paid"
                );
                let moved = transition_moves(*before, *observation);
                assert_eq!(effects.outcome == Outcome::Applied, moved, "{case}");
                assert_eq!(effects.refunds.len(), usize::from(moved), "{case}");
            }
        }
    }

    fn transition_moves(before: Option<R>, observed: R) -> bool {
        refund::transition(before, observed).is_some()
    }

    #[test]
    fn a_partial_refund_then_the_rest_is_full_and_announced_each_time() {
        let (state, first) = refund(paid(), &refund_event("re_1", R::Succeeded, Some(300), 10));
        assert_eq!(types(&first), ["payment.refunded", "invoice.refunded"]);
        let figures = state.invoice.figures;
        assert_eq!(
            (
                figures.status,
                figures.amount_refunded,
                figures.amount_net(),
                figures.refund_state
            ),
            (I::Paid, 300, 700, RefundState::Partial)
        );
        let (state, second) = refund(state, &refund_event("re_2", R::Pending, Some(700), 20));
        assert_eq!(types(&second), ["payment.refunded", "invoice.refunded"]);
        assert_eq!(state.invoice.figures.refund_state, RefundState::Full);
        assert_eq!(state.invoice.figures.amount_net(), 0);
        // The second refund succeeding moves no money: it counted when issued.
        let (state, third) = refund(state, &refund_event("re_2", R::Succeeded, Some(700), 30));
        assert!(third.movements.is_empty() && third.events.is_empty());
        assert_eq!(third.outcome, Outcome::Applied, "its status moved");
        // Then it fails after it succeeded: the money comes back.
        let (state, fourth) = refund(state, &refund_event("re_2", R::Failed, Some(700), 40));
        assert_eq!(kinds(&fourth), [MovementKind::RefundReversed]);
        assert_eq!(types(&fourth), ["payment.refund_failed"]);
        assert_eq!(state.invoice.figures.amount_refunded, 300);
        assert_eq!(state.invoice.figures.refund_state, RefundState::Partial);
        // Reported again (refund.updated after refund.failed): nothing.
        let (_, fifth) = refund(state, &refund_event("re_2", R::Failed, Some(700), 50));
        assert_eq!(fifth.outcome, Outcome::Unchanged);
        assert!(fifth.movements.is_empty() && fifth.events.is_empty());
    }

    #[test]
    fn a_charge_listing_its_refunds_counts_only_the_new_one() {
        let (state, _) = refund(paid(), &refund_event("re_1", R::Succeeded, Some(300), 10));
        let mut listed = refund_event("re_1", R::Succeeded, Some(300), 20);
        listed
            .refunds
            .extend(refund_event("re_2", R::Succeeded, Some(200), 20).refunds);
        let (state, effects) = refund(state, &listed);
        assert_eq!(kinds(&effects), [MovementKind::Refunded]);
        assert_eq!(effects.movements[0].provider_object_id, "re_2");
        assert_eq!(state.invoice.figures.amount_refunded, 500);
    }

    #[test]
    fn a_gocardless_refund_takes_the_registered_amount_else_the_remainder() {
        let mut initial = state(vec![PaymentFacts {
            provider: Provider::GoCardless,
            ..payment("pay_1", "PM1", 1000, P::Succeeded)
        }]);
        initial.settings.payment_provider.value = PaymentProvider::GoCardless;
        let registered = |amount| RefundFacts {
            id: "ref_1".into(),
            payment_id: "pay_1".into(),
            provider: Provider::GoCardless,
            provider_refund_id: "RF1".into(),
            amount,
            amount_source: amount.map(|_| AmountSource::RegisteredRefund),
            status: R::Registered,
            failure_reason: None,
            last_event_at: None,
        };
        let created = RefundEvent {
            provider: Provider::GoCardless,
            provider_payment_id: None,
            currency: None,
            ..refund_event("RF1", R::Pending, None, 10)
        };
        for (amount, expected, source) in [
            (Some(400), 400, AmountSource::RegisteredRefund),
            (None, 1000, AmountSource::PaymentRemainder),
        ] {
            let mut known = initial.clone();
            known.refunds.push(registered(amount));
            let (next, effects) = refund(known, &created);
            assert_eq!(effects.movements[0].amount, expected);
            assert_eq!(effects.movements[0].amount_source, source.as_str());
            assert_eq!(effects.refunds[0].id, "ref_1", "the registered refund");
            assert_eq!(next.invoice.figures.amount_refunded, expected);
        }
        // Paid, then failed: reversed.
        let mut known = initial.clone();
        known.refunds.push(registered(Some(400)));
        let (state, _) = refund(known, &created);
        let paid_out = RefundEvent {
            refunds: refund_event("RF1", R::Succeeded, None, 20).refunds,
            ..created.clone()
        };
        let (state, effects) = refund(state, &paid_out);
        assert!(effects.movements.is_empty());
        let failed = RefundEvent {
            refunds: refund_event("RF1", R::Failed, None, 30).refunds,
            ..created
        };
        let (state, effects) = refund(state, &failed);
        assert_eq!(kinds(&effects), [MovementKind::RefundReversed]);
        assert_eq!(effects.movements[0].amount, 400);
        assert_eq!(state.invoice.figures.amount_refunded, 0);
    }

    fn dispute_event(status: D, funds: Option<DisputeFunds>, amount: i64) -> DisputeEvent {
        DisputeEvent {
            provider: Provider::Stripe,
            provider_payment_id: "pi_1".into(),
            provider_dispute_id: "dp_1".into(),
            status,
            provider_status: format!("{status:?}").to_lowercase(),
            amount: MinorUnits::new(amount).unwrap(),
            currency: Some(gbp()),
            reason: Some("fraudulent".into()),
            evidence_due_by: Some(at(86_400)),
            funds,
            occurred_at: at(10),
        }
    }

    fn dispute(state: InvoiceState, event: &DisputeEvent) -> (InvoiceState, Effects) {
        plan_dispute(state, event, || "dsp_new".into()).unwrap()
    }

    fn notices(effects: &Effects) -> Vec<DisputeNoticeKind> {
        effects.dispute_notices.iter().map(|n| n.kind).collect()
    }

    #[test]
    fn every_dispute_state_and_observation_moves_the_money_as_documented() {
        use MovementKind as K;
        let all = [D::Inquiry, D::InquiryClosed, D::Open, D::Won, D::Lost];
        for before in std::iter::once(None).chain(all.map(Some)) {
            for observed in all {
                for funds in [
                    None,
                    Some(DisputeFunds::Withdrawn),
                    Some(DisputeFunds::Reinstated),
                ] {
                    let mut initial = paid();
                    // The money the dispute already moved, as its status says.
                    let made: &[K] = match before {
                        Some(D::Open | D::Lost) => &[K::DisputeWithdrawn],
                        _ => &[],
                    };
                    for kind in made {
                        let m = initial.ledger.next(
                            "pay_1",
                            Provider::Stripe,
                            "dp_1",
                            *kind,
                            1000,
                            "event",
                        );
                        initial.ledger.movements.push(m);
                    }
                    if let Some(status) = before {
                        initial.disputes.push(DisputeFacts {
                            id: "dsp_1".into(),
                            payment_id: "pay_1".into(),
                            provider: Provider::Stripe,
                            provider_dispute_id: "dp_1".into(),
                            amount: 1000,
                            status,
                            provider_status: String::new(),
                            reason: None,
                            evidence_due_by: None,
                            last_event_at: Some(at(0)),
                        });
                        initial.invoice.figures = invoice::figures(
                            1000,
                            initial.ledger.sums(None),
                            if status.is_pending() { 1000 } else { 0 },
                            false,
                        );
                    }
                    let case = format!("{before:?} × {observed:?} × {funds:?}");
                    let (next, effects) =
                        dispute(initial.clone(), &dispute_event(observed, funds, 1000));
                    let status = dispute::transition(before, observed)
                        .or(before)
                        .unwrap_or(observed);
                    let withdrawn = !made.contains(&K::DisputeWithdrawn)
                        && (status.withdraws_funds() || funds == Some(DisputeFunds::Withdrawn));
                    let held = made.contains(&K::DisputeWithdrawn) || withdrawn;
                    let reinstated =
                        held && (status == D::Won || funds == Some(DisputeFunds::Reinstated));
                    let mut expected = Vec::new();
                    if withdrawn {
                        expected.push(K::DisputeWithdrawn);
                    }
                    if reinstated {
                        expected.push(K::DisputeReinstated);
                    }
                    assert_eq!(kinds(&effects), expected, "{case}");
                    let figures = next.invoice.figures;
                    let expected_status = if status.is_pending() {
                        I::Disputed
                    } else if held && !reinstated {
                        I::Open
                    } else {
                        I::Paid
                    };
                    assert_eq!(figures.status, expected_status, "{case}");
                    assert_eq!(
                        figures.amount_in_dispute,
                        if status.is_pending() { 1000 } else { 0 },
                        "{case}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_dispute_opened_then_won_holds_the_funds_then_pays_again() {
        let (state, opened) = dispute(paid(), &dispute_event(D::Open, None, 1000));
        assert_eq!(types(&opened), ["payment.disputed", "invoice.disputed"]);
        assert_eq!(notices(&opened), [DisputeNoticeKind::Opened]);
        let figures = state.invoice.figures;
        assert_eq!(
            (
                figures.status,
                figures.amount_paid,
                figures.amount_in_dispute
            ),
            (I::Disputed, 0, 1000)
        );
        // Stripe's funds_withdrawn for the same dispute: already counted.
        let (state, withdrawn) = dispute(
            state,
            &dispute_event(D::Open, Some(DisputeFunds::Withdrawn), 1000),
        );
        assert_eq!(withdrawn.outcome, Outcome::Unchanged);
        assert!(withdrawn.events.is_empty() && withdrawn.dispute_notices.is_empty());
        let (state, won) = dispute(state, &dispute_event(D::Won, None, 1000));
        assert_eq!(kinds(&won), [MovementKind::DisputeReinstated]);
        assert_eq!(types(&won), ["dispute.won", "invoice.paid"]);
        assert!(won.dispute_notices.is_empty());
        assert_eq!(state.invoice.figures.status, I::Paid);
        assert_eq!(state.invoice.figures.amount_paid, 1000);
        // funds_reinstated after closed: already counted.
        let (_, reinstated) = dispute(
            state,
            &dispute_event(D::Won, Some(DisputeFunds::Reinstated), 1000),
        );
        assert!(reinstated.movements.is_empty());
    }

    #[test]
    fn a_dispute_lost_reopens_the_invoice_and_tells_the_business() {
        let (state, _) = dispute(paid(), &dispute_event(D::Open, None, 1000));
        let (state, lost) = dispute(state, &dispute_event(D::Lost, None, 1000));
        assert!(
            lost.movements.is_empty(),
            "the funds were withdrawn when it opened"
        );
        assert_eq!(types(&lost), ["dispute.lost", "invoice.reopened"]);
        assert_eq!(notices(&lost), [DisputeNoticeKind::Lost]);
        assert_eq!(state.invoice.figures.status, I::Open);
    }

    #[test]
    fn a_dispute_for_part_of_the_payment_holds_only_its_amount() {
        let (state, _) = dispute(paid(), &dispute_event(D::Open, None, 400));
        let figures = state.invoice.figures;
        assert_eq!(
            (
                figures.status,
                figures.amount_paid,
                figures.amount_in_dispute
            ),
            (I::Disputed, 600, 400)
        );
        let (state, _) = dispute(state, &dispute_event(D::Lost, None, 400));
        assert_eq!(state.invoice.figures.status, I::PartiallyPaid);
        assert_eq!(state.invoice.figures.amount_paid, 600);
    }

    #[test]
    fn an_inquiry_moves_no_money_but_the_business_is_told() {
        let (state, inquiry) = dispute(paid(), &dispute_event(D::Inquiry, None, 1000));
        assert!(inquiry.movements.is_empty());
        assert_eq!(types(&inquiry), ["payment.disputed"]);
        assert_eq!(notices(&inquiry), [DisputeNoticeKind::Opened]);
        assert_eq!(state.invoice.figures.status, I::Paid);
        // Closed without escalating: still nothing.
        let (state, closed) = dispute(state, &dispute_event(D::InquiryClosed, None, 1000));
        assert!(closed.movements.is_empty() && closed.events.is_empty());
        assert_eq!(state.invoice.figures.status, I::Paid);
    }

    #[test]
    fn a_refund_or_dispute_in_another_currency_is_refused() {
        let mut usd = dispute_event(D::Open, None, 1000);
        usd.currency = Some(Currency::parse("USD").unwrap());
        assert!(plan_dispute(paid(), &usd, || "dsp".into()).is_err());
        let mut usd = refund_event("re_1", R::Succeeded, Some(100), 10);
        usd.currency = Some(Currency::parse("USD").unwrap());
        assert!(plan_refund(paid(), &usd, || "ref".into()).is_err());
    }
}
