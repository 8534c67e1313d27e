//! Every key that holds money includes the account (issue 28, deliverable 1): a tenant signs any
//! event for its own connection, and none of them reads, changes or announces another account's
//! rows, even with that account's ids.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::payouts::{
    charge, fixture_object, spawn_listing_app, stripe_payout_event, stripe_transaction, wait_payout,
};
use crate::routing::{Secrets, add_connection_for, post_once_loaded};

const T0: i64 = 1_790_000_000;
const ACCOUNT_B: &str = "acc_b";
const SECRET_A: &str = "whsec_tenant_a";
const SECRET_B: &str = "whsec_tenant_b";

/// The app's own account (A) and account B, each with a test-mode Stripe connection whose
/// webhook secret is `SECRET_A` / `SECRET_B`; their connection ids.
struct Tenants {
    a: String,
    b: String,
    key_b: ApiKey,
}

async fn tenants(app: &TestApp) -> Tenants {
    let key_b = account_with_key(app, ACCOUNT_B).await;
    let account_a = app.settings.account.id.clone();
    let mut connections = Vec::new();
    for (account, external_id, secret) in [
        (account_a.as_str(), "acct_1TenantAAAAAAAA", SECRET_A),
        (ACCOUNT_B, "acct_1TenantBBBBBBBB", SECRET_B),
    ] {
        let env = [(CONNECTION_WEBHOOK_SECRETS, secret)];
        let secrets = Secrets::InEnv(&env);
        connections.push(
            add_connection_for(
                app,
                account,
                "stripe",
                external_id,
                &["--mode", "test"],
                secrets,
            )
            .await,
        );
    }
    let b = connections.pop().unwrap();
    let a = connections.pop().unwrap();
    Tenants { a, b, key_b }
}

/// A `run` process whose receiver reloads connection secrets every second, with no payout
/// lister (a payout stays as its events left it).
async fn spawn_tenants_app() -> TestApp {
    spawn_app_with(AppOptions {
        role: settle::role::Role::Run,
        tweak: Box::new(|settings| {
            settings.webhooks.connection_secrets_refresh_secs = 1;
            settings.payouts.list_interval_secs = 0;
            Retries::PATIENT.apply_to(settings);
        }),
        ..AppOptions::default()
    })
    .await
}

/// The two tenants' app, with invoice `invoice_a` of A and `invoice_b` of B (1500 GBP each).
async fn tenants_with_invoices(invoice_a: &str, invoice_b: &str) -> (TestApp, Tenants) {
    let app = spawn_tenants_app().await;
    let tenants = tenants(&app).await;
    invoice_as(&app, &ApiKey::configured(), invoice_a).await;
    invoice_as(&app, &tenants.key_b, invoice_b).await;
    (app, tenants)
}

