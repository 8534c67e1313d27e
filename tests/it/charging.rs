//! Automatic charging against localstripe: an invoice registered with auto-charge is charged
//! once, a declined charge is tried again on the schedule (the clock moved forward, not slept),
//! a new method on file brings the next attempt forward, and the failure mails name the next
//! attempt's date. Nothing is charged when auto-charge is off at some level or no method is on
//! file.

use std::time::Duration;

use serde_json::{Value, json};
use settle::clock::Clock;
use settle::role::Role;

use crate::helpers::localstripe::Localstripe;
use crate::helpers::provider_api::STRIPE_KEY;
use crate::helpers::smtp::SmtpSink;
use crate::helpers::{AppOptions, STRIPE_SECRET, TestApp, poll_until, spawn_app_with};

const WAIT: Duration = Duration::from_secs(30);
/// Stripe's test cards, as localstripe knows them.
const PAYS: &str = "4242424242424242";
const DECLINES: &str = "4000000000000341";

/// The whole app, charging through `localstripe` (which posts its events back to the app), by
/// `clock`, mailing to `sink`.
async fn app(localstripe: &Localstripe, clock: &Clock, sink: &SmtpSink) -> TestApp {
    let api_base = localstripe.url();
    let app = spawn_app_with(AppOptions {
        role: Role::Run,
        smtp_url: Some(sink.url()),
        clock: clock.clone(),
        tweak: Box::new(move |settings| {
            settings.stripe.api_base = api_base;
            settings.stripe.api_key = STRIPE_KEY.to_owned().into();
            settings.charging.poll_ms = 100;
            settings.notifications.poll_ms = 100;
            settings.worker.outbox_poll_ms = 100;
        }),
        ..AppOptions::default()
    })
    .await;
    localstripe
        .send_webhooks_to(&app.url("/webhooks/stripe"), STRIPE_SECRET)
        .await;
    app
}

