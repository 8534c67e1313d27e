//! Unmatched events (issue 11, §4): a payment event that names no invoice and arrives before its
//! payment is registered waits as `unmatched`, and `POST /invoices/{id}/payments` applies it,
//! exactly once, in the registering transaction.

use serde_json::{Value, json};

use crate::helpers::*;

const T0: i64 = 1_790_000_000;

/// The body of a registration of `provider_payment_id` for `amount` GBP.
fn registration(provider: &str, provider_payment_id: &str, amount: i64) -> Value {
    json!({"provider": provider, "providerPaymentId": provider_payment_id, "amount": amount, "currency": "GBP"})
}

/// The unmatched events as `GET /payments/unmatched` lists them (`query` after the path).
async fn unmatched(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, body) = app.api_get(&format!("/payments/unmatched{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().expect("a list").clone()
}

/// The routing keys of the outbox rows, in the order they were written.
async fn outbox_routing_keys(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT routing_key FROM outbox ORDER BY id")
        .fetch_all(&app.db())
        .await
        .unwrap()
}

async fn processed_at(app: &TestApp, event_id: &str) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("SELECT processed_at FROM webhook_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&app.db())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_stripe_payment_before_its_registration_waits_unmatched_and_the_registration_applies_it_once()
 {
    let mut app = spawn_worker(Retries::PATIENT).await;
    app.create_customer("cust").await;
    app.create_invoice("inv_u", "cust", None, "GBP", 2500).await;
    let subscriber = app.subscribe().await;
    // Stripe's example PaymentIntent, whose `metadata` is `{}`: it names no invoice.
    let event = StripeEvent::new("payment_intent.succeeded", "evt_early")
        .created(T0)
        .payment("pi_early", 2500, "gbp");
    assert_eq!(event.json()["data"]["object"]["metadata"], json!({}));
    app.deliver_stripe(&event.to_bytes()).await;
    assert_eq!(app.wait_processed("STRIPE", "evt_early").await, "unmatched");

    let listed = unmatched(&app, "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let waiting = &listed[0];
    assert_eq!(waiting["provider"], "STRIPE");
    assert_eq!(waiting["eventId"], "evt_early");
    assert_eq!(waiting["eventType"], "payment_intent.succeeded");
    assert_eq!(waiting["providerPaymentId"], "pi_early");
    assert!(waiting["receivedAt"].is_string(), "{waiting}");
    let occurred_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(waiting["occurredAt"].clone()).unwrap();
    assert_eq!(occurred_at.timestamp(), T0);

    let payment = app
        .register_payment("inv_u", "STRIPE", "pi_early", 2500)
        .await;
    assert_eq!(payment["status"], "SUCCEEDED", "after the waiting event");
    assert_eq!(payment["collected"], true);
    let invoice = app.invoice("inv_u").await;
    assert_eq!(invoice["status"], "PAID", "in the registering transaction");
    assert_eq!(invoice["amountPaid"], 2500);
    assert!(unmatched(&app, "").await.is_empty());
    assert_eq!(app.wait_processed("STRIPE", "evt_early").await, "applied");
    let applied_at = processed_at(&app, "evt_early").await;

    // Delivered again: a duplicate, which writes nothing.
    app.deliver_stripe(&event.to_bytes()).await;
    assert_eq!(app.stop_when_idle().await, 0, "nothing failed or waits");
    assert_eq!(processed_at(&app, "evt_early").await, applied_at);
    assert_eq!(app.wait_processed("STRIPE", "evt_early").await, "applied");
    assert_eq!(
        outbox_routing_keys(&app).await,
        ["payment.succeeded", "invoice.paid"]
    );
    let mut delivered: Vec<String> = app
        .take_messages(&subscriber, 2)
        .await
        .into_iter()
        .map(|message| message.routing_key)
        .collect();
    delivered.sort();
    assert_eq!(delivered, ["invoice.paid", "payment.succeeded"]);
    app.delete_topology().await;
}

#[tokio::test]
async fn two_registrations_racing_for_one_waiting_payment_count_its_money_once() {
    let mut app = spawn_worker(Retries::PATIENT).await;
    app.create_customer("cust").await;
    for invoice in ["inv_a", "inv_b", "inv_c"] {
        app.create_invoice(invoice, "cust", None, "GBP", 4000).await;
    }
    for (event_id, payment_intent) in [("evt_one", "pi_one"), ("evt_two", "pi_two")] {
        app.deliver_stripe(
            &StripeEvent::new("payment_intent.succeeded", event_id)
                .created(T0)
                .payment(payment_intent, 4000, "gbp")
                .to_bytes(),
        )
        .await;
        assert_eq!(app.wait_processed("STRIPE", event_id).await, "unmatched");
    }

    // pi_one twice on one invoice (the second waits for the invoice's lock), pi_two on two
    // invoices at once (the second waits for the payment's unique key).
    let race = |first: &'static str, second: &'static str, payment_intent: &'static str| {
        let app = &app;
        async move {
            let (first, second) = (
                format!("/invoices/{first}/payments"),
                format!("/invoices/{second}/payments"),
            );
            let (one, two) = tokio::join!(
                app.api_post(&first, registration("STRIPE", payment_intent, 4000)),
                app.api_post(&second, registration("STRIPE", payment_intent, 4000)),
            );
            let mut answers = [one, two];
            answers.sort_by_key(|(status, _)| *status);
            assert_eq!(answers[0].0, 201, "{answers:?}");
            assert_eq!(answers[0].1["status"], "SUCCEEDED", "{answers:?}");
            assert_api_error(answers[1].0, &answers[1].1, 409, "conflict");
        }
    };
    race("inv_a", "inv_a", "pi_one").await;
    race("inv_b", "inv_c", "pi_two").await;

    let paid = |invoice: &Value| invoice["amountPaid"].as_i64().unwrap();
    let payments = |invoice: &Value| invoice["payments"].as_array().unwrap().len();
    let inv_a = app.invoice("inv_a").await;
    assert_eq!(paid(&inv_a), 4000, "counted once: {inv_a}");
    assert_eq!(payments(&inv_a), 1, "{inv_a}");
    let (inv_b, inv_c) = (app.invoice("inv_b").await, app.invoice("inv_c").await);
    assert_eq!(
        paid(&inv_b) + paid(&inv_c),
        4000,
        "counted once: {inv_b} {inv_c}"
    );
    assert_eq!(payments(&inv_b) + payments(&inv_c), 1, "{inv_b} {inv_c}");
    assert!(unmatched(&app, "").await.is_empty());
    assert_eq!(app.stop_when_idle().await, 0);
    let mut keys = outbox_routing_keys(&app).await;
    keys.retain(|key| key == "payment.succeeded");
    assert_eq!(keys.len(), 2, "one payment.succeeded per payment");
    app.delete_topology().await;
}

#[tokio::test]
async fn gocardless_events_before_the_registration_apply_oldest_first_at_it() {
    let mut app = spawn_worker(Retries::PATIENT).await;
    app.create_customer("cust").await;
    app.create_invoice("inv_gc", "cust", None, "GBP", 7000)
        .await;
    let subscriber = app.subscribe().await;
    // GoCardless events carry no amount; the fixture's `resource_metadata` names an invoice, so it
    // is emptied: these name none. The newer event arrives first.
    let event = |id: &str, action: &str, at: &str| {
        GoCardlessEvent::payment(id, action, "PM_EARLY")
            .created_at(at)
            .edit(|event| event["resource_metadata"] = json!({}))
    };
    app.deliver_gocardless([event("EV_CONF", "confirmed", "2026-11-02T12:00:00.000Z")])
        .await;
    assert_eq!(
        app.wait_processed("GOCARDLESS", "EV_CONF").await,
        "unmatched"
    );
    app.deliver_gocardless([event("EV_SUB", "submitted", "2026-11-01T12:00:00.000Z")])
        .await;
    assert_eq!(
        app.wait_processed("GOCARDLESS", "EV_SUB").await,
        "unmatched"
    );

    // Newest received first, as many as asked for.
    let listed = unmatched(&app, "").await;
    let ids: Vec<&str> = listed
        .iter()
        .map(|event| event["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["EV_SUB", "EV_CONF"]);
    assert_eq!(listed[0]["eventType"], "payments.submitted");
    assert_eq!(listed[0]["providerPaymentId"], "PM_EARLY");
    let first = unmatched(&app, "?limit=1").await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["eventId"], "EV_SUB");
    for bad in ["0", "201", "many"] {
        let (status, body) = app
            .api_get(&format!("/payments/unmatched?limit={bad}"))
            .await;
        assert_validation_error(status, &body, "limit");
    }

    let payment = app
        .register_payment("inv_gc", "GOCARDLESS", "PM_EARLY", 7000)
        .await;
    assert_eq!(payment["status"], "SUCCEEDED", "{payment}");
    // Oldest first: the submission, then the confirmation; newest first would have made the
    // submission stale.
    for event_id in ["EV_SUB", "EV_CONF"] {
        assert_eq!(app.wait_processed("GOCARDLESS", event_id).await, "applied");
    }
    let invoice = app.invoice("inv_gc").await;
    assert_eq!(invoice["status"], "PAID");
    assert_eq!(invoice["amountPaid"], 7000);
    assert!(unmatched(&app, "").await.is_empty());

    assert_eq!(app.stop_when_idle().await, 0);
    let messages = app.take_messages(&subscriber, 2).await;
    let routing_keys: Vec<&str> = messages.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(routing_keys, ["payment.succeeded", "invoice.paid"]);
    let succeeded: Value = serde_json::from_slice(&messages[0].body).unwrap();
    assert_eq!(succeeded["data"]["amountSource"], "registered_payment");
    app.delete_topology().await;
}

#[tokio::test]
async fn a_waiting_event_that_cannot_be_applied_stays_unmatched_and_the_registration_succeeds() {
    let app = spawn_worker(Retries::PATIENT).await;
    app.create_customer("cust").await;
    app.create_invoice("inv_gbp", "cust", None, "GBP", 2500)
        .await;
    // Paid in dollars, for an invoice in pounds: the worker would dead-letter it
    // (`currency_mismatch`).
    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", "evt_usd")
            .created(T0)
            .payment("pi_usd", 2500, "usd")
            .to_bytes(),
    )
    .await;
    assert_eq!(app.wait_processed("STRIPE", "evt_usd").await, "unmatched");

    let payment = app
        .register_payment("inv_gbp", "STRIPE", "pi_usd", 2500)
        .await;
    assert_eq!(payment["status"], "REGISTERED", "{payment}");
    assert_eq!(app.invoice("inv_gbp").await["status"], "OPEN");
    let listed = unmatched(&app, "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["eventId"], "evt_usd", "left for an operator");
    app.stop().await;
}
