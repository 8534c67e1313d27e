//! Automatic charging against the GoCardless stand-in (`POST /payments` in GoCardless's shapes,
//! counting idempotency keys): a failed payment retried on schedule and paid on the second
//! attempt; GoCardless's own retries not doubled; a provider that rate-limits or fails retried
//! without counting as a failed charge; and a process stopped before its call, or after it
//! before the answer is stored, charging the customer exactly once.

use std::time::Duration;

use serde_json::{Value, json};
use settle::clock::Clock;
use settle::role::Role;

use crate::helpers::provider_api::{GOCARDLESS_TOKEN, INACTIVE_MANDATE, ProviderApi, Refusal};
use crate::helpers::settle as run;
use crate::helpers::smtp::SmtpSink;
use crate::helpers::{AppOptions, GoCardlessEvent, TestApp, poll_until, spawn_app_with};

const WAIT: Duration = Duration::from_secs(30);
const MANDATE: &str = "MD0000XH9A3T4C";

/// The whole app charging through `api` at `api_base`, by `clock`, on `database` (a new one when
/// `None`) and, to be another process of a deployment, with its queue `prefix`.
async fn app_on(
    api_base: String,
    clock: &Clock,
    sink: &SmtpSink,
    shared: Option<(String, String)>,
) -> TestApp {
    let (database_url, prefix) = shared.unzip();
    spawn_app_with(AppOptions {
        role: Role::Run,
        smtp_url: Some(sink.url()),
        clock: clock.clone(),
        database_url,
        prefix,
        tweak: Box::new(move |settings| {
            settings.gocardless.api_base = api_base;
            settings.gocardless.access_token = GOCARDLESS_TOKEN.to_owned().into();
            settings.charging.poll_ms = 100;
            settings.charging.send_lease_secs = 60;
            settings.notifications.poll_ms = 100;
            settings.worker.outbox_poll_ms = 100;
        }),
        ..AppOptions::default()
    })
    .await
}

/// A customer whose mandate is on file, with GoCardless and auto-charge as its settings, and an
/// invoice of theirs registered.
async fn invoice_on_auto_charge(app: &TestApp, customer: &str, invoice: &str) {
    invoice_on_mandate(app, customer, invoice, MANDATE).await;
}