/// A customer whose card `reference` (`cus_…/pm_…`) is on file, with Stripe and auto-charge as
/// its payment settings.
async fn customer_on_auto_charge(app: &TestApp, id: &str, reference: &str) {
    let stripe_customer = reference.split('/').next().unwrap();
    let (status, body) = app
        .api_post(
            "/customers",
            json!({"id": id, "legalName": "Acme Ltd", "email": "ap@acme.example",
                "externalIds": [{"key": "Stripe", "value": stripe_customer}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    put_method(app, id, reference).await;
    auto_charge(app, &format!("customers/{id}"), true).await;
}

/// Stripe, with auto-charge on or off, at one level (`customers/{id}`, `invoices/{id}`, …).
async fn auto_charge(app: &TestApp, level: &str, on: bool) {
    let (status, body) = app
        .api_put(
            &format!("/payments/settings/{level}"),
            json!({"paymentProvider": "STRIPE", "autoCharge": on}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn put_method(app: &TestApp, customer: &str, reference: &str) {
    let (status, body) = app
        .api_put(
            &format!("/customers/{customer}/payment-method"),
            json!({"type": "card", "provider": "STRIPE", "referenceId": reference}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The invoice's attempts as stored: (number, state, due_at).
async fn attempts(
    app: &TestApp,
    invoice: &str,
) -> Vec<(i32, String, chrono::DateTime<chrono::Utc>)> {
    sqlx::query_as(
        "SELECT number, state, due_at FROM charges WHERE invoice_id = $1 ORDER BY number",
    )
    .bind(invoice)
    .fetch_all(&app.db())
    .await
    .unwrap()
}

async fn wait_attempts(app: &TestApp, invoice: &str, states: &[&str]) {
    poll_until(
        &format!("{invoice}'s attempts {states:?}"),
        WAIT,
        || async {
            let now: Vec<String> = attempts(app, invoice)
                .await
                .into_iter()
                .map(|a| a.1)
                .collect();
            (now == states).then_some(())
        },
    )
    .await;
}

fn statuses(intents: &[Value]) -> Vec<&str> {
    intents
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_declined_charge_is_retried_on_schedule_and_a_new_card_brings_the_payment_forward() {
    let localstripe = Localstripe::start().await;
    let sink = SmtpSink::start().await;
    let clock = Clock::adjustable();
    let app = app(&localstripe, &clock, &sink).await;
    let subscriber = app
        .subscribe_as("charges", "charge.#", Default::default())
        .await;
    let declines = localstripe.customer_with_card(DECLINES).await;
    customer_on_auto_charge(&app, "cust_auto", &declines).await;

    // Registered: charged once, declined; the next attempt is three days after the decline.
    app.create_invoice("inv_auto", "cust_auto", None, "GBP", 12_500)
        .await;
    wait_attempts(&app, "inv_auto", &["FAILED", "SCHEDULED"]).await;
    let first = localstripe.payment_intents_of("inv_auto").await;
    assert_eq!(statuses(&first), ["requires_payment_method"], "{first:?}");
    assert_eq!(first[0]["amount"], 12_500);
    assert_eq!(
        first[0]["payment_method"],
        declines.split('/').nth(1).unwrap()
    );
    let failed_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT ended_at FROM charges WHERE invoice_id = 'inv_auto' AND number = 1",
    )
    .fetch_one(&app.db())
    .await
    .unwrap();
    let due = attempts(&app, "inv_auto").await[1].2;
    assert_eq!(due - failed_at, chrono::Duration::days(3));
    // The webhook applies the failure, and the mails name the day of the next attempt.
    app.wait_invoice_status("inv_auto", "PAYMENT_FAILED").await;
    let mails = sink.wait_for(2).await;
    let day = due.format("%-d %B %Y").to_string();
    for mail in &mails {
        let text = mail.text.as_deref().unwrap();
        assert!(
            text.contains(&format!(
                "We will try the payment again on {day} with the payment method on file."
            )),
            "{text}"
        );
    }

    assert_eq!(localstripe.payment_intents_of("inv_auto").await.len(), 1);
    // Three days on, the second attempt goes: the same card declines again, and the third is
    // five days after that.
    clock.advance(chrono::Duration::days(3));
    wait_attempts(&app, "inv_auto", &["FAILED", "FAILED", "SCHEDULED"]).await;
    let rows = attempts(&app, "inv_auto").await;
    let second_failed: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT ended_at FROM charges WHERE invoice_id = 'inv_auto' AND number = 2",
    )
    .fetch_one(&app.db())
    .await
    .unwrap();
    assert_eq!(rows[2].2 - second_failed, chrono::Duration::days(5));
    assert_eq!(localstripe.payment_intents_of("inv_auto").await.len(), 2);

    // The second decline's webhook applied (its mails sent): from here only the new card can
    // bring the third attempt forward.
    let mails = sink.wait_for(4).await;
    let day = rows[2].2.format("%-d %B %Y").to_string();
    assert!(
        mails[3].text.as_deref().unwrap().contains(&day),
        "{:?}",
        mails[3].text
    );
    // A card that pays, put on file: the third attempt goes now, not in five days, and pays.
    let pays = localstripe.another_card(&declines, PAYS).await;
    put_method(&app, "cust_auto", &pays).await;
    wait_attempts(&app, "inv_auto", &["FAILED", "FAILED", "SUCCEEDED"]).await;
    let invoice = app.wait_invoice_status("inv_auto", "PAID").await;
    assert_eq!(invoice["amountPaid"], 12_500);
    let intents = localstripe.payment_intents_of("inv_auto").await;
    assert_eq!(
        statuses(&intents),
        [
            "requires_payment_method",
            "requires_payment_method",
            "succeeded"
        ]
    );
    // Each attempt had a key of its own.
    let keys: std::collections::HashSet<&str> = intents
        .iter()
        .map(|i| i["metadata"]["settle_charge"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 3);

    // The invoice shows its attempts and that nothing follows; subscribers heard each request
    // and each retry scheduled (the third twice: for day 8, then for now).
    let invoice = app.invoice("inv_auto").await;
    let shown: Vec<(&str, &str)> = invoice["charges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["state"].as_str().unwrap(),
                c["provider"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("FAILED", "STRIPE"),
            ("FAILED", "STRIPE"),
            ("SUCCEEDED", "STRIPE")
        ]
    );
    assert_eq!(invoice["charges"][0]["reason"], "card_declined");
    assert_eq!(invoice["nextCharge"]["noneBecause"], "nothing_owed");
    let announced = charge_events(&app, &subscriber, 6).await;
    let announced: Vec<(&str, i64)> = announced.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    assert_eq!(
        announced,
        [
            ("charge.requested", 1),
            ("charge.retry_scheduled", 2),
            ("charge.requested", 2),
            ("charge.retry_scheduled", 3),
            ("charge.retry_scheduled", 3),
            ("charge.requested", 3),
        ]
    );
    app.stop().await;
}

/// The first `count` charge events the subscriber's queue received: (type, attempt).
async fn charge_events(app: &TestApp, queue: &str, count: usize) -> Vec<(String, i64)> {
    app.take_messages(queue, count)
        .await
        .iter()
        .map(|message| {
            let body: Value = serde_json::from_slice(&message.body).unwrap();
            (
                message.routing_key.clone(),
                body["data"]["attempt"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn nothing_is_charged_when_any_level_turns_auto_charge_off_or_no_method_is_on_file() {
    let localstripe = Localstripe::start().await;
    let sink = SmtpSink::start().await;
    let clock = Clock::adjustable();
    let app = app(&localstripe, &clock, &sink).await;

    // The billing schedule turns it off for its invoices.
    let card = localstripe.customer_with_card(PAYS).await;
    customer_on_auto_charge(&app, "cust_sched", &card).await;
    let (status, body) = app
        .api_post(
            "/billing-schedules",
            json!({"id": "bs_manual", "customerId": "cust_sched"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    auto_charge(&app, "billing-schedules/bs_manual", false).await;
    app.create_invoice("inv_sched", "cust_sched", Some("bs_manual"), "GBP", 5_000)
        .await;
    // The same customer's invoice without the schedule is charged: the card and settings work.
    app.create_invoice("inv_charged", "cust_sched", None, "GBP", 5_000)
        .await;

    // A customer with auto-charge and no method on file.
    let (status, body) = app
        .api_post(
            "/customers",
            json!({"id": "cust_none", "legalName": "None Ltd"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    auto_charge(&app, "customers/cust_none", true).await;
    app.create_invoice("inv_none", "cust_none", None, "GBP", 5_000)
        .await;

    app.wait_invoice_status("inv_charged", "PAID").await;
    // The decision is the registration's own: no attempt was ever scheduled for the others.
    for invoice in ["inv_sched", "inv_none"] {
        assert!(attempts(&app, invoice).await.is_empty(), "{invoice}");
        assert!(
            localstripe.payment_intents_of(invoice).await.is_empty(),
            "{invoice}"
        );
    }

    // Turned off at the invoice's level after a decline: the attempt not yet sent is skipped.
    let declines = localstripe.customer_with_card(DECLINES).await;
    customer_on_auto_charge(&app, "cust_off", &declines).await;
    app.create_invoice("inv_off", "cust_off", None, "GBP", 5_000)
        .await;
    wait_attempts(&app, "inv_off", &["FAILED", "SCHEDULED"]).await;
    auto_charge(&app, "invoices/inv_off", false).await;
    clock.advance(chrono::Duration::days(3));
    wait_attempts(&app, "inv_off", &["FAILED", "SKIPPED"]).await;
    let reason: String = sqlx::query_scalar(
        "SELECT reason FROM charges WHERE invoice_id = 'inv_off' AND number = 2",
    )
    .fetch_one(&app.db())
    .await
    .unwrap();
    assert_eq!(reason, "auto_charge_off");
    assert_eq!(localstripe.payment_intents_of("inv_off").await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_card_that_needs_its_holder_is_not_retried_off_session_and_the_mail_says_so() {
    let localstripe = Localstripe::start().await;
    let sink = SmtpSink::start().await;
    let clock = Clock::adjustable();
    let app = app(&localstripe, &clock, &sink).await;
    // Stripe's test card that always asks its holder to authenticate.
    let card = localstripe.customer_with_card("4000002760003184").await;
    customer_on_auto_charge(&app, "cust_3ds", &card).await;
    app.create_invoice("inv_3ds", "cust_3ds", None, "GBP", 7_000)
        .await;
    wait_attempts(&app, "inv_3ds", &["NEEDS_AUTHENTICATION"]).await;
    let intents = localstripe.payment_intents_of("inv_3ds").await;
    assert_eq!(statuses(&intents), ["requires_action"]);
    let invoice = app.invoice("inv_3ds").await;
    assert_eq!(invoice["nextCharge"]["noneBecause"], "needs_authentication");

    // Stripe reports such an off-session attempt as failed with `authentication_required`: the
    // mail tells the customer to act, and no attempt follows.
    let intent = &intents[0];
    let failed = crate::helpers::StripeEvent::new("payment_intent.payment_failed", "evt_3ds")
        .created(chrono::Utc::now().timestamp())
        .object(|object| {
            object["id"] = intent["id"].clone();
            object["amount"] = 7_000.into();
            object["currency"] = "gbp".into();
            object["status"] = "requires_payment_method".into();
            object["metadata"] = intent["metadata"].clone();
            object["last_payment_error"] = json!({
                "type": "card_error", "code": "authentication_required",
                "message": "Your card was declined. This transaction requires authentication.",
                "decline_code": "authentication_required"});
        });
    app.deliver_stripe(&failed.to_bytes()).await;
    let mails = sink.wait_for(2).await;
    for mail in &mails {
        let text = mail.text.as_deref().unwrap();
        assert!(
            text.contains("Your bank asks you to confirm this payment yourself, so it cannot be taken automatically."),
            "{text}"
        );
    }
    let invoice = app.invoice("inv_3ds").await;
    assert_eq!(invoice["nextCharge"]["noneBecause"], "needs_authentication");
    assert_eq!(attempts(&app, "inv_3ds").await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_connected_accounts_invoice_is_charged_on_its_stripe_account_with_the_platforms_key() {
    let api = crate::helpers::provider_api::ProviderApi::start().await;
    let sink = SmtpSink::start().await;
    let api_base = api.url();
    let app = spawn_app_with(AppOptions {
        role: Role::Run,
        smtp_url: Some(sink.url()),
        tweak: Box::new(move |settings| {
            settings.stripe.api_base = api_base;
            settings.stripe.api_key = STRIPE_KEY.to_owned().into();
            settings.charging.poll_ms = 100;
        }),
        ..AppOptions::default()
    })
    .await;
    // A tenant on Stripe Connect: a connection without a key of its own, read and charged with
    // the platform's key on the connected account.
    let key = crate::helpers::account_with_key(&app, "acc_connect").await;
    let (code, _, err) = crate::helpers::settle(
        &app,
        &[
            "connections",
            "add",
            "--account",
            "acc_connect",
            "--provider",
            "stripe",
            "--external-id",
            "acct_1Connect",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let as_tenant = |method: reqwest::Method, path: &'static str, body: Value| {
        let (app, key) = (&app, &key);
        async move {
            let (status, body) = app.api_as(key, method, path, Some(body)).await;
            assert!(status < 300, "{path}: {status} {body}");
        }
    };
    as_tenant(
        reqwest::Method::POST,
        "/customers",
        json!({"id": "cust_c", "legalName": "Connected Ltd",
            "externalIds": [{"key": "Stripe", "value": "cus_Connected1"}]}),
    )
    .await;
    as_tenant(
        reqwest::Method::PUT,
        "/customers/cust_c/payment-method",
        json!({"type": "card", "provider": "STRIPE", "referenceId": "cus_Connected1/pm_Connected1"}),
    )
    .await;
    as_tenant(
        reqwest::Method::PUT,
        "/payments/settings/customers/cust_c",
        json!({"paymentProvider": "STRIPE", "autoCharge": true}),
    )
    .await;
    as_tenant(
        reqwest::Method::POST,
        "/invoices",
        json!({"id": "inv_c", "customerId": "cust_c", "number": "C-1", "currency": "EUR",
            "amountDue": 3_000}),
    )
    .await;

    let sent = poll_until("the create call", WAIT, || async {
        api.intent_requests().into_iter().next()
    })
    .await;
    let (key_sent, form) = (sent.idempotency_key, sent.form);
    assert_eq!(sent.account.as_deref(), Some("acct_1Connect"));
    let stored: String = sqlx::query_scalar(
        "SELECT idempotency_key FROM charges WHERE account_id = 'acc_connect' AND invoice_id = 'inv_c'",
    )
    .fetch_one(&app.db())
    .await
    .unwrap();
    assert_eq!(key_sent, stored);
    for pair in [
        ("amount", "3000"),
        ("currency", "eur"),
        ("confirm", "true"),
        ("off_session", "true"),
        ("customer", "cus_Connected1"),
        ("payment_method", "pm_Connected1"),
        ("metadata[invoice_id]", "inv_c"),
    ] {
        assert!(
            form.iter().any(|(k, v)| (k.as_str(), v.as_str()) == pair),
            "{pair:?} in {form:?}"
        );
    }
    poll_until("the attempt to succeed", WAIT, || async {
        let state: String = sqlx::query_scalar(
            "SELECT state FROM charges WHERE account_id = 'acc_connect' AND invoice_id = 'inv_c'",
        )
        .fetch_one(&app.db())
        .await
        .unwrap();
        (state == "SUCCEEDED").then_some(())
    })
    .await;
    app.stop().await;
}
