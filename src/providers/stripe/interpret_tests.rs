//! The Stripe interpreter's tests: each event type's rows of the table, read from Stripe's
//! example objects.

use super::*;
use crate::reconcile::money::MinorUnits;

use crate::reconcile::events::fixtures::StripeEvent;

/// `interpret` over raw bytes, as they come off the queue.
fn interpret(body: &[u8]) -> Result<DomainEvent, EventError> {
    super::interpret(&serde_json::from_slice(body).unwrap())
}

#[test]
fn a_listed_payout_reads_as_the_event_its_state_stands_for() {
    let objects: Value =
        serde_json::from_str(include_str!("../../../tests/fixtures/stripe-objects.json")).unwrap();
    let listed = |status: &str, reconciliation: &str, automatic: bool| {
        let mut payout = objects["payout"].clone();
        payout["status"] = status.into();
        payout["reconciliation_status"] = reconciliation.into();
        payout["automatic"] = automatic.into();
        listed_payout(&payout).unwrap().map(|event| event.stage)
    };
    assert_eq!(
        listed("paid", "completed", true),
        Some(PayoutStage::Listable)
    );
    assert_eq!(
        listed("paid", "in_progress", true),
        Some(PayoutStage::Expected)
    );
    assert!(matches!(
        listed("paid", "not_applicable", false),
        Some(PayoutStage::Unlistable(_))
    ));
    assert!(matches!(
        listed("failed", "completed", true),
        Some(PayoutStage::Failed(_))
    ));
    assert!(matches!(
        listed("canceled", "not_applicable", true),
        Some(PayoutStage::Failed(_))
    ));
    assert_eq!(listed("in_transit", "in_progress", true), None);
    assert_eq!(listed("pending", "in_progress", true), None);
}

/// An event of `event_type` around Stripe's example object of its kind, edited by `edit`.
fn stripe_event(event_type: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    StripeEvent::new(event_type, "evt_1")
        .created(1_800_000_000)
        .object(edit)
        .to_bytes()
}

fn payment(event: DomainEvent) -> PaymentEvent {
    match event {
        DomainEvent::Payment(payment) => payment,
        other => panic!("not a payment event: {other:?}"),
    }
}

#[test]
fn stripe_payment_rows_of_the_table() {
    use PaymentSignal as S;
    let rows: &[(&str, &str, &str, S)] = &[
        (
            "payment_intent.succeeded",
            "payment_intent",
            "",
            S::Succeeded,
        ),
        (
            "payment_intent.processing",
            "payment_intent",
            "",
            S::Pending,
        ),
        (
            "payment_intent.payment_failed",
            "payment_intent",
            "",
            S::AttemptFailed,
        ),
        ("payment_intent.canceled", "payment_intent", "", S::Canceled),
        (
            "checkout.session.completed",
            "checkout.session",
            "paid",
            S::Succeeded,
        ),
        (
            "checkout.session.completed",
            "checkout.session",
            "unpaid",
            S::Pending,
        ),
        (
            "checkout.session.async_payment_succeeded",
            "checkout.session",
            "",
            S::Succeeded,
        ),
        (
            "checkout.session.async_payment_failed",
            "checkout.session",
            "",
            S::AttemptFailed,
        ),
        ("invoice.paid", "invoice", "", S::Succeeded),
        ("invoice.payment_failed", "invoice", "", S::AttemptFailed),
        // Stripe's example charge is uncaptured: an authorisation, collecting nothing.
        ("charge.succeeded", "charge", "", S::Authorised),
        ("charge.succeeded", "charge", "captured", S::Succeeded),
        ("charge.captured", "charge", "captured", S::Succeeded),
        ("charge.expired", "charge", "", S::Canceled),
        ("charge.failed", "charge", "", S::AttemptFailed),
        (
            "payment_intent.amount_capturable_updated",
            "payment_intent",
            "",
            S::Authorised,
        ),
    ];
    for (event_type, kind, payment_status, signal) in rows {
        let body = stripe_event(event_type, |object| {
            object["metadata"] = serde_json::json!({"invoice_id": "inv_1"});
            if *kind != "payment_intent" {
                object["payment_intent"] = "pi_shared".into();
            } else {
                object["id"] = "pi_shared".into();
            }
            match *payment_status {
                "" => {}
                "captured" => object["captured"] = true.into(),
                status => object["payment_status"] = status.into(),
            }
        });
        let event = payment(interpret(&body).unwrap());
        assert_eq!(event.signal, *signal, "{event_type} {payment_status}");
        assert_eq!(
            event.provider_payment_id, "pi_shared",
            "{event_type} keys on the PaymentIntent"
        );
        assert_eq!(event.invoice_ref.as_deref(), Some("inv_1"));
        assert_eq!(event.occurred_at.timestamp(), 1_800_000_000);
    }
}

