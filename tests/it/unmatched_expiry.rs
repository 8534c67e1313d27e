//! Unmatched events do not wait for ever (issue 29, deliverable 3): past
//! `retention.unmatched_days` they expire, and an operator can list, show and discard them
//! (`settle unmatched`), with a reason the inbox keeps. Either way a later registration of their
//! payment leaves them be, and the backlog is a gauge.

use serde_json::Value;

use crate::helpers::*;

const T0: i64 = 1_790_000_000;

/// A Stripe payment of `intent` that names no invoice, delivered before any registration: it
/// waits unmatched.
async fn waiting(app: &TestApp, event_id: &str, intent: &str) {
    let event = StripeEvent::new("payment_intent.succeeded", event_id)
        .created(T0)
        .payment(intent, 2500, "gbp");
    app.deliver_stripe(&event.to_bytes()).await;
    assert_eq!(app.wait_processed("STRIPE", event_id).await, "unmatched");
}

async fn outcome(app: &TestApp, event_id: &str) -> (String, Option<String>) {
    sqlx::query_as("SELECT outcome, outcome_reason FROM webhook_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&app.db())
        .await
        .unwrap()
}

/// Registers `intent` on a new invoice of 2500 GBP: its status afterwards, and its payment's.
async fn register(app: &TestApp, invoice: &str, intent: &str) -> (String, String) {
    app.create_invoice(invoice, "cust", None, "GBP", 2500).await;
    app.register_payment(invoice, "STRIPE", intent, 2500).await;
    let body = app.invoice(invoice).await;
    (
        body["status"].as_str().unwrap().to_owned(),
        payment_status(&body, intent),
    )
}

#[tokio::test]
async fn an_unmatched_event_past_its_window_expires_and_a_late_registration_leaves_it_be() {
    let app = spawn_app_with(AppOptions {
        role: settle::role::Role::Run,
        tweak: Box::new(|settings| {
            Retries::PATIENT.apply_to(settings);
            settings.retention.interval_secs = 1;
        }),
        ..AppOptions::default()
    })
    .await;
    app.create_customer("cust").await;
    waiting(&app, "evt_old", "pi_old").await;
    waiting(&app, "evt_new", "pi_new").await;
    // Fifteen days pass for one of them (the window is 14).
    sqlx::query(
        "UPDATE webhook_events SET received_at = now() - interval '15 days'
         WHERE event_id = 'evt_old'",
    )
    .execute(&app.db())
    .await
    .unwrap();
    let (expired, reason) = poll_until("evt_old to expire", WAIT, || async {
        let (outcome, reason) = outcome(&app, "evt_old").await;
        (outcome == "expired").then_some((outcome, reason))
    })
    .await;
    assert_eq!(expired, "expired");
    assert_eq!(
        reason.as_deref(),
        Some("no payment registered within 14 days (retention.unmatched_days)")
    );
    // The backlog: one waits, for moments, not days.
    let metrics = poll_until("the gauges of the run", WAIT, || async {
        let metrics = app.metrics_text().await;
        metrics
            .contains("settle_unmatched_events 1")
            .then_some(metrics)
    })
    .await;
    let age = app.metric("settle_unmatched_oldest_age_seconds").await;
    assert!(age < 3600.0, "{metrics}");
    assert_eq!(
        app.metric(r#"settle_unmatched_settled_total{outcome="expired"}"#)
            .await,
        1.0
    );
    // A registration of the expired event's payment applies nothing; the fresh one's applies.
    assert_eq!(
        register(&app, "inv_old", "pi_old").await,
        ("OPEN".to_owned(), "REGISTERED".to_owned())
    );
    assert_eq!(
        register(&app, "inv_new", "pi_new").await,
        ("PAID".to_owned(), "SUCCEEDED".to_owned())
    );
    app.stop().await;
}

#[tokio::test]
async fn an_operator_lists_shows_and_discards_unmatched_events_with_a_reason() {
    let app = spawn_worker(Retries::PATIENT).await;
    app.create_customer("cust").await;
    waiting(&app, "evt_keep", "pi_keep").await;
    waiting(&app, "evt_drop", "pi_drop").await;

    let (code, out, err) = settle(&app, &["unmatched", "list", "--output", "json"]).await;
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["evt_drop", "evt_keep"], "newest first: {listed}");
    assert_eq!(listed[0]["providerPaymentId"], "pi_drop");
    assert_eq!(listed[0]["accountId"], app.settings.account.id);

    let (code, out, err) = settle(&app, &["unmatched", "show", "stripe", "evt_drop"]).await;
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        shown["payload"]["data"]["object"]["id"], "pi_drop",
        "{shown}"
    );

    // A dry run says which, and changes nothing.
    let discard = [
        "unmatched",
        "discard",
        "--provider",
        "stripe",
        "evt_drop",
        "--reason",
        "a test payment, never billed",
    ];
    let (code, out, err) = settle(
        &app,
        &[&discard[..], &["--dry-run", "--output", "json"]].concat(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("evt_drop"), "{out}");
    assert_eq!(outcome(&app, "evt_drop").await.0, "unmatched");

    let (code, _, err) = settle(&app, &discard).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        outcome(&app, "evt_drop").await,
        (
            "discarded".to_owned(),
            Some("discarded by an operator: a test payment, never billed".to_owned())
        )
    );
    // Nothing left to discard of it; a reason is required.
    let (code, _, _) = settle(&app, &discard).await;
    assert_eq!(code, 3);
    let (code, _, err) = settle(&app, &["unmatched", "discard", "--older-than", "1d"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("--reason"), "{err}");

    // The discarded event's payment applies nothing when registered; the kept one's applies.
    assert_eq!(
        register(&app, "inv_drop", "pi_drop").await,
        ("OPEN".to_owned(), "REGISTERED".to_owned())
    );
    assert_eq!(
        register(&app, "inv_keep", "pi_keep").await,
        ("PAID".to_owned(), "SUCCEEDED".to_owned())
    );
    app.stop().await;
}
