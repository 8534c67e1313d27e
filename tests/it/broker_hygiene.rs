//! The broker edge of the worker: a relay that settles each reconciliation event on its own, and
//! consumers that come back when their queue is deleted under them.

use lapin::types::{AMQPValue, FieldTable};

use crate::helpers::broker::QueuedMessage;
use crate::helpers::*;

fn payment_for(invoice: &str, event_id: &str) -> Vec<u8> {
    StripeEvent::new("payment_intent.succeeded", event_id)
        .created(chrono::Utc::now().timestamp())
        .payment(&format!("pi_{invoice}"), 1000, "gbp")
        .invoice_id(invoice)
        .to_bytes()
}

/// The routing keys of the outbox rows not published yet.
async fn unpublished(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT o.routing_key FROM outbox o JOIN outbox_pending p USING (id) ORDER BY id",
    )
    .fetch_all(&app.db())
    .await
    .unwrap()
}

/// One subscriber's queue is full (`reject-publish`) for `invoice.paid`; nobody subscribes to
/// `payment.succeeded`. The relay marks what the broker took, counts what had no route, and keeps
/// only the refused events for later: each pass never re-sends the others, never stalls on one.
#[tokio::test]
async fn the_relay_settles_each_event_on_its_own_refused_unroutable_or_routed() {
    let app = spawn_worker(Retries::PATIENT).await;
    let full = app
        .subscribe_as("full-subscriber", "invoice.*", full_queue())
        .await;
    let invoices = app
        .subscribe_as("invoice-subscriber", "invoice.*", FieldTable::default())
        .await;
    app.create_customer("cust").await;
    for i in 0..3 {
        let invoice = format!("inv_relay{i}");
        app.create_invoice(&invoice, "cust", None, "GBP", 1000)
            .await;
        // One at a time: each commit writes `payment.succeeded` and `invoice.paid` together, so a
        // relay pass carries both kinds.
        app.deliver_stripe(&payment_for(&invoice, &format!("evt_relay{i}")))
            .await;
        app.wait_invoice_status(&invoice, "PAID").await;
    }
    // The full queue took the first `invoice.paid` and refuses the other two; everything else
    // is published.
    poll_until("only the refused events left", WAIT, || async {
        (unpublished(&app).await == ["invoice.paid", "invoice.paid"]).then_some(())
    })
    .await;
    assert_eq!(
        app.metric("settle_outbox_unroutable_total").await,
        3.0,
        "every payment.succeeded, which no queue is bound for, counted once"
    );
    assert!(app.metric("settle_outbox_nacked_total").await >= 2.0);

    // The subscriber drains its queue: the refused events follow, one by one.
    let delivered = std::sync::Mutex::new(std::collections::BTreeSet::new());
    poll_until("every invoice.paid in the full queue", WAIT, || async {
        let taken = app.take_messages(&full, 0).await;
        let mut delivered = delivered.lock().unwrap();
        delivered.extend(taken.into_iter().map(|m| m.message_id.unwrap()));
        (delivered.len() == 3).then_some(())
    })
    .await;
    let delivered = delivered.into_inner().unwrap();
    poll_until("the outbox empty", WAIT, || async {
        unpublished(&app).await.is_empty().then_some(())
    })
    .await;
    let others: std::collections::BTreeSet<_> = app
        .take_messages(&invoices, 3)
        .await
        .into_iter()
        .map(|message| message.message_id.unwrap())
        .collect();
    assert_eq!(
        others, delivered,
        "the other subscriber has every event too"
    );
    // Publishing took the rows off the work list and never rewrote one: each row is still the
    // version the worker's transaction inserted (its xmin is that transaction's, the inbox row's).
    let rewritten: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox o JOIN webhook_events w
           ON o.message_id LIKE 'stripe:' || w.event_id || ':%'
         WHERE o.xmin::text <> w.xmin::text",
    )
    .fetch_one(&app.db())
    .await
    .unwrap();
    assert_eq!(rewritten, 0, "no outbox row rewritten by the relay");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&app.db())
        .await
        .unwrap();
    assert_eq!(rows, 6);
    app.stop().await;
}