async fn invoice_on_mandate(app: &TestApp, customer: &str, invoice: &str, mandate: &str) {
    app.create_customer(customer).await;
    let (status, body) = app
        .api_put(
            &format!("/customers/{customer}/payment-method"),
            json!({"type": "direct_debit", "provider": "GOCARDLESS", "referenceId": mandate}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .api_put(
            &format!("/payments/settings/customers/{customer}"),
            json!({"paymentProvider": "GOCARDLESS", "autoCharge": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.create_invoice(invoice, customer, None, "GBP", 12_500)
        .await;
}

async fn wait_states(app: &TestApp, invoice: &str, states: &[&str]) -> Vec<Value> {
    poll_until(
        &format!("{invoice}'s attempts {states:?}"),
        WAIT,
        || async {
            let invoice = app.invoice(invoice).await;
            let charges = invoice["charges"].as_array().unwrap().clone();
            let now: Vec<&str> = charges
                .iter()
                .map(|c| c["state"].as_str().unwrap())
                .collect();
            (now == states).then_some(charges)
        },
    )
    .await
}

/// GoCardless's event about `payment`, as its webhook sends it: the fixture's, with the
/// payment's metadata as `resource_metadata`.
fn event(id: &str, action: &str, payment: &Value, will_retry: bool) -> GoCardlessEvent {
    let metadata = payment["metadata"].clone();
    GoCardlessEvent::payment(id, action, payment["id"].as_str().unwrap()).edit(move |event| {
        event["links"]["organisation"] = "OR00001JZWPCMA".into();
        event["resource_metadata"] = metadata;
        event["details"]["will_attempt_retry"] = will_retry.into();
        event["created_at"] = chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into();
    })
}

#[tokio::test]
async fn a_failed_payment_is_retried_on_schedule_and_paid_on_the_second_attempt() {
    let api = ProviderApi::start().await;
    let sink = SmtpSink::start().await;
    let clock = Clock::adjustable();
    let app = app_on(api.url(), &clock, &sink, None).await;
    invoice_on_auto_charge(&app, "cust_dd", "inv_dd").await;

    // Charged once, against the mandate, naming the invoice and the attempt.
    let charges = wait_states(&app, "inv_dd", &["SENT"]).await;
    let payments = api.gocardless_payments();
    assert_eq!(payments.len(), 1);
    let first = &payments[0];
    assert_eq!(first["links"]["mandate"], MANDATE);
    assert_eq!(
        (first["amount"].as_i64(), first["currency"].as_str()),
        (Some(12_500), Some("GBP"))
    );
    assert_eq!(first["metadata"]["invoice_id"], "inv_dd");
    assert_eq!(
        first["metadata"]["settle_charge"],
        charges[0]["idempotencyKey"]
    );
    assert_eq!(charges[0]["providerPaymentId"], first["id"]);

    // It fails, and GoCardless will not retry: settle's second attempt is three days out.
    app.deliver_gocardless([event("EV_DD_F1", "failed", first, false)])
        .await;
    let charges = wait_states(&app, "inv_dd", &["FAILED", "SCHEDULED"]).await;
    assert_eq!(charges[0]["reason"], "insufficient_funds");
    let mails = sink.wait_for(2).await;
    let due: chrono::DateTime<chrono::Utc> = charges[1]["dueAt"].as_str().unwrap().parse().unwrap();
    let day = due.format("%-d %B %Y").to_string();
    assert!(
        mails[0].text.as_deref().unwrap().contains(&day),
        "{:?}",
        mails[0].text
    );

    // Three days on: the second payment, and it is paid.
    clock.advance(chrono::Duration::days(3));
    wait_states(&app, "inv_dd", &["FAILED", "SENT"]).await;
    let payments = api.gocardless_payments();
    assert_eq!(payments.len(), 2);
    app.deliver_gocardless([event("EV_DD_C2", "confirmed", &payments[1], false)])
        .await;
    let invoice = app.wait_invoice_status("inv_dd", "PAID").await;
    assert_eq!(invoice["amountPaid"], 12_500);
    wait_states(&app, "inv_dd", &["FAILED", "SUCCEEDED"]).await;
    assert_eq!(api.payment_keys().len(), 2, "one create call per attempt");
    assert_ne!(
        payments[0]["metadata"]["settle_charge"],
        payments[1]["metadata"]["settle_charge"]
    );

    // The bank returns it late: the invoice owes again, and the third attempt is five days out.
    app.deliver_gocardless([event("EV_DD_F2", "failed", &payments[1], false)])
        .await;
    app.wait_invoice_status("inv_dd", "PAYMENT_FAILED").await;
    let charges = wait_states(&app, "inv_dd", &["FAILED", "FAILED", "SCHEDULED"]).await;
    let failed: chrono::DateTime<chrono::Utc> =
        charges[1]["endedAt"].as_str().unwrap().parse().unwrap();
    let due: chrono::DateTime<chrono::Utc> = charges[2]["dueAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(due - failed, chrono::Duration::days(5));
    app.stop().await;
}

#[tokio::test]
async fn gocardless_retrying_itself_is_not_doubled_and_its_refusals_for_now_are_no_failures() {
    let api = ProviderApi::start().await;
    let sink = SmtpSink::start().await;
    let clock = Clock::adjustable();
    // Rate-limited, then down: the same request again (after Retry-After, then a backoff), and
    // then created. None of it is a failed charge.
    api.refuse_next(&[Refusal::TooManyRequests(1), Refusal::ServerError]);
    let app = app_on(api.url(), &clock, &sink, None).await;
    invoice_on_auto_charge(&app, "cust_gc", "inv_gc").await;
    poll_until("two refused sends", WAIT, || async {
        (api.payment_keys().len() >= 2).then_some(())
    })
    .await;
    clock.advance(chrono::Duration::minutes(1));
    let charges = wait_states(&app, "inv_gc", &["SENT"]).await;
    assert_eq!(charges[0]["sends"], 3);
    let keys = api.payment_keys();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|key| *key == keys[0]), "{keys:?}");
    assert_eq!(api.gocardless_payments().len(), 1);
    let sends = |answer: &'static str| {
        let app = &app;
        async move {
            app.metric(&format!(
                "settle_charge_sends_total{{provider=\"GOCARDLESS\",answer=\"{answer}\"}}"
            ))
            .await
        }
    };
    assert_eq!((sends("later").await, sends("created").await), (2.0, 1.0));

    // GoCardless says it will retry: settle schedules nothing, and the mail says GoCardless will.
    let payment = &api.gocardless_payments()[0];
    app.deliver_gocardless([event("EV_GC_F1", "failed", payment, true)])
        .await;
    wait_states(&app, "inv_gc", &["PROVIDER_RETRIES"]).await;
    let invoice = app.invoice("inv_gc").await;
    assert_eq!(invoice["nextCharge"]["noneBecause"], "provider_retries");
    let mails = sink.wait_for(2).await;
    assert!(
        mails[0]
            .text
            .as_deref()
            .unwrap()
            .contains("GoCardless will retry the payment automatically"),
        "{:?}",
        mails[0].text
    );
    // GoCardless's own retries fail in the end: settle's schedule takes over from there.
    app.deliver_gocardless([event("EV_GC_F2", "failed", payment, false)])
        .await;
    wait_states(&app, "inv_gc", &["FAILED", "SCHEDULED"]).await;
    app.stop().await;
}

#[tokio::test]
async fn a_process_stopped_before_its_call_or_before_storing_the_answer_charges_once() {
    let api = ProviderApi::start().await;
    let sink = SmtpSink::start().await;

    // Before the call: the first process cannot reach GoCardless (nothing listens where it
    // calls) and is stopped with the attempt taken; the second sends it, once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let clock = Clock::adjustable();
    let first = app_on(nowhere, &clock, &sink, None).await;
    invoice_on_auto_charge(&first, "cust_a", "inv_a").await;
    wait_states(&first, "inv_a", &["SENDING"]).await;
    let shared = Some((first.database_url().to_owned(), first.prefix.clone()));
    first.stop().await;
    let later = Clock::adjustable();
    later.advance(chrono::Duration::minutes(2));
    let second = app_on(api.url(), &later, &sink, shared.clone()).await;
    wait_states(&second, "inv_a", &["SENT"]).await;
    assert_eq!(api.gocardless_payments().len(), 1);
    assert_eq!(api.payment_keys().len(), 1);
    second.stop().await;

    // After the call: GoCardless creates the payment but answers late, and the process stops
    // meanwhile; the next one sends the same key and GoCardless names the payment it created.
    api.answer_late(Duration::from_secs(5));
    let third = app_on(api.url(), &clock, &sink, shared.clone()).await;
    invoice_on_auto_charge(&third, "cust_b", "inv_b").await;
    poll_until("the payment created", WAIT, || async {
        (api.gocardless_payments().len() == 2).then_some(())
    })
    .await;
    third.stop().await;
    api.answer_late(Duration::ZERO);
    let fourth = app_on(api.url(), &later, &sink, shared).await;
    let charges = wait_states(&fourth, "inv_b", &["SENT"]).await;
    let payments = api.gocardless_payments();
    assert_eq!(payments.len(), 2, "one payment per invoice");
    assert_eq!(charges[0]["providerPaymentId"], payments[1]["id"]);
    let keys = api.payment_keys();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[1], keys[2], "the same attempt, the same key");
    fourth.stop().await;
}

#[tokio::test]
async fn operators_see_bring_forward_and_cancel_an_invoices_automatic_charges() {
    let api = ProviderApi::start().await;
    let sink = SmtpSink::start().await;
    let clock = Clock::adjustable();
    let app = app_on(api.url(), &clock, &sink, None).await;
    invoice_on_auto_charge(&app, "cust_ops", "inv_ops").await;
    wait_states(&app, "inv_ops", &["SENT"]).await;
    let first = api.gocardless_payments()[0].clone();
    app.deliver_gocardless([event("EV_OPS_F1", "failed", &first, false)])
        .await;
    wait_states(&app, "inv_ops", &["FAILED", "SCHEDULED"]).await;

    let (code, out, err) = run(&app, &["charges", "show", "inv_ops"]).await;
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["charges"].as_array().unwrap().len(), 2, "{shown}");
    assert_eq!(shown["nextCharge"]["attempt"], 2, "{shown}");
    let (code, out, err) = run(
        &app,
        &["charges", "list", "--state", "failed", "--output", "json"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["invoiceId"], "inv_ops", "{listed}");
    assert_eq!(listed[0]["reason"], "insufficient_funds", "{listed}");

    // Brought forward: the second attempt goes now, the clock untouched.
    let (code, _, err) = run(&app, &["charges", "retry-now", "inv_ops"]).await;
    assert_eq!(code, 0, "{err}");
    wait_states(&app, "inv_ops", &["FAILED", "SENT"]).await;
    let second = api.gocardless_payments()[1].clone();
    app.deliver_gocardless([event("EV_OPS_F2", "failed", &second, false)])
        .await;
    wait_states(&app, "inv_ops", &["FAILED", "FAILED", "SCHEDULED"]).await;

    // Cancelled, with a reason: no attempt follows, not even when the clock passes its day.
    let (code, _, _) = run(&app, &["charges", "cancel", "inv_ops"]).await;
    assert_eq!(code, 2, "a cancel must say why");
    let reason = "the customer pays by bank transfer";
    let (code, _, err) = run(&app, &["charges", "cancel", "inv_ops", "--reason", reason]).await;
    assert_eq!(code, 0, "{err}");
    let charges = wait_states(&app, "inv_ops", &["FAILED", "FAILED", "CANCELLED"]).await;
    assert_eq!(
        charges[2]["reason"],
        format!("cancelled by an operator: {reason}")
    );
    clock.advance(chrono::Duration::days(30));
    let invoice = app.invoice("inv_ops").await;
    assert_eq!(invoice["nextCharge"]["noneBecause"], "cancelled");
    assert_eq!(api.gocardless_payments().len(), 2);

    // Nothing waiting, no such invoice: exit 3.
    let (code, _, _) = run(&app, &["charges", "retry-now", "inv_ops"]).await;
    assert_eq!(code, 3);
    let (code, _, _) = run(&app, &["charges", "show", "inv_nope"]).await;
    assert_eq!(code, 3);
    let (code, out, _) = run(&app, &["charges", "list", "--account", "acc_nobody"]).await;
    assert_eq!(code, 3, "{out}");
    app.stop().await;
}

#[tokio::test]
async fn an_accounts_own_waits_are_used_and_the_last_attempts_mail_says_it_was_the_last() {
    let api = ProviderApi::start().await;
    let sink = SmtpSink::start().await;
    let clock = Clock::adjustable();
    let app = app_on(api.url(), &clock, &sink, None).await;
    let (code, _, err) = run(&app, &["accounts", "retries", "acc_default", "2"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&app, &["accounts", "retries", "acc_default", "2,0"]).await;
    assert_eq!(code, 2, "a wait of 0 days is refused: {err}");
    let (code, _, _) = run(&app, &["accounts", "retries", "acc_nobody", "2"]).await;
    assert_eq!(code, 3);

    invoice_on_auto_charge(&app, "cust_own", "inv_own").await;
    wait_states(&app, "inv_own", &["SENT"]).await;
    let first = api.gocardless_payments()[0].clone();
    app.deliver_gocardless([event("EV_OWN_F1", "failed", &first, false)])
        .await;
    let charges = wait_states(&app, "inv_own", &["FAILED", "SCHEDULED"]).await;
    let failed: chrono::DateTime<chrono::Utc> =
        charges[0]["endedAt"].as_str().unwrap().parse().unwrap();
    let due: chrono::DateTime<chrono::Utc> = charges[1]["dueAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        due - failed,
        chrono::Duration::days(2),
        "the account's wait, not the default 3"
    );

    clock.advance(chrono::Duration::days(2));
    wait_states(&app, "inv_own", &["FAILED", "SENT"]).await;
    let second = api.gocardless_payments()[1].clone();
    app.deliver_gocardless([event("EV_OWN_F2", "failed", &second, false)])
        .await;
    wait_states(&app, "inv_own", &["FAILED", "FAILED"]).await;
    let invoice = app.invoice("inv_own").await;
    assert_eq!(invoice["nextCharge"]["noneBecause"], "schedule_exhausted");
    let mails = sink.wait_for(4).await;
    let last = mails[3].text.as_deref().unwrap();
    assert!(
        last.contains("That was the last automatic attempt."),
        "{last}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_payment_gocardless_refuses_is_dead_lettered_with_its_reason_and_not_retried() {
    let api = ProviderApi::start().await;
    let sink = SmtpSink::start().await;
    let clock = Clock::adjustable();
    let app = app_on(api.url(), &clock, &sink, None).await;
    invoice_on_mandate(&app, "cust_gone", "inv_gone", INACTIVE_MANDATE).await;
    let charges = wait_states(&app, "inv_gone", &["REFUSED"]).await;
    assert_eq!(
        charges[0]["reason"],
        "GoCardless answered 422 Unprocessable Entity: Mandate is inactive"
    );
    let invoice = app.invoice("inv_gone").await;
    assert_eq!(invoice["nextCharge"]["noneBecause"], "refused");
    let (code, out, err) = run(
        &app,
        &["charges", "list", "--state", "refused", "--output", "json"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(api.payment_keys().len(), 1, "sent once");
    let refused = app
        .metric("settle_charge_sends_total{provider=\"GOCARDLESS\",answer=\"refused\"}")
        .await;
    assert_eq!(refused, 1.0);
    app.stop().await;
}

#[tokio::test]
async fn an_attempt_unanswered_for_23_hours_is_not_sent_again() {
    let sink = SmtpSink::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let clock = Clock::adjustable();
    let app = app_on(nowhere, &clock, &sink, None).await;
    invoice_on_auto_charge(&app, "cust_down", "inv_down").await;
    let charges = wait_states(&app, "inv_down", &["SENDING"]).await;
    poll_until("a send that found nobody", WAIT, || async {
        let invoice = app.invoice("inv_down").await;
        invoice["charges"][0]["reason"].as_str().map(str::to_owned)
    })
    .await;
    assert_eq!(charges[0]["sends"], 1);
    clock.advance(chrono::Duration::hours(23));
    let charges = wait_states(&app, "inv_down", &["REFUSED"]).await;
    let reason = charges[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("unanswered for 23 hours"), "{reason}");
    assert_eq!(
        app.invoice("inv_down").await["nextCharge"]["noneBecause"],
        "refused"
    );
    app.stop().await;
}
