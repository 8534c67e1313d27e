//! The broker edge of the worker: a relay that settles each reconciliation event on its own, and
//! consumers that come back when their queue is deleted under them.

use lapin::types::{AMQPValue, FieldTable};

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
    let mut full = FieldTable::default();
    full.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    full.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let full = app.subscribe_as("full-subscriber", "invoice.*", full).await;
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

/// Sessions holding the outbox relay's lease (an advisory lock, `repository::lease`).
async fn relay_lease_holders(db: &sqlx::PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks
         WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND ((classid::bigint << 32) | objid::bigint) = $1",
    )
    .bind(settle::repository::lease::OUTBOX_RELAY)
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
