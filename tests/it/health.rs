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
    let node = amqp_url().parse::<lapin::uri::AMQPUri>().unwrap().authority;
    assert_eq!(body["broker_node"], format!("{}:{}", node.host, node.port));
    app.stop().await;
}

#[tokio::test]
async fn of_several_amqp_urls_a_node_that_is_down_is_passed_over_for_one_that_answers() {
    // Port 1 refuses every connection: the node is down. Whichever of the two the process
    // starts at, it must end on the live one, and take webhooks there.
    let live = amqp_url();
    let app = spawn_app_with(AppOptions {
        tweak: Box::new(move |settings| {
            settings.amqp.urls = vec![
                "amqp://guest:guest@127.0.0.1:1/%2f".to_owned().into(),
                live.into(),
            ];
        }),
        ..AppOptions::default()
    })
    .await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body}");
    let node = amqp_url().parse::<lapin::uri::AMQPUri>().unwrap().authority;
    assert_eq!(body["broker_node"], format!("{}:{}", node.host, node.port));

    let event = stripe_event("payment_intent.succeeded", "evt_failed_over");
    assert_eq!(app.post_stripe_signed(&event).await.status(), 200);
    assert_eq!(app.take_messages(&app.queue("reconcile"), 1).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn serve_stays_ready_and_takes_webhooks_while_the_database_is_unreachable() {
    let app = spawn_app_with(AppOptions {
        // Nothing listens on port 1: every database call fails at once. Migrations on start, as
        // by default: they wait for the database in the background; intake does not.
        database_url: Some("postgres://settle:settle@127.0.0.1:1/settle".into()),
        tweak: Box::new(|settings| settings.database.migrate_on_start = true),
        wait_ready: false,
        ..AppOptions::default()
    })
    .await;
    app.wait_until_ready(true).await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"], "down");
    assert_eq!(body["checks"]["migrations"], "pending");
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
    let metrics = app.metrics_text().await;
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

#[tokio::test]
async fn a_worker_started_before_its_database_exists_waits_then_migrates_and_applies_what_was_queued()
 {
    // The database does not exist yet: the process starts all the same, takes webhooks, and its
    // worker waits for the migrations instead of spending attempts.
    let database = format!("test_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let app = spawn_app_with(AppOptions {
        role: Role::Run,
        database_url: Some(database_url_for(&database)),
        wait_ready: false,
        tweak: Box::new(|settings| {
            settings.database.migrate_on_start = true;
            settings.worker.outbox_poll_ms = 100;
        }),
        ..AppOptions::default()
    })
    .await;
    let event = StripeEvent::new("payment_intent.succeeded", "evt_before_db")
        .created(1_790_000_000)
        .payment("pi_before_db", 1000, "gbp")
        .invoice_id("inv_before_db")
        .to_bytes();
    poll_until(
        "intake without a database",
        std::time::Duration::from_secs(20),
        || async { (app.post_stripe_signed(&event).await.status() == 200).then_some(()) },
    )
    .await;
    let (status, body) = app.readyz().await;
    assert_eq!(
        status, 503,
        "a worker is not ready without its schema: {body}"
    );
    assert_eq!(body["checks"]["migrations"], "pending");

    create_database(&database).await;
    app.wait_until_migrated().await;
    app.wait_until_ready(true).await;
    app.create_customer("cust").await;
    app.create_invoice("inv_before_db", "cust", None, "GBP", 1000)
        .await;
    let invoice = app.wait_invoice_status("inv_before_db", "PAID").await;
    assert_eq!(invoice["amountPaid"], 1000);
    let attempts: Vec<(String,)> = sqlx::query_as("SELECT outcome FROM webhook_events")
        .fetch_all(&app.db())
        .await
        .unwrap();
    assert_eq!(attempts, [("applied".to_owned(),)]);
    app.stop().await;
}

/// A PostgreSQL that accepts connections and never answers (a hung server, a black-holed
/// network): every query waits. Listens until dropped.
async fn hung_database() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    (
        format!("postgres://settle:settle@127.0.0.1:{port}/settle"),
        held,
    )
}

