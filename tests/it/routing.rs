//! Whose event is it: Connect events through the platform endpoint routed by their `account`,
//! per-connection endpoints verified with that connection's secrets (rotation, and through a
//! database outage), and events for accounts settle does not know dead-lettered, never lost.

use serde_json::Value;

use crate::helpers::*;

const T0: i64 = 1_790_000_000;
const CONNECTED: &str = "acct_1Nv0FGQ9RKHgCVdK";
/// The Stripe events dead-lettered for want of their account (the GoCardless one of the first
/// test stays: its organisation is never added).
const REPLAY_STRIPE_UNKNOWN: [&str; 6] = [
    "dlq",
    "replay",
    "--reason",
    "unknown_account",
    "--provider",
    "stripe",
];

/// Where `settle connections add` finds the connection's secrets.
pub(crate) enum Secrets<'a> {
    Nothing,
    InEnv(&'a [(&'a str, &'a str)]),
    OnStdin(&'a str),
}

/// `settle connections add` for the test app's own account; the connection id.
async fn add_connection(
    app: &TestApp,
    provider: &str,
    external_id: &str,
    extra: &[&str],
    secrets: Secrets<'_>,
) -> String {
    let account = app.settings.account.id.clone();
    add_connection_for(app, &account, provider, external_id, extra, secrets).await
}

/// `settle connections add` for `account`; the connection id.
pub(crate) async fn add_connection_for(
    app: &TestApp,
    account: &str,
    provider: &str,
    external_id: &str,
    extra: &[&str],
    secrets: Secrets<'_>,
) -> String {
    let args = [
        [
            "connections",
            "add",
            "--account",
            account,
            "--provider",
            provider,
            "--external-id",
            external_id,
            "--output",
            "json",
        ]
        .as_slice(),
        extra,
    ]
    .concat();
    let (env, stdin, flag) = match secrets {
        Secrets::Nothing => (&[][..], "", None),
        Secrets::InEnv(env) => (env, "", None),
        Secrets::OnStdin(text) => (&[][..], text, Some("--secrets-from-stdin")),
    };
    let args = [args.as_slice(), flag.as_slice()].concat();
    let (code, out, err) = settle_with_stdin(app, &args, env, stdin).await;
    assert_eq!(code, 0, "settle {args:?}: {err}");
    let added: Value = serde_json::from_str(&out).unwrap();
    added["id"].as_str().unwrap().to_owned()
}

fn paid(event_id: &str, payment_intent: &str, invoice: &str) -> StripeEvent {
    StripeEvent::new("payment_intent.succeeded", event_id)
        .created(T0)
        .payment(payment_intent, 1500, "gbp")
        .invoice_id(invoice)
}

pub(crate) async fn post_to_connection(
    app: &TestApp,
    connection: &str,
    body: &[u8],
    secret: &str,
) -> reqwest::Response {
    let signature = settle::providers::stripe::sign(
        &secrecy::SecretString::from(secret),
        chrono::Utc::now().timestamp(),
        body,
    );
    app.http
        .post(app.url(&format!("/webhooks/stripe/{connection}")))
        .header("Stripe-Signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// Posts until the receiver has loaded the connection's secrets (it refreshes in the
/// background); the first answer that is not `unknown_connection`.
pub(crate) async fn post_once_loaded(
    app: &TestApp,
    connection: &str,
    body: &[u8],
    secret: &str,
) -> reqwest::Response {
    poll_until("the connection's secrets loaded", WAIT, || async {
        let response = post_to_connection(app, connection, body, secret).await;
        (response.status() != 404).then_some(response)
    })
    .await
}

pub(crate) async fn dead_letter_reason(app: &TestApp, event_id: &str) -> String {
    let db = app.db();
    poll_until("the dead letter", WAIT, || async {
        sqlx::query_scalar("SELECT reason FROM dead_letters WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&db)
            .await
            .unwrap()
    })
    .await
}

/// A worker whose receiver reloads connection secrets every second.
async fn spawn_routing_app() -> TestApp {
    spawn_app_with(AppOptions {
        role: settle::role::Role::Run,
        tweak: Box::new(|settings| {
            settings.webhooks.connection_secrets_refresh_secs = 1;
            settings.worker.retry_delays_ms = vec![100, 200];
            settings.worker.max_attempts = 3;
            settings.worker.outbox_poll_ms = 100;
        }),
        ..AppOptions::default()
    })
    .await
}

#[tokio::test]
async fn a_connect_event_for_an_unknown_account_is_dead_lettered_then_applied_once_replayed() {
    let app = spawn_routing_app().await;
    app.create_customer("cust").await;
    app.create_invoice("inv_connect", "cust", None, "GBP", 1500)
        .await;
    let body = paid("evt_connect", "pi_connect", "inv_connect")
        .connected(CONNECTED)
        .to_bytes();
    app.deliver_stripe(&body).await;
    assert_eq!(
        dead_letter_reason(&app, "evt_connect").await,
        "unknown_account"
    );
    assert_eq!(app.invoice("inv_connect").await["status"], "OPEN");

    // A GoCardless partner app's event for an organisation settle does not know, likewise.
    app.deliver_gocardless([
        GoCardlessEvent::payment("EV_unknown_org", "confirmed", "PM_unknown")
            .links(serde_json::json!({"payment": "PM_unknown", "organisation": "OR000UNKNOWN"})),
    ])
    .await;
    assert_eq!(
        dead_letter_reason(&app, "EV_unknown_org").await,
        "unknown_account"
    );

    // A test-mode event for a live connection is no better.
    add_connection(
        &app,
        "stripe",
        CONNECTED,
        &["--mode", "live"],
        Secrets::Nothing,
    )
    .await;
    let test_mode = paid("evt_connect_test", "pi_connect_test", "inv_connect")
        .connected(CONNECTED)
        .livemode(false)
        .to_bytes();
    app.deliver_stripe(&test_mode).await;
    assert_eq!(
        dead_letter_reason(&app, "evt_connect_test").await,
        "livemode_mismatch"
    );

    // The connection the event needs: the account's test-mode one. Replaying by reason applies
    // the event once; a second replay finds nothing left to replay.
    add_connection(
        &app,
        "stripe",
        CONNECTED,
        &["--mode", "test"],
        Secrets::Nothing,
    )
    .await;
    let account_id = app.settings.account.id.clone();
    let ours = app.subscribe_to_account("ours", &account_id).await;
    let theirs = app.subscribe_to_account("theirs", "acc_other").await;
    let (code, out, err) = settle(&app, &REPLAY_STRIPE_UNKNOWN).await;
    assert_eq!(code, 0, "{out}{err}");
    let invoice = app.wait_invoice_status("inv_connect", "PAID").await;
    assert_eq!(invoice["amountPaid"], 1500);
    let (code, _, _) = settle(&app, &REPLAY_STRIPE_UNKNOWN).await;
    assert_eq!(code, 3, "nothing left to replay");
    let (account, outcome): (String, String) = sqlx::query_as(
        "SELECT account_id, outcome FROM webhook_events WHERE event_id = 'evt_connect'",
    )
    .fetch_one(&app.db())
    .await
    .unwrap();
    assert_eq!(
        (account.as_str(), outcome.as_str()),
        (account_id.as_str(), "applied")
    );
    // Its reconciliation events carry the account, in the body and in the header a
    // per-account binding matches on; another account's binding gets none of them.
    let messages = app.take_messages(&ours, 2).await;
    let types: Vec<_> = messages.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(types, ["payment.succeeded", "invoice.paid"]);
    for message in &messages {
        assert_eq!(message.header("account-id"), Some(account_id.as_str()));
        let body: Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(body["accountId"], account_id.as_str());
    }
    assert_eq!(app.queued_count(&[theirs]).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_connection_endpoint_accepts_old_and_new_secrets_while_rotating() {
    let app = spawn_routing_app().await;
    app.create_customer("cust").await;
    for invoice in ["inv_rot1", "inv_rot2", "inv_rot3"] {
        app.create_invoice(invoice, "cust", None, "GBP", 1500).await;
    }
    let connection = add_connection(
        &app,
        "stripe",
        CONNECTED,
        &["--mode", "test"],
        Secrets::InEnv(&[(CONNECTION_WEBHOOK_SECRETS, "whsec_old")]),
    )
    .await;
    let first = paid("evt_rot1", "pi_rot1", "inv_rot1").to_bytes();
    let response = post_once_loaded(&app, &connection, &first, "whsec_old").await;
    assert_eq!(response.status(), 200);
    // The platform's secret does not sign for a connection, nor a connection's for the platform.
    let response = post_to_connection(&app, &connection, &first, STRIPE_SECRET).await;
    assert_eq!(response.status(), 400);
    let signature = settle::providers::stripe::sign(
        &secrecy::SecretString::from("whsec_old"),
        chrono::Utc::now().timestamp(),
        &first,
    );
    assert_eq!(app.post_stripe(&first, Some(signature)).await.status(), 400);

    let (code, _, err) = settle_with(
        &app,
        &["connections", "rotate-secret", &connection, "--new"],
        &[(NEW_WEBHOOK_SECRET, "whsec_new")],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let second = paid("evt_rot2", "pi_rot2", "inv_rot2").to_bytes();
    poll_until("the new secret loaded", WAIT, || async {
        let response = post_to_connection(&app, &connection, &second, "whsec_new").await;
        (response.status() == 200).then_some(())
    })
    .await;
    let response = post_to_connection(&app, &connection, &second, "whsec_old").await;
    assert_eq!(
        response.status(),
        200,
        "the old secret still signs until retired"
    );

    let (code, _, err) = settle(
        &app,
        &["connections", "rotate-secret", &connection, "--retire-old"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let third = paid("evt_rot3", "pi_rot3", "inv_rot3").to_bytes();
    poll_until("the old secret retired", WAIT, || async {
        let response = post_to_connection(&app, &connection, &third, "whsec_old").await;
        (response.status() == 400).then_some(())
    })
    .await;
    let response = post_to_connection(&app, &connection, &third, "whsec_new").await;
    assert_eq!(response.status(), 200);

    // The events went through the connection, so they carry it and are its account's.
    for invoice in ["inv_rot1", "inv_rot2", "inv_rot3"] {
        app.wait_invoice_status(invoice, "PAID").await;
    }
    // An unknown connection, or a connection of another provider, is a 404.
    let response = post_to_connection(&app, "conn_nobody", &first, "whsec_new").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_connection");
    let response = app
        .http
        .post(app.url(&format!("/webhooks/gocardless/{connection}")))
        .header("Webhook-Signature", "0")
        .body(gocardless_batch([]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    app.stop().await;
}

/// Intake only (nothing but the receiver touches the database), reloading connection secrets
/// every second.
async fn spawn_intake_app() -> TestApp {
    spawn_app_with(AppOptions {
        tweak: Box::new(|settings| settings.webhooks.connection_secrets_refresh_secs = 1),
        ..AppOptions::default()
    })
    .await
}

/// Adds a test-mode Stripe connection given `secrets`, then checks that a webhook to its endpoint
/// signed with each of `webhook_secrets` verifies and one signed with another does not, and that
/// the API key stored opens to `api_key`; the connection id.
async fn add_and_check_secrets(
    app: &TestApp,
    secrets: Secrets<'_>,
    webhook_secrets: &[&str],
    api_key: &str,
) -> String {
    let connection = add_connection(app, "stripe", CONNECTED, &["--mode", "test"], secrets).await;
    for secret in webhook_secrets {
        let body = paid(&format!("evt_{secret}"), "pi_given", "inv_given").to_bytes();
        let response = post_once_loaded(app, &connection, &body, secret).await;
        assert_eq!(response.status(), 200, "signed with {secret}");
    }
    let body = paid("evt_wrong", "pi_given", "inv_given").to_bytes();
    let response = post_to_connection(app, &connection, &body, "whsec_wrong").await;
    assert_eq!(response.status(), 400);
    let sealed: Option<String> =
        sqlx::query_scalar("SELECT api_key FROM provider_connections WHERE id = $1")
            .bind(&connection)
            .fetch_one(&app.db())
            .await
            .unwrap();
    let context = format!("provider_connections/{connection}/api_key");
    let opened = app
        .settings
        .keyring()
        .unwrap()
        .open(&sealed.expect("an API key"), &context)
        .unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&opened), api_key);
    connection
}

#[tokio::test]
async fn a_connection_added_with_secrets_from_the_environment_verifies_webhooks_signed_with_them() {
    let app = spawn_intake_app().await;
    let env = [
        (CONNECTION_WEBHOOK_SECRETS, "whsec_env_new, whsec_env_old"),
        (CONNECTION_API_KEY, "sk_test_env"),
    ];
    let secrets = ["whsec_env_new", "whsec_env_old"];
    add_and_check_secrets(&app, Secrets::InEnv(&env), &secrets, "sk_test_env").await;
    app.stop().await;
}

#[tokio::test]
async fn a_connection_added_with_secrets_on_stdin_verifies_webhooks_signed_with_them() {
    let app = spawn_intake_app().await;
    let stdin =
        "webhook_secret=whsec_in_new\n\n  webhook_secret = whsec_in_old \napi_key=sk_test_in\n";
    let secrets = ["whsec_in_new", "whsec_in_old"];
    let connection =
        add_and_check_secrets(&app, Secrets::OnStdin(stdin), &secrets, "sk_test_in").await;

    // rotate-secret --new reads the first line of standard input only.
    let (code, out, err) = settle_with_stdin(
        &app,
        &[
            "connections",
            "rotate-secret",
            &connection,
            "--new",
            "--secret-from-stdin",
        ],
        &[],
        "whsec_in_rotated\nwhsec_in_not_read\n",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 webhook secret(s)"), "{out}");
    let body = paid("evt_rotated", "pi_given", "inv_given").to_bytes();
    poll_until("the rotated secret loaded", WAIT, || async {
        let response = post_to_connection(&app, &connection, &body, "whsec_in_rotated").await;
        (response.status() == 200).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_connection_endpoint_verifies_with_cached_secrets_while_the_database_is_down() {
    let app = spawn_intake_app().await;
    let connection = add_connection(
        &app,
        "stripe",
        CONNECTED,
        &["--mode", "test"],
        Secrets::InEnv(&[(CONNECTION_WEBHOOK_SECRETS, "whsec_cached")]),
    )
    .await;
    let before = paid("evt_cached0", "pi_cached0", "inv_cached").to_bytes();
    assert_eq!(
        post_once_loaded(&app, &connection, &before, "whsec_cached")
            .await
            .status(),
        200
    );

    let outage = DatabaseOutage::begin(&app).await;
    let failures = "settle_connection_secrets_refresh_failures_total";
    poll_until("a refresh to fail", WAIT, || async {
        (app.metric(failures).await >= 1.0).then_some(())
    })
    .await;
    let during = paid("evt_cached1", "pi_cached1", "inv_cached").to_bytes();
    let response = post_to_connection(&app, &connection, &during, "whsec_cached").await;
    assert_eq!(
        response.status(),
        200,
        "verified with the secrets loaded before the outage"
    );
    let response = post_to_connection(&app, &connection, &during, "whsec_wrong").await;
    assert_eq!(response.status(), 400);
    outage.end().await;

    // Both events were queued (serve has no worker: they wait on the work queue), stamped
    // with the connection they came through.
    let messages = app.take_messages(&app.queue("reconcile"), 2).await;
    let ids: Vec<_> = messages.iter().map(|m| m.header("event-id")).collect();
    assert_eq!(ids, [Some("evt_cached0"), Some("evt_cached1")]);
    for message in &messages {
        assert_eq!(message.header("connection-id"), Some(connection.as_str()));
    }
    app.stop().await;
}

#[tokio::test]
async fn two_accounts_with_the_same_ids_each_get_only_their_own_connect_events() {
    let sink = SmtpSink::start().await;
    let app = spawn_app_with_mail(&sink).await;
    let (code, _, err) = settle(
        &app,
        &[
            "accounts",
            "create",
            "acc_b",
            "--name",
            "Business B",
            "--business-email",
            "finance@b.example",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let key_a = ApiKey::configured();
    let key_b = api_key_of(&app, "acc_b").await;
    let account_a = app.settings.account.id.clone();
    let (a, b) = ("acct_1AAAAAAAAAAAAAAA", "acct_1BBBBBBBBBBBBBBB");
    add_connection_for(
        &app,
        &account_a,
        "stripe",
        a,
        &["--mode", "test"],
        Secrets::Nothing,
    )
    .await;
    add_connection_for(
        &app,
        "acc_b",
        "stripe",
        b,
        &["--mode", "test"],
        Secrets::Nothing,
    )
    .await;
    // The same customer and invoice ids in both accounts.
    for (key, email) in [(&key_a, "payer@a.example"), (&key_b, "payer@b.example")] {
        for (path, body) in [
            (
                "/customers",
                serde_json::json!({"id": "cust", "legalName": "Same Name Ltd", "email": email}),
            ),
            (
                "/invoices",
                serde_json::json!({"id": "inv_same", "customerId": "cust", "number": "INV-1",
                                   "currency": "GBP", "amountDue": 1000}),
            ),
        ] {
            let (status, answer) = app
                .api_as(key, reqwest::Method::POST, path, Some(body))
                .await;
            assert_eq!(status, 201, "POST {path}: {answer}");
        }
    }

    // A's invoice is paid in four parts; B's in two, and one of B's attempts is declined. The
    // events are interleaved and posted at once through the platform's one Connect endpoint.
    let payment = |account: &str, event: &str, intent: &str| {
        paid(event, intent, "inv_same")
            .payment(intent, 250, "gbp")
            .connected(account)
    };
    let declined = StripeEvent::new("payment_intent.payment_failed", "evt_b_declined")
        .created(T0)
        .payment("pi_b_declined", 250, "gbp")
        .invoice_id("inv_same")
        .object(declined_for_insufficient_funds)
        .connected(b);
    let bodies: Vec<Vec<u8>> = [
        payment(a, "evt_a0", "pi_a0"),
        payment(b, "evt_b0", "pi_b0"),
        payment(a, "evt_a1", "pi_a1"),
        declined,
        payment(a, "evt_a2", "pi_a2"),
        payment(b, "evt_b1", "pi_b1"),
        payment(a, "evt_a3", "pi_a3"),
    ]
    .iter()
    .map(StripeEvent::to_bytes)
    .collect();
    app.deliver_stripe_concurrently(&bodies).await;

    let invoice_a = app.wait_invoice_status("inv_same", "PAID").await;
    assert_eq!(invoice_a["amountPaid"], 1000);
    let invoice_b = poll_until("B's invoice partly paid", WAIT, || async {
        let (_, invoice) = app
            .api_as(&key_b, reqwest::Method::GET, "/invoices/inv_same", None)
            .await;
        (invoice["amountPaid"] == 500 && invoice["payments"].as_array().unwrap().len() == 3)
            .then_some(invoice)
    })
    .await;
    assert_eq!(invoice_b["status"], "PARTIALLY_PAID");
    assert_eq!(invoice_b["sequenceAccountId"], "acc_b");
    let intents = |invoice: &Value| -> Vec<String> {
        let mut ids: Vec<String> = invoice["payments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["providerPaymentId"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(intents(&invoice_a), ["pi_a0", "pi_a1", "pi_a2", "pi_a3"]);
    assert_eq!(intents(&invoice_b), ["pi_b0", "pi_b1", "pi_b_declined"]);
    // The inbox recorded each event under its own account.
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, account_id FROM webhook_events ORDER BY event_id")
            .fetch_all(&app.db())
            .await
            .unwrap();
    assert_eq!(rows.len(), 7);
    for (event, account) in &rows {
        let expected = if event.starts_with("evt_b") {
            "acc_b"
        } else {
            account_a.as_str()
        };
        assert_eq!(account, expected, "{event}");
    }

    // B's decline is mailed to B's customer and to B's business, never to A's.
    let mails = sink.wait_for(2).await;
    let mut recipients: Vec<&str> = mails
        .iter()
        .flat_map(|mail| mail.to.iter().map(String::as_str))
        .collect();
    recipients.sort();
    assert_eq!(recipients, ["finance@b.example", "payer@b.example"]);
    app.stop().await;
}
