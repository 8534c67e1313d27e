//! The work queue's `x-delivery-limit` is the net for a delivery that crashes the process, and
//! nothing else: RabbitMQ counts every return of a delivery (a restart, a crash) against it, so a
//! healthy event must not be returned by restarts during a database outage.

use std::process::Stdio;

use tokio::io::AsyncBufReadExt;

use crate::helpers::*;

/// `settle worker` as its own process on the app's database and queues, consuming at once
/// (`migrate_on_start` off, as in the production shape, where `settle migrate` runs first).
fn worker_process(app: &TestApp) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_settle"))
        .arg("worker")
        .envs(settle_env(app))
        .env("SETTLE__DATABASE__MIGRATE_ON_START", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
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
        let mut worker = worker_process(&app);
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
    let mut worker = worker_process(&app);
    for n in 0..5 {
        app.wait_invoice_status(&format!("inv_limit{n}"), "PAID")
            .await;
    }
    assert_eq!(app.queued_count(&[dead]).await, 0);
    worker.kill().await.unwrap();
    app.stop().await;
}
