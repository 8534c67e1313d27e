//! Operator tools against a running worker: dead letters listed, shown, replayed, purged; events
//! re-driven from the inbox; and the worker killed mid-batch applying everything exactly once.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use settle::role::Role;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn an_unknown_invoice_is_dead_lettered_then_replayed_once_it_exists() {
    let app = spawn_worker(Retries::GIVE_UP_SOON).await;
    app.create_customer("cust").await;
    let subscriber = app.subscribe().await;
    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", "evt_orphan")
            .created(1_790_000_000)
            .payment("pi_orphan", 800, "gbp")
            .invoice_id("inv_missing")
            .to_bytes(),
    )
    .await;

    let db = app.db();
    let (id, reason, attempts): (i64, String, i32) =
        poll_until("the dead letter", WAIT, || async {
            sqlx::query_as(
                "SELECT id, reason, attempts FROM dead_letters WHERE event_id = 'evt_orphan'",
            )
            .fetch_optional(&db)
            .await
            .unwrap()
        })
        .await;
    assert_eq!(reason, "invoice_not_found");
    assert_eq!(attempts, 3, "retried through the tiers up to max_attempts");

    let (code, out, err) = settle(&app, &["dlq", "list", "--reason", "invoice_not_found"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("evt_orphan"), "{out}");
    let (code, out, _) = settle(
        &app,
        &["dlq", "list", "--output", "json", "--provider", "stripe"],
    )
    .await;
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["eventId"], "evt_orphan");
    let (code, _, _) = settle(&app, &["dlq", "list", "--reason", "currency_mismatch"]).await;
    assert_eq!(code, 3, "nothing matched");

    let (code, out, _) = settle(&app, &["dlq", "show", &id.to_string()]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["payload"]["id"], "evt_orphan");
    assert_eq!(shown["failureHistory"]["attempts"], 3);
    assert!(
        shown["failureHistory"]["lastError"]
            .as_str()
            .unwrap()
            .contains("inv_missing")
    );
    let (code, _, _) = settle(&app, &["dlq", "show", "999999"]).await;
    assert_eq!(code, 3);

    let (code, out, _) = settle(&app, &["dlq", "replay", "--all", "--dry-run"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("would replay"), "{out}");

    app.create_invoice("inv_missing", "cust", None, "GBP", 800)
        .await;
    let (code, _, err) = settle(&app, &["dlq", "replay", &id.to_string()]).await;
    assert_eq!(code, 0, "{err}");
    app.wait_invoice_status("inv_missing", "PAID").await;
    // Replaying again (an operator's double click) changes nothing: the inbox absorbs it.
    let (code, _, err) = settle(&app, &["dlq", "replay", &id.to_string()]).await;
    assert_eq!(code, 0, "{err}");
    let (replays,): (i32,) = sqlx::query_as("SELECT replay_count FROM dead_letters WHERE id = $1")
        .bind(id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(replays, 2);
    // `--all` means what still waits: a dead letter already replayed is not sent again.
    let (code, _, _) = settle(&app, &["dlq", "replay", "--all", "--dry-run"]).await;
    assert_eq!(code, 3, "nothing left to replay");
    let (code, out, _) = settle(
        &app,
        &["dlq", "replay", "--all", "--include-replayed", "--dry-run"],
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("evt_orphan"), "{out}");
    poll_until("the second replay to be consumed", WAIT, || async {
        (app.queued_count(&[app.queue("reconcile")]).await == 0).then_some(())
    })
    .await;
    assert_eq!(
        app.invoice("inv_missing").await["amountPaid"],
        800,
        "applied once"
    );
    let messages = app.take_messages(&subscriber, 2).await;
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.routing_key == "invoice.paid")
            .count(),
        1
    );

    let (code, _, _) = settle(&app, &["dlq", "purge", &id.to_string()]).await;
    assert_eq!(code, 2, "purge needs --yes");
    let (code, out, _) = settle(&app, &["dlq", "purge", &id.to_string(), "--yes"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, _, _) = settle(&app, &["dlq", "list"]).await;
    assert_eq!(code, 3, "purged");
    app.stop().await;
}

