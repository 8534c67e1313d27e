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
