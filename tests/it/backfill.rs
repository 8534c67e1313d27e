//! Backfill: the providers' own event lists (stand-ins started by each test, `provider_api`)
//! read by `settle backfill`, and what the webhooks missed queued once, through the receiver's
//! exchange, whatever the pages, refusals and reruns.

use serde_json::Value;

use crate::helpers::localstripe::Localstripe;
use crate::helpers::provider_api::{GOCARDLESS_TOKEN, ProviderApi, Refusal, STRIPE_KEY};
use crate::helpers::*;

/// `settle backfill <args> --output json` against the stand-in: the exit code and the reports.
async fn backfill(app: &TestApp, api: &ProviderApi, args: &[&str]) -> (i32, Vec<Value>) {
    backfill_from(app, &api.url(), args).await
}

/// `settle backfill <args> --output json` against the provider APIs at `base`.
async fn backfill_from(app: &TestApp, base: &str, args: &[&str]) -> (i32, Vec<Value>) {
    let base = base.to_owned();
    let env = [
        ("STRIPE_API_KEY", STRIPE_KEY),
        ("STRIPE_API_BASE", base.as_str()),
        ("GOCARDLESS_ACCESS_TOKEN", GOCARDLESS_TOKEN),
        ("GOCARDLESS_API_BASE", base.as_str()),
    ];
    let args = [["backfill"].as_slice(), args, &["--output", "json"]].concat();
    let (code, out, err) = settle_with(app, &args, &env).await;
    let reports = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, reports)
}

fn counts(report: &Value) -> (u64, u64, u64, u64) {
    let n = |field: &str| report[field].as_u64().unwrap();
    (n("found"), n("known"), n("queued"), n("failed"))
}

#[tokio::test]
async fn missed_stripe_events_are_queued_once_across_pages_a_429_and_a_500() {
    let app = spawn_worker(Retries::PATIENT).await;
    let api = ProviderApi::start().await;
    app.create_customer("cust").await;
    let now = chrono::Utc::now().timestamp();
    let mut bodies = Vec::new();
    for i in 0..200 {
        let invoice = format!("inv_bf{i}");
        app.create_invoice(&invoice, "cust", None, "GBP", 1000)
            .await;
        let event = StripeEvent::new("payment_intent.succeeded", &format!("evt_bf{i}"))
            .created(now - 3600 + i)
            .payment(&format!("pi_bf{i}"), 1000, "gbp")
            .invoice_id(&invoice);
        bodies.push(event.to_bytes());
        api.add_stripe(None, event.into_json());
    }
    // Settle was down for most of them: forty arrived by webhook, the other 160 were missed.
    app.deliver_stripe_concurrently(&bodies[..40]).await;
    for i in 0..40 {
        app.wait_processed("STRIPE", &format!("evt_bf{i}")).await;
    }

    api.refuse_next(&[Refusal::TooManyRequests(1), Refusal::ServerError]);
    let (code, reports) = backfill(&app, &api, &["stripe", "--since", "2h"]).await;
    assert_eq!(code, 0, "{reports:?}");
    assert_eq!(reports[0]["source"], "default");
    assert_eq!(counts(&reports[0]), (200, 40, 160, 0));
    let requests = api.requests();
    assert_eq!(
        requests.len(),
        4,
        "refused twice, then two pages: {requests:?}"
    );
    assert!(
        requests[3].contains("starting_after=evt_bf"),
        "{requests:?}"
    );
    assert!(requests[0].contains("created%5Bgte%5D=") && requests[0].contains("limit=100"));

    for i in 0..200 {
        let invoice = app.wait_invoice_status(&format!("inv_bf{i}"), "PAID").await;
        assert_eq!(invoice["amountPaid"], 1000, "counted once: {invoice}");
    }
    // Run again: everything is known now, nothing is queued twice.
    let (code, reports) = backfill(&app, &api, &["stripe", "--since", "2h"]).await;
    assert_eq!(code, 0);
    assert_eq!(counts(&reports[0]), (200, 200, 0, 0));
    app.stop().await;
}