#[test]
fn an_invoice_or_session_without_a_payment_intent_never_counts_money_itself() {
    // The current API's invoice names no PaymentIntent (the fixture is that shape): with
    // settle's invoice in its metadata, it links its Stripe invoice; it counts nothing.
    for event_type in ["invoice.paid", "invoice.payment_failed"] {
        let body = stripe_event(event_type, |object| {
            object["id"] = "in_1".into();
            object["payment_intent"] = Value::Null;
            object["metadata"] = serde_json::json!({"invoice_id": "inv_1"});
        });
        match interpret(&body).unwrap() {
            DomainEvent::Link(link) => {
                assert_eq!(
                    (link.provider_invoice_id.as_str(), link.invoice_ref.as_str()),
                    ("in_1", "inv_1")
                );
            }
            other => panic!("{event_type}: {other:?}"),
        }
        let unnamed = stripe_event(event_type, |object| {
            object["metadata"] = serde_json::json!({})
        });
        assert!(matches!(
            interpret(&unnamed).unwrap(),
            DomainEvent::Ignored(_)
        ));
    }
    // Checkout in subscription mode names the invoice it created; in payment mode, none.
    let subscription = stripe_event("checkout.session.completed", |object| {
        object["payment_intent"] = Value::Null;
        object["invoice"] = "in_2".into();
        object["metadata"] = serde_json::json!({"invoice_id": "inv_2"});
    });
    assert!(matches!(
        interpret(&subscription).unwrap(),
        DomainEvent::Link(InvoiceLink { ref provider_invoice_id, .. }) if provider_invoice_id == "in_2"
    ));
    let payment_mode = stripe_event("checkout.session.completed", |object| {
        object["payment_intent"] = Value::Null;
        object["invoice"] = Value::Null;
        object["metadata"] = serde_json::json!({"invoice_id": "inv_2"});
    });
    assert!(matches!(
        interpret(&payment_mode).unwrap(),
        DomainEvent::Ignored(_)
    ));
    // A legacy charge without one is its own payment.
    let body = stripe_event("charge.succeeded", |object| {
        object["payment_intent"] = Value::Null;
        object["id"] = "ch_legacy".into();
    });
    assert_eq!(
        payment(interpret(&body).unwrap()).provider_payment_id,
        "ch_legacy"
    );
}

#[test]
fn a_failure_names_its_attempt_the_failing_charge_in_every_shape() {
    // Each object as it names its PaymentIntent (the 2024-06-20 invoice shape does).
    let attempt = |event_type: &str, edit: &dyn Fn(&mut Value)| {
        let body = stripe_event(event_type, |o| {
            if !event_type.starts_with("payment_intent") {
                o["payment_intent"] = "pi_1".into();
            }
            edit(o)
        });
        payment(interpret(&body).unwrap()).attempt_id
    };
    // The PaymentIntent names the charge in its error, or as its latest charge.
    let in_error = attempt("payment_intent.payment_failed", &|o| {
        o["last_payment_error"] = serde_json::json!({"type": "card_error", "charge": "ch_1"});
    });
    assert_eq!(in_error.as_deref(), Some("ch_1"));
    let latest = attempt("payment_intent.payment_failed", &|o| {
        o["latest_charge"] = "ch_1".into();
    });
    assert_eq!(latest.as_deref(), Some("ch_1"));
    // A charge is the attempt; an old-shape invoice names its charge, expanded or not.
    let charge = attempt("charge.failed", &|o| o["id"] = "ch_1".into());
    assert_eq!(charge.as_deref(), Some("ch_1"));
    let invoice = attempt("invoice.payment_failed", &|o| {
        o["charge"] = serde_json::json!({"id": "ch_1", "object": "charge"});
    });
    assert_eq!(invoice.as_deref(), Some("ch_1"));
    // Checkout names none, and a success has no attempt.
    assert_eq!(
        attempt("checkout.session.async_payment_failed", &|_| {}),
        None
    );
    assert_eq!(
        attempt("payment_intent.succeeded", &|o| o["latest_charge"] =
            "ch_1".into()),
        None
    );
}