/// A subscriber's queue with room for one message that refuses the rest (`reject-publish`).
fn full_queue() -> FieldTable {
    let mut full = FieldTable::default();
    full.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    full.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    full
}

/// How many times each message id arrived.
fn counted(messages: &[QueuedMessage]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for message in messages {
        *counts
            .entry(message.message_id.clone().unwrap())
            .or_default() += 1;
    }
    counts
}

/// A subscriber whose queue keeps refusing: each refused event is sent again only after a
/// backoff and only `worker.outbox_max_attempts` times, then parked; every other subscriber gets
/// it that many times at most, later events are not held up, and `settle outbox retry` sends the
/// parked ones once the subscriber has room again.
#[tokio::test]
async fn events_a_subscriber_keeps_refusing_are_retried_a_bounded_number_of_times_then_parked() {
    let app = spawn_app_with(AppOptions {
        role: settle::role::Role::Run,
        tweak: Box::new(|settings| {
            Retries::PATIENT.apply_to(settings);
            settings.worker.outbox_max_attempts = 2;
        }),
        ..AppOptions::default()
    })
    .await;
    let full = app
        .subscribe_as("full-subscriber", "invoice.*", full_queue())
        .await;
    let other = app
        .subscribe_as("other-subscriber", "invoice.*", FieldTable::default())
        .await;
    app.create_customer("cust").await;
    for i in 0..3 {
        let invoice = format!("inv_park{i}");
        app.create_invoice(&invoice, "cust", None, "GBP", 1000)
            .await;
        app.deliver_stripe(&payment_for(&invoice, &format!("evt_park{i}")))
            .await;
        app.wait_invoice_status(&invoice, "PAID").await;
    }
    let parked = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM outbox_pending WHERE parked_reason IS NOT NULL",
        )
        .fetch_one(&app.db())
        .await
        .unwrap()
    };
    poll_until("the two refused events parked", WAIT, || async {
        (parked().await == 2).then_some(())
    })
    .await;
    assert_eq!(app.metric("settle_outbox_parked_total").await, 2.0);
    // The other subscriber: the accepted event once, each refused one once per attempt, never
    // once per relay pass.
    let copies = counted(&app.take_messages(&other, 5).await);
    let mut times: Vec<usize> = copies.values().copied().collect();
    times.sort_unstable();
    assert_eq!(times, [1, 2, 2], "{copies:?}");
    // Parked events hold nothing up: a later one goes out at once.
    app.create_invoice("inv_park_later", "cust", None, "GBP", 1000)
        .await;
    app.deliver_stripe(&payment_for("inv_park_later", "evt_park_later"))
        .await;
    let later = app.take_messages(&other, 1).await;
    assert_eq!(later.len(), 1);
    assert!(
        later[0]
            .message_id
            .as_deref()
            .unwrap()
            .contains("evt_park_later")
    );

    let (code, out, err) = settle(&app, &["outbox", "parked", "--output", "json"]).await;
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed[0]["attempts"], 2);
    // The subscriber catches up; the operator sends the parked events again.
    let first = app.take_messages(&full, 1).await;
    let (code, _, err) = settle(&app, &["outbox", "retry", "--all"]).await;
    assert_eq!(code, 0, "{err}");
    let received = std::sync::Mutex::new(first);
    poll_until("the parked events in the full queue", WAIT, || async {
        let taken = app.take_messages(&full, 0).await;
        let mut received = received.lock().unwrap();
        received.extend(taken);
        (counted(&received).len() == 3).then_some(())
    })
    .await;
    let (code, _, _) = settle(&app, &["outbox", "retry", "--all"]).await;
    assert_eq!(code, 3, "nothing parked is left once they are sent");
    app.stop().await;
}

