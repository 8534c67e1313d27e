//! Accounts and provider connections, managed with the `settle` binary as an operator does:
//! secrets go in sealed and never come back out.

use serde_json::Value;

use crate::helpers::*;

/// Business B's Stripe test-mode connection.
const STRIPE_B: [&str; 8] = [
    "--account",
    "acc_b",
    "--provider",
    "stripe",
    "--external-id",
    "acct_1Nv0FGQ9RKHgCVdK",
    "--mode",
    "test",
];

async fn json(app: &TestApp, args: &[&str]) -> Value {
    let (code, out, err) = settle(app, args).await;
    assert_eq!(code, 0, "settle {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn an_operator_creates_an_account_and_its_connections_whose_secrets_are_stored_sealed() {
    let app = spawn_app().await;
    let created = json(
        &app,
        &[
            "accounts",
            "create",
            "acc_b",
            "--name",
            "Business B",
            "--business-email",
            "finance@b.example",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(created[0]["id"], "acc_b");
    assert_eq!(created[0]["name"], "Business B");
    assert_eq!(created[0]["businessEmail"], "finance@b.example");
    let (code, _, err) = settle(
        &app,
        &["accounts", "create", "acc_c", "--business-email", "nobody"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("--business-email: `nobody` is not an email address"),
        "{err}"
    );
    let (code, _, err) = settle(&app, &["accounts", "create", "acc_b"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("account `acc_b` already exists"), "{err}");
    let (code, _, err) = settle(&app, &["accounts", "create", "not an id"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("1 to 64 letters"), "{err}");

    let added = json(
        &app,
        &[
            ["connections", "add"].as_slice(),
            &STRIPE_B,
            &[
                "--webhook-secret",
                "whsec_connection_b",
                "--api-key",
                "sk_test_b",
                "--output",
                "json",
            ],
        ]
        .concat(),
    )
    .await;
    let id = added["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("conn_"), "{id}");
    // The same provider account and mode twice is refused; an unknown account, a wrong id too.
    for (args, message) in [
        (STRIPE_B.to_vec(), "already has a connection"),
        (
            vec![
                "--account",
                "acc_nobody",
                "--provider",
                "gocardless",
                "--external-id",
                "OR000123",
            ],
            "no account `acc_nobody`",
        ),
        (
            vec![
                "--account",
                "acc_b",
                "--provider",
                "gocardless",
                "--external-id",
                "acct_x",
            ],
            "is not a GoCardless organisation id",
        ),
    ] {
        let (code, _, err) =
            settle(&app, &[["connections", "add"].as_slice(), &args].concat()).await;
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains(message), "{args:?}: {err}");
    }

    // Stored sealed: neither secret appears in the row, and show never prints one.
    let (secrets, api_key): (Vec<String>, Option<String>) =
        sqlx::query_as("SELECT webhook_secrets, api_key FROM provider_connections WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.db())
            .await
            .unwrap();
    assert_eq!(secrets.len(), 1);
    assert!(secrets[0].starts_with("v1.local.") && !secrets[0].contains("whsec_connection_b"));
    assert!(
        api_key
            .as_deref()
            .is_some_and(|k| k.starts_with("v1.local.") && !k.contains("sk_test_b"))
    );
    let (code, shown, _) = settle(&app, &["connections", "show", &id]).await;
    assert_eq!(code, 0);
    assert!(
        !shown.contains("whsec_connection_b") && !shown.contains("sk_test_b"),
        "{shown}"
    );
    let shown = json(&app, &["accounts", "show", "acc_b", "--output", "json"]).await;
    let connection = &shown["connections"][0];
    assert_eq!(connection["externalId"], "acct_1Nv0FGQ9RKHgCVdK");
    assert_eq!(connection["mode"], "test");
    assert_eq!(connection["webhookSecrets"], 1);
    assert_eq!(connection["apiKey"], true);
    assert_eq!(connection["sealedWith"], serde_json::json!(["local"]));

    // Rotation: the new secret beside the old, then the old retired.
    let (code, out, _) = settle(
        &app,
        &["connections", "rotate-secret", &id, "--new", "whsec_b2"],
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("2 webhook secret(s)"), "{out}");
    let (code, out, _) = settle(&app, &["connections", "rotate-secret", &id, "--retire-old"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("1 webhook secret(s)"), "{out}");
    let keyring = app.settings.keyring().unwrap();
    let (secrets,): (Vec<String>,) =
        sqlx::query_as("SELECT webhook_secrets FROM provider_connections WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.db())
            .await
            .unwrap();
    let context = format!("provider_connections/{id}/webhook_secret");
    let kept = keyring.open(&secrets[0], &context).unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&kept),
        "whsec_b2",
        "the newest is kept"
    );

    let (code, _, _) = settle(&app, &["connections", "remove", &id]).await;
    assert_eq!(code, 2, "remove needs --yes");
    let (code, _, _) = settle(&app, &["connections", "remove", &id, "--yes"]).await;
    assert_eq!(code, 0);
    let (code, _, _) = settle(&app, &["connections", "list", "--account", "acc_b"]).await;
    assert_eq!(code, 3, "none left");
    app.stop().await;
}

#[tokio::test]
async fn a_database_from_before_accounts_keeps_every_row_and_figure_under_the_default_account() {
    // The schema as it was before accounts had connections, with one account's data: a
    // customer with settings and a card on file, a billing schedule, an invoice paid and partly
    // refunded, its inbox and outbox rows.
    let (url, db) = database_before_migration(20261201000013).await;
    sqlx::raw_sql(
        "INSERT INTO accounts (id) VALUES ('acc_default');
         INSERT INTO customers (id, account_id, legal_name, stripe_customer_id)
             VALUES ('cust', 'acc_default', 'Cust Ltd', 'cus_old');
         INSERT INTO billing_schedules (id, account_id, customer_id) VALUES ('bs', 'acc_default', 'cust');
         INSERT INTO invoices (id, account_id, customer_id, billing_schedule_id, number, currency,
                               amount_due, amount_paid, amount_refunded, refund_state, status)
             VALUES ('inv_old', 'acc_default', 'cust', 'bs', 'N-1', 'GBP', 1000, 1000, 250, 'PARTIAL', 'PAID');
         INSERT INTO payments (id, account_id, invoice_id, provider, provider_payment_id, amount,
                               currency, status, collected, last_event_at)
             VALUES ('pay_old', 'acc_default', 'inv_old', 'STRIPE', 'pi_old', 1000, 'GBP', 'SUCCEEDED',
                     true, '2026-11-01T10:00:00Z');
         INSERT INTO refunds (id, account_id, payment_id, provider, provider_refund_id, amount,
                              amount_source, status, last_event_at)
             VALUES ('ref_old', 'acc_default', 'pay_old', 'STRIPE', 're_old', 250, 'event', 'SUCCEEDED',
                     '2026-11-02T10:00:00Z');
         INSERT INTO money_movements (account_id, invoice_id, payment_id, provider, provider_object_id,
                                      kind, amount, currency, amount_source, occurred_at, event_id)
             VALUES ('acc_default', 'inv_old', 'pay_old', 'STRIPE', 'pi_old', 'COLLECTED', 1000, 'GBP',
                     'event', '2026-11-01T10:00:00Z', 'evt_old_paid'),
                    ('acc_default', 'inv_old', 'pay_old', 'STRIPE', 're_old', 'REFUNDED', 250, 'GBP',
                     'event', '2026-11-02T10:00:00Z', 'evt_old_refund');
         INSERT INTO payment_settings (id, account_id, level, target_id, payment_provider, auto_charge)
             VALUES ('pset_old', 'acc_default', 'CUSTOMER', 'cust', 'STRIPE', true);
         INSERT INTO payment_methods (id, account_id, customer_id, provider, type, reference_id, on_file)
             VALUES ('pm_row_old', 'acc_default', 'cust', 'STRIPE', 'card', 'cus_old/pm_old', true);
         INSERT INTO webhook_events (provider, event_id, account_id, event_type, payload, received_at, outcome)
             VALUES ('STRIPE', 'evt_old_paid', 'acc_default', 'payment_intent.succeeded', '{}', now(), 'applied');
         INSERT INTO outbox (account_id, message_id, routing_key, payload, published_at)
             VALUES ('acc_default', 'stripe:evt_old_paid:invoice.paid', 'invoice.paid', '{}', now());",
    )
    .execute(&db)
    .await
    .unwrap();
    migrate_all(&db).await;
    db.close().await;

    // The default account's credentials (SETTLE_API_CREDENTIALS) see it all as before.
    let app = spawn_run_on(url).await;
    let invoice = app.invoice("inv_old").await;
    assert_eq!(invoice["sequenceAccountId"], "acc_default");
    assert_eq!(
        (
            &invoice["status"],
            &invoice["amountPaid"],
            &invoice["amountRefunded"],
            &invoice["amountNet"],
            &invoice["refundState"]
        ),
        (
            &"PAID".into(),
            &1000.into(),
            &250.into(),
            &750.into(),
            &"PARTIAL".into()
        )
    );
    let (status, settings) = app.api_get("/invoices/inv_old/payment-settings").await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["paymentProvider"]["source"], "CUSTOMER");
    let (status, methods) = app.api_get("/customers/cust/payment-methods").await;
    assert_eq!(status, 200, "{methods}");
    assert_eq!(methods[0]["onFile"], true, "{methods}");

    // The next events build on what was migrated: a second refund of the same payment, and a
    // redelivery of an old event, which the inbox still knows.
    app.deliver_stripe(
        &StripeEvent::new("refund.created", "evt_new_refund")
            .created(1_790_000_000)
            .refund("re_new", "pi_old", 750, "gbp", "succeeded")
            .to_bytes(),
    )
    .await;
    assert_eq!(
        app.wait_processed("STRIPE", "evt_new_refund").await,
        "applied"
    );
    let invoice = app.invoice("inv_old").await;
    assert_eq!(invoice["amountRefunded"], 1000);
    assert_eq!(invoice["refundState"], "FULL");
    app.stop().await;
}
