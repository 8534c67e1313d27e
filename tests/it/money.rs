//! Money that moves back, end to end: refunds and disputes through the real receiver, counted on
//! the ledger once whatever events report them, the invoice's figures after each step, the
//! reconciliation events on a bound queue and the business's mails.

use serde_json::Value;

use crate::helpers::*;

const T0: i64 = 1_790_000_000;

/// An invoice of GBP 10.00 paid by the Stripe PaymentIntent `pi_1`.
async fn paid_by_stripe(app: &TestApp, invoice_id: &str) {
    app.create_customer("cust").await;
    app.create_invoice(invoice_id, "cust", None, "GBP", 1000)
        .await;
    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", "evt_paid")
            .created(T0)
            .payment("pi_1", 1000, "gbp")
            .invoice_id(invoice_id)
            .to_bytes(),
    )
    .await;
    app.wait_invoice_status(invoice_id, "PAID").await;
}

fn refund_event(
    event_type: &str,
    id: &str,
    refund: &str,
    amount: i64,
    status: &str,
    at: i64,
) -> Vec<u8> {
    StripeEvent::new(event_type, id)
        .created(T0 + at)
        .refund(refund, "pi_1", amount, "gbp", status)
        .to_bytes()
}

fn dispute_event(event_type: &str, id: &str, amount: i64, status: &str, at: i64) -> Vec<u8> {
    StripeEvent::new(event_type, id)
        .created(T0 + at)
        .dispute("dp_1", "pi_1", amount, "gbp", status)
        .to_bytes()
}

/// Delivers `body` and waits for the worker to record event `id`; returns its outcome.
async fn deliver(app: &TestApp, body: &[u8], id: &str) -> String {
    app.deliver_stripe(body).await;
    app.wait_processed("STRIPE", id).await
}

/// (status, amountPaid, amountRefunded, amountInDispute, amountNet, refundState) as the API shows.
async fn figures(app: &TestApp, invoice_id: &str) -> (String, i64, i64, i64, i64, String) {
    let invoice = app.invoice(invoice_id).await;
    let number = |field: &str| invoice[field].as_i64().unwrap();
    (
        invoice["status"].as_str().unwrap().to_owned(),
        number("amountPaid"),
        number("amountRefunded"),
        number("amountInDispute"),
        number("amountNet"),
        invoice["refundState"].as_str().unwrap().to_owned(),
    )
}

fn owned(
    status: &str,
    paid: i64,
    refunded: i64,
    in_dispute: i64,
    net: i64,
    state: &str,
) -> (String, i64, i64, i64, i64, String) {
    (status.into(), paid, refunded, in_dispute, net, state.into())
}

/// The routing keys on the subscriber's queue, and the bodies.
async fn published(app: &TestApp, subscriber: &str, at_least: usize) -> Vec<(String, Value)> {
    app.take_messages(subscriber, at_least)
        .await
        .into_iter()
        .map(|m| (m.routing_key, serde_json::from_slice(&m.body).unwrap()))
        .collect()
}

fn keys(messages: &[(String, Value)]) -> Vec<&str> {
    messages.iter().map(|(key, _)| key.as_str()).collect()
}

