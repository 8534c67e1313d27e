//! What a tenant can sign for its own connection: ids of any length, text with any characters.
//! None of it stops work for anyone: reconciliation events keep flowing, a NUL is data, and a
//! dead letter can always be recorded.

use serde_json::Value;

use crate::helpers::*;

const T0: i64 = 1_790_000_000;

/// A Stripe event id of the most bytes intake accepts: `stripe:<id>` is 255 bytes, AMQP's limit.
fn longest_event_id(tag: &str) -> String {
    longest_id_of("stripe", &format!("evt_{tag}_"))
}

/// An id starting `start`, of the most bytes intake accepts for `provider`.
fn longest_id_of(provider: &str, start: &str) -> String {
    let room = 255 - provider.len() - ":".len() - start.len();
    format!("{start}{}", "x".repeat(room))
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
    app.create_invoice("inv_gc_long", "cust", None, "GBP", 3000)
        .await;
    // A GoCardless payment registered under a long id, confirmed by the longest event id.
    let gocardless_payment = format!("PM{}", "Z".repeat(200));
    app.register_payment("inv_gc_long", "GOCARDLESS", &gocardless_payment, 3000)
        .await;
    let confirmed = longest_id_of("gocardless", "EV");
    app.gocardless_payment(
        &confirmed,
        "confirmed",
        &gocardless_payment,
        "2026-11-02T12:00:00.000Z",
    )
    .await;
    assert_eq!(
        app.wait_processed("GOCARDLESS", &confirmed).await,
        "applied"
    );

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

    let messages = app.take_messages(&subscriber, 11).await;
    let mut keys: Vec<&str> = messages.iter().map(|m| m.routing_key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "invoice.disputed",
            "invoice.paid",
            "invoice.paid",
            "invoice.paid",
            "invoice.refunded",
            "payment.disputed",
            "payment.refunded",
            "payment.succeeded",
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
    paid_by_gocardless(&app, "inv_nul", "PM_NUL").await;
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

/// A GBP 30.00 invoice `invoice_id` of the customer `cust`, paid by the GoCardless payment
/// `payment_id`: registered, then confirmed on 2 November.
async fn paid_by_gocardless(app: &TestApp, invoice_id: &str, payment_id: &str) {
    app.create_customer("cust").await;
    app.create_invoice(invoice_id, "cust", None, "GBP", 3000)
        .await;
    app.register_payment(invoice_id, "GOCARDLESS", payment_id, 3000)
        .await;
    let confirmed = format!("EV_{payment_id}_C");
    app.gocardless_payment(
        &confirmed,
        "confirmed",
        payment_id,
        "2026-11-02T12:00:00.000Z",
    )
    .await;
    app.wait_invoice_status(invoice_id, "PAID").await;
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

/// The headers a worker before this release gave a dead letter it sent for `event_id`: why, the
/// database's error, one attempt.
fn dead_letter_headers(
    provider: &str,
    event_id: &str,
    event_type: &str,
    last_error: &str,
) -> serde_json::Map<String, Value> {
    let now = "2026-12-01T12:00:00.000000Z";
    let Value::Object(headers) = serde_json::json!({
        "provider": provider, "event-id": event_id, "event-type": event_type, "received-at": now,
        "settle-attempts": 1, "settle-first-failure-at": now, "settle-last-failure-at": now,
        "settle-last-error": last_error, "settle-reason": "database_error",
        "settle-dead-letter-key": format!("old-{event_id}"),
    }) else {
        unreachable!()
    };
    headers
}

#[tokio::test]
async fn dead_letters_holding_nul_are_recorded_and_apply_when_replayed() {
    let app = spawn_worker(Retries::PATIENT).await;
    paid_by_gocardless(&app, "inv_late", "PM_LATE").await;
    app.create_invoice("inv_nul_id", "cust", None, "GBP", 1000)
        .await;

    // What the worker dead-lettered before NUL was data: the late failure whose description
    // holds one, and a payment whose event id does (in its headers and message id too, which
    // the dead-letter consumer could not record either: it requeued it for ever).
    let dead_letter_queue = app.queue("dead");
    let refused =
        "database: error returned from database: invalid byte sequence for encoding \"UTF8\": 0x00";
    let late = late_failure_with_a_nul("EV_LATE_F", "PM_LATE").into_json();
    app.put_on_queue(
        &dead_letter_queue,
        "gocardless:EV_LATE_F",
        &dead_letter_headers("gocardless", "EV_LATE_F", "payments.failed", refused),
        &serde_json::to_vec(&late).unwrap(),
    )
    .await;
    let nul_id = "evt_nul\u{0}id";
    let paid = StripeEvent::new("payment_intent.succeeded", nul_id)
        .created(T0)
        .payment("pi_nul_id", 1000, "gbp")
        .invoice_id("inv_nul_id");
    app.put_on_queue(
        &dead_letter_queue,
        &format!("stripe:{nul_id}"),
        &dead_letter_headers("stripe", nul_id, "payment_intent.succeeded", refused),
        &paid.to_bytes(),
    )
    .await;

    let db = app.db();
    poll_until("both dead letters to be recorded", WAIT, || async {
        let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(&db)
            .await
            .unwrap();
        (recorded == 2).then_some(())
    })
    .await;
    let (code, out, err) = settle(&app, &["dlq", "list", "--reason", "database_error"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("EV_LATE_F"), "{out}");
    assert!(out.contains("evt_nul\u{FFFD}id"), "{out}");

    let (code, _, err) = settle(&app, &["dlq", "replay", "--all"]).await;
    assert_eq!(code, 0, "{err}");
    app.wait_invoice_status("inv_late", "PAYMENT_FAILED").await;
    app.wait_invoice_status("inv_nul_id", "PAID").await;
    assert_eq!(
        app.wait_processed("STRIPE", "evt_nul\u{FFFD}id").await,
        "applied"
    );
    // Nothing was left unacknowledged in the dead-letter queue: stopped, it holds nothing.
    let mut app = app;
    app.shutdown_only().await;
    assert_eq!(app.queued_count(&[dead_letter_queue]).await, 0);
    app.delete_topology().await;
}

#[tokio::test]
async fn a_dead_letter_whose_row_is_refused_is_recorded_degraded() {
    let app = spawn_worker(Retries::PATIENT).await;
    let db = app.db();
    // A row PostgreSQL refuses for good, whatever in it is at fault: a data exception.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22000'; END $$;
         CREATE TRIGGER refuse_row BEFORE INSERT ON dead_letters FOR EACH ROW
             WHEN (NEW.event_id = 'evt_refused') EXECUTE FUNCTION refuse_row();",
    )
    .execute(&db)
    .await
    .unwrap();
    let event = StripeEvent::new("payment_intent.succeeded", "evt_refused")
        .created(T0)
        .payment("pi_refused", 1000, "gbp")
        .invoice_id("inv_refused");
    let dead_letter_queue = app.queue("dead");
    app.put_on_queue(
        &dead_letter_queue,
        "stripe:evt_refused",
        &dead_letter_headers(
            "stripe",
            "evt_refused",
            "payment_intent.succeeded",
            "invoice `inv_refused` is not registered",
        ),
        &event.to_bytes(),
    )
    .await;

    let (reason, headers, body, last_error): (String, Value, Vec<u8>, String) =
        poll_until("the degraded dead letter", WAIT, || async {
            sqlx::query_as("SELECT reason, headers, body, last_error FROM dead_letters")
                .fetch_optional(&db)
                .await
                .unwrap()
        })
        .await;
    assert_eq!(reason, "unrecordable");
    assert_eq!(body, event.to_bytes(), "the body as received");
    assert!(last_error.contains("database_error"), "{last_error}");
    use base64::Engine;
    let kept = base64::engine::general_purpose::STANDARD
        .decode(headers["unrecordable"].as_str().unwrap())
        .unwrap();
    let kept: Value = serde_json::from_slice(&kept).unwrap();
    assert_eq!(kept["event-id"], "evt_refused");
    let mut app = app;
    app.shutdown_only().await;
    assert_eq!(app.queued_count(&[dead_letter_queue]).await, 0);
    app.delete_topology().await;
}

#[tokio::test]
async fn a_dead_letter_waits_for_the_database_without_going_back_to_the_queue() {
    let app = spawn_worker(Retries::PATIENT).await;
    let outage = DatabaseOutage::begin(&app).await;
    let event = StripeEvent::new("payment_intent.succeeded", "evt_held")
        .created(T0)
        .payment("pi_held", 1000, "gbp")
        .invoice_id("inv_held");
    app.put_on_queue(
        &app.queue("dead"),
        "stripe:evt_held",
        &dead_letter_headers(
            "stripe",
            "evt_held",
            "payment_intent.succeeded",
            "invoice `inv_held` is not registered",
        ),
        &event.to_bytes(),
    )
    .await;
    // Tried three times, backing off (200 ms, then 400 ms): not a loop as fast as PostgreSQL
    // can refuse.
    let held = "settle_dead_letters_unrecorded_total{how=\"held\"}";
    poll_until("three tries to record the dead letter", WAIT, || async {
        (app.metric(held).await >= 3.0).then_some(())
    })
    .await;
    outage.end().await;
    let db = app.db();
    let headers: Value = poll_until("the dead letter", WAIT, || async {
        sqlx::query_scalar("SELECT headers FROM dead_letters WHERE event_id = 'evt_held'")
            .fetch_optional(&db)
            .await
            .unwrap()
    })
    .await;
    // Held all along: delivered once, never requeued (the broker counts redeliveries).
    assert_eq!(headers.get("x-delivery-count"), None, "{headers}");
    app.stop().await;
}

#[tokio::test]
async fn signed_events_with_nul_in_their_id_or_currency_apply_or_are_dead_lettered_never_stuck() {
    let app = spawn_worker(Retries::PATIENT).await;
    app.create_customer("cust").await;
    app.create_invoice("inv_nul_evt", "cust", None, "GBP", 1000)
        .await;
    // A NUL in the event id: the id is data, the event applies.
    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", "evt_\u{0}x")
            .created(T0)
            .payment("pi_nul_evt", 1000, "gbp")
            .invoice_id("inv_nul_evt")
            .to_bytes(),
    )
    .await;
    assert_eq!(
        app.wait_processed("STRIPE", "evt_\u{FFFD}x").await,
        "applied"
    );
    app.wait_invoice_status("inv_nul_evt", "PAID").await;
    // A NUL in the currency: no currency, dead-lettered at once, with an error that names it.
    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", "evt_nul_currency")
            .created(T0)
            .payment("pi_nul_currency", 1000, "g\u{0}p")
            .invoice_id("inv_nul_evt")
            .to_bytes(),
    )
    .await;
    let db = app.db();
    let (reason, last_error): (String, String) = poll_until("the dead letter", WAIT, || async {
        sqlx::query_as(
            "SELECT reason, last_error FROM dead_letters WHERE event_id = 'evt_nul_currency'",
        )
        .fetch_optional(&db)
        .await
        .unwrap()
    })
    .await;
    assert_eq!(reason, "unparseable");
    assert!(last_error.contains("`G\u{FFFD}P`"), "{last_error}");
    let (code, out, err) = settle(&app, &["dlq", "list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("evt_nul_currency"), "{out}");
    let mut app = app;
    // Nothing waits in the work, retry or dead-letter queues, acked or not: the dead letter was
    // copied, then acked.
    assert_eq!(app.stop_when_idle().await, 0);
    app.delete_topology().await;
}

/// A holder of broker credentials alone cannot make the worker apply an event: a message on the
/// work queue with no seal, or with a seal that does not match (made up, or the body altered),
/// is dead-lettered `unsealed` and changes nothing; the receiver's own messages still apply.
#[tokio::test]
async fn a_message_published_with_broker_credentials_alone_is_dead_lettered_unsealed() {
    let app = spawn_worker(Retries::PATIENT).await;
    app.create_customer("cust").await;
    app.create_invoice("inv_forged", "cust", None, "GBP", 1000)
        .await;
    let forged = |event_id: &str| {
        StripeEvent::new("payment_intent.succeeded", event_id)
            .created(T0)
            .payment(&format!("pi_{event_id}"), 1000, "gbp")
            .invoice_id("inv_forged")
            .to_bytes()
    };
    let headers = |event_id: &str, seal: Option<&str>| {
        let mut headers = serde_json::Map::new();
        for (name, value) in [
            ("provider", "stripe"),
            ("event-id", event_id),
            ("event-type", "payment_intent.succeeded"),
            ("received-at", "2026-12-01T12:00:00.000000Z"),
        ] {
            headers.insert(name.to_owned(), Value::from(value));
        }
        if let Some(seal) = seal {
            headers.insert("settle-seal".to_owned(), Value::from(seal));
        }
        headers
    };
    let work = app.queue("reconcile");
    app.put_on_queue(
        &work,
        "stripe:evt_unsealed",
        &headers("evt_unsealed", None),
        &forged("evt_unsealed"),
    )
    .await;
    let made_up = format!("local.{}", "0".repeat(64));
    app.put_on_queue(
        &work,
        "stripe:evt_made_up",
        &headers("evt_made_up", Some(&made_up)),
        &forged("evt_made_up"),
    )
    .await;
    let db = app.db();
    let reasons: Vec<(String, String)> = poll_until("two dead letters", WAIT, || async {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT event_id, reason FROM dead_letters ORDER BY event_id")
                .fetch_all(&db)
                .await
                .unwrap();
        (rows.len() == 2).then_some(rows)
    })
    .await;
    assert_eq!(
        reasons,
        [
            ("evt_made_up".to_owned(), "unsealed".to_owned()),
            ("evt_unsealed".to_owned(), "unsealed".to_owned())
        ]
    );
    assert_eq!(app.invoice("inv_forged").await["status"], "OPEN");
    // The receiver seals what it queues: the same payment through a webhook applies.
    app.deliver_stripe(&forged("evt_real")).await;
    app.wait_invoice_status("inv_forged", "PAID").await;
    app.stop().await;
}