#[tokio::test]
async fn readiness_answers_at_once_from_kept_state_while_the_database_hangs() {
    let (database_url, hung) = hung_database().await;
    let app = spawn_app_with(AppOptions {
        database_url: Some(database_url),
        tweak: Box::new(|settings| settings.database.migrate_on_start = true),
        wait_ready: false,
        ..AppOptions::default()
    })
    .await;
    app.wait_until_ready(true).await;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let (status, body) = app.readyz().await;
        let took = started.elapsed();
        // An orchestrator's probe gives up after 1 s; this one used to wait 2 s for a ping.
        assert!(
            took < std::time::Duration::from_millis(500),
            "/readyz took {took:?}"
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["checks"]["database"], "down", "{body}");
        assert_eq!(body["checks"]["migrations"], "pending", "{body}");
    }
    app.stop().await;
    hung.abort();
}

#[tokio::test]
async fn while_migrations_are_pending_the_api_answers_503_migrations_pending_without_touching_a_table()
 {
    let (database_url, hung) = hung_database().await;
    let app = spawn_app_with(AppOptions {
        role: Role::Run,
        database_url: Some(database_url),
        tweak: Box::new(|settings| settings.database.migrate_on_start = true),
        wait_ready: false,
        ..AppOptions::default()
    })
    .await;
    // Its own key (no database needed to check it) and one of the stored kind (looked up).
    for key in [
        ApiKey::configured(),
        ApiKey {
            id: "key_0000".into(),
            secret: "x".into(),
        },
    ] {
        let started = std::time::Instant::now();
        let response = app
            .http
            .get(app.url("/invoices"))
            .basic_auth(&key.id, Some(&key.secret))
            .send()
            .await
            .unwrap();
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "5");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "migrations_pending", "{body}");
    }
    // A role that needs the schema says why it is not ready.
    let (status, body) = app.readyz().await;
    assert_eq!(status, 503, "{body}");
    let unready = body["unready"].as_array().unwrap();
    assert!(unready.contains(&"migrations_pending".into()), "{body}");
    assert!(unready.contains(&"database_down".into()), "{body}");
    app.stop().await;
    hung.abort();
}

#[tokio::test]
async fn with_an_admin_listener_the_public_readyz_names_no_host() {
    let app = spawn_app_with(AppOptions {
        tweak: Box::new(|settings| settings.http.admin_addr = Some("127.0.0.1:0".parse().unwrap())),
        ..AppOptions::default()
    })
    .await;
    let (status, public) = app.readyz().await;
    assert_eq!(status, 200, "{public}");
    assert!(public.get("broker_node").is_none(), "{public}");
    let admin = app.admin_addr.unwrap();
    let internal = app.get_json(&format!("http://{admin}/readyz")).await;
    assert!(internal["broker_node"].is_string(), "{internal}");
    app.stop().await;
}

/// A periodic task whose interval is 0 is off, not a task that keeps ending: the supervisor
/// would restart it for ever and report the worker unready.
#[tokio::test]
async fn periodic_tasks_turned_off_are_not_restarted_and_leave_the_worker_ready() {
    let app = spawn_app_with(AppOptions {
        role: Role::Run,
        tweak: Box::new(|settings| {
            Retries::PATIENT.apply_to(settings);
            settings.retention.interval_secs = 0;
            settings.backfill.interval_secs = 0;
            settings.payouts.list_interval_secs = 0;
        }),
        ..AppOptions::default()
    })
    .await;
    let subscriber = app.subscribe().await;
    app.create_customer("cust").await;
    app.create_invoice("inv_off", "cust", None, "GBP", 1500)
        .await;
    let event = StripeEvent::new("payment_intent.succeeded", "evt_off")
        .payment("pi_off", 1500, "gbp")
        .invoice_id("inv_off");
    app.deliver_stripe(&event.to_bytes()).await;
    // The relay has made a pass: every background task was started well before it.
    app.take_messages(&subscriber, 1).await;
    let metrics = app.metrics_text().await;
    assert!(
        !metrics
            .lines()
            .any(|line| line.starts_with("settle_task_restarts_total{")),
        "{metrics}"
    );
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}
