//! What a tenant can sign for its own connection: ids of any length, text with any characters.
//! None of it stops work for anyone: reconciliation events keep flowing, a NUL is data, and a
//! dead letter can always be recorded.

use serde_json::Value;

use crate::helpers::*;

const T0: i64 = 1_790_000_000;

/// A Stripe event id of the most bytes intake accepts: `stripe:<id>` is 255 bytes, AMQP's limit.
fn longest_event_id(tag: &str) -> String {
    let id = format!("evt_{tag}_");
    format!("{id}{}", "x".repeat(255 - "stripe:".len() - id.len()))
}

/// A provider object id longer than any AMQP name: nothing bounds those at intake.
fn long_object_id(prefix: &str) -> String {
    format!("{prefix}_{}", "y".repeat(300))
}

#[tokio::test]
async fn the_longest_ids_in_every_kind_of_event_still_flow_as_reconciliation_events() {
    let app = spawn_worker(Retries::PATIENT).await;
    let subscriber = app.subscribe().await;
    app.create_customer("cust").await;
    app.create_invoice("inv_long", "cust", None, "GBP", 1000)
        .await;
    app.create_invoice("inv_after", "cust", None, "GBP", 500)
        .await;

    let (paid, refunded, disputed, payout_failed) = (
        longest_event_id("paid"),
        longest_event_id("refund"),
        longest_event_id("dispute"),
        longest_event_id("payout"),
    );
    let events = [
        StripeEvent::new("payment_intent.succeeded", &paid)
            .created(T0)
            .payment("pi_long", 1000, "gbp")
            .invoice_id("inv_long"),
        StripeEvent::new("refund.created", &refunded)
            .created(T0 + 10)
            .refund(&long_object_id("re"), "pi_long", 300, "gbp", "succeeded"),
        StripeEvent::new("charge.dispute.created", &disputed)
            .created(T0 + 20)
            .dispute(
                &long_object_id("dp"),
                "pi_long",
                700,
                "gbp",
                "needs_response",
            ),
        StripeEvent::new("payout.failed", &payout_failed)
            .created(T0 + 30)
            .object(|payout| {
                payout["id"] = long_object_id("po").into();
                payout["currency"] = "gbp".into();
                payout["status"] = "failed".into();
                payout["failure_code"] = "account_closed".into();
                payout["failure_message"] = "The bank account has been closed".into();
            }),
        // A well-behaved event behind them.
        StripeEvent::new("payment_intent.succeeded", "evt_after")
            .created(T0 + 40)
            .payment("pi_after", 500, "gbp")
            .invoice_id("inv_after"),
    ];
    for event in &events {
        app.deliver_stripe(&event.to_bytes()).await;
        let id = event.json()["id"].as_str().unwrap();
        assert_eq!(app.wait_processed("STRIPE", id).await, "applied");
    }

    let messages = app.take_messages(&subscriber, 9).await;
    let mut keys: Vec<&str> = messages.iter().map(|m| m.routing_key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "invoice.disputed",
            "invoice.paid",
            "invoice.paid",
            "invoice.refunded",
            "payment.disputed",
            "payment.refunded",
            "payment.succeeded",
            "payment.succeeded",
            "payout.failed",
        ]
    );
    for message in &messages {
        let body: Value = serde_json::from_slice(&message.body).unwrap();
        let id = message.message_id.as_deref().unwrap();
        assert!(id.len() <= 255, "{id}");
        // The id subscribers dedupe on is the message's own, in the body as on the envelope.
        assert_eq!(body["id"], id);
    }
    // A long id keeps a readable prefix, then a digest of the whole that keeps it unique.
    let readable = format!("stripe:{paid}");
    let succeeded = messages
        .iter()
        .filter(|m| m.routing_key == "payment.succeeded")
        .filter_map(|m| m.message_id.as_deref())
        .find(|id| id.starts_with(&readable[..100]))
        .expect("the long event's payment.succeeded");
    assert!(succeeded.contains('~'), "{succeeded}");
    assert_eq!(app.invoice("inv_after").await["status"], "PAID");
    app.stop().await;
}

#[tokio::test]
async fn a_late_failure_whose_description_holds_a_nul_reopens_the_invoice() {
    let app = spawn_worker(Retries::PATIENT).await;
    app.create_customer("cust").await;
    app.create_invoice("inv_nul", "cust", None, "GBP", 3000)
        .await;
    app.register_payment("inv_nul", "GOCARDLESS", "PM_NUL", 3000)
        .await;
    app.gocardless_payment(
        "EV_NUL_C",
        "confirmed",
        "PM_NUL",
        "2026-11-02T12:00:00.000Z",
    )
    .await;
    app.wait_invoice_status("inv_nul", "PAID").await;
    app.deliver_gocardless([late_failure_with_a_nul("EV_NUL_F", "PM_NUL")])
        .await;
    assert_eq!(
        app.wait_processed("GOCARDLESS", "EV_NUL_F").await,
        "applied"
    );
    let invoice = app.wait_invoice_status("inv_nul", "PAYMENT_FAILED").await;
    assert_eq!(
        payment(&invoice, "PM_NUL")["failureMessage"],
        "The bank refused\u{FFFD} the collection",
        "{invoice}"
    );
    // The inbox keeps the body as the provider sent it.
    let db = app.db();
    let stored: String =
        sqlx::query_scalar("SELECT payload::text FROM webhook_events WHERE event_id = 'EV_NUL_F'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(stored.contains(r"refused\u0000 the"), "{stored}");
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(dead, 0);
    app.stop().await;
}

/// GoCardless's `payments.failed` for `payment_id` on 5 November, after its confirmation: a
/// late failure whose description holds a NUL.
fn late_failure_with_a_nul(id: &str, payment_id: &str) -> GoCardlessEvent {
    GoCardlessEvent::payment(id, "failed", payment_id)
        .created_at("2026-11-05T12:00:00.000Z")
        .edit(|event| {
            event["details"]["description"] = "The bank refused\u{0} the collection".into();
        })
}
