//! The planner's tests: each rule of the module doc, and folding.
use chrono::{DateTime, Utc};

use super::*;
use crate::provider::{PaymentProvider, Provider};
use crate::reconcile::events::{Failure, PaymentEvent};
use crate::reconcile::invoice::InvoiceStatus;
use crate::reconcile::ledger::{Ledger, MovementKind};
use crate::reconcile::money::{Currency, MinorUnits};
use crate::reconcile::outcome::Outcome;
use crate::reconcile::payment::{PaymentSignal, PaymentStatus};
use crate::reconcile::reconciliation_events::{AmountSource, PaymentData, ReconciliationEvent};
use crate::reconcile::settings::EffectiveSettings;
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

pub(super) fn payment(id: &str, provider_payment_id: &str, amount: i64, status: P) -> PaymentFacts {
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
        charge_key: None,
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
            ReconciliationEvent::PaymentSucceeded(d) | ReconciliationEvent::PaymentFailed(d) => {
                Some(d)
            }
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