#[tokio::test]
async fn partial_refund_then_the_rest_then_a_refund_failing_after_it_succeeded() {
    let app = spawn_worker(Retries::PATIENT).await;
    paid_by_stripe(&app, "inv_r").await;
    let subscriber = app.subscribe().await;

    // 3.00 refunded: pending, then succeeded. Counted once, when issued.
    let created = refund_event("refund.created", "evt_r1", "re_1", 300, "pending", 10);
    assert_eq!(deliver(&app, &created, "evt_r1").await, "applied");
    assert_eq!(
        figures(&app, "inv_r").await,
        owned("PAID", 1000, 300, 0, 700, "PARTIAL")
    );
    let succeeded = refund_event("refund.updated", "evt_r2", "re_1", 300, "succeeded", 20);
    assert_eq!(deliver(&app, &succeeded, "evt_r2").await, "applied");
    // charge.refunded listing it (an API version that includes the list): nothing new.
    let listed = refund_event("charge.refunded", "evt_r3", "re_1", 300, "succeeded", 21);
    assert_eq!(deliver(&app, &listed, "evt_r3").await, "unchanged");
    assert_eq!(
        figures(&app, "inv_r").await,
        owned("PAID", 1000, 300, 0, 700, "PARTIAL")
    );

    // The other 7.00: a full refund.
    let rest = refund_event("refund.created", "evt_r4", "re_2", 700, "succeeded", 30);
    deliver(&app, &rest, "evt_r4").await;
    assert_eq!(
        figures(&app, "inv_r").await,
        owned("PAID", 1000, 1000, 0, 0, "FULL")
    );

    // The second one fails after it succeeded: its money is back.
    let failed = refund_event("refund.failed", "evt_r5", "re_2", 700, "failed", 40);
    deliver(&app, &failed, "evt_r5").await;
    assert_eq!(
        figures(&app, "inv_r").await,
        owned("PAID", 1000, 300, 0, 700, "PARTIAL")
    );
    // Reported again by the older event type: nothing.
    let again = refund_event("charge.refund.updated", "evt_r6", "re_2", 700, "failed", 41);
    assert_eq!(deliver(&app, &again, "evt_r6").await, "unchanged");

    let invoice = app.invoice("inv_r").await;
    let movements: Vec<_> = invoice["movements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap(),
                m["providerObjectId"].as_str().unwrap(),
                m["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        movements,
        [
            ("COLLECTED", "pi_1", 1000),
            ("REFUNDED", "re_1", 300),
            ("REFUNDED", "re_2", 700),
            ("REFUND_REVERSED", "re_2", 700)
        ]
    );
    let refunds: Vec<_> = invoice["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(refunds, ["SUCCEEDED", "FAILED"]);
    assert_eq!(
        invoice["refunds"][1]["failureReason"],
        "expired_or_canceled_card"
    );

    let messages = published(&app, &subscriber, 5).await;
    assert_eq!(
        keys(&messages),
        [
            "payment.refunded",
            "invoice.refunded",
            "payment.refunded",
            "invoice.refunded",
            "payment.refund_failed"
        ]
    );
    let (_, first) = &messages[0];
    assert_eq!(first["id"], "stripe:evt_r1:payment.refunded:re_1");
    assert_eq!(first["data"]["amount"], 300);
    assert_eq!(first["data"]["status"], "PENDING");
    assert_eq!(first["data"]["invoice"]["refundState"], "PARTIAL");
    let (_, last) = &messages[4];
    assert_eq!(last["data"]["invoice"]["amountRefunded"], 300);
    // The payment shows its own figures and movements.
    let payment_id = invoice["payments"][0]["id"].as_str().unwrap();
    let (status, payment) = app.api_get(&format!("/payments/{payment_id}")).await;
    assert_eq!(status, 200, "{payment}");
    assert_eq!(
        (
            payment["amountPaid"].as_i64(),
            payment["amountRefunded"].as_i64()
        ),
        (Some(1000), Some(300))
    );
    assert_eq!(payment["movements"].as_array().unwrap().len(), 4);
    app.stop().await;
}

#[tokio::test]
async fn ten_concurrent_deliveries_of_a_refund_make_one_movement() {
    let app = spawn_worker(Retries::PATIENT).await;
    paid_by_stripe(&app, "inv_c").await;
    // Ten events reporting the one refund, in every type that carries it, all at once.
    let types = [
        "refund.created",
        "refund.updated",
        "charge.refund.updated",
        "charge.refunded",
    ];
    let bodies: Vec<_> = (0..10)
        .map(|i| {
            refund_event(
                types[i % types.len()],
                &format!("evt_c{i}"),
                "re_1",
                400,
                "succeeded",
                10,
            )
        })
        .collect();
    app.deliver_stripe_concurrently(&bodies).await;
    let mut outcomes = Vec::new();
    for i in 0..10 {
        outcomes.push(app.wait_processed("STRIPE", &format!("evt_c{i}")).await);
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "applied").count(),
        1,
        "{outcomes:?}"
    );
    let movements: i64 =
        sqlx::query_scalar("SELECT count(*) FROM money_movements WHERE kind = 'REFUNDED'")
            .fetch_one(&app.db())
            .await
            .unwrap();
    assert_eq!(movements, 1);
    assert_eq!(
        figures(&app, "inv_c").await,
        owned("PAID", 1000, 400, 0, 600, "PARTIAL")
    );
    app.stop().await;
}

/// The business's mails so far (subjects), once `count` have arrived.
async fn business_mails(sink: &SmtpSink, count: usize) -> Vec<String> {
    sink.wait_for(count)
        .await
        .into_iter()
        .filter(|m| m.to == ["billing-team@business.example"])
        .map(|m| m.subject)
        .collect()
}

#[tokio::test]
async fn a_dispute_opened_then_won_holds_the_funds_then_pays_the_invoice_again() {
    let sink = SmtpSink::start().await;
    let app = spawn_app_with_mail(&sink).await;
    paid_by_stripe(&app, "inv_d").await;
    let subscriber = app.subscribe().await;

    let opened = dispute_event(
        "charge.dispute.created",
        "evt_d1",
        1000,
        "needs_response",
        10,
    );
    assert_eq!(deliver(&app, &opened, "evt_d1").await, "applied");
    assert_eq!(
        figures(&app, "inv_d").await,
        owned("DISPUTED", 0, 0, 1000, 0, "NONE")
    );
    // Stripe's funds_withdrawn for it, and a redelivery of the opening: nothing more.
    let withdrawn = dispute_event(
        "charge.dispute.funds_withdrawn",
        "evt_d2",
        1000,
        "needs_response",
        11,
    );
    assert_eq!(deliver(&app, &withdrawn, "evt_d2").await, "unchanged");
    app.deliver_stripe(&opened).await;
    let won = dispute_event("charge.dispute.closed", "evt_d3", 1000, "won", 20);
    assert_eq!(deliver(&app, &won, "evt_d3").await, "applied");
    let reinstated = dispute_event("charge.dispute.funds_reinstated", "evt_d4", 1000, "won", 21);
    assert_eq!(deliver(&app, &reinstated, "evt_d4").await, "unchanged");
    assert_eq!(
        figures(&app, "inv_d").await,
        owned("PAID", 1000, 0, 0, 1000, "NONE")
    );

    let messages = published(&app, &subscriber, 4).await;
    assert_eq!(
        keys(&messages),
        [
            "payment.disputed",
            "invoice.disputed",
            "dispute.won",
            "invoice.paid"
        ]
    );
    let (_, disputed) = &messages[0];
    assert_eq!(disputed["id"], "stripe:evt_d1:payment.disputed:dp_1");
    assert_eq!(disputed["data"]["status"], "OPEN");
    assert_eq!(disputed["data"]["reason"], "general");
    assert_eq!(disputed["data"]["evidenceDueBy"], "2024-08-14T23:59:59Z");
    assert_eq!(messages[1].1["data"]["amountInDispute"], 1000);

    // One mail to the business, when it opened, with the evidence due date; none when won.
    let subjects = business_mails(&sink, 1).await;
    assert_eq!(
        subjects,
        [
            "Dispute opened: cust Ltd, invoice INV-inv_d, GBP 10.00, evidence due 2024-08-14 23:59 UTC"
        ]
    );
    app.stop().await;
    assert_eq!(sink.mails().len(), 1, "exactly once");
}

#[tokio::test]
async fn a_dispute_lost_reopens_the_invoice_and_tells_the_business_once() {
    let sink = SmtpSink::start().await;
    let app = spawn_app_with_mail(&sink).await;
    paid_by_stripe(&app, "inv_l").await;
    let subscriber = app.subscribe().await;
    // A dispute for part of the payment.
    deliver(
        &app,
        &dispute_event(
            "charge.dispute.created",
            "evt_l1",
            400,
            "needs_response",
            10,
        ),
        "evt_l1",
    )
    .await;
    assert_eq!(
        figures(&app, "inv_l").await,
        owned("DISPUTED", 600, 0, 400, 600, "NONE")
    );
    deliver(
        &app,
        &dispute_event("charge.dispute.updated", "evt_l2", 400, "under_review", 15),
        "evt_l2",
    )
    .await;
    let lost = dispute_event("charge.dispute.closed", "evt_l3", 400, "lost", 20);
    assert_eq!(deliver(&app, &lost, "evt_l3").await, "applied");
    app.deliver_stripe(&lost).await;
    assert_eq!(
        figures(&app, "inv_l").await,
        owned("PARTIALLY_PAID", 600, 0, 0, 600, "NONE")
    );
    let messages = published(&app, &subscriber, 5).await;
    assert_eq!(
        keys(&messages),
        [
            "payment.disputed",
            "invoice.disputed",
            "dispute.lost",
            "invoice.reopened",
            "invoice.partially_paid"
        ]
    );
    let subjects = business_mails(&sink, 2).await;
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(subjects[0].starts_with("Dispute opened"));
    assert_eq!(
        subjects[1],
        "Dispute lost: cust Ltd, invoice INV-inv_l, GBP 4.00"
    );
    app.stop().await;
    assert_eq!(sink.mails().len(), 2, "exactly once each");
}

#[tokio::test]
async fn an_inquiry_moves_no_money_and_the_business_is_told() {
    let sink = SmtpSink::start().await;
    let app = spawn_app_with_mail(&sink).await;
    paid_by_stripe(&app, "inv_w").await;
    let inquiry = dispute_event(
        "charge.dispute.created",
        "evt_w1",
        1000,
        "warning_needs_response",
        10,
    );
    assert_eq!(deliver(&app, &inquiry, "evt_w1").await, "applied");
    assert_eq!(
        figures(&app, "inv_w").await,
        owned("PAID", 1000, 0, 0, 1000, "NONE")
    );
    let closed = dispute_event(
        "charge.dispute.closed",
        "evt_w2",
        1000,
        "warning_closed",
        20,
    );
    deliver(&app, &closed, "evt_w2").await;
    let invoice = app.invoice("inv_w").await;
    assert_eq!(invoice["status"], "PAID");
    assert_eq!(
        invoice["movements"].as_array().unwrap().len(),
        1,
        "only the collection"
    );
    assert_eq!(invoice["disputes"][0]["status"], "INQUIRY_CLOSED");
    let subjects = business_mails(&sink, 1).await;
    assert!(subjects[0].starts_with("Inquiry opened"), "{subjects:?}");
    app.stop().await;
}

/// An invoice of GBP 10.00 paid by the GoCardless payment `PM1`, registered as `pay_gc`.
async fn paid_by_gocardless(app: &TestApp, invoice_id: &str) {
    app.create_customer("cust").await;
    app.create_invoice(invoice_id, "cust", None, "GBP", 1000)
        .await;
    let (status, body) = app
        .api_post(
            &format!("/invoices/{invoice_id}/payments"),
            serde_json::json!({"id": "pay_gc", "provider": "GOCARDLESS", "providerPaymentId": "PM1", "amount": 1000, "currency": "GBP"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    app.gocardless_payment("EV_PAID", "confirmed", "PM1", "2026-11-02T12:00:00.000Z")
        .await;
    app.wait_invoice_status(invoice_id, "PAID").await;
}

/// A GoCardless refund event of the fixture's shape: only `links.refund`, no amount.
fn gocardless_refund(id: &str, action: &str, refund: &str, at: &str) -> GoCardlessEvent {
    GoCardlessEvent::new(id, "refunds", action)
        .links(serde_json::json!({"refund": refund, "organisation": "OR00001JZWPCMA"}))
        .created_at(at)
}

#[tokio::test]
async fn a_gocardless_refund_registered_then_paid_then_failed() {
    let app = spawn_worker(Retries::PATIENT).await;
    paid_by_gocardless(&app, "inv_g").await;
    let subscriber = app.subscribe().await;
    // Refused: more than was paid, an unknown payment.
    let (status, body) = app
        .api_post(
            "/payments/pay_gc/refunds",
            serde_json::json!({"providerRefundId": "RF1", "amount": 1001}),
        )
        .await;
    assert_validation_error(status, &body, "amount");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1001 is more than the 1000 left to refund"),
        "{body}"
    );
    let (status, body) = app
        .api_post(
            "/payments/pay_nope/refunds",
            serde_json::json!({"providerRefundId": "RF1"}),
        )
        .await;
    assert_api_error(status, &body, 404, "not_found");

    let (status, refund) = app
        .api_post(
            "/payments/pay_gc/refunds",
            serde_json::json!({"providerRefundId": "RF1", "amount": 400}),
        )
        .await;
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["status"], "REGISTERED");
    let (status, body) = app
        .api_post(
            "/payments/pay_gc/refunds",
            serde_json::json!({"providerRefundId": "RF1"}),
        )
        .await;
    assert_api_error(status, &body, 409, "conflict");

    app.deliver_gocardless([gocardless_refund(
        "EV_R1",
        "created",
        "RF1",
        "2026-11-10T09:00:00.000Z",
    )])
    .await;
    app.wait_processed("GOCARDLESS", "EV_R1").await;
    assert_eq!(
        figures(&app, "inv_g").await,
        owned("PAID", 1000, 400, 0, 600, "PARTIAL")
    );
    app.deliver_gocardless([gocardless_refund(
        "EV_R2",
        "paid",
        "RF1",
        "2026-11-11T09:00:00.000Z",
    )])
    .await;
    app.wait_processed("GOCARDLESS", "EV_R2").await;
    app.deliver_gocardless([gocardless_refund(
        "EV_R3",
        "failed",
        "RF1",
        "2026-11-12T09:00:00.000Z",
    )])
    .await;
    app.wait_processed("GOCARDLESS", "EV_R3").await;
    assert_eq!(
        figures(&app, "inv_g").await,
        owned("PAID", 1000, 0, 0, 1000, "NONE")
    );
    let invoice = app.invoice("inv_g").await;
    assert_eq!(invoice["refunds"][0]["status"], "FAILED");
    assert_eq!(
        invoice["refunds"][0]["failureReason"], "insufficient_funds",
        "the fixture's details.cause"
    );

    let messages = published(&app, &subscriber, 3).await;
    assert_eq!(
        keys(&messages),
        [
            "payment.refunded",
            "invoice.refunded",
            "payment.refund_failed"
        ]
    );
    assert_eq!(messages[0].1["data"]["amountSource"], "registered_refund");
    assert_eq!(messages[0].1["data"]["amount"], 400);
    app.stop().await;
}

#[tokio::test]
async fn a_gocardless_refund_before_its_registration_waits_and_takes_the_remainder() {
    let app = spawn_worker(Retries::PATIENT).await;
    paid_by_gocardless(&app, "inv_gw").await;
    let subscriber = app.subscribe().await;
    app.deliver_gocardless([gocardless_refund(
        "EV_W1",
        "created",
        "RF2",
        "2026-11-10T09:00:00.000Z",
    )])
    .await;
    assert_eq!(app.wait_processed("GOCARDLESS", "EV_W1").await, "unmatched");
    // Registered without an amount: the payment's refundable remainder, applied at registration.
    let (status, refund) = app
        .api_post(
            "/payments/pay_gc/refunds",
            serde_json::json!({"providerRefundId": "RF2"}),
        )
        .await;
    assert_eq!(status, 201, "{refund}");
    assert_eq!(
        refund["status"], "PENDING",
        "the waiting event applied: {refund}"
    );
    assert_eq!(refund["amount"], 1000);
    assert_eq!(refund["amountSource"], "payment_remainder");
    assert_eq!(app.wait_processed("GOCARDLESS", "EV_W1").await, "applied");
    assert_eq!(
        figures(&app, "inv_gw").await,
        owned("PAID", 1000, 1000, 0, 0, "FULL")
    );
    let messages = published(&app, &subscriber, 2).await;
    assert_eq!(keys(&messages), ["payment.refunded", "invoice.refunded"]);
    assert_eq!(messages[0].1["data"]["amountSource"], "payment_remainder");
    app.stop().await;
}

#[tokio::test]
async fn payments_recorded_before_the_ledger_are_migrated_into_it_and_keep_their_figures() {
    // The schema as it was before the ledger, with the payments of three invoices.
    let (url, db, all) = database_before(20261201000003).await;
    sqlx::raw_sql(
        "INSERT INTO accounts (id) VALUES ('acc_default');
         INSERT INTO customers (id, account_id, legal_name) VALUES ('cust', 'acc_default', 'Cust Ltd');
         INSERT INTO invoices (id, account_id, customer_id, number, currency, amount_due, amount_paid, status) VALUES
             ('inv_paid', 'acc_default', 'cust', 'N-1', 'GBP', 1000, 1000, 'PAID'),
             ('inv_back', 'acc_default', 'cust', 'N-2', 'GBP', 1000, 0, 'OPEN'),
             ('inv_fail', 'acc_default', 'cust', 'N-3', 'GBP', 1000, 0, 'PAYMENT_FAILED');
         INSERT INTO payments (id, account_id, invoice_id, provider, provider_payment_id, amount, currency, status, collected, last_event_at) VALUES
             ('pay_paid', 'acc_default', 'inv_paid', 'STRIPE', 'pi_paid', 1000, 'GBP', 'SUCCEEDED', true, '2026-11-01T10:00:00Z'),
             ('pay_back', 'acc_default', 'inv_back', 'GOCARDLESS', 'PM_BACK', 1000, 'GBP', 'REVERSED', false, '2026-11-02T10:00:00Z'),
             ('pay_fail', 'acc_default', 'inv_fail', 'STRIPE', 'pi_fail', 1000, 'GBP', 'FAILED', false, '2026-11-03T10:00:00Z');",
    )
    .execute(&db)
    .await
    .unwrap();
    all.run(&db).await.unwrap();
    let movements: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT payment_id, kind, amount FROM money_movements ORDER BY payment_id, id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        movements,
        [
            ("pay_back".into(), "COLLECTED".into(), 1000),
            ("pay_back".into(), "DISPUTE_WITHDRAWN".into(), 1000),
            ("pay_paid".into(), "COLLECTED".into(), 1000),
        ]
    );
    db.close().await;

    // The migrated invoices keep their figures, and the next events build on the ledger.
    let app = spawn_app_with(AppOptions {
        role: settle::role::Role::Run,
        database_url: Some(url),
        ..AppOptions::default()
    })
    .await;
    assert_eq!(
        figures(&app, "inv_paid").await,
        owned("PAID", 1000, 0, 0, 1000, "NONE")
    );
    assert_eq!(figures(&app, "inv_fail").await.0, "PAYMENT_FAILED");
    app.gocardless_payment(
        "EV_CC",
        "chargeback_cancelled",
        "PM_BACK",
        "2026-11-20T10:00:00.000Z",
    )
    .await;
    app.wait_invoice_status("inv_back", "PAID").await;
    assert_eq!(
        figures(&app, "inv_back").await,
        owned("PAID", 1000, 0, 0, 1000, "NONE")
    );
    app.deliver_stripe(
        &StripeEvent::new("refund.created", "evt_mr")
            .created(T0)
            .refund("re_m", "pi_paid", 250, "gbp", "succeeded")
            .to_bytes(),
    )
    .await;
    app.wait_processed("STRIPE", "evt_mr").await;
    assert_eq!(
        figures(&app, "inv_paid").await,
        owned("PAID", 1000, 250, 0, 750, "PARTIAL")
    );
    app.stop().await;
}
