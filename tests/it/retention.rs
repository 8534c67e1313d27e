//! Retention: rows past their window leave the database, in batches, while what still has work
//! to do (an unmatched event waiting for its payment, a dead letter nobody replayed) stays.

use settle::role::Role;

use crate::helpers::*;

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.db()).await.unwrap()
}

async fn execute(app: &TestApp, sql: &str) {
    sqlx::query(sql).execute(&app.db()).await.unwrap();
}

fn payment(event_type: &str, event_id: &str, intent: &str, currency: &str) -> StripeEvent {
    StripeEvent::new(event_type, event_id)
        .created(chrono::Utc::now().timestamp())
        .payment(intent, 12_500, currency)
}

#[tokio::test]
async fn rows_past_their_window_are_deleted_and_work_in_progress_is_kept() {
    let sink = SmtpSink::start().await;
    let app = spawn_app_with(AppOptions {
        role: Role::Run,
        smtp_url: Some(sink.url()),
        tweak: Box::new(|settings| {
            settings.notifications.poll_ms = 100;
            settings.worker.outbox_poll_ms = 100;
            settings.retention.interval_secs = 1;
            // Smaller than what expires, so a run takes several batches.
            settings.retention.batch_size = 2;
            // Unmatched events may wait longer than the inbox keeps the others.
            settings.retention.unmatched_days = 60;
        }),
        ..AppOptions::default()
    })
    .await;
    app.create_customer("acme").await;
    app.create_invoice("inv_old", "acme", None, "GBP", 12_500)
        .await;
    app.create_invoice("inv_new", "acme", None, "GBP", 12_500)
        .await;
    // A failure long done (two mails, its reconciliation events), a payment just in, an event
    // waiting for a payment nobody has registered, and two dead letters.
    let failed = payment("payment_intent.payment_failed", "evt_old", "pi_old", "gbp")
        .invoice_id("inv_old")
        .object(declined_for_insufficient_funds);
    app.deliver_stripe(&failed.to_bytes()).await;
    let paid =
        payment("payment_intent.succeeded", "evt_new", "pi_new", "gbp").invoice_id("inv_new");
    app.deliver_stripe(&paid.to_bytes()).await;
    let waiting = payment(
        "payment_intent.succeeded",
        "evt_waiting",
        "pi_nobody",
        "gbp",
    );
    app.deliver_stripe(&waiting.to_bytes()).await;
    for id in ["evt_usd_replayed", "evt_usd_waiting"] {
        let wrong_currency = payment("payment_intent.succeeded", id, &format!("pi_{id}"), "usd")
            .invoice_id("inv_new");
        app.deliver_stripe(&wrong_currency.to_bytes()).await;
    }
    sink.wait_for(2).await;
    app.wait_invoice_status("inv_new", "PAID").await;
    assert_eq!(
        app.wait_processed("STRIPE", "evt_waiting").await,
        "unmatched"
    );
    poll_until("two dead letters, every event published", WAIT, || async {
        let letters = count(&app, "SELECT count(*) FROM dead_letters").await;
        let unpublished = count(&app, "SELECT count(*) FROM outbox_pending").await;
        (letters == 2 && unpublished == 0).then_some(())
    })
    .await;
    let new_events = count(
        &app,
        "SELECT count(*) FROM outbox WHERE message_id LIKE 'stripe:evt_new:%'",
    )
    .await;
    assert!(new_events > 0);

    // Time passes for the old ones only.
    execute(&app, "UPDATE webhook_events SET received_at = now() - interval '40 days' WHERE event_id IN ('evt_old', 'evt_waiting')").await;
    execute(&app, "UPDATE outbox SET created_at = now() - interval '8 days' WHERE message_id LIKE 'stripe:evt_old:%'").await;
    execute(
        &app,
        "UPDATE notifications SET sent_at = now() - interval '31 days'",
    )
    .await;
    execute(
        &app,
        "UPDATE dead_letters SET dead_lettered_at = now() - interval '40 days'",
    )
    .await;
    execute(&app, "UPDATE dead_letters SET replayed_at = now() - interval '31 days', replay_count = 1 WHERE event_id = 'evt_usd_replayed'").await;

    poll_until("the expired rows deleted", WAIT, || async {
        let left = count(
            &app,
            "SELECT (SELECT count(*) FROM webhook_events WHERE event_id = 'evt_old')
                  + (SELECT count(*) FROM outbox WHERE message_id LIKE 'stripe:evt_old:%')
                  + (SELECT count(*) FROM notifications)
                  + (SELECT count(*) FROM dead_letters WHERE event_id = 'evt_usd_replayed')",
        )
        .await;
        (left == 0).then_some(())
    })
    .await;
    let kept = |sql: &'static str| count(&app, sql);
    assert_eq!(
        kept("SELECT count(*) FROM webhook_events WHERE event_id = 'evt_new'").await,
        1
    );
    assert_eq!(
        kept("SELECT count(*) FROM webhook_events WHERE event_id = 'evt_waiting'").await,
        1,
        "an unmatched event still waiting is the event itself: kept past inbox_days"
    );
    assert_eq!(
        kept("SELECT count(*) FROM outbox WHERE message_id LIKE 'stripe:evt_new:%'").await,
        new_events
    );
    assert_eq!(
        kept("SELECT count(*) FROM dead_letters WHERE event_id = 'evt_usd_waiting'").await,
        1,
        "a dead letter nobody replayed waits for an operator"
    );
    assert_eq!(
        app.metric("settle_retention_deleted_total{table=\"notifications\"}")
            .await,
        2.0
    );
    app.stop().await;
}
