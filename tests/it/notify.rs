//! Failure notifications: written by the worker's transaction, mailed by the sender through a real
//! SMTP server on loopback.

use std::time::Duration;

use settle::role::Role;

use crate::helpers::*;

/// A card payment of GBP 125.00 on `invoice` that failed for insufficient funds.
fn failed_stripe_payment(
    event_id: &str,
    payment_intent: &str,
    invoice: &str,
    created: i64,
) -> Vec<u8> {
    StripeEvent::new("payment_intent.payment_failed", event_id)
        .created(created)
        .payment(payment_intent, 12_500, "gbp")
        .invoice_id(invoice)
        .object(declined_for_insufficient_funds)
        .to_bytes()
}

async fn notification_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&app.db())
        .await
        .unwrap()
}

const T0: i64 = 1_790_000_000;

#[tokio::test]
async fn a_failure_delivered_three_times_mails_the_customer_and_the_business_once() {
    let sink = SmtpSink::start().await;
    let mut app = spawn_app_with_mail(&sink).await;
    app.create_customer("acme").await; // billing email billing+acme@example.com
    app.create_invoice("inv_1", "acme", None, "GBP", 12_500)
        .await;
    let body = failed_stripe_payment("evt_fail", "pi_fail", "inv_1", T0);
    for _ in 0..3 {
        app.deliver_stripe(&body).await;
    }
    app.wait_invoice_status("inv_1", "PAYMENT_FAILED").await;
    let mails = sink.wait_for(2).await;
    // Stop gracefully: every delivery finished, so a duplicate would have been written by now.
    app.shutdown_only().await;
    assert_eq!(notification_count(&app).await, 2);
    let mails_after = sink.mails();
    assert_eq!(mails_after.len(), 2, "{mails_after:?}");

    let customer = mails
        .iter()
        .find(|m| m.to == ["billing+acme@example.com"])
        .expect("the customer's mail");
    assert_eq!(customer.subject, "Payment failed for invoice INV-inv_1");
    let text = customer.text.as_deref().unwrap();
    assert!(text.contains("GBP 125.00"), "{text}");
    assert!(
        text.contains("there were not enough funds in the account"),
        "{text}"
    );
    assert!(text.contains("Automatic collection is off"), "{text}");
    assert!(
        text.contains("will be in touch"),
        "no payment link registered: {text}"
    );
    assert!(
        customer
            .html
            .as_deref()
            .unwrap()
            .contains("<strong>GBP 125.00</strong>")
    );

    let business = mails
        .iter()
        .find(|m| m.to == ["billing-team@business.example"])
        .expect("the business's mail");
    assert!(
        business.subject.contains("INV-inv_1"),
        "{}",
        business.subject
    );
    let text = business.text.as_deref().unwrap();
    for expected in [
        "insufficient_funds",
        "Your card has insufficient funds",
        "inv_1",
        "pi_fail",
        "evt_fail",
        "acme",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    app.delete_topology().await;
}

#[tokio::test]
async fn mail_waits_out_an_smtp_outage_and_arrives_once() {
    let mut sink = SmtpSink::start().await;
    sink.pause().await;
    let app = spawn_app_with_mail(&sink).await;
    app.create_customer("acme").await;
    app.create_invoice("inv_1", "acme", None, "GBP", 12_500)
        .await;
    app.deliver_stripe(&failed_stripe_payment("evt_out", "pi_out", "inv_1", T0))
        .await;
    // Reconciliation does not wait for mail.
    app.wait_invoice_status("inv_1", "PAYMENT_FAILED").await;
    let db = app.db();
    poll_until("a failed send attempt", Duration::from_secs(20), || async {
        let failed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notifications WHERE status = 'PENDING' AND attempts >= 2 AND last_error IS NOT NULL",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        (failed == 2).then_some(())
    })
    .await;
    sink.resume().await;
    let mails = sink.wait_for(2).await;
    poll_until("both rows sent", Duration::from_secs(20), || async {
        let sent: i64 =
            sqlx::query_scalar("SELECT count(*) FROM notifications WHERE status = 'SENT'")
                .fetch_one(&db)
                .await
                .unwrap();
        (sent == 2).then_some(())
    })
    .await;
    assert_eq!(sink.mails().len(), 2, "nothing doubled: {mails:?}");
    app.stop().await;
}

#[tokio::test]
async fn one_declined_attempt_reported_in_every_shape_mails_once_and_fails_once() {
    let sink = SmtpSink::start().await;
    let mut app = spawn_app_with_mail(&sink).await;
    app.create_customer("acme").await;
    app.create_invoice("inv_1", "acme", None, "GBP", 12_500)
        .await;
    let subscriber = app.subscribe().await;
    // Stripe sends both for one decline: the PaymentIntent names its failing charge.
    let intent = StripeEvent::new("payment_intent.payment_failed", "evt_pi_failed")
        .created(T0)
        .payment("pi_1", 12_500, "gbp")
        .invoice_id("inv_1")
        .object(|o| {
            declined_for_insufficient_funds(o);
            o["latest_charge"] = "ch_declined".into();
        })
        .to_bytes();
    let charge = StripeEvent::new("charge.failed", "evt_ch_failed")
        .created(T0)
        .payment("pi_1", 12_500, "gbp")
        .invoice_id("inv_1")
        .object(|o| {
            o["id"] = "ch_declined".into();
            o["status"] = "failed".into();
            o["failure_code"] = "card_declined".into();
            o["failure_message"] = "Your card was declined.".into();
        })
        .to_bytes();
    // An invoice in the 2024-06-20 shape names the PaymentIntent and the failing charge.
    let old_invoice = StripeEvent::new("invoice.payment_failed", "evt_in_failed")
        .created(T0)
        .payment("pi_1", 12_500, "gbp")
        .invoice_id("inv_1")
        .object(|o| o["charge"] = "ch_declined".into())
        .to_bytes();
    // Checkout's report names no charge: the same decline, stamped the same second.
    let checkout = StripeEvent::new("checkout.session.async_payment_failed", "evt_cs_failed")
        .created(T0)
        .payment("pi_1", 12_500, "gbp")
        .invoice_id("inv_1")
        .to_bytes();
    let all = [
        "evt_pi_failed",
        "evt_ch_failed",
        "evt_in_failed",
        "evt_cs_failed",
    ];
    for body in [&intent, &charge, &old_invoice, &checkout] {
        app.deliver_stripe(body).await;
    }
    // The worker may take them in any order: whichever comes first records the decline.
    let mut outcomes = Vec::new();
    for id in all {
        outcomes.push(app.wait_processed("STRIPE", id).await);
    }
    outcomes.sort();
    assert_eq!(outcomes, ["applied", "unchanged", "unchanged", "unchanged"]);
    sink.wait_for(2).await;
    app.shutdown_only().await;
    assert_eq!(notification_count(&app).await, 2, "one pair of mails");
    assert_eq!(sink.mails().len(), 2);
    let messages = app.take_messages(&subscriber, 2).await;
    let failed = messages
        .iter()
        .filter(|m| m.routing_key == "payment.failed")
        .count();
    assert_eq!(failed, 1, "one payment.failed");
    app.delete_topology().await;
}

#[tokio::test]
async fn no_mail_for_a_paid_invoice_or_a_stale_failure() {
    let sink = SmtpSink::start().await;
    let app = spawn_app_with_mail(&sink).await;
    app.create_customer("acme").await;
    app.create_invoice("inv_paid", "acme", None, "GBP", 12_500)
        .await;
    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", "evt_ok")
            .created(T0 + 100)
            .payment("pi_ok", 12_500, "gbp")
            .invoice_id("inv_paid")
            .to_bytes(),
    )
    .await;
    app.wait_invoice_status("inv_paid", "PAID").await;
    // A stale failure of the same payment, and a failure of another attempt on the paid invoice.
    app.deliver_stripe(&failed_stripe_payment(
        "evt_stale",
        "pi_ok",
        "inv_paid",
        T0 + 50,
    ))
    .await;
    app.deliver_stripe(&failed_stripe_payment(
        "evt_other",
        "pi_other",
        "inv_paid",
        T0 + 200,
    ))
    .await;
    assert_eq!(app.wait_processed("STRIPE", "evt_stale").await, "stale");
    assert_eq!(app.wait_processed("STRIPE", "evt_other").await, "applied");
    assert_eq!(notification_count(&app).await, 0);
    assert!(sink.mails().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_gocardless_late_failure_mails_and_says_whether_gocardless_retries() {
    let sink = SmtpSink::start().await;
    let app = spawn_app_with_mail(&sink).await;
    app.create_customer("acme").await;
    app.create_invoice("inv_dd", "acme", None, "GBP", 3000)
        .await;
    app.register_payment("inv_dd", "GOCARDLESS", "PM_DD", 3000)
        .await;
    // The fixture's `failed` event says will_attempt_retry: true.
    app.gocardless_confirmed_then_failed("inv_dd", "PM_DD")
        .await;
    let mails = sink.wait_for(2).await;
    let customer = mails
        .iter()
        .find(|m| m.to == ["billing+acme@example.com"])
        .unwrap();
    let text = customer.text.as_deref().unwrap();
    assert!(text.contains("GBP 30.00"), "{text}");
    assert!(text.contains("GoCardless will retry"), "{text}");
    assert!(text.contains("there were not enough funds"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn a_mail_is_marked_sent_as_soon_as_it_is_sent_not_when_its_batch_ends() {
    // The server takes the first mail, then hangs on the second: the first must already be
    // committed as SENT, so a crash now would not send it again.
    let sink = SmtpSink::stalling_after(1).await;
    let mut app = spawn_app_with(AppOptions {
        role: Role::Run,
        smtp_url: Some(sink.url()),
        tweak: Box::new(|settings| {
            settings.notifications.poll_ms = 100;
            settings.smtp.timeout_secs = 5;
        }),
        ..AppOptions::default()
    })
    .await;
    app.create_customer("acme").await;
    app.create_invoice("inv_1", "acme", None, "GBP", 12_500)
        .await;
    app.deliver_stripe(&failed_stripe_payment("evt_fail", "pi_fail", "inv_1", T0))
        .await;
    sink.wait_for(1).await;
    let db = app.db();
    poll_until("the first mail to be committed as sent", WAIT, || async {
        let sent: i64 =
            sqlx::query_scalar("SELECT count(*) FROM notifications WHERE status = 'SENT'")
                .fetch_one(&db)
                .await
                .unwrap();
        (sent == 1).then_some(())
    })
    .await;
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notifications WHERE status = 'PENDING'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(pending, 1, "the second mail is still to be sent");
    app.shutdown_only().await;
}
