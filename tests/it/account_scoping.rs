//! Account scoping (issue 13, §3 §4 §5): every row belongs to an account and a key sees only its
//! own. The default account is the configured one (`ApiKey::configured()`); a second account and
//! its key are made with the binary, as an operator makes them.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

const DEFAULT_ACCOUNT: &str = "acc_default";

/// Registers, with `key`, a customer, a billing schedule, an invoice on it (of `amount` GBP) and a
/// payment of it, each with the id given, the customer named `name`.
async fn register_all(app: &TestApp, key: &ApiKey, ids: &Ids, name: &str, amount: i64) {
    let calls = [
        (
            "/customers".to_owned(),
            json!({"id": ids.customer, "legalName": name,
                   "externalIds": [{"key": "Stripe", "value": format!("cus_{}", ids.customer)}]}),
        ),
        (
            "/billing-schedules".to_owned(),
            json!({"id": ids.schedule, "customerId": ids.customer}),
        ),
        (
            "/invoices".to_owned(),
            json!({"id": ids.invoice, "customerId": ids.customer, "billingScheduleId": ids.schedule,
                   "number": format!("INV-{}", ids.invoice), "currency": "GBP", "amountDue": amount}),
        ),
        (
            format!("/invoices/{}/payments", ids.invoice),
            json!({"id": ids.payment, "provider": "STRIPE", "providerPaymentId": ids.provider_payment,
                   "amount": amount, "currency": "GBP"}),
        ),
    ];
    for (path, body) in calls {
        let (status, answer) = app.api_as(key, Method::POST, &path, Some(body)).await;
        assert_eq!(status, 201, "POST {path}: {answer}");
    }
}

/// The ids of one account's rows.
struct Ids {
    customer: &'static str,
    schedule: &'static str,
    invoice: &'static str,
    payment: &'static str,
    provider_payment: &'static str,
}

const SAME: Ids = Ids {
    customer: "cust_same",
    schedule: "bs_same",
    invoice: "inv_same",
    payment: "pay_same",
    provider_payment: "pi_same",
};

