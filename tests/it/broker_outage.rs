//! A broker outage: intake answers 503 (the provider retries) and everything recovers in the same
//! process once the node is back.

use std::time::Duration;

use crate::helpers::*;

fn chaos_node(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");
    let status = std::process::Command::new(script)
        .args([command, "settle-chaos@localhost"])
        .status()
        .expect("scripts/services.sh runs");
    assert!(status.success(), "{command} on the chaos broker");
}

/// Uses the second RabbitMQ node of `scripts/services.sh start --chaos`, so stopping it disturbs
/// no other test.
#[tokio::test]
async fn broker_down_gives_503_and_both_recover_in_the_same_process() {
    let chaos_url = std::env::var("SETTLE_TEST_CHAOS_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:56730/%2f".into());
    let app = spawn_app_with(AppOptions {
        amqp_url: chaos_url,
        ..AppOptions::default()
    })
    .await;
    let before = stripe_event("payment_intent.succeeded", "evt_before");
    assert_eq!(app.post_stripe_signed(&before).await.status(), 200);

    chaos_node("broker-stop-app");
    let (status, body) = poll_until("readiness to turn 503", Duration::from_secs(20), || async {
        let (status, body) = app.readyz().await;
        (status == 503).then_some((status, body))
    })
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["broker"], "down");
    let during = stripe_event("payment_intent.succeeded", "evt_during");
    let response = app.post_stripe_signed(&during).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));

    chaos_node("broker-start-app");
    app.wait_until_ready(true).await;
    let after = stripe_event("payment_intent.succeeded", "evt_after");
    assert_eq!(app.post_stripe_signed(&after).await.status(), 200);

    let messages = app.take_messages(&app.queue("reconcile"), 2).await;
    let ids: Vec<_> = messages
        .iter()
        .filter_map(|m| m.message_id.clone())
        .collect();
    assert_eq!(
        ids,
        ["stripe:evt_before", "stripe:evt_after"],
        "nothing lost, nothing from the 503"
    );
    app.stop().await;
}