#[tokio::test]
async fn events_replay_re_drives_an_archived_event_without_doubling_effects() {
    let app = spawn_worker(Retries::GIVE_UP_SOON).await;
    app.create_customer("cust").await;
    app.create_invoice("inv_r", "cust", None, "GBP", 500).await;
    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", "evt_r")
            .created(1_790_000_000)
            .payment("pi_r", 500, "gbp")
            .invoice_id("inv_r")
            .to_bytes(),
    )
    .await;
    app.wait_invoice_status("inv_r", "PAID").await;
    let db = app.db();
    let processed_at = |db: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
            "SELECT processed_at FROM webhook_events WHERE event_id = 'evt_r'",
        )
        .fetch_optional(&db)
        .await
        .unwrap()
    };
    let first = processed_at(db.clone()).await.unwrap();

    let (code, out, err) = settle(&app, &["events", "replay", "stripe", "evt_r"]).await;
    assert_eq!(code, 0, "{out}{err}");
    poll_until("the replayed event to be applied again", WAIT, || async {
        processed_at(db.clone()).await.filter(|at| *at > first)
    })
    .await;
    assert_eq!(app.wait_processed("STRIPE", "evt_r").await, "applied");
    let invoice = app.invoice("inv_r").await;
    assert_eq!(invoice["amountPaid"], 500);
    let (outbox,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(outbox, 2, "payment.succeeded and invoice.paid, once each");

    let (code, _, _) = settle(&app, &["events", "replay", "stripe", "evt_never_seen"]).await;
    assert_eq!(code, 3);
    app.stop().await;
}

#[tokio::test]
async fn a_worker_killed_mid_batch_applies_every_event_exactly_once_after_restart() {
    // The receiver in-process; the worker as a child process we can SIGKILL.
    let app = spawn_app_with(AppOptions {
        role: Role::Serve,
        ..AppOptions::default()
    })
    .await;
    let subscriber = app.subscribe().await;
    const EVENTS: usize = 300;
    app.create_customer("cust").await;
    for i in 0..EVENTS {
        app.create_invoice(&format!("inv_{i:03}"), "cust", None, "GBP", 100)
            .await;
    }
    let spawn_worker = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_settle"))
            .arg("worker")
            .envs(settle_env(&app))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the worker starts")
    };
    let app_ref = &app;
    let posts: Vec<_> = (0..EVENTS)
        .map(|i| {
            let body = StripeEvent::new("payment_intent.succeeded", &format!("evt_{i:03}"))
                .created(1_790_000_000)
                .payment(&format!("pi_{i:03}"), 100, "gbp")
                .invoice_id(&format!("inv_{i:03}"))
                .to_bytes();
            async move { app_ref.post_stripe_signed(&body).await.status().as_u16() }
        })
        .collect();
    let db = app.db();
    let applied = || {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_events")
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let statuses = futures_util::future::join_all(posts).await;
    assert!(statuses.iter().all(|s| *s == 200));
    // The whole batch waits in the queue before the worker starts, so the kill lands mid-batch.
    let mut worker = spawn_worker();
    // Kill it once it is part-way through the batch.
    poll_until("the worker to be part-way", WAIT, || async {
        (applied().await >= 10).then_some(())
    })
    .await;
    worker.kill().await.expect("SIGKILL");
    let at_kill = applied().await;
    assert!(
        at_kill < EVENTS as i64,
        "killed mid-batch ({at_kill} applied)"
    );

    let mut worker = spawn_worker();
    poll_until(
        "every event to be applied",
        Duration::from_secs(60),
        || async { (applied().await == EVENTS as i64).then_some(()) },
    )
    .await;
    let (paid, total_paid): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'PAID'), sum(amount_paid)::bigint FROM invoices",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(paid, EVENTS as i64);
    assert_eq!(
        total_paid,
        Some(100 * EVENTS as i64),
        "each payment counted exactly once"
    );
    let (payments,): (i64,) = sqlx::query_as("SELECT count(*) FROM payments")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(payments, EVENTS as i64);
    // Every reconciliation event published, none lost between commit and publish.
    poll_until("the outbox to drain", WAIT, || async {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
            .fetch_one(&db)
            .await
            .unwrap();
        (pending == 0).then_some(())
    })
    .await;
    let (outbox,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(outbox, 2 * EVENTS as i64);
    let messages = app.take_messages(&subscriber, 2 * EVENTS).await;
    let mut ids: Vec<String> = messages.into_iter().filter_map(|m| m.message_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        2 * EVENTS,
        "every event id arrived (duplicates of a re-sent batch allowed)"
    );
    worker.kill().await.ok();
    app.stop().await;
}