/// A transaction that still holds the head of the relay's work list (a holder that lost its
/// lease mid-pass, its transaction not yet ended) holds the relay back: the new holder never
/// skips past it to send an invoice's later events first.
#[tokio::test]
async fn the_relay_never_skips_rows_another_transaction_holds_so_an_invoices_events_keep_their_order()
 {
    // The test holds the relay's lease from before the app starts: rows wait on the work list.
    let (url, db) = database_before_migration(i64::MAX).await;
    let session = || async {
        <sqlx::PgConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap()
    };
    let mut lease = session().await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(settle::lease::OUTBOX_RELAY)
        .execute(&mut lease)
        .await
        .unwrap();
    let app = spawn_app_with(AppOptions {
        role: settle::role::Role::Run,
        database_url: Some(url.clone()),
        tweak: Box::new(|settings| {
            Retries::PATIENT.apply_to(settings);
            // The schema is there; this registers the configured account.
            settings.database.migrate_on_start = true;
        }),
        ..AppOptions::default()
    })
    .await;
    let subscriber = app.subscribe().await;
    app.create_customer("cust").await;
    app.create_invoice("inv_order", "cust", None, "GBP", 3000)
        .await;
    for (n, amount) in [(1, 1000), (2, 2000)] {
        let event = StripeEvent::new("payment_intent.succeeded", &format!("evt_order{n}"))
            .created(chrono::Utc::now().timestamp())
            .payment(&format!("pi_order{n}"), amount, "gbp")
            .invoice_id("inv_order")
            .to_bytes();
        app.deliver_stripe(&event).await;
    }
    app.wait_invoice_status("inv_order", "PAID").await;
    let pending: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox_pending ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    assert!(pending.len() >= 3, "{pending:?}");
    // A stale holder's transaction keeps the first row; the lease is free again.
    let mut stale_session = session().await;
    let mut stale = sqlx::Connection::begin(&mut stale_session).await.unwrap();
    sqlx::query("SELECT id FROM outbox_pending WHERE id = $1 FOR UPDATE")
        .bind(pending[0])
        .execute(&mut *stale)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(settle::lease::OUTBOX_RELAY)
        .execute(&mut lease)
        .await
        .unwrap();
    // The relay takes the lease and tries twice (every 100 ms), failing on the held row; a relay
    // that skipped locked rows would have sent the later ones instead.
    poll_until("two relay passes held back", WAIT, || async {
        (app.metric("settle_outbox_pass_failures_total").await >= 2.0).then_some(())
    })
    .await;
    assert_eq!(
        app.take_messages(&subscriber, 0).await.len(),
        0,
        "nothing published past the held row"
    );
    stale.commit().await.unwrap();
    let messages = app.take_messages(&subscriber, pending.len()).await;
    let ids: Vec<String> = messages
        .iter()
        .map(|m| m.message_id.clone().unwrap())
        .collect();
    let expected: Vec<String> =
        sqlx::query_scalar("SELECT o.message_id FROM outbox o WHERE o.id = ANY($1) ORDER BY o.id")
            .bind(&pending)
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(ids, expected, "published in commit order");
    // Each carries its sequence in `data`: the invoice's events, growing in commit order.
    let sequences: Vec<i64> = messages
        .iter()
        .map(|m| {
            let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
            body["data"]["sequence"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(sequences, pending);
    app.stop().await;
}

/// A work queue deleted under a running worker (an operator's mistake, a policy) is declared
/// again when the consumer is cancelled, and consuming resumes.
#[tokio::test]
async fn a_deleted_work_queue_is_declared_again_and_consumed() {
    let app = spawn_worker(Retries::PATIENT).await;
    app.create_customer("cust").await;
    app.create_invoice("inv_before", "cust", None, "GBP", 1000)
        .await;
    app.create_invoice("inv_after", "cust", None, "GBP", 1000)
        .await;
    app.deliver_stripe(&payment_for("inv_before", "evt_before"))
        .await;
    app.wait_invoice_status("inv_before", "PAID").await;

    app.delete_queue(&app.queue("reconcile")).await;
    // Until the worker has declared it again, intake's mandatory publish has no route: 503,
    // and the provider retries, as a provider would.
    let after = payment_for("inv_after", "evt_after");
    poll_until("the event queued again", WAIT, || async {
        (app.post_stripe_signed(&after).await.status() == 200).then_some(())
    })
    .await;
    app.wait_invoice_status("inv_after", "PAID").await;
    app.stop().await;
}

/// Sessions holding the outbox relay's lease (an advisory lock, `lease`).
async fn relay_lease_holders(db: &sqlx::PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks
         WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND ((classid::bigint << 32) | objid::bigint) = $1",
    )
    .bind(settle::lease::OUTBOX_RELAY)
    .fetch_all(db)
    .await
    .unwrap()
}

/// Registers invoice `inv_<tag>` of customer `cust` and pays it with an event `app` applies.
async fn pay_through(app: &TestApp, tag: &str) {
    let invoice = format!("inv_{tag}");
    app.create_invoice(&invoice, "cust", None, "GBP", 1000)
        .await;
    app.deliver_stripe(&payment_for(&invoice, &format!("evt_{tag}")))
        .await;
}

/// Two worker processes on one database: one relays at a time (reconciliation events go out in
/// commit order, as from one relay), whichever process committed them, and when it stops the
/// other takes over.
#[tokio::test]
async fn one_worker_process_relays_at_a_time_and_the_other_takes_over_when_it_stops() {
    let first = spawn_worker(Retries::PATIENT).await;
    let second = spawn_app_with(AppOptions {
        role: settle::role::Role::Run,
        database_url: Some(first.database_url().to_owned()),
        tweak: Box::new(|settings| Retries::PATIENT.apply_to(settings)),
        ..AppOptions::default()
    })
    .await;
    let db = first.db();
    let queues = [
        first
            .subscribe_as("paid", "invoice.paid", FieldTable::default())
            .await,
        second
            .subscribe_as("paid", "invoice.paid", FieldTable::default())
            .await,
    ];
    let holder = poll_until("one process to take the relay's lease", WAIT, || async {
        let holders = relay_lease_holders(&db).await;
        (holders.len() == 1).then(|| holders[0])
    })
    .await;

    // An event the second process applies is published by whichever holds the lease, to its
    // prefix's exchange (the two test apps have prefixes of their own).
    first.create_customer("cust").await;
    pay_through(&second, "lease1").await;
    let relayed_by = poll_until("invoice.paid published once", WAIT, || async {
        let mut seen = Vec::new();
        for (n, (app, queue)) in [(&first, &queues[0]), (&second, &queues[1])]
            .into_iter()
            .enumerate()
        {
            if !app.take_messages(queue, 0).await.is_empty() {
                seen.push(n);
            }
        }
        (!seen.is_empty()).then_some(seen)
    })
    .await;
    assert_eq!(
        relayed_by.len(),
        1,
        "published by one relay: {relayed_by:?}"
    );
    assert_eq!(
        relay_lease_holders(&db).await,
        [holder],
        "the lease stayed put"
    );

    // The holder stops; the other process takes the lease and relays what it applies next.
    let (survivor, queue) = if relayed_by[0] == 0 {
        first.stop().await;
        (second, &queues[1])
    } else {
        second.stop().await;
        (first, &queues[0])
    };
    poll_until("the other process to take the lease", WAIT, || async {
        let holders = relay_lease_holders(&db).await;
        (holders.len() == 1 && holders[0] != holder).then_some(())
    })
    .await;
    pay_through(&survivor, "lease2").await;
    assert_eq!(survivor.take_messages(queue, 1).await.len(), 1);
    survivor.stop().await;
}