/// Posts a signed event to a connection's endpoint and checks it was taken.
async fn post_via(app: &TestApp, connection: &str, secret: &str, body: &[u8]) {
    let response = post_once_loaded(app, connection, body, secret).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Creates customer `cust` and invoice `invoice` of 1500 GBP with `key`.
async fn invoice_as(app: &TestApp, key: &ApiKey, invoice: &str) {
    for (path, body) in [
        (
            "/customers",
            json!({"id": "cust", "legalName": "Same Name Ltd", "email": "payer@example.com"}),
        ),
        (
            "/invoices",
            json!({"id": invoice, "customerId": "cust", "number": "INV-1", "currency": "GBP",
                   "amountDue": 1500}),
        ),
    ] {
        let (status, answer) = app
            .api_as(key, reqwest::Method::POST, path, Some(body))
            .await;
        assert!(status == 201 || status == 409, "POST {path}: {answer}");
    }
}

/// Registers payment `pay_1` (the same caller-chosen id in every account) of `intent` on
/// `invoice`, a new invoice of 1500 GBP, with `key`.
async fn register_pay_1(app: &TestApp, key: &ApiKey, invoice: &str, intent: &str) {
    invoice_as(app, key, invoice).await;
    let registration = json!({"id": "pay_1", "provider": "STRIPE", "providerPaymentId": intent,
                              "amount": 1500, "currency": "GBP"});
    let (status, body) = app
        .api_as(
            key,
            reqwest::Method::POST,
            &format!("/invoices/{invoice}/payments"),
            Some(registration),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn invoice_of(app: &TestApp, key: &ApiKey, invoice: &str) -> Value {
    let (status, body) = app
        .api_as(
            key,
            reqwest::Method::GET,
            &format!("/invoices/{invoice}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// S3: B's payout, named in A's signed `payout.failed`, is neither failed nor re-connected, and
/// nothing about it is announced under B, whichever arrives first. A's event records a payout of
/// A's own: refusing it would let whichever event came first own the id, and a tenant could
/// squat another's payout before that account's own event arrived.
#[tokio::test]
async fn a_tenants_payout_event_for_another_accounts_payout_changes_only_its_own_in_either_order() {
    let app = spawn_tenants_app().await;
    let tenants = tenants(&app).await;
    let completed = |event: &str, payout: &str| {
        stripe_payout_event("payout.reconciliation_completed", event, payout, true)
    };
    let failed =
        |event: &str, payout: &str| stripe_payout_event("payout.failed", event, payout, true);

    // B's own event first, then A's naming B's payout.
    post_via(
        &app,
        &tenants.b,
        SECRET_B,
        &completed("evt_po_b1", "po_of_b1"),
    )
    .await;
    assert_eq!(app.wait_processed("STRIPE", "evt_po_b1").await, "applied");
    post_via(&app, &tenants.a, SECRET_A, &failed("evt_po_a1", "po_of_b1")).await;
    assert_eq!(app.wait_processed("STRIPE", "evt_po_a1").await, "applied");
    // A's first, then B's own: B's is recorded all the same.
    post_via(&app, &tenants.a, SECRET_A, &failed("evt_po_a2", "po_of_b2")).await;
    assert_eq!(app.wait_processed("STRIPE", "evt_po_a2").await, "applied");
    post_via(
        &app,
        &tenants.b,
        SECRET_B,
        &completed("evt_po_b2", "po_of_b2"),
    )
    .await;
    assert_eq!(app.wait_processed("STRIPE", "evt_po_b2").await, "applied");

    let db = app.db();
    let account_a = app.settings.account.id.clone();
    for payout in ["po_of_b1", "po_of_b2"] {
        let payouts: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT account_id, status, connection_id FROM payouts
             WHERE provider_payout_id = $1 ORDER BY account_id = $2",
        )
        .bind(payout)
        .bind(ACCOUNT_B)
        .fetch_all(&db)
        .await
        .unwrap();
        assert_eq!(
            payouts,
            [
                (
                    account_a.clone(),
                    "FAILED".to_owned(),
                    Some(tenants.a.clone())
                ),
                (
                    ACCOUNT_B.to_owned(),
                    "LISTING".to_owned(),
                    Some(tenants.b.clone())
                ),
            ],
            "{payout}"
        );
    }
    // Each of A's own failed payouts is announced under A, with an id of its own.
    let announced: Vec<(String, String)> = sqlx::query_as(
        "SELECT account_id, message_id FROM outbox WHERE routing_key LIKE 'payout.%'
         ORDER BY message_id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        announced,
        [
            (
                account_a.clone(),
                format!("stripe:{account_a}/po_of_b1:payout.failed")
            ),
            (
                account_a.clone(),
                format!("stripe:{account_a}/po_of_b2:payout.failed")
            ),
        ]
    );
    app.stop().await;
}

/// S4: A and B both call a payment `pay_1`. A payout line of A's refund is matched to A's
/// payment and invoice, never to B's.
#[tokio::test]
async fn a_payout_line_of_one_account_is_never_matched_to_another_accounts_payment_of_the_same_id()
{
    let api = crate::helpers::provider_api::ProviderApi::start().await;
    let app = spawn_listing_app(&api).await;
    let key_a = ApiKey::configured();
    let key_b = account_with_key(&app, ACCOUNT_B).await;
    register_pay_1(&app, &key_a, "inv_a", "pi_a").await;
    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", "evt_pi_a")
            .created(T0)
            .payment("pi_a", 1500, "gbp")
            .invoice_id("inv_a")
            .to_bytes(),
    )
    .await;
    app.wait_invoice_status("inv_a", "PAID").await;
    app.deliver_stripe(
        &StripeEvent::new("refund.created", "evt_re_a")
            .created(T0 + 1)
            .refund("re_a", "pi_a", 500, "gbp", "succeeded")
            .to_bytes(),
    )
    .await;
    app.wait_processed("STRIPE", "evt_re_a").await;
    // B's `pay_1` last, after every update of A's: with a join on the payment id alone, B's row
    // is the one read last, and would win.
    register_pay_1(&app, &key_b, "inv_b", "pi_b").await;

    let mut refund = fixture_object("refund");
    refund["id"] = "re_a".into();
    refund["payment_intent"] = "pi_a".into();
    let mut own = fixture_object("payout");
    own["id"] = "po_a".into();
    let listed = [
        stripe_transaction("charge", charge("ch_a", "pi_a"), 1500, 0),
        stripe_transaction("refund", refund, -500, 0),
        stripe_transaction("payout", own, -1000, 0),
    ];
    for (n, mut transaction) in listed.into_iter().enumerate() {
        transaction["id"] = format!("txn_a{n}").into();
        api.add_balance_transaction(None, "po_a", transaction);
    }
    app.deliver_stripe(&crate::payouts::reconciliation_completed(
        "evt_po_a", "po_a", 1000,
    ))
    .await;
    let payout = wait_payout(&app, "po_a", "RECONCILED").await;
    let matched: Vec<(&str, Option<&str>, Option<&str>)> = payout["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["category"].as_str().unwrap(),
                l["paymentId"].as_str(),
                l["invoiceId"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        matched,
        [
            ("charge", Some("pay_1"), Some("inv_a")),
            ("refund", Some("pay_1"), Some("inv_a")),
            ("payout", None, None),
        ]
    );
    app.stop().await;
}

/// L2: B's event waits unmatched for its payment; A signs an event with the same id. A's event
/// is a duplicate to A, B's row stays waiting, and B's registration applies B's event.
#[tokio::test]
async fn a_tenant_cannot_claim_another_accounts_unmatched_event_by_its_id() {
    let (app, tenants) = tenants_with_invoices("inv_a", "inv_b").await;
    let key_a = ApiKey::configured();
    // Stripe's example PaymentIntent names no invoice: it waits for its payment's registration.
    let waiting = StripeEvent::new("payment_intent.succeeded", "evt_waiting")
        .created(T0)
        .payment("pi_b", 1500, "gbp");
    post_via(&app, &tenants.b, SECRET_B, &waiting.to_bytes()).await;
    assert_eq!(
        app.wait_processed("STRIPE", "evt_waiting").await,
        "unmatched"
    );

    let duplicates = "settle_worker_messages_total{result=\"duplicate\"}";
    let before = app.metric(duplicates).await;
    let claim = StripeEvent::new("payment_intent.succeeded", "evt_waiting")
        .created(T0 + 1)
        .payment("pi_a", 1500, "gbp")
        .invoice_id("inv_a");
    post_via(&app, &tenants.a, SECRET_A, &claim.to_bytes()).await;
    poll_until("A's event handled as a duplicate", WAIT, || async {
        (app.metric(duplicates).await > before).then_some(())
    })
    .await;
    let row: (String, String) = sqlx::query_as(
        "SELECT account_id, outcome FROM webhook_events WHERE event_id = 'evt_waiting'",
    )
    .fetch_one(&app.db())
    .await
    .unwrap();
    assert_eq!(row, (ACCOUNT_B.to_owned(), "unmatched".to_owned()));
    assert_eq!(invoice_of(&app, &key_a, "inv_a").await["amountPaid"], 0);

    let registration = json!({"provider": "STRIPE", "providerPaymentId": "pi_b",
                              "amount": 1500, "currency": "GBP"});
    let (status, body) = app
        .api_as(
            &tenants.key_b,
            reqwest::Method::POST,
            "/invoices/inv_b/payments",
            Some(registration),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let invoice_b = invoice_of(&app, &tenants.key_b, "inv_b").await;
    assert_eq!(invoice_b["status"], "PAID", "{invoice_b}");
    app.stop().await;
}

/// L3: a signed `payment_method.detached` whose id is `%` detaches that id only (none), not
/// every Stripe method of the account.
#[tokio::test]
async fn a_method_event_whose_id_is_a_like_wildcard_detaches_nothing_else() {
    let app = spawn_worker(Retries::PATIENT).await;
    for n in 1..=2 {
        app.create_customer(&format!("c{n}")).await; // Stripe customer cus_c{n}
        let event_id = format!("evt_att{n}");
        app.deliver_stripe(
            &StripeEvent::new("payment_method.attached", &event_id)
                .created(T0)
                .object_id(&format!("pm_card{n}"))
                .customer(Some(&format!("cus_c{n}")))
                .to_bytes(),
        )
        .await;
        assert_eq!(app.wait_processed("STRIPE", &event_id).await, "applied");
    }
    for (event_id, id) in [("evt_percent", "%"), ("evt_underscore", "pm_card_")] {
        app.deliver_stripe(
            &StripeEvent::new("payment_method.detached", event_id)
                .created(T0 + 10)
                .object_id(id)
                .customer(None)
                .to_bytes(),
        )
        .await;
        assert_eq!(app.wait_processed("STRIPE", event_id).await, "ignored");
    }
    for n in 1..=2 {
        let (_, methods) = app
            .api_get(&format!("/customers/c{n}/payment-methods"))
            .await;
        assert_eq!(methods[0]["status"], "ACTIVE", "{methods}");
        assert_eq!(methods[0]["onFile"], true, "{methods}");
    }
    app.stop().await;
}

/// S5: B's event came through B's connection endpoint and names no account. Replayed from the
/// inbox, it is routed through that connection again: it applies to B, never to the default
/// account's invoice of the same id.
#[tokio::test]
async fn an_event_replayed_from_the_inbox_is_routed_through_the_connection_it_came_by() {
    let (app, tenants) = tenants_with_invoices("inv_same", "inv_same").await;
    let key_a = ApiKey::configured();
    let paid = StripeEvent::new("payment_intent.succeeded", "evt_by_b")
        .created(T0)
        .payment("pi_by_b", 1500, "gbp")
        .invoice_id("inv_same");
    assert_eq!(paid.json().get("account"), None, "a direct account's event");
    post_via(&app, &tenants.b, SECRET_B, &paid.to_bytes()).await;
    assert_eq!(app.wait_processed("STRIPE", "evt_by_b").await, "applied");

    let (code, out, err) = settle(&app, &["events", "replay", "stripe", "evt_by_b"]).await;
    assert_eq!(code, 0, "{out}{err}");
    app.wait_processed("STRIPE", "evt_by_b").await;
    let row: (String, Option<String>) = sqlx::query_as(
        "SELECT account_id, connection_id FROM webhook_events WHERE event_id = 'evt_by_b'",
    )
    .fetch_one(&app.db())
    .await
    .unwrap();
    assert_eq!(row, (ACCOUNT_B.to_owned(), Some(tenants.b.clone())));
    let invoice_b = invoice_of(&app, &tenants.key_b, "inv_same").await;
    assert_eq!(invoice_b["amountPaid"], 1500);
    let invoice_a = invoice_of(&app, &key_a, "inv_same").await;
    assert_eq!(
        (
            invoice_a["status"].as_str(),
            invoice_a["amountPaid"].as_i64()
        ),
        (Some("OPEN"), Some(0)),
        "{invoice_a}"
    );
    app.stop().await;
}

/// The catalogue: every unique key and foreign key of a table with an `account_id` column
/// includes it, except the keys `GLOBAL_ON_PURPOSE` lists with their reasons.
#[tokio::test]
async fn every_unique_and_foreign_key_of_an_accounts_table_includes_the_account() {
    let (_, db) = database_before_migration(i64::MAX).await;
    let keys: Vec<(String, String, String)> =
        sqlx::query_as(CATALOGUE).fetch_all(&db).await.unwrap();
    let unexplained: Vec<String> = keys
        .iter()
        .filter(|(table, key, _)| {
            !GLOBAL_ON_PURPOSE
                .iter()
                .any(|(t, k, _)| t == table && k == key)
        })
        .map(|(table, key, columns)| format!("{table}.{key} ({columns})"))
        .collect();
    assert!(
        unexplained.is_empty(),
        "keys without account_id, not listed as global on purpose: {unexplained:?}"
    );
    // The list holds no key that no longer exists.
    let stale: Vec<&str> = GLOBAL_ON_PURPOSE
        .iter()
        .filter(|(t, k, _)| !keys.iter().any(|(table, key, _)| t == table && k == key))
        .map(|(_, k, _)| *k)
        .collect();
    assert!(stale.is_empty(), "listed but gone: {stale:?}");
    db.close().await;
}

/// The payouts' keys change on a database holding payouts: each line takes its payout's account,
/// and the payout reads as before.
#[tokio::test]
async fn payouts_recorded_before_the_account_keys_keep_their_lines() {
    let (_, db) = database_before_migration(20261207000003).await;
    for statement in [
        "INSERT INTO accounts (id) VALUES ('acc_old')",
        "INSERT INTO payouts (provider, provider_payout_id, account_id, status, event_id)
         VALUES ('STRIPE', 'po_old', 'acc_old', 'RECONCILED', 'evt_old')",
        "INSERT INTO payout_lines (provider, provider_payout_id, position, category, explained,
                                   gross, fee, net)
         VALUES ('STRIPE', 'po_old', 0, 'charge', 'UNMATCHED', 1500, 0, 1500)",
    ] {
        sqlx::query(statement).execute(&db).await.unwrap();
    }
    migrate_all(&db).await;
    let key = settle::repository::payouts::PayoutKey {
        account_id: "acc_old",
        provider: settle::provider::Provider::Stripe,
        provider_payout_id: "po_old",
    };
    let lines = settle::repository::payouts::lines(&db, &key).await.unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].category, "charge");
    db.close().await;
}

/// Keys of accounts' tables that are global on purpose: (table, key, why).
const GLOBAL_ON_PURPOSE: [(&str, &str, &str); 10] = [
    (
        "audit_log",
        "audit_log_pkey",
        "a sequence; an operator's console action, which may touch no account",
    ),
    (
        "api_keys",
        "api_keys_pkey",
        "settle's own random key ids, never a caller's",
    ),
    ("money_movements", "money_movements_pkey", "a sequence"),
    ("notifications", "notifications_pkey", "a sequence"),
    ("outbox", "outbox_pkey", "a sequence"),
    (
        "outbox",
        "outbox_message_id_key",
        "subscribers dedupe on it; it is built from a provider event id, which the inbox holds \
         for one account, or an account's payout (`Message::of_payout`)",
    ),
    (
        "payment_settings",
        "payment_settings_id_key",
        "settle's own `pset_…` ids",
    ),
    (
        "provider_connections",
        "provider_connections_pkey",
        "settle's own `conn_…` ids",
    ),
    (
        "provider_connections",
        "provider_connections_provider_mode_external_id_key",
        "events are routed by the provider's account id: it must name one settle account",
    ),
    (
        "webhook_events",
        "webhook_events_pkey",
        "the inbox's dedupe: provider event ids are unique at the provider, and the dedupe must \
         not depend on routing; claiming an unmatched row compares the account \
         (`repository::inbox`)",
    ),
];

/// The unique keys (primary keys, UNIQUE constraints, unique indexes) and foreign keys of the
/// tables with an `account_id` column that do not include it: (table, key, its columns).
const CATALOGUE: &str = "
    WITH accounts_tables AS (
        SELECT c.oid, c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
          AND EXISTS (SELECT 1 FROM pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attname = 'account_id'
                        AND NOT a.attisdropped)
    ), keys AS (
        SELECT t.relname AS table_name, con.conname AS key_name, con.conkey AS columns,
               con.conrelid AS rel
        FROM pg_constraint con JOIN accounts_tables t ON t.oid = con.conrelid
        WHERE con.contype IN ('p', 'u', 'f')
        UNION ALL
        -- Unique indexes that back no constraint (CREATE UNIQUE INDEX).
        SELECT t.relname, ic.relname, i.indkey::int2[], i.indrelid
        FROM pg_index i
        JOIN accounts_tables t ON t.oid = i.indrelid
        JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indisunique
          AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid
                                                           AND con.contype IN ('p', 'u'))
    )
    SELECT table_name::text, key_name::text,
           (SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a
            WHERE a.attrelid = rel AND a.attnum = ANY(columns))::text AS columns
    FROM keys
    WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                      WHERE a.attrelid = rel AND a.attnum = ANY(columns)
                        AND a.attname = 'account_id')
    ORDER BY 1, 2";