async fn get_as(app: &TestApp, key: &ApiKey, path: &str) -> Value {
    let (status, body) = app.api_as(key, Method::GET, path, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// A PUT with `key` that must succeed (200); its answer.
async fn put_as(app: &TestApp, key: &ApiKey, path: &str, body: Value) -> Value {
    let (status, answer) = app.api_as(key, Method::PUT, path, Some(body)).await;
    assert_eq!(status, 200, "PUT {path}: {answer}");
    answer
}

#[tokio::test]
async fn two_accounts_with_the_same_ids_each_see_only_their_own_rows() {
    let app = spawn_app().await;
    let a = ApiKey::configured();
    let b = account_with_key(&app, "acc_b").await;
    // The same customer, schedule, invoice, payment and provider payment ids in both accounts.
    register_all(&app, &a, &SAME, "Alpha Ltd", 1000).await;
    register_all(&app, &b, &SAME, "Beta Ltd", 2000).await;

    for (key, account, name, amount) in [
        (&a, DEFAULT_ACCOUNT, "Alpha Ltd", 1000),
        (&b, "acc_b", "Beta Ltd", 2000),
    ] {
        let customer = get_as(&app, key, "/customers/cust_same").await;
        assert_eq!(customer["legalName"], name);
        assert_eq!(customer["sequenceAccountId"], account);
        let schedule = get_as(&app, key, "/billing-schedules/bs_same").await;
        assert_eq!(schedule["sequenceAccountId"], account);
        let invoice = get_as(&app, key, "/invoices/inv_same").await;
        assert_eq!(invoice["sequenceAccountId"], account);
        assert_eq!(invoice["amountDue"], amount);
        let payments = invoice["payments"].as_array().unwrap();
        assert_eq!(payments.len(), 1, "{invoice}");
        assert_eq!(payments[0]["sequenceAccountId"], account);
        let payment = get_as(&app, key, "/payments/pay_same").await;
        assert_eq!(payment["amount"], amount);
        assert_eq!(payment["sequenceAccountId"], account);
        // Lists: one invoice each, its own, also when filtered by the shared customer id.
        for path in ["/invoices", "/invoices?customerId=cust_same"] {
            let page = get_as(&app, key, path).await;
            let data = page["data"].as_array().unwrap();
            assert_eq!(data.len(), 1, "{path}: {page}");
            assert_eq!(data[0]["sequenceAccountId"], account);
            assert_eq!(data[0]["amountDue"], amount);
        }
    }

    // Writes stay in their account too: a method on file and settings set with A's key.
    let method = json!({"type": "card", "provider": "STRIPE", "referenceId": "cus_cust_same/pm_1"});
    put_as(&app, &a, "/customers/cust_same/payment-method", method).await;
    let body = put_as(
        &app,
        &a,
        "/payments/settings/customers/cust_same",
        json!({"paymentProvider": "GOCARDLESS"}),
    )
    .await;
    assert_eq!(body["sequenceAccountId"], DEFAULT_ACCOUNT);
    let methods = get_as(&app, &b, "/customers/cust_same/payment-methods").await;
    assert_eq!(methods, json!([]), "B's customer has no method");
    let (status, body) = app
        .api_as(
            &b,
            Method::GET,
            "/payments/settings/customers/cust_same",
            None,
        )
        .await;
    assert_api_error(status, &body, 404, "not_found");
    let effective = get_as(&app, &b, "/invoices/inv_same/payment-settings").await;
    assert_eq!(effective["paymentProvider"]["value"], "NONE", "{effective}");
    let effective = get_as(&app, &a, "/invoices/inv_same/payment-settings").await;
    assert_eq!(effective["paymentProvider"]["value"], "GOCARDLESS");
    // The same provider payment id twice in one account is still a conflict.
    let (status, body) = app
        .api_as(
            &b,
            Method::POST,
            "/invoices/inv_same/payments",
            Some(json!({"provider": "STRIPE", "providerPaymentId": "pi_same", "amount": 1, "currency": "GBP"})),
        )
        .await;
    assert_api_error(status, &body, 409, "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already registered"),
        "{body}"
    );
    app.stop().await;
}

/// Account A's rows for the route table: every id a path parameter can name.
const A: Ids = Ids {
    customer: "cust_of_a",
    schedule: "bs_of_a",
    invoice: "inv_of_a",
    payment: "pay_of_a",
    provider_payment: "pi_of_a",
};

/// Account A's payout (a bank deposit its Stripe account received).
const A_PAYOUT: &str = "po_of_a";

/// What account B's key must get from a route called with account A's ids.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// 404: A's id does not exist for B.
    NotFound,
    /// A list or B's own row: 2xx, and nothing of A's in it.
    OnlyOwn(u16),
    /// B's own settings, which B may not have stored: 200 or 404, nothing of A's.
    OwnOrNone,
}

