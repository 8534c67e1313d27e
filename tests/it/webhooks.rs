//! The webhook receiver: signed events in, one persistent message each; refusals queue nothing.

use crate::helpers::*;

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn a_signed_stripe_event_becomes_exactly_one_persistent_message() {
    let app = spawn_app().await;
    let id = unique("evt");
    let body = stripe_event("payment_intent.succeeded", &id);

    let response = app.post_stripe_signed(&body).await;
    assert_eq!(response.status(), 200);

    let messages = app.take_messages(&app.queue("reconcile"), 1).await;
    assert_eq!(messages.len(), 1, "exactly one message");
    let message = &messages[0];
    assert_eq!(message.routing_key, "stripe.payment_intent.succeeded");
    assert_eq!(
        message.message_id.as_deref(),
        Some(format!("stripe:{id}").as_str())
    );
    assert_eq!(message.delivery_mode, Some(2), "persistent");
    assert_eq!(message.header("provider"), Some("stripe"));
    assert_eq!(message.header("event-id"), Some(id.as_str()));
    assert_eq!(
        message.header("event-type"),
        Some("payment_intent.succeeded")
    );
    let received_at = message.header("received-at").expect("received-at header");
    chrono::DateTime::parse_from_rfc3339(received_at).expect("received-at is RFC 3339");
    assert_eq!(message.body, body, "the exact raw body");
    app.stop().await;
}

#[tokio::test]
async fn a_gocardless_batch_of_three_becomes_three_messages_and_204() {
    let app = spawn_app().await;
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/gocardless-webhook.json")).unwrap();
    let mut events: Vec<serde_json::Value> = fixture["events"].as_array().unwrap().clone();
    events.truncate(3);
    assert_eq!(events.len(), 3, "the fixture has at least three events");
    for event in &mut events {
        event["id"] = unique("EV").into();
    }
    let body =
        serde_json::to_vec(&serde_json::json!({ "events": events, "meta": fixture["meta"] }))
            .unwrap();

    let response = app
        .post_gocardless(&body, &gocardless_signature(&body))
        .await;
    assert_eq!(response.status(), 204);

    let messages = app.take_messages(&app.queue("reconcile"), 3).await;
    assert_eq!(messages.len(), 3);
    for event in &events {
        let id = event["id"].as_str().unwrap();
        let message = messages
            .iter()
            .find(|m| m.message_id.as_deref() == Some(format!("gocardless:{id}").as_str()))
            .unwrap_or_else(|| panic!("a message for {id}"));
        let expected_type = format!(
            "{}.{}",
            event["resource_type"].as_str().unwrap(),
            event["action"].as_str().unwrap()
        );
        assert_eq!(message.routing_key, format!("gocardless.{expected_type}"));
        assert_eq!(message.header("event-type"), Some(expected_type.as_str()));
        let queued: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(&queued, event, "the event's own JSON");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_same_event_posted_twice_is_accepted_both_times() {
    let app = spawn_app().await;
    let body = stripe_event("payment_intent.processing", &unique("evt"));
    assert_eq!(app.post_stripe_signed(&body).await.status(), 200);
    assert_eq!(app.post_stripe_signed(&body).await.status(), 200);
    // Both are queued; the worker's inbox dedupes by event id.
    let messages = app.take_messages(&app.queue("reconcile"), 2).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].message_id, messages[1].message_id);
    app.stop().await;
}

async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned()
}

#[tokio::test]
async fn refused_webhooks_get_the_right_status_and_queue_nothing() {
    let app = spawn_app().await;
    let body = stripe_event("payment_intent.succeeded", &unique("evt"));
    let now = chrono::Utc::now().timestamp();

    // Signed with another secret.
    let forged = settle::providers::stripe::sign(&"whsec_other".to_owned().into(), now, &body);
    let response = app.post_stripe(&body, Some(forged)).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "signature_mismatch");

    // No signature at all.
    let response = app.post_stripe(&body, None).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "missing_signature");

    // Stale, and too far in the future. A few seconds past the 300 s tolerance, so that a second
    // ticking over between here and the server's clock cannot bring one back inside (the exact
    // boundary is unit-tested in ingress::stripe).
    for timestamp in [now - 305, now + 305] {
        let response = app
            .post_stripe(&body, Some(stripe_signature(&body, timestamp)))
            .await;
        assert_eq!(response.status(), 400);
        assert_eq!(error_code(response).await, "timestamp_outside_tolerance");
    }

    // Over the 1 MiB body limit.
    let oversized = vec![b' '; 1024 * 1024 + 1];
    let response = app.post_stripe_signed(&oversized).await;
    assert_eq!(response.status(), 413);
    assert_eq!(error_code(response).await, "body_too_large");

    // Correctly signed but malformed, or without an event id.
    for bad in [
        &b"{not json"[..],
        br#"{"object":"event","type":"charge.succeeded"}"#,
    ] {
        let response = app.post_stripe_signed(bad).await;
        assert_eq!(response.status(), 400);
        assert_eq!(error_code(response).await, "invalid_payload");
    }

    // GoCardless: 498 for a bad signature, 400 for a signed batch with an event without id.
    let batch = br#"{"events":[{"action":"confirmed","resource_type":"payments"}]}"#;
    let response = app.post_gocardless(batch, &"0".repeat(64)).await;
    assert_eq!(response.status(), 498);
    assert_eq!(error_code(response).await, "signature_mismatch");
    let response = app
        .post_gocardless(batch, &gocardless_signature(batch))
        .await;
    assert_eq!(response.status(), 400);

    // One good event last, so "nothing queued" is checked against a message that did arrive.
    let good = stripe_event("charge.succeeded", &unique("evt"));
    assert_eq!(app.post_stripe_signed(&good).await.status(), 200);
    let messages = app.take_messages(&app.queue("reconcile"), 1).await;
    assert_eq!(messages.len(), 1, "only the good event was queued");
    assert_eq!(messages[0].body, good);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_provider_is_404() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/webhooks/paypal"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    app.stop().await;
}