#[tokio::test]
async fn missed_gocardless_events_are_listed_by_cursor_and_queued_marked_backfill() {
    // Intake only: the queued messages stay on the work queue to be read.
    let app = spawn_app().await;
    let api = ProviderApi::start().await;
    let base = chrono::Utc::now() - chrono::Duration::hours(1);
    for i in 0..45 {
        let at = (base + chrono::Duration::seconds(i))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let event = GoCardlessEvent::payment(
            &format!("EV_BF{i:03}"),
            "confirmed",
            &format!("PM_BF{i:03}"),
        )
        .created_at(&at);
        api.add_gocardless(event.into_json());
    }
    // One outside the window.
    api.add_gocardless(
        GoCardlessEvent::payment("EV_OLD", "confirmed", "PM_OLD")
            .created_at("2026-01-01T00:00:00.000Z")
            .into_json(),
    );
    let (code, reports) = backfill(&app, &api, &["gocardless", "--since", "2h", "--dry-run"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        counts(&reports[0]),
        (45, 0, 45, 0),
        "a dry run queues nothing"
    );
    assert_eq!(app.queued_count(&[app.queue("reconcile")]).await, 0);

    let (code, reports) = backfill(&app, &api, &["gocardless", "--since", "2h"]).await;
    assert_eq!(code, 0);
    assert_eq!(counts(&reports[0]), (45, 0, 45, 0));
    let requests = api.requests();
    assert!(
        requests.iter().any(|r| r.contains("after=EV_BF")),
        "paged by cursor: {requests:?}"
    );
    let messages = app.take_messages(&app.queue("reconcile"), 45).await;
    assert_eq!(messages.len(), 45);
    let message = &messages[0];
    assert_eq!(message.header("source"), Some("backfill"));
    assert_eq!(message.header("provider"), Some("gocardless"));
    assert!(
        message
            .message_id
            .as_deref()
            .unwrap()
            .starts_with("gocardless:EV_BF")
    );
    let body: Value = serde_json::from_slice(&message.body).unwrap();
    assert_eq!(
        body["resource_type"], "payments",
        "the event's own JSON: {body}"
    );
    // GoCardless's list has no type filter: asking for one is a usage error, not a silent no-op.
    let args = [
        "backfill",
        "gocardless",
        "--since",
        "1h",
        "--types",
        "payments.confirmed",
    ];
    let (code, _, err) = settle_with(&app, &args, &[]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("--types filters Stripe's event list only"),
        "{err}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_connect_accounts_events_are_read_with_stripe_account_and_land_in_its_account() {
    let app = spawn_worker(Retries::PATIENT).await;
    let api = ProviderApi::start().await;
    let key_b = account_with_key(&app, "acc_b").await;
    let (code, out, err) = settle(
        &app,
        &[
            "connections",
            "add",
            "--account",
            "acc_b",
            "--provider",
            "stripe",
            "--external-id",
            "acct_1Bbackfill",
            "--mode",
            "test",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let connection = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (path, body) in [
        (
            "/customers",
            serde_json::json!({"id": "cust", "legalName": "B Ltd"}),
        ),
        (
            "/invoices",
            serde_json::json!({"id": "inv_b", "customerId": "cust", "number": "B-1",
                               "currency": "GBP", "amountDue": 700}),
        ),
    ] {
        let (status, answer) = app
            .api_as(&key_b, reqwest::Method::POST, path, Some(body))
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    let now = chrono::Utc::now().timestamp();
    api.add_stripe(
        Some("acct_1Bbackfill"),
        StripeEvent::new("payment_intent.succeeded", "evt_connect_bf")
            .created(now - 60)
            .payment("pi_connect_bf", 700, "gbp")
            .invoice_id("inv_b")
            .connected("acct_1Bbackfill")
            .into_json(),
    );
    // The platform's own events are not that account's.
    api.add_stripe(
        None,
        StripeEvent::new("payment_intent.succeeded", "evt_platform_bf")
            .created(now - 60)
            .payment("pi_platform_bf", 700, "gbp")
            .into_json(),
    );
    let args = [
        "stripe",
        "--connection",
        &connection,
        "--since",
        "1h",
        "--types",
        "payment_intent.succeeded,charge.refunded",
    ];
    let (code, reports) = backfill(&app, &api, &args).await;
    assert_eq!(code, 0, "{reports:?}");
    assert_eq!(reports[0]["source"], connection.as_str());
    assert_eq!(counts(&reports[0]), (1, 0, 1, 0));
    let listed = api.requests();
    assert!(
        listed[0].contains("types%5B%5D=payment_intent.succeeded")
            && listed[0].contains("types%5B%5D=charge.refunded"),
        "{listed:?}"
    );
    let invoice = poll_until("acc_b's invoice paid", WAIT, || async {
        let (_, invoice) = app
            .api_as(&key_b, reqwest::Method::GET, "/invoices/inv_b", None)
            .await;
        (invoice["status"] == "PAID").then_some(invoice)
    })
    .await;
    assert_eq!(invoice["amountPaid"], 700);

    // With the provider unreachable the run fails, naming why, and queues nothing.
    drop(api);
    let gone = ProviderApi::start().await;
    gone.refuse_next(&[Refusal::ServerError; 5]);
    let (code, reports) = backfill(&app, &gone, &["stripe", "--since", "1h"]).await;
    assert_eq!(code, 1);
    assert!(
        reports[0]["error"].as_str().unwrap().contains("500"),
        "{reports:?}"
    );
    app.stop().await;
}

/// A worker whose sweeper reads the stand-in every second, from a minute back on its first
/// sweep, with no lag; on `database_url` when given (a second process of the same deployment).
async fn spawn_sweeping_worker(api: &ProviderApi, database_url: Option<String>) -> TestApp {
    let base = api.url();
    spawn_app_with(AppOptions {
        role: settle::role::Role::Run,
        database_url,
        tweak: Box::new(move |settings| {
            settings.stripe.api_key = STRIPE_KEY.into();
            settings.stripe.api_base = base;
            settings.backfill.interval_secs = 1;
            settings.backfill.lag_secs = 0;
            settings.backfill.overlap_secs = 60;
            settings.backfill.first_window_hours = 1;
            Retries::PATIENT.apply_to(settings);
        }),
        ..AppOptions::default()
    })
    .await
}

#[tokio::test]
async fn the_sweeper_reconciles_the_missed_half_counts_only_it_and_outlasts_a_provider_outage() {
    let api = ProviderApi::start().await;
    let app = spawn_sweeping_worker(&api, None).await;
    app.create_customer("cust").await;
    let now = chrono::Utc::now().timestamp();
    let event = |i: usize| {
        StripeEvent::new("payment_intent.succeeded", &format!("evt_sw{i}"))
            .created(now - 5)
            .payment(&format!("pi_sw{i}"), 1000, "gbp")
            .invoice_id(&format!("inv_sw{i}"))
    };
    for i in 0..21 {
        app.create_invoice(&format!("inv_sw{i}"), "cust", None, "GBP", 1000)
            .await;
    }
    // Half arrive by webhook; only then does the provider's list show all twenty.
    let delivered: Vec<Vec<u8>> = (0..10).map(|i| event(i).to_bytes()).collect();
    app.deliver_stripe_concurrently(&delivered).await;
    for i in 0..10 {
        app.wait_processed("STRIPE", &format!("evt_sw{i}")).await;
    }
    for i in 0..20 {
        api.add_stripe(None, event(i).into_json());
    }
    for i in 0..20 {
        let invoice = app.wait_invoice_status(&format!("inv_sw{i}"), "PAID").await;
        assert_eq!(invoice["amountPaid"], 1000, "counted once: {invoice}");
    }
    let missed = "settle_backfill_missed_events_total{provider=\"stripe\"}";
    let last_success =
        "settle_backfill_last_success_timestamp_seconds{provider=\"stripe\",source=\"default\"}";
    assert_eq!(app.metric(missed).await, 10.0, "exactly the missed half");
    // Later sweeps list them again (the overlap) and find nothing new.
    let first = app.metric(last_success).await;
    poll_until("a later sweep", WAIT, || async {
        (app.metric(last_success).await > first).then_some(())
    })
    .await;
    assert_eq!(app.metric(missed).await, 10.0);
    // The gap: none in the last sweep, ten in the last one that found any.
    let gap = "settle_webhook_gap_events{provider=\"stripe\",source=\"default\"}";
    assert!(app.metrics_text().await.contains(gap));
    assert_eq!(app.metric(gap).await, 0.0);
    let (last, events, at): (i32, i32, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT last_missed, gap_events, gap_at FROM backfill_cursors WHERE source = 'default'",
    )
    .fetch_one(&app.db())
    .await
    .unwrap();
    assert_eq!((last, events, at.is_some()), (0, 10, true));

    // The provider down for a sweep: reported, and the next sweep catches up.
    api.refuse_next(&[Refusal::ServerError; 5]);
    poll_until(
        "a failed sweep",
        std::time::Duration::from_secs(30),
        || async {
            let failures = "settle_backfill_sweep_failures_total{provider=\"stripe\"}";
            (app.metric(failures).await >= 1.0).then_some(())
        },
    )
    .await;
    assert_eq!(
        app.readyz().await.0,
        200,
        "a provider's outage is not the worker's"
    );
    api.add_stripe(None, event(20).into_json());
    app.wait_invoice_status("inv_sw20", "PAID").await;
    assert_eq!(app.metric(missed).await, 11.0);
    app.stop().await;
}

#[tokio::test]
async fn two_worker_processes_sweep_one_at_a_time() {
    let api = ProviderApi::start().await;
    // Each answer takes 200 ms: two sweeps at once would overlap in the stand-in.
    api.slow_down(std::time::Duration::from_millis(200));
    let first = spawn_sweeping_worker(&api, None).await;
    let second = spawn_sweeping_worker(&api, Some(first.database_url().to_owned())).await;
    poll_until(
        "a dozen sweeps",
        std::time::Duration::from_secs(30),
        || async { (api.requests().len() >= 12).then_some(()) },
    )
    .await;
    assert_eq!(api.max_in_flight(), 1, "one sweep at a time");
    second.stop().await;
    first.stop().await;
}

/// Stripe's example PaymentIntent as the API returns it, for `id` and `amount` pence, `status`.
fn payment_intent(id: &str, amount: i64, status: &str, invoice: &str) -> Value {
    StripeEvent::new("payment_intent.succeeded", "evt_unused")
        .payment(id, amount, "gbp")
        .invoice_id(invoice)
        .object(|intent| intent["status"] = status.into())
        .into_json()["data"]["object"]
        .clone()
}

#[tokio::test]
async fn verifying_open_invoices_queues_what_stripe_settled_and_a_later_real_event_counts_nothing()
{
    let app = spawn_worker(Retries::PATIENT).await;
    let api = ProviderApi::start().await;
    app.create_customer("cust").await;
    for (invoice, intent) in [
        ("inv_v1", "pi_v1"),
        ("inv_v2", "pi_v2"),
        ("inv_v3", "pi_v3"),
    ] {
        app.create_invoice(invoice, "cust", None, "GBP", 1200).await;
        app.register_payment(invoice, "STRIPE", intent, 1200).await;
    }
    // Stripe says: the first succeeded, the second was declined, the third is still processing.
    api.set_payment_intent(None, payment_intent("pi_v1", 1200, "succeeded", "inv_v1"));
    let mut declined = payment_intent("pi_v2", 1200, "requires_payment_method", "inv_v2");
    declined_for_insufficient_funds(&mut declined);
    declined["last_payment_error"]["charge"] = "ch_v2".into();
    api.set_payment_intent(None, declined);
    api.set_payment_intent(None, payment_intent("pi_v3", 1200, "processing", "inv_v3"));

    let (code, reports) = backfill(&app, &api, &["stripe", "--verify-open-invoices"]).await;
    assert_eq!(code, 0, "{reports:?}");
    assert_eq!(counts(&reports[0]), (2, 0, 2, 0));
    let paid = app.wait_invoice_status("inv_v1", "PAID").await;
    assert_eq!(paid["amountPaid"], 1200);
    app.wait_invoice_status("inv_v2", "PAYMENT_FAILED").await;
    assert_eq!(app.invoice("inv_v3").await["status"], "OPEN");

    // The real event arrives after all: the money is counted once.
    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", "evt_v1_real")
            .created(chrono::Utc::now().timestamp())
            .payment("pi_v1", 1200, "gbp")
            .invoice_id("inv_v1")
            .to_bytes(),
    )
    .await;
    app.wait_processed("STRIPE", "evt_v1_real").await;
    let invoice = app.invoice("inv_v1").await;
    assert_eq!(invoice["amountPaid"], 1200);
    let movements = invoice["movements"].as_array().unwrap();
    assert_eq!(
        movements.len(),
        1,
        "one collection, recorded by the synthetic event: {invoice}"
    );
    assert_eq!(movements[0]["eventId"], "evt_settle_verify_pi_v1_succeeded");
    // Verified again: only the one still processing is asked about, and nothing is queued.
    let (code, reports) = backfill(&app, &api, &["stripe", "--verify-open-invoices"]).await;
    assert_eq!(code, 0);
    assert_eq!(counts(&reports[0]), (0, 0, 0, 0));
    let asked: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("/v1/payment_intents/"))
        .collect();
    assert_eq!(
        asked.len(),
        4,
        "three, then the one still processing: {asked:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn payments_made_on_localstripe_are_backfilled_from_its_event_list() {
    let app = spawn_worker(Retries::PATIENT).await;
    let stripe = Localstripe::start().await;
    app.create_customer("cust").await;
    for i in 0..3 {
        let invoice = format!("inv_ls{i}");
        app.create_invoice(&invoice, "cust", None, "GBP", 2500)
            .await;
        stripe.pay(2500, &invoice).await;
    }
    let (code, reports) = backfill_from(&app, &stripe.url(), &["stripe", "--since", "1h"]).await;
    assert_eq!(code, 0, "{reports:?}");
    assert_eq!(counts(&reports[0]), (3, 0, 3, 0));
    for i in 0..3 {
        let invoice = app.wait_invoice_status(&format!("inv_ls{i}"), "PAID").await;
        assert_eq!(invoice["amountPaid"], 2500);
    }
    let (_, reports) = backfill_from(&app, &stripe.url(), &["stripe", "--since", "1h"]).await;
    assert_eq!(counts(&reports[0]), (3, 3, 0, 0));
    app.stop().await;
}