/// The id of A's a path parameter names, by the segment before it (`/invoices/{id}` → A's
/// invoice; `{method}` → A's payment method). A parameter this does not know fails the test: a
/// new route must be added here.
fn fill(template: &str, a_method: &str) -> String {
    let segments: Vec<&str> = template.split('/').collect();
    segments
        .iter()
        .enumerate()
        .map(|(i, segment)| {
            let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                return (*segment).to_owned();
            };
            let id = match (name, i.checked_sub(1).map(|before| segments[before])) {
                ("id", Some("customers")) => A.customer,
                ("id", Some("billing-schedules")) => A.schedule,
                ("id", Some("invoices")) => A.invoice,
                ("id", Some("payments")) => A.payment,
                ("id", Some("payouts")) => A_PAYOUT,
                ("method", Some("payment-methods")) => a_method,
                _ => panic!(
                    "{template}: the route table of this test does not know how to fill `{{{name}}}`; add it"
                ),
            };
            id.to_owned()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The body and expectation of each operation, by method and path template. An operation missing
/// here fails the test: a new route must say what another account's key gets from it.
fn case(method: &str, template: &str) -> (Option<Value>, Expect) {
    let settings = json!({"paymentProvider": "STRIPE", "autoCharge": true});
    match (method, template) {
        ("put", t) if t.starts_with("/payments/settings/") && t.ends_with("/{id}") => {
            (Some(settings), Expect::NotFound)
        }
        ("get", t) if t.starts_with("/payments/settings/") && t.ends_with("/{id}") => {
            (None, Expect::NotFound)
        }
        ("put", "/payments/settings/account") => (Some(settings), Expect::OnlyOwn(200)),
        ("get", "/payments/settings/account") => (None, Expect::OwnOrNone),
        ("get", "/invoices/{id}/payment-settings") => (None, Expect::NotFound),
        ("post", "/customers") => (
            Some(json!({"id": "cust_of_b", "legalName": "Beta Ltd"})),
            Expect::OnlyOwn(201),
        ),
        ("get", "/customers/{id}") => (None, Expect::NotFound),
        ("get", "/customers") => (None, Expect::OnlyOwn(200)),
        ("post", "/customers/search") => (Some(json!({})), Expect::OnlyOwn(200)),
        ("patch", "/customers/{id}") => (
            Some(json!({"version": 1, "legalName": "Taken Over Ltd"})),
            Expect::NotFound,
        ),
        ("delete", "/customers/{id}") => (None, Expect::NotFound),
        ("post", "/customers/bulk") => (
            Some(json!({"items": [{"operation": "CREATE",
                                   "customer": {"id": "cust_bulk_of_b", "legalName": "Beta"}}]})),
            Expect::OnlyOwn(200),
        ),
        ("put", "/customers/{id}") => (
            Some(json!({"legalName": "Taken Over Ltd"})),
            Expect::NotFound,
        ),
        ("put", "/customers/{id}/payment-method") => (
            Some(
                json!({"type": "card", "provider": "STRIPE", "referenceId": "cus_cust_of_a/pm_b"}),
            ),
            Expect::NotFound,
        ),
        ("get", "/customers/{id}/payment-methods") => (None, Expect::NotFound),
        ("delete", "/customers/{id}/payment-methods/{method}") => (None, Expect::NotFound),
        ("post", "/customers/{id}/merge") => {
            (Some(json!({"customerId": "cust_of_b"})), Expect::NotFound)
        }
        ("post", "/billing-schedules") => (
            Some(json!({"id": "bs_of_b", "customerId": A.customer})),
            Expect::NotFound,
        ),
        ("get", "/billing-schedules/{id}") => (None, Expect::NotFound),
        ("post", "/invoices") => (
            Some(
                json!({"id": "inv_of_b", "customerId": A.customer, "number": "INV-B",
                        "currency": "GBP", "amountDue": 100}),
            ),
            Expect::NotFound,
        ),
        ("get", "/invoices") => (None, Expect::OnlyOwn(200)),
        ("get", "/invoices/{id}") => (None, Expect::NotFound),
        ("post", "/invoices/{id}/payments") => (
            Some(
                json!({"provider": "STRIPE", "providerPaymentId": "pi_of_b", "amount": 100,
                        "currency": "GBP"}),
            ),
            Expect::NotFound,
        ),
        ("get", "/payments/unmatched") => (None, Expect::OnlyOwn(200)),
        ("get", "/payments/{id}") => (None, Expect::NotFound),
        ("post", "/payments/{id}/refunds") => (
            Some(json!({"providerRefundId": "re_of_b", "amount": 100})),
            Expect::NotFound,
        ),
        ("get", "/payouts") => (None, Expect::OnlyOwn(200)),
        ("get", "/payouts/{id}") => (None, Expect::NotFound),
        _ => panic!(
            "{} {template}: this test does not know the route; say what another account's key gets from it",
            method.to_uppercase()
        ),
    }
}

/// What of A's may never appear in an answer to B: its account, ids and provider ids.
const A_MARKERS: [&str; 9] = [
    DEFAULT_ACCOUNT,
    "cust_of_a",
    "bs_of_a",
    "inv_of_a",
    "pay_of_a",
    "pi_of_a",
    "pi_waiting_of_a",
    "evt_waiting_of_a",
    A_PAYOUT,
];

fn assert_nothing_of_a(what: &str, body: &Value) {
    let text = body.to_string();
    for marker in A_MARKERS {
        assert!(
            !text.contains(marker),
            "{what} shows A's `{marker}`: {text}"
        );
    }
}

#[tokio::test]
async fn every_route_answers_another_accounts_key_with_404_or_nothing_of_the_account() {
    let app = spawn_worker(Retries::PATIENT).await;
    let a = ApiKey::configured();
    register_all(&app, &a, &A, "Alpha Ltd", 5000).await;
    // Every kind of A's row the routes can show: a method on file, settings at every level, and
    // an unmatched event (a payment nobody registered, naming no invoice).
    let method = json!({"type": "card", "provider": "STRIPE", "referenceId": "cus_cust_of_a/pm_a"});
    let a_method = put_as(&app, &a, "/customers/cust_of_a/payment-method", method).await;
    let a_method = a_method["id"].as_str().expect("a method id");
    for level in [
        "customers/cust_of_a",
        "billing-schedules/bs_of_a",
        "invoices/inv_of_a",
        "account",
    ] {
        let path = format!("/payments/settings/{level}");
        put_as(&app, &a, &path, json!({"paymentProvider": "GOCARDLESS"})).await;
    }
    let waiting = StripeEvent::new("payment_intent.succeeded", "evt_waiting_of_a").payment(
        "pi_waiting_of_a",
        700,
        "gbp",
    );
    app.deliver_stripe(&waiting.to_bytes()).await;
    assert_eq!(
        app.wait_processed("STRIPE", "evt_waiting_of_a").await,
        "unmatched"
    );
    let (_, listed) = app.api_get("/payments/unmatched").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    let payout = StripeEvent::new("payout.paid", "evt_payout_of_a").object(|payout| {
        payout["id"] = A_PAYOUT.into();
        payout["currency"] = "gbp".into();
    });
    app.deliver_stripe(&payout.to_bytes()).await;
    app.wait_processed("STRIPE", "evt_payout_of_a").await;
    let (status, own) = app.api_get(&format!("/payouts/{A_PAYOUT}")).await;
    assert_eq!(status, 200, "A reads its own payout: {own}");
    let before = app.invoice("inv_of_a").await;

    let b = account_with_key(&app, "acc_b").await;
    let (_, document) = settle::api::router_and_document();
    let document = serde_json::to_value(&document).unwrap();
    let paths = document["paths"].as_object().expect("paths");
    let mut called = Vec::new();
    for (template, operations) in paths {
        for (method, _) in operations.as_object().expect("operations") {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue; // path-level `parameters`, not an operation
            }
            let path = fill(template, a_method);
            assert!(!path.contains('{'), "{template}: a parameter left unfilled");
            let (body, expect) = case(method, template);
            let http_method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, answer) = app.api_as(&b, http_method, &path, body).await;
            let what = format!("{} {path} with B's key", method.to_uppercase());
            match expect {
                Expect::NotFound => {
                    assert_eq!(status, 404, "{what}: {answer}");
                    assert_eq!(answer["error"]["code"], "not_found", "{what}: {answer}");
                }
                Expect::OnlyOwn(expected) => {
                    assert_eq!(status, expected, "{what}: {answer}");
                    assert_nothing_of_a(&what, &answer);
                    if let Some(account) = answer.get("sequenceAccountId") {
                        assert_eq!(account, "acc_b", "{what}: {answer}");
                    }
                }
                Expect::OwnOrNone => {
                    assert!([200, 404].contains(&status), "{what}: {status} {answer}");
                    assert_nothing_of_a(&what, &answer);
                }
            }
            called.push(format!("{} {template}", method.to_uppercase()));
        }
    }
    // The route list really was walked (a document without operations would prove nothing).
    assert!(called.len() >= 20, "{called:?}");
    for route in [
        "POST /invoices/{id}/payments",
        "GET /payments/unmatched",
        "PUT /payments/settings/account",
    ] {
        assert!(called.iter().any(|c| c == route), "{route} in {called:?}");
    }

    // Nothing of A's changed, and its lists still show its own rows.
    let after = app.invoice("inv_of_a").await;
    assert_eq!(after["payments"], before["payments"]);
    assert_eq!(after["paymentSettings"], before["paymentSettings"]);
    let customer = get_as(&app, &a, "/customers/cust_of_a").await;
    assert_eq!(customer["legalName"], "Alpha Ltd");
    let methods = get_as(&app, &a, "/customers/cust_of_a/payment-methods").await;
    assert_eq!(methods.as_array().unwrap().len(), 1, "{methods}");
    assert_eq!(methods[0]["status"], "ACTIVE", "{methods}");
    assert_eq!(methods[0]["onFile"], true, "{methods}");
    let account = get_as(&app, &a, "/payments/settings/account").await;
    assert_eq!(account["paymentProvider"], "GOCARDLESS");
    assert_eq!(account["sequenceAccountId"], DEFAULT_ACCOUNT);
    let (_, listed) = app.api_get("/payments/unmatched").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    app.stop().await;
}

