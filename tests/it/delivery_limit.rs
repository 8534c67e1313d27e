//! The work queue's `x-delivery-limit` is the net for a delivery that crashes the process, and
//! nothing else: RabbitMQ counts every return of a delivery (a restart, a crash) against it, so a
//! healthy event must not be returned by restarts during a database outage, nor by the crashes
//! another delivery causes.

use std::process::Stdio;

use tokio::io::AsyncBufReadExt;

use crate::helpers::*;

/// `settle worker` as its own process on the app's database and queues, consuming at once
/// (`migrate_on_start` off, as in the production shape, where `settle migrate` runs first),
/// its log to `stderr`.
fn worker_process(app: &TestApp, stderr: Stdio) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_settle"))
        .arg("worker")
        .envs(settle_env(app))
        .env("SETTLE__DATABASE__MIGRATE_ON_START", "false")
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("settle worker starts")
}

/// Waits until the child's log says `line`.
async fn logged(child: &mut tokio::process::Child, line: &str) {
    let stderr = child.stderr.as_mut().expect("piped stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let found = tokio::time::timeout(WAIT, async {
        while let Ok(Some(logged)) = lines.next_line().await {
            if logged.contains(line) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "the worker never logged {line:?}");
}

#[tokio::test]
async fn workers_killed_ten_times_during_a_database_outage_dead_letter_no_healthy_event() {
    let app = spawn_app().await; // serve: the intake, and this test's database and queues
    app.create_customer("cust").await;
    for n in 0..5 {
        app.create_invoice(&format!("inv_limit{n}"), "cust", None, "GBP", 1000)
            .await;
    }
    let outage = DatabaseOutage::begin(&app).await;
    for n in 0..5 {
        let event = StripeEvent::new("payment_intent.succeeded", &format!("evt_limit{n}"))
            .created(chrono::Utc::now().timestamp())
            .payment(&format!("pi_limit{n}"), 1000, "gbp")
            .invoice_id(&format!("inv_limit{n}"))
            .to_bytes();
        app.deliver_stripe(&event).await;
    }
    // Ten crashes, each once the worker is up and has seen the database away (the work queue's
    // delivery limit is 10: a worker that took and held the events would send them all to the
    // dead-letter queue).
    for _ in 0..10 {
        let mut worker = worker_process(&app, Stdio::piped());
        logged(&mut worker, "not consuming until it answers").await;
        worker.kill().await.unwrap();
    }
    let (work, dead) = (app.queue("reconcile"), app.queue("dead"));
    assert_eq!(
        app.queued_count(std::slice::from_ref(&dead)).await,
        0,
        "nothing dead-lettered"
    );
    assert_eq!(
        app.queued_count(&[work]).await,
        5,
        "every event still queued"
    );
    outage.end().await;
    let mut worker = worker_process(&app, Stdio::null());
    for n in 0..5 {
        app.wait_invoice_status(&format!("inv_limit{n}"), "PAID")
            .await;
    }
    assert_eq!(app.queued_count(&[dead]).await, 0);
    worker.kill().await.unwrap();
    app.stop().await;
}

fn paid(invoice: &str) -> Vec<u8> {
    StripeEvent::new("payment_intent.succeeded", &format!("evt_{invoice}"))
        .created(chrono::Utc::now().timestamp())
        .payment(&format!("pi_{invoice}"), 1000, "gbp")
        .invoice_id(invoice)
        .to_bytes()
}

/// Sessions of the app's database opened since `since` that wait for a lock. A killed worker's
/// session may wait on: PostgreSQL sees its client gone only when the wait ends.
async fn waiting_for_a_lock(db: &sqlx::PgPool, since: chrono::DateTime<chrono::Utc>) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'
           AND backend_start >= $1",
    )
    .bind(since)
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_message_that_crashes_the_worker_each_time_is_dead_lettered_alone() {
    let app = spawn_app().await; // serve: the intake, and this test's database and queues
    let db = app.db();
    app.create_customer("cust").await;
    let neighbours: Vec<String> = (0..20).map(|n| format!("inv_near{n}")).collect();
    for invoice in std::iter::once("inv_crash").chain(neighbours.iter().map(String::as_str)) {
        app.create_invoice(invoice, "cust", None, "GBP", 1000).await;
    }
    // What crashes the worker: applying `inv_crash`'s payment, which waits on a row this test
    // holds, and the test kills the worker whenever it waits. The neighbours queue behind it, so
    // a worker taking its full prefetch holds them with it.
    let mut holder = db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM invoices WHERE id = 'inv_crash' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    app.deliver_stripe(&paid("inv_crash")).await;
    for invoice in &neighbours {
        app.deliver_stripe(&paid(invoice)).await;
    }
    let dead = app.queue("dead");
    let mut crashes = 0;
    loop {
        let since: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&db)
            .await
            .unwrap();
        let mut worker = worker_process(&app, Stdio::null());
        // It takes the crashing message and waits, or the broker dead-lettered that message
        // after the delivery limit (10), and the worker goes on with the rest.
        let crashed = poll_until("the worker to take the crashing message", WAIT, || async {
            if waiting_for_a_lock(&db, since).await > 0 {
                Some(true)
            } else if app.queued_count(std::slice::from_ref(&dead)).await > 0 {
                Some(false)
            } else {
                None
            }
        })
        .await;
        if !crashed {
            worker.kill().await.unwrap();
            break;
        }
        worker.kill().await.unwrap();
        crashes += 1;
        assert!(crashes <= 15, "never dead-lettered after {crashes} crashes");
    }
    assert!(crashes > 10, "dead-lettered after only {crashes} crashes");

    // The one worker left applies every neighbour; only the crashing message is a dead letter.
    let mut worker = worker_process(&app, Stdio::null());
    for invoice in &neighbours {
        app.wait_invoice_status(invoice, "PAID").await;
    }
    let letters: Vec<String> = poll_until("the dead letter recorded", WAIT, || async {
        let letters: Vec<String> = sqlx::query_scalar("SELECT event_id FROM dead_letters")
            .fetch_all(&db)
            .await
            .unwrap();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters, ["evt_inv_crash"]);
    holder.rollback().await.unwrap();
    worker.kill().await.unwrap();
    app.stop().await;
}