#[test]
fn stripe_failures_carry_the_decline_code_and_message() {
    let body = stripe_event("payment_intent.payment_failed", |object| {
        object["last_payment_error"] = serde_json::json!({
            "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds."
        });
    });
    let event = payment(interpret(&body).unwrap());
    let failure = event.failure.unwrap();
    assert_eq!(failure.code.as_deref(), Some("insufficient_funds"));
    assert_eq!(
        failure.message.as_deref(),
        Some("Your card has insufficient funds.")
    );
    // The fixture's odd `last_payment_error` with only a `type` parses to no reason at all.
    let body = stripe_event("payment_intent.payment_failed", |_| {});
    let event = payment(interpret(&body).unwrap());
    assert_eq!(
        event.failure,
        Some(Failure {
            code: None,
            message: None
        })
    );
}

#[test]
fn stripe_amounts_come_from_the_field_that_means_money_moved() {
    let body = stripe_event("payment_intent.succeeded", |object| {
        object["amount"] = 5000.into();
        object["amount_received"] = 4000.into();
    });
    let event = payment(interpret(&body).unwrap());
    assert_eq!(event.amount.map(MinorUnits::get), Some(4000));
    assert_eq!(
        event.currency.map(|c| c.to_string()).as_deref(),
        Some("USD")
    );
}

#[test]
fn stripe_method_events() {
    let body = stripe_event("payment_method.attached", |object| {
        object["customer"] = "cus_1".into();
    });
    match interpret(&body).unwrap() {
        DomainEvent::Method(MethodEvent::StripeMethod {
            customer,
            on_file,
            exp_month,
            exp_year,
            ..
        }) => {
            assert_eq!(customer.as_deref(), Some("cus_1"));
            assert!(on_file);
            assert_eq!((exp_month, exp_year), (Some(8), Some(2030)));
        }
        other => panic!("{other:?}"),
    }
    let body = stripe_event("payment_method.detached", |_| {});
    assert!(matches!(
        interpret(&body).unwrap(),
        DomainEvent::Method(MethodEvent::StripeDetached { .. })
    ));
    let body = stripe_event("setup_intent.succeeded", |object| {
        object["customer"] = "cus_1".into();
        object["payment_method"] = "pm_1".into();
    });
    assert!(matches!(
        interpret(&body).unwrap(),
        DomainEvent::Method(MethodEvent::StripeMethod { on_file: true, .. })
    ));
}

#[test]
fn an_invoice_payment_names_the_payment_intent_and_the_stripe_invoice_it_paid() {
    let body = stripe_event("invoice_payment.paid", |object| {
        object["invoice"] = "in_1".into();
        object["payment"] = serde_json::json!({"type": "payment_intent", "payment_intent": "pi_1"});
        object["amount_paid"] = 1000.into();
        object["currency"] = "gbp".into();
        object["status"] = "paid".into();
    });
    let event = payment(interpret(&body).unwrap());
    assert_eq!(event.signal, PaymentSignal::Succeeded);
    assert_eq!(event.provider_payment_id, "pi_1");
    assert_eq!(event.provider_invoice_id.as_deref(), Some("in_1"));
    assert_eq!(event.invoice_ref, None);
    assert_eq!(event.amount.map(MinorUnits::get), Some(1000));
    // The fixture's own, paid by nothing it names: ignored.
    let body = stripe_event("invoice_payment.paid", |_| {});
    assert!(matches!(interpret(&body).unwrap(), DomainEvent::Ignored(_)));
}

