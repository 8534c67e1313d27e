//! `/healthz`, `/readyz` (per role, with the database down) and `/metrics`.

use settle::role::Role;

use crate::helpers::*;

#[tokio::test]
async fn healthz_and_readyz_report_each_dependency() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);

    let (status, body) = app.readyz().await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ready");
    assert_eq!(body["role"], "serve");
    assert_eq!(body["draining"], false);
    assert_eq!(body["checks"]["broker"], "up");
    assert_eq!(body["checks"]["database"], "up");
    app.stop().await;
}

#[tokio::test]
async fn serve_stays_ready_and_takes_webhooks_while_the_database_is_unreachable() {
    let app = spawn_app_with(AppOptions {
        // Nothing listens on port 1: every database call fails at once.
        database_url: Some("postgres://settle:settle@127.0.0.1:1/settle".into()),
        ..AppOptions::default()
    })
    .await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"], "down");
    assert_eq!(body["checks"]["broker"], "up");

    let event = stripe_event("payment_intent.succeeded", "evt_db_down");
    assert_eq!(app.post_stripe_signed(&event).await.status(), 200);
    assert_eq!(app.take_messages(&app.queue("reconcile"), 1).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_worker_is_not_ready_without_its_database() {
    let app = spawn_app_with(AppOptions {
        role: Role::Worker,
        database_url: Some("postgres://settle:settle@127.0.0.1:1/settle".into()),
        wait_ready: false,
        ..AppOptions::default()
    })
    .await;
    let body = poll_until(
        "the broker check to come up",
        std::time::Duration::from_secs(30),
        || async {
            let (status, body) = app.readyz().await;
            (body["checks"]["broker"] == "up").then_some((status, body))
        },
    )
    .await;
    assert_eq!(body.0, 503);
    assert_eq!(body.1["checks"]["database"], "down");
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_webhooks_by_provider_and_outcome() {
    let app = spawn_app().await;
    let event = stripe_event("payment_intent.succeeded", "evt_metrics");
    assert_eq!(app.post_stripe_signed(&event).await.status(), 200);
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"settle_webhook_requests_total{provider="stripe",outcome="queued"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("settle_publish_confirm_seconds_bucket"),
        "{metrics}"
    );
    // Each metric says what it counts.
    for name in [
        "settle_webhook_requests_total",
        "settle_publish_confirm_seconds",
    ] {
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "{name}: {metrics}"
        );
    }
    app.stop().await;
}
