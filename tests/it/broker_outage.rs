//! A broker outage: intake answers 503 (the provider retries) and everything recovers in the same
//! process once the node is back.

use std::time::Duration;

use settle::role::Role;

use crate::helpers::*;

fn chaos_node(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");
    let status = std::process::Command::new(script)
        .args([command, "settle-chaos@localhost"])
        .status()
        .expect("scripts/services.sh runs");
    assert!(status.success(), "{command} on the chaos broker");
}

/// rabbitmqctl on the chaos node; its output.
fn chaos_ctl(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");
    let output = std::process::Command::new(script)
        .args(["broker-ctl", "settle-chaos@localhost"])
        .args(args)
        .output()
        .expect("scripts/services.sh runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} on the chaos broker: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn chaos_url() -> String {
    std::env::var("SETTLE_TEST_CHAOS_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:56730/%2f".into())
}

/// A memory alarm on the chaos node for as long as it lives: cleared on drop, so a failing test
/// does not leave the node refusing publishers.
struct MemoryAlarm;

impl MemoryAlarm {
    fn raise() -> Self {
        // Any real usage is above a watermark this low: the alarm goes off at the next check.
        chaos_ctl(&["set_vm_memory_high_watermark", "absolute", "1"]);
        Self
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        chaos_ctl(&["set_vm_memory_high_watermark", "0.4"]);
    }
}

/// (ready, unacknowledged) messages of a queue on the chaos node.
fn queue_counts(queue: &str) -> (u64, u64) {
    let listing = chaos_ctl(&[
        "list_queues",
        "name",
        "messages_ready",
        "messages_unacknowledged",
    ]);
    listing
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next()? == queue).then(|| {
                let mut count = || fields.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                (count(), count())
            })
        })
        .unwrap_or_else(|| panic!("no queue {queue} in {listing}"))
}

/// A memory alarm blocks the connection that publishes. Intake answers 503 at once (not after
/// its confirm deadline) and readiness says why; the worker's acks travel on a connection that
/// only consumes, so deliveries arriving during the alarm are applied and acked.
#[tokio::test]
async fn a_memory_alarm_refuses_webhooks_at_once_and_never_stalls_the_workers_acks() {
    let app = spawn_app_with(AppOptions {
        role: Role::Run,
        amqp_url: chaos_url(),
        tweak: Box::new(|settings| {
            // Long enough to raise the alarm and register the invoices before they come back.
            settings.worker.retry_delays_ms = vec![8000];
            settings.worker.max_attempts = 5;
            settings.worker.outbox_poll_ms = 100;
        }),
        ..AppOptions::default()
    })
    .await;
    // Payments for invoices not registered yet: they wait in the retry tier, to come back to
    // the worker during the alarm.
    for i in 0..3 {
        let event = StripeEvent::new("payment_intent.succeeded", &format!("evt_alarm{i}"))
            .created(chrono::Utc::now().timestamp())
            .payment(&format!("pi_alarm{i}"), 1000, "gbp")
            .invoice_id(&format!("inv_alarm{i}"))
            .to_bytes();
        assert_eq!(app.post_stripe_signed(&event).await.status(), 200);
    }
    let retried = "settle_worker_messages_total{result=\"retried\"}";
    poll_until("three events in the retry tier", WAIT, || async {
        (app.metric(retried).await >= 3.0).then_some(())
    })
    .await;

    let alarm = MemoryAlarm::raise();
    // RabbitMQ tells a connection it is blocked when it next publishes: that first publish
    // waits out its confirm deadline (503, the provider retries; the copy the broker reads once
    // the alarm clears is a duplicate the inbox absorbs).
    let first = stripe_event("payment_intent.succeeded", "evt_first_in_alarm");
    assert_eq!(app.post_stripe_signed(&first).await.status(), 503);
    let body = poll_until("readiness to say blocked", WAIT, || async {
        let (status, body) = app.readyz().await;
        (status == 503 && body["checks"]["broker"] == "blocked").then_some(body)
    })
    .await;
    assert_eq!(body["status"], "unavailable");
    let started = std::time::Instant::now();
    let response = app
        .post_stripe_signed(&stripe_event(
            "payment_intent.succeeded",
            "evt_during_alarm",
        ))
        .await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let confirm_deadline = Duration::from_millis(app.settings.amqp.confirm_timeout_ms);
    assert!(
        started.elapsed() < confirm_deadline / 2,
        "refused at once, not after the confirm deadline: {:?}",
        started.elapsed()
    );

    app.create_customer("cust").await;
    for i in 0..3 {
        app.create_invoice(&format!("inv_alarm{i}"), "cust", None, "GBP", 1000)
            .await;
    }
    for i in 0..3 {
        app.wait_invoice_status(&format!("inv_alarm{i}"), "PAID")
            .await;
    }
    let queue = app.queue("reconcile");
    poll_until("the deliveries acked during the alarm", WAIT, || async {
        (queue_counts(&queue) == (0, 0)).then_some(())
    })
    .await;

    drop(alarm);
    app.wait_until_ready(true).await;
    app.stop().await;
}

/// Uses the second RabbitMQ node of `scripts/services.sh start --chaos`, so stopping it disturbs
/// no other test.
#[tokio::test]
async fn broker_down_gives_503_and_both_recover_in_the_same_process() {
    let app = spawn_app_with(AppOptions {
        amqp_url: chaos_url(),
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

#[tokio::test]
async fn with_no_broker_node_connected_intake_answers_503_within_its_connect_wait_not_the_confirm_deadline()
 {
    // Nothing listens on port 1: no node ever connects.
    let app = spawn_app_with(AppOptions {
        amqp_url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        wait_ready: false,
        tweak: Box::new(|settings| {
            settings.amqp.confirm_timeout_ms = 10_000;
            settings.amqp.connect_wait_ms = 500;
        }),
        ..AppOptions::default()
    })
    .await;
    let event = stripe_event("payment_intent.succeeded", "evt_no_broker");
    let started = std::time::Instant::now();
    let response = app.post_stripe_signed(&event).await;
    let took = started.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert!(
        took < Duration::from_secs(3),
        "answered after {took:?}, the confirm deadline is 10 s"
    );
    app.stop().await;
}