#[tokio::test]
async fn api_keys_are_created_listed_and_revoked_with_the_binary() {
    let app = spawn_app().await;
    let (code, _, _) = settle(&app, &["accounts", "create", "acc_b"]).await;
    assert_eq!(code, 0);
    // An unknown account is refused, with what to do.
    let (code, out, err) = settle(&app, &["api-keys", "create", "--account", "acc_nobody"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("no account `acc_nobody`"), "{err}");

    // Printed once as `<key id>:<secret>`, the Basic credential itself.
    let (code, out, err) = settle(&app, &["api-keys", "create", "--account", "acc_b"]).await;
    assert_eq!(code, 0, "{err}");
    let credential = out.trim();
    let (key_id, secret) = credential.split_once(':').expect("<key id>:<secret>");
    assert!(key_id.starts_with("key_"), "{credential}");
    let key = ApiKey {
        id: key_id.to_owned(),
        secret: secret.to_owned(),
    };
    let (status, body) = app.api_as(&key, Method::GET, "/invoices", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([]));
    let (status, body) = app
        .api_as(
            &key,
            Method::POST,
            "/customers",
            Some(json!({"id": "cust_b", "legalName": "Beta Ltd"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["sequenceAccountId"], "acc_b");
    // A wrong secret for a real key id is 401, as an unknown key is.
    let wrong = ApiKey {
        secret: format!("{secret}x"),
        ..key.clone()
    };
    for bad in [
        &wrong,
        &ApiKey {
            id: "key_nobody".into(),
            secret: secret.into(),
        },
    ] {
        let (status, body) = app.api_as(bad, Method::GET, "/invoices", None).await;
        assert_api_error(status, &body, 401, "unauthorized");
    }
    // The configured credential keeps working, for the default account.
    let (status, body) = app.api_get("/customers/cust_b").await;
    assert_api_error(status, &body, 404, "not_found");

    // The JSON shape, and a second key beside the first.
    let second = api_key_of(&app, "acc_b").await;
    let (status, _) = app
        .api_as(&second, Method::GET, "/customers/cust_b", None)
        .await;
    assert_eq!(status, 200);

    // Listed without secrets; stored as a hash only.
    let (code, listed, _) = settle(
        &app,
        &["api-keys", "list", "--account", "acc_b", "--output", "json"],
    )
    .await;
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [key_id, second.id.as_str()]);
    let (_, table, _) = settle(&app, &["api-keys", "list", "--account", "acc_b"]).await;
    for shown in [listed.to_string(), table] {
        assert!(
            !shown.contains(secret) && !shown.contains(&second.secret),
            "{shown}"
        );
    }
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT row_to_json(k)::text, secret_hash FROM api_keys k ORDER BY created_at",
    )
    .fetch_all(&app.db())
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    for ((row, hash), secret) in rows.iter().zip([secret, second.secret.as_str()]) {
        assert!(!row.contains(secret), "the clear secret is stored: {row}");
        assert_eq!(hash.len(), 32, "a SHA-256");
        assert_ne!(hash.as_slice(), secret.as_bytes());
    }
    let (code, _, _) = settle(&app, &["api-keys", "list", "--account", "acc_nobody"]).await;
    assert_eq!(code, 3, "no keys");

    // Revoked: 401 from then on; the other key still works. An unknown key: exit 3.
    let (code, out, err) = settle(&app, &["api-keys", "revoke", key_id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(key_id), "{out}");
    let (status, body) = app.api_as(&key, Method::GET, "/invoices", None).await;
    assert_api_error(status, &body, 401, "unauthorized");
    let (status, _) = app.api_as(&second, Method::GET, "/invoices", None).await;
    assert_eq!(status, 200);
    let (code, _, _) = settle(&app, &["api-keys", "revoke", "key_nobody"]).await;
    assert_eq!(code, 3);
    let (_, listed, _) = settle(
        &app,
        &["api-keys", "list", "--account", "acc_b", "--output", "json"],
    )
    .await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert!(listed[0]["revokedAt"].is_string(), "{listed}");
    assert!(listed[1]["revokedAt"].is_null(), "{listed}");
    app.stop().await;
}

#[tokio::test]
async fn the_accounts_own_settings_apply_below_the_customer_and_to_that_account_only() {
    let app = spawn_worker(Retries::PATIENT).await;
    let a = ApiKey::configured();
    let b = account_with_key(&app, "acc_b").await;
    register_all(&app, &a, &SAME, "Alpha Ltd", 1000).await;
    register_all(&app, &b, &SAME, "Beta Ltd", 1000).await;
    let effective = |key: &ApiKey| {
        let key = key.clone();
        let app = &app;
        async move { get_as(app, &key, "/invoices/inv_same/payment-settings").await }
    };
    let config = json!({"paymentProvider": {"value": "NONE", "source": "ACCOUNT_DEFAULT"},
                        "autoCharge": {"value": false, "source": "ACCOUNT_DEFAULT"}});
    assert_eq!(effective(&a).await, config);
    let (status, body) = app
        .api_as(&a, Method::GET, "/payments/settings/account", None)
        .await;
    assert_api_error(status, &body, 404, "not_found");

    // The account's level, in the seed's shape: no target id, the account names it.
    let body = put_as(
        &app,
        &a,
        "/payments/settings/account",
        json!({"paymentProvider": "STRIPE"}),
    )
    .await;
    assert!(body["id"].as_str().unwrap().starts_with("pset_"), "{body}");
    assert_eq!(
        body,
        json!({"id": body["id"], "sequenceAccountId": DEFAULT_ACCOUNT, "paymentProvider": "STRIPE"})
    );
    assert_eq!(
        get_as(&app, &a, "/payments/settings/account").await,
        body,
        "read back"
    );
    // A field the account's row leaves unset still comes from config.
    assert_eq!(
        effective(&a).await,
        json!({"paymentProvider": {"value": "STRIPE", "source": "ACCOUNT_DEFAULT"},
               "autoCharge": {"value": false, "source": "ACCOUNT_DEFAULT"}})
    );
    assert_eq!(effective(&b).await, config, "another account is unaffected");

    // The customer's level overrides the account's; auto-charge set on the account shows.
    for (path, update) in [
        (
            "/payments/settings/customers/cust_same",
            json!({"paymentProvider": "GOCARDLESS"}),
        ),
        (
            "/payments/settings/account",
            json!({"paymentProvider": "STRIPE", "autoCharge": true}),
        ),
    ] {
        put_as(&app, &a, path, update).await;
    }
    assert_eq!(
        effective(&a).await,
        json!({"paymentProvider": {"value": "GOCARDLESS", "source": "CUSTOMER"},
               "autoCharge": {"value": true, "source": "ACCOUNT_DEFAULT"}})
    );
    assert_eq!(effective(&b).await, config);
    let invoice = app.invoice("inv_same").await;
    assert_eq!(invoice["paymentSettings"], effective(&a).await);

    // The worker resolves the same way: the payment it applies records the account's
    // auto-charge and the customer's provider.
    let paid = StripeEvent::new("payment_intent.succeeded", "evt_account_settings")
        .payment("pi_same", 1000, "gbp")
        .invoice_id("inv_same");
    app.deliver_stripe(&paid.to_bytes()).await;
    assert_eq!(
        app.wait_processed("STRIPE", "evt_account_settings").await,
        "applied"
    );
    let recorded: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT account_id, effective_provider, effective_auto_charge FROM payments
         WHERE effective_provider IS NOT NULL",
    )
    .fetch_all(&app.db())
    .await
    .unwrap();
    assert_eq!(
        recorded,
        [(DEFAULT_ACCOUNT.to_owned(), "GOCARDLESS".to_owned(), true)],
        "applied to the default account's payment only"
    );
    assert_eq!(app.invoice("inv_same").await["status"], "PAID");
    assert_eq!(
        get_as(&app, &b, "/invoices/inv_same").await["status"],
        "OPEN"
    );

    // null clears the account's field: config decides again.
    let body = put_as(
        &app,
        &a,
        "/payments/settings/account",
        json!({"paymentProvider": null, "autoCharge": null}),
    )
    .await;
    assert_eq!(body["paymentProvider"], Value::Null);
    assert_eq!(
        effective(&a).await["autoCharge"],
        json!({"value": false, "source": "ACCOUNT_DEFAULT"})
    );
    app.stop().await;
}

#[tokio::test]
async fn a_database_from_before_accounts_keeps_every_row_and_figure_under_the_default_account() {
    // The schema as it was before accounts (connections, then scoping), with a row in every
    // table they key anew.
    let (url, db) = database_before_migration(20261201000013).await;
    sqlx::raw_sql(
        "INSERT INTO accounts (id) VALUES ('acc_default');
         INSERT INTO customers (id, account_id, legal_name, stripe_customer_id)
             VALUES ('cust', 'acc_default', 'Cust Ltd', 'cus_m');
         INSERT INTO billing_schedules (id, account_id, customer_id) VALUES ('bs', 'acc_default', 'cust');
         INSERT INTO invoices (id, account_id, customer_id, billing_schedule_id, number, currency,
                 amount_due, amount_paid, amount_refunded, status, refund_state) VALUES
             ('inv_m', 'acc_default', 'cust', 'bs', 'N-1', 'GBP', 1000, 1000, 250, 'PAID', 'PARTIAL'),
             ('inv_w', 'acc_default', 'cust', NULL, 'N-2', 'GBP', 500, 0, 0, 'OPEN', 'NONE');
         INSERT INTO payments (id, account_id, invoice_id, provider, provider_payment_id, amount,
                 currency, status, collected)
             VALUES ('pay_m', 'acc_default', 'inv_m', 'STRIPE', 'pi_m', 1000, 'GBP', 'SUCCEEDED', true);
         INSERT INTO money_movements (account_id, invoice_id, payment_id, provider,
                 provider_object_id, kind, amount, currency, amount_source, occurred_at, event_id) VALUES
             ('acc_default', 'inv_m', 'pay_m', 'STRIPE', 'pi_m', 'COLLECTED', 1000, 'GBP', 'event', now(), 'evt_1'),
             ('acc_default', 'inv_m', 'pay_m', 'STRIPE', 're_m', 'REFUNDED', 250, 'GBP', 'event', now(), 'evt_2');
         INSERT INTO refunds (id, account_id, payment_id, provider, provider_refund_id, amount, status)
             VALUES ('ref_m', 'acc_default', 'pay_m', 'STRIPE', 're_m', 250, 'SUCCEEDED');
         INSERT INTO payment_settings (id, account_id, level, target_id, payment_provider)
             VALUES ('pset_m', 'acc_default', 'CUSTOMER', 'cust', 'STRIPE');
         INSERT INTO payment_methods (id, account_id, customer_id, provider, type, reference_id, on_file)
             VALUES ('pm_m', 'acc_default', 'cust', 'STRIPE', 'card', 'cus_m/pm_1', true);
         INSERT INTO notifications (account_id, payment_id, failure_event_id, recipient_kind,
                 recipients, subject, body_text, body_html, status)
             VALUES ('acc_default', 'pay_m', 'ch_1', 'CUSTOMER', '{a@example.com}', 's', 't', 'h', 'SENT');
         INSERT INTO provider_invoice_links (provider, provider_invoice_id, invoice_id, event_id)
             VALUES ('STRIPE', 'in_m', 'inv_m', 'evt_link');",
    )
    .execute(&db)
    .await
    .unwrap();
    // An event that waits, unmatched, for a payment nobody registered yet.
    let waiting = StripeEvent::new("payment_intent.succeeded", "evt_wait")
        .created(1_790_000_000)
        .payment("pi_wait", 500, "gbp");
    sqlx::query(
        "INSERT INTO webhook_events (provider, event_id, account_id, event_type, payload,
             received_at, outcome, unmatched_provider_payment_id, unmatched_occurred_at)
         VALUES ('STRIPE', 'evt_wait', 'acc_default', 'payment_intent.succeeded', $1::json, now(),
             'unmatched', 'pi_wait', now())",
    )
    .bind(String::from_utf8(waiting.to_bytes()).unwrap())
    .execute(&db)
    .await
    .unwrap();
    migrate_all(&db).await;
    let link_account: String = sqlx::query_scalar(
        "SELECT account_id FROM provider_invoice_links WHERE provider_invoice_id = 'in_m'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        link_account, DEFAULT_ACCOUNT,
        "the link took its invoice's account"
    );
    db.close().await;

    let app = spawn_run_on(url).await;
    let invoice = app.invoice("inv_m").await;
    assert_eq!(invoice["sequenceAccountId"], DEFAULT_ACCOUNT);
    assert_eq!(invoice["status"], "PAID");
    assert_eq!(invoice["amountPaid"], 1000);
    assert_eq!(invoice["amountRefunded"], 250);
    assert_eq!(invoice["amountNet"], 750);
    assert_eq!(invoice["payments"].as_array().unwrap().len(), 1);
    assert_eq!(invoice["movements"].as_array().unwrap().len(), 2);
    assert_eq!(invoice["refunds"][0]["providerRefundId"], "re_m");
    assert_eq!(
        invoice["paymentSettings"]["paymentProvider"],
        json!({"value": "STRIPE", "source": "CUSTOMER"})
    );
    let methods = get_as(
        &app,
        &ApiKey::configured(),
        "/customers/cust/payment-methods",
    )
    .await;
    assert_eq!(methods[0]["onFile"], true, "{methods}");
    // The waiting event is still found and applied by its payment's registration.
    let (_, listed) = app.api_get("/payments/unmatched").await;
    assert_eq!(listed["data"][0]["eventId"], "evt_wait", "{listed}");
    let payment = app
        .register_payment("inv_w", "STRIPE", "pi_wait", 500)
        .await;
    assert_eq!(payment["status"], "SUCCEEDED", "{payment}");
    assert_eq!(app.invoice("inv_w").await["status"], "PAID");
    // And a new account may use the same ids.
    let b = account_with_key(&app, "acc_b").await;
    register_all(
        &app,
        &b,
        &Ids {
            customer: "cust",
            schedule: "bs",
            invoice: "inv_m",
            payment: "pay_m",
            provider_payment: "pi_m",
        },
        "Beta Ltd",
        300,
    )
    .await;
    assert_eq!(get_as(&app, &b, "/invoices/inv_m").await["amountPaid"], 0);
    assert_eq!(app.invoice("inv_m").await["amountPaid"], 1000);

    // The worker builds on what was migrated: a second refund of the migrated payment counts
    // in the default account, beside the migrated one, and not in acc_b's same-named invoice.
    app.deliver_stripe(
        &StripeEvent::new("refund.created", "evt_new_refund")
            .created(1_790_000_000)
            .refund("re_new", "pi_m", 750, "gbp", "succeeded")
            .to_bytes(),
    )
    .await;
    assert_eq!(
        app.wait_processed("STRIPE", "evt_new_refund").await,
        "applied"
    );
    let invoice = app.invoice("inv_m").await;
    assert_eq!(invoice["amountRefunded"], 1000);
    assert_eq!(invoice["refundState"], "FULL");
    assert_eq!(
        get_as(&app, &b, "/invoices/inv_m").await["amountRefunded"],
        0
    );
    app.stop().await;
}