#[test]
fn refund_events_name_their_refund_and_payment() {
    use crate::reconcile::refund::RefundStatus as R;
    let refund_of = |event_type: &str, status: &str| {
        let body = StripeEvent::new(event_type, "evt_1")
            .created(1_800_000_000)
            .refund("re_1", "pi_1", 300, "gbp", status)
            .to_bytes();
        match interpret(&body).unwrap() {
            DomainEvent::Refund(refund) => refund,
            other => panic!("{event_type}: {other:?}"),
        }
    };
    for (event_type, status, expected) in [
        ("refund.created", "pending", R::Pending),
        ("refund.updated", "succeeded", R::Succeeded),
        ("refund.failed", "failed", R::Failed),
        ("charge.refund.updated", "canceled", R::Canceled),
        ("refund.updated", "requires_action", R::Pending),
        ("charge.refunded", "succeeded", R::Succeeded),
    ] {
        let event = refund_of(event_type, status);
        assert_eq!(event.provider_payment_id.as_deref(), Some("pi_1"));
        assert_eq!(event.refunds.len(), 1, "{event_type}");
        let refund = &event.refunds[0];
        assert_eq!(refund.provider_refund_id, "re_1");
        assert_eq!(refund.status, expected, "{event_type} {status}");
        assert_eq!(refund.amount.map(MinorUnits::get), Some(300));
        assert_eq!(refund.failure_reason.is_some(), status == "failed");
    }
    // The current API versions' charge.refunded lists no refunds: it only confirms.
    let body = stripe_event("charge.refunded", |o| o["payment_intent"] = "pi_1".into());
    assert!(matches!(interpret(&body).unwrap(), DomainEvent::Ignored(_)));
    // A refund of a legacy charge keys on the charge.
    let body = StripeEvent::new("refund.created", "evt_1")
        .refund("re_1", "pi_1", 300, "gbp", "succeeded")
        .object(|o| o["payment_intent"] = Value::Null)
        .to_bytes();
    match interpret(&body).unwrap() {
        DomainEvent::Refund(refund) => assert_eq!(
            refund.provider_payment_id.as_deref(),
            Some("ch_1PgafuB7WZ01zgkWXYmPNZs8")
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dispute_events_carry_their_status_amount_and_funds() {
    use crate::reconcile::dispute::DisputeStatus as D;
    let dispute_of = |event_type: &str, status: &str| {
        let body = StripeEvent::new(event_type, "evt_1")
            .created(1_800_000_000)
            .dispute("dp_1", "pi_1", 400, "gbp", status)
            .to_bytes();
        match interpret(&body).unwrap() {
            DomainEvent::Dispute(dispute) => dispute,
            other => panic!("{event_type}: {other:?}"),
        }
    };
    for (event_type, status, expected, funds) in [
        (
            "charge.dispute.created",
            "warning_needs_response",
            D::Inquiry,
            None,
        ),
        (
            "charge.dispute.updated",
            "warning_under_review",
            D::Inquiry,
            None,
        ),
        (
            "charge.dispute.closed",
            "warning_closed",
            D::InquiryClosed,
            None,
        ),
        ("charge.dispute.created", "needs_response", D::Open, None),
        (
            "charge.dispute.funds_withdrawn",
            "needs_response",
            D::Open,
            Some(DisputeFunds::Withdrawn),
        ),
        ("charge.dispute.updated", "under_review", D::Open, None),
        ("charge.dispute.closed", "won", D::Won, None),
        (
            "charge.dispute.funds_reinstated",
            "won",
            D::Won,
            Some(DisputeFunds::Reinstated),
        ),
        ("charge.dispute.closed", "lost", D::Lost, None),
    ] {
        let event = dispute_of(event_type, status);
        assert_eq!(event.status, expected, "{event_type} {status}");
        assert_eq!(event.funds, funds, "{event_type}");
        assert_eq!(event.provider_payment_id, "pi_1");
        assert_eq!(event.provider_dispute_id, "dp_1");
        assert_eq!(event.amount.get(), 400);
        assert_eq!(event.provider_status, status);
        assert_eq!(event.reason.as_deref(), Some("general"));
        assert_eq!(
            event.evidence_due_by,
            DateTime::from_timestamp(1_723_679_999, 0)
        );
    }
    let body = StripeEvent::new("charge.dispute.updated", "evt_1")
        .dispute("dp_1", "pi_1", 400, "gbp", "a_status_from_the_future")
        .to_bytes();
    assert!(matches!(interpret(&body).unwrap(), DomainEvent::Ignored(_)));
}

#[test]
fn unknown_stripe_types_are_ignored_not_errors() {
    let body = stripe_event("plan.created", |_| {});
    assert!(matches!(interpret(&body).unwrap(), DomainEvent::Ignored(_)));
}

#[test]
fn every_text_an_event_becomes_is_storable() {
    let event = StripeEvent::new("payment_method.attached", "evt_1")
        .created(1_800_000_000)
        .object(|method| {
            method["id"] = "pm_\u{0}1".into();
            method["billing_details"]["name"] = "Ada\u{0} Lovelace".into();
        })
        .into_json();
    let DomainEvent::Method(MethodEvent::StripeMethod {
        method_id,
        billing_details,
        ..
    }) = super::interpret(&event).unwrap()
    else {
        panic!("a payment method event")
    };
    assert_eq!(method_id, "pm_\u{FFFD}1");
    assert_eq!(billing_details.unwrap()["name"], "Ada\u{FFFD} Lovelace");
}
