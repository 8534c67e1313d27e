//! Billing schedules, invoices and payment attempts: what the billing system registers before the
//! providers' webhooks arrive.

use serde_json::{Value, json};

use crate::helpers::*;

/// The effective settings of an invoice when no level sets anything.
fn account_defaults() -> Value {
    json!({
        "paymentProvider": {"value": "NONE", "source": "ACCOUNT_DEFAULT"},
        "autoCharge": {"value": false, "source": "ACCOUNT_DEFAULT"},
    })
}

fn without(body: &Value, keys: &[&str]) -> Value {
    let mut body = body.clone();
    let object = body.as_object_mut().expect("an object");
    for key in keys {
        object.remove(*key);
    }
    body
}

fn is_timestamp(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|text| chrono::DateTime::parse_from_rfc3339(text).is_ok())
}

fn invoice_body(id: &str, customer: &str, number: &str) -> Value {
    json!({
        "id": id,
        "customerId": customer,
        "number": number,
        "currency": "GBP",
        "amountDue": 12_500,
    })
}

async fn schedule(app: &TestApp, id: &str, customer: &str) {
    let (status, body) = app
        .api_post(
            "/billing-schedules",
            json!({"id": id, "customerId": customer}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

// ---- billing schedules ----

#[tokio::test]
async fn a_billing_schedule_is_created_and_read_back() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    let (status, created) = app
        .api_post(
            "/billing-schedules",
            json!({"id": "bs1", "customerId": "c1", "name": "Monthly retainer"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(is_timestamp(&created["createdAt"]), "{created}");
    assert_eq!(
        without(&created, &["createdAt"]),
        json!({
            "id": "bs1",
            "sequenceAccountId": "acc_default",
            "customerId": "c1",
            "name": "Monthly retainer",
        })
    );
    let (status, read) = app.api_get("/billing-schedules/bs1").await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read, created);

    // The name is optional.
    let (status, unnamed) = app
        .api_post(
            "/billing-schedules",
            json!({"id": "bs2", "customerId": "c1"}),
        )
        .await;
    assert_eq!(status, 201, "{unnamed}");
    assert_eq!(unnamed["name"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn billing_schedule_errors() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    let (status, body) = app
        .api_post(
            "/billing-schedules",
            json!({"id": "bs1", "customerId": "nobody"}),
        )
        .await;
    assert_api_error(status, &body, 404, "not_found");
    let (status, body) = app.api_get("/billing-schedules/bs1").await;
    assert_api_error(status, &body, 404, "not_found");

    schedule(&app, "bs1", "c1").await;
    let (status, body) = app
        .api_post(
            "/billing-schedules",
            json!({"id": "bs1", "customerId": "c1"}),
        )
        .await;
    assert_api_error(status, &body, 409, "conflict");

    let (status, body) = app
        .api_post("/billing-schedules", json!({"id": "", "customerId": "c1"}))
        .await;
    assert_validation_error(status, &body, "id");
    let (status, body) = app
        .api_post("/billing-schedules", json!({"id": "bs3"}))
        .await;
    assert_validation_error(status, &body, "customerId");
    app.stop().await;
}

// ---- invoices ----

#[tokio::test]
async fn an_invoice_is_registered_open_with_no_payments_and_effective_settings() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    schedule(&app, "bs1", "c1").await;
    let (status, created) = app
        .api_post(
            "/invoices",
            json!({
                "id": "inv1",
                "customerId": "c1",
                "billingScheduleId": "bs1",
                "number": "INV-2026-0001",
                "currency": "GBP",
                "amountDue": 12_500,
                "dueDate": "2026-12-31",
                "paymentLink": "https://pay.example/inv1",
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(is_timestamp(&created["createdAt"]), "{created}");
    assert!(is_timestamp(&created["updatedAt"]), "{created}");
    assert_eq!(
        without(&created, &["createdAt", "updatedAt"]),
        json!({
            "id": "inv1",
            "sequenceAccountId": "acc_default",
            "customerId": "c1",
            "billingScheduleId": "bs1",
            "number": "INV-2026-0001",
            "currency": "GBP",
            "amountDue": 12_500,
            "amountPaid": 0,
            "amountRefunded": 0,
            "amountInDispute": 0,
            "amountNet": 0,
            "refundState": "NONE",
            "status": "OPEN",
            "dueDate": "2026-12-31",
            "paymentLink": "https://pay.example/inv1",
            "payments": [],
            "movements": [],
            "refunds": [],
            "disputes": [],
            "paymentSettings": account_defaults(),
            "payouts": [],
            // Auto-charge is off by the account's defaults: nothing was, or will be, charged.
            "charges": [],
            "nextCharge": {"attempt": null, "dueAt": null, "noneBecause": "auto_charge_off"},
        })
    );
    let (status, read) = app.api_get("/invoices/inv1").await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read, created);

    // Optional fields may be left out; a zero amount is allowed.
    let mut minimal = invoice_body("inv2", "c1", "INV-2026-0002");
    minimal["amountDue"] = json!(0);
    let (status, created) = app.api_post("/invoices", minimal).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["billingScheduleId"], Value::Null);
    assert_eq!(created["dueDate"], Value::Null);
    assert_eq!(created["paymentLink"], Value::Null);
    assert_eq!(created["amountDue"], 0);
    assert_eq!(created["status"], "OPEN");
    app.stop().await;
}

#[tokio::test]
async fn the_invoice_shows_settings_set_before_it_was_registered() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    let (status, body) = app
        .api_put(
            "/payments/settings/customers/c1",
            json!({"paymentProvider": "GOCARDLESS", "autoCharge": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, created) = app
        .api_post("/invoices", invoice_body("inv1", "c1", "INV-1"))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["paymentSettings"],
        json!({
            "paymentProvider": {"value": "GOCARDLESS", "source": "CUSTOMER"},
            "autoCharge": {"value": true, "source": "CUSTOMER"},
        })
    );
    app.stop().await;
}

#[tokio::test]
async fn invalid_invoices_are_refused_naming_the_field() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    app.create_customer("c2").await;
    schedule(&app, "bs_of_c2", "c2").await;
    let base = invoice_body("inv1", "c1", "INV-1");
    let set = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    let cases = [
        ("currency", set("currency", json!("gbp"))),
        ("currency", set("currency", json!("GBPX"))),
        ("currency", set("currency", json!("GB"))),
        // Three upper-case letters, but not ISO 4217 money.
        ("currency", set("currency", json!("XYZ"))),
        ("currency", set("currency", json!("XXX"))),
        ("amountDue", set("amountDue", json!(-1))),
        // So large that sums of amounts could overflow.
        (
            "amountDue",
            set("amountDue", json!(9_223_372_036_854_775_807_i64)),
        ),
        ("amountDue", set("amountDue", json!(12.5))),
        ("amountDue", set("amountDue", json!("12500"))),
        ("dueDate", set("dueDate", json!("31/12/2026"))),
        (
            "billingScheduleId",
            set("billingScheduleId", json!("bs_of_c2")),
        ),
        ("number", set("number", json!(" "))),
        ("id", set("id", json!("inv/1"))),
        ("currency", without(&base, &["currency"])),
    ];
    for (field, body) in cases {
        let (status, answer) = app.api_post("/invoices", body.clone()).await;
        assert_validation_error(status, &answer, field);
        let (status, _) = app.api_get("/invoices/inv1").await;
        assert_eq!(status, 404, "nothing is stored for {body}");
    }
    app.stop().await;
}

/// A payment link is the `href` of the customer's failure mail: only an absolute `https://` URL
/// is taken, never `javascript:` or `data:` (which HTML escaping does not stop) or plain `http://`.
#[tokio::test]
async fn a_payment_link_must_be_an_absolute_https_url() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    let with_link = |link: &str| {
        let mut body = invoice_body("inv1", "c1", "INV-1");
        body["paymentLink"] = json!(link);
        body
    };
    for link in [
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "http://pay.example/x",
        "//pay.example/x",
        "pay.example/x",
    ] {
        let (status, answer) = app.api_post("/invoices", with_link(link)).await;
        assert_validation_error(status, &answer, "paymentLink");
        let (status, _) = app.api_get("/invoices/inv1").await;
        assert_eq!(status, 404, "nothing is stored for {link}");
    }
    let (status, created) = app
        .api_post("/invoices", with_link("https://pay.example/x"))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["paymentLink"], "https://pay.example/x");
    app.stop().await;
}

/// A NUL was a 500 (PostgreSQL refuses it in text): it is a 400 naming the field.
#[tokio::test]
async fn control_characters_in_an_invoice_are_refused_naming_the_field() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    let (status, answer) = app
        .api_post("/invoices", invoice_body("inv1", "c1", "INV\0-1"))
        .await;
    assert_validation_error(status, &answer, "number");
    let mut body = invoice_body("inv1", "c1", "INV-1");
    body["paymentLink"] = json!("https://pay.example/x\n");
    let (status, answer) = app.api_post("/invoices", body).await;
    assert_validation_error(status, &answer, "paymentLink");
    let (status, _) = app.api_get("/invoices/inv1").await;
    assert_eq!(status, 404, "nothing was stored");
    app.stop().await;
}

#[tokio::test]
async fn a_taken_invoice_id_or_number_is_a_conflict() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    let (status, original) = app
        .api_post("/invoices", invoice_body("inv1", "c1", "INV-1"))
        .await;
    assert_eq!(status, 201, "{original}");

    let (status, body) = app
        .api_post("/invoices", invoice_body("inv1", "c1", "INV-2"))
        .await;
    assert_api_error(status, &body, 409, "conflict");
    let (status, body) = app
        .api_post("/invoices", invoice_body("inv2", "c1", "INV-1"))
        .await;
    assert_api_error(status, &body, 409, "conflict");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("INV-1"),
        "the message names the number: {body}"
    );
    let (status, _) = app.api_get("/invoices/inv2").await;
    assert_eq!(status, 404);
    let (status, read) = app.api_get("/invoices/inv1").await;
    assert_eq!(status, 200);
    assert_eq!(read, original);
    app.stop().await;
}

#[tokio::test]
async fn an_invoice_for_an_unknown_customer_or_schedule_is_not_found() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    let (status, body) = app
        .api_post("/invoices", invoice_body("inv1", "nobody", "INV-1"))
        .await;
    assert_api_error(status, &body, 404, "not_found");
    let mut body = invoice_body("inv1", "c1", "INV-1");
    body["billingScheduleId"] = json!("no_schedule");
    let (status, body) = app.api_post("/invoices", body).await;
    assert_api_error(status, &body, 404, "not_found");
    let (status, body) = app.api_get("/invoices/inv1").await;
    assert_api_error(status, &body, 404, "not_found");
    app.stop().await;
}

// ---- listing ----

/// Follows `nextCursor` from `first` until a page has none; returns the ids in page order.
async fn all_pages(app: &TestApp, first: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut path = first.to_owned();
    for _ in 0..100 {
        let (status, page) = app.api_get(&path).await;
        assert_eq!(status, 200, "{path}: {page}");
        let data = page["data"].as_array().expect("data");
        assert!(data.len() <= limit, "{path}: {page}");
        ids.extend(data.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
        match page["nextCursor"].as_str() {
            Some(cursor) => {
                assert!(!data.is_empty(), "a cursor after an empty page: {page}");
                path = format!("{first}&cursor={cursor}");
            }
            None => return ids,
        }
    }
    panic!("more than 100 pages: {ids:?}");
}

#[tokio::test]
async fn listing_pages_through_one_customers_invoices_in_id_order() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    app.create_customer("c2").await;
    // Created out of id order, the other customer's ids interleaved.
    for (id, customer) in [
        ("inv_c", "c1"),
        ("inv_a", "c1"),
        ("inv_bb", "c2"),
        ("inv_e", "c1"),
        ("inv_b", "c1"),
        ("inv_0", "c2"),
        ("inv_d", "c1"),
    ] {
        app.create_invoice(id, customer, None, "GBP", 1_000).await;
    }
    let expected = ["inv_a", "inv_b", "inv_c", "inv_d", "inv_e"];

    let ids = all_pages(&app, "/invoices?customerId=c1&status=OPEN&limit=2", 2).await;
    assert_eq!(ids, expected);

    // A page that holds exactly the rest has no cursor.
    let (status, page) = app.api_get("/invoices?customerId=c1&limit=5").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 5);
    assert!(page["nextCursor"].as_str().is_none(), "{page}");

    // Without a filter, every customer's invoices; the listed invoice is the one read by id.
    let ids = all_pages(&app, "/invoices?limit=3", 3).await;
    assert_eq!(
        ids,
        [
            "inv_0", "inv_a", "inv_b", "inv_bb", "inv_c", "inv_d", "inv_e"
        ]
    );
    let (_, page) = app.api_get("/invoices?customerId=c2").await;
    let (_, inv_bb) = app.api_get("/invoices/inv_bb").await;
    assert_eq!(
        page["data"][1],
        without(
            &inv_bb,
            &[
                "payments",
                "movements",
                "refunds",
                "disputes",
                "paymentSettings",
                "payouts",
                "charges",
                "nextCharge"
            ]
        )
    );

    let (status, page) = app.api_get("/invoices?customerId=nobody").await;
    assert_eq!(status, 200);
    assert_eq!(page, json!({"data": [], "nextCursor": null}));
    app.stop().await;
}

#[tokio::test]
async fn listing_filters_by_status() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    for id in ["inv1", "inv2", "inv3"] {
        app.create_invoice(id, "c1", None, "GBP", 1_000).await;
    }
    // Only the worker moves an invoice out of OPEN; do it here directly.
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(app.database_url())
        .await
        .unwrap();
    sqlx::query("UPDATE invoices SET status = 'PAID', amount_paid = amount_due WHERE id = 'inv2'")
        .execute(&mut db)
        .await
        .unwrap();

    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, page) = app.api_get("/invoices?customerId=c1&status=OPEN").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["inv1", "inv3"]);
    let (_, page) = app.api_get("/invoices?customerId=c1&status=PAID").await;
    assert_eq!(ids(&page), ["inv2"]);
    assert_eq!(page["data"][0]["status"], "PAID");
    let (_, page) = app.api_get("/invoices?status=PAYMENT_FAILED").await;
    assert_eq!(ids(&page), Vec::<String>::new());
    app.stop().await;
}

#[tokio::test]
async fn bad_listing_parameters_are_refused_naming_the_parameter() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    app.create_invoice("inv1", "c1", None, "GBP", 1_000).await;
    for (field, query) in [
        ("status", "status=BOGUS"),
        ("status", "status=open"),
        ("limit", "limit=0"),
        ("limit", "limit=201"),
        ("limit", "limit=-1"),
        ("cursor", "cursor=%40%40not-a-cursor%40%40"),
        ("cursor", "cursor=_w"),
    ] {
        let (status, body) = app.api_get(&format!("/invoices?{query}")).await;
        assert_validation_error(status, &body, field);
    }
    // The bounds themselves are fine.
    for query in ["limit=1", "limit=200"] {
        let (status, body) = app.api_get(&format!("/invoices?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_limit_that_is_not_a_number_is_a_json_validation_error() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.url("/invoices?limit=ten"))
        .basic_auth(API_KEY_ID, Some(API_SECRET))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 400, "{text}");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("errors are JSON `{{\"error\":…}}`, got {text:?}"));
    assert_validation_error(status, &body, "limit");
    app.stop().await;
}

// ---- payments ----

async fn app_with_invoice() -> TestApp {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    app.create_invoice("inv1", "c1", None, "GBP", 12_500).await;
    app
}

fn payment(provider: &str, provider_payment_id: &str, amount: i64) -> Value {
    json!({
        "provider": provider,
        "providerPaymentId": provider_payment_id,
        "amount": amount,
        "currency": "GBP",
    })
}

#[tokio::test]
async fn a_registered_payment_appears_on_its_invoice_and_by_id() {
    let app = app_with_invoice().await;
    let mut request = payment("STRIPE", "pi_3MtwBwLkdIwHu7ix28a3tqPa", 5_000);
    request["id"] = json!("pay_given_1");
    let (status, stripe) = app.api_post("/invoices/inv1/payments", request).await;
    assert_eq!(status, 201, "{stripe}");
    assert!(is_timestamp(&stripe["createdAt"]), "{stripe}");
    assert!(is_timestamp(&stripe["updatedAt"]), "{stripe}");
    assert_eq!(
        without(&stripe, &["createdAt", "updatedAt"]),
        json!({
            "id": "pay_given_1",
            "sequenceAccountId": "acc_default",
            "invoiceId": "inv1",
            "provider": "STRIPE",
            "providerPaymentId": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
            "amount": 5_000,
            "currency": "GBP",
            "status": "REGISTERED",
            "collected": false,
            "failureCode": null,
            "failureMessage": null,
            "lastEventAt": null,
            "holdExpiresAt": null,
        })
    );

    let (status, gocardless) = app
        .api_post(
            "/invoices/inv1/payments",
            payment("GOCARDLESS", "PM0000123ABCDE", 7_500),
        )
        .await;
    assert_eq!(status, 201, "{gocardless}");
    assert_eq!(gocardless["status"], "REGISTERED");
    assert_eq!(gocardless["collected"], false);
    assert_eq!(gocardless["provider"], "GOCARDLESS");

    // Registering a payment moves no money: the invoice stays open and unpaid.
    let (status, invoice) = app.api_get("/invoices/inv1").await;
    assert_eq!(status, 200, "{invoice}");
    assert_eq!(
        invoice["payments"],
        json!([stripe.clone(), gocardless.clone()])
    );
    assert_eq!(invoice["status"], "OPEN");
    assert_eq!(invoice["amountPaid"], 0);

    for registered in [&stripe, &gocardless] {
        let id = registered["id"].as_str().unwrap();
        let (status, mut read) = app.api_get(&format!("/payments/{id}")).await;
        assert_eq!(status, 200, "{read}");
        // The payment as registered, with its money: none has moved yet.
        let money = read.as_object_mut().unwrap();
        for (field, nothing) in [
            ("amountPaid", json!(0)),
            ("amountRefunded", json!(0)),
            ("amountNet", json!(0)),
            ("movements", json!([])),
            ("refunds", json!([])),
            ("disputes", json!([])),
        ] {
            assert_eq!(money.remove(field), Some(nothing), "{field}");
        }
        assert_eq!(&read, registered);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_payment_without_an_id_gets_a_generated_one() {
    let app = app_with_invoice().await;
    let mut ids = Vec::new();
    for provider_payment_id in ["pi_first", "pi_second"] {
        let (status, created) = app
            .api_post(
                "/invoices/inv1/payments",
                payment("STRIPE", provider_payment_id, 100),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        assert!(
            id.strip_prefix("pay_").is_some_and(|rest| !rest.is_empty()),
            "{id}"
        );
        let (status, read) = app.api_get(&format!("/payments/{id}")).await;
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["providerPaymentId"], provider_payment_id);
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    app.stop().await;
}

#[tokio::test]
async fn invalid_payments_are_refused_naming_the_field() {
    let app = app_with_invoice().await;
    let cases = [
        (
            "providerPaymentId",
            payment("STRIPE", "PM0000123ABCDE", 100),
        ),
        (
            "providerPaymentId",
            payment("STRIPE", "ch_3MtwBwLkdIwHu7ix", 100),
        ),
        ("providerPaymentId", payment("STRIPE", "pi_", 100)),
        (
            "providerPaymentId",
            payment("GOCARDLESS", "pi_3MtwBwLkdIwHu7ix", 100),
        ),
        ("providerPaymentId", payment("GOCARDLESS", "PM", 100)),
        ("currency", {
            let mut body = payment("STRIPE", "pi_1", 100);
            body["currency"] = json!("EUR");
            body
        }),
        ("currency", {
            let mut body = payment("STRIPE", "pi_1", 100);
            body["currency"] = json!("gbp");
            body
        }),
        ("amount", payment("STRIPE", "pi_1", -5)),
        ("provider", payment("PAYPAL", "pi_1", 100)),
        ("id", {
            let mut body = payment("STRIPE", "pi_1", 100);
            body["id"] = json!("");
            body
        }),
        // `GET /payments/unmatched` takes that path.
        ("id", {
            let mut body = payment("STRIPE", "pi_1", 100);
            body["id"] = json!("unmatched");
            body
        }),
    ];
    for (field, body) in cases {
        let (status, answer) = app.api_post("/invoices/inv1/payments", body).await;
        assert_validation_error(status, &answer, field);
    }
    let (_, invoice) = app.api_get("/invoices/inv1").await;
    assert_eq!(invoice["payments"], json!([]), "nothing refused was stored");
    app.stop().await;
}

#[tokio::test]
async fn an_attempt_above_what_the_invoice_owes_needs_allow_overpayment() {
    let app = app_with_invoice().await; // 125.00 GBP, nothing paid
    let (status, answer) = app
        .api_post(
            "/invoices/inv1/payments",
            payment("STRIPE", "pi_huge", 999_999_999),
        )
        .await;
    assert_validation_error(status, &answer, "amount");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("999999999") && message.contains("12500"),
        "names both amounts: {message}"
    );
    // Exactly what is owed is fine; more, when the caller says it means it.
    let (status, answer) = app
        .api_post(
            "/invoices/inv1/payments",
            payment("STRIPE", "pi_exact", 12_500),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let mut meant = payment("STRIPE", "pi_huge", 999_999_999);
    meant["allowOverpayment"] = json!(true);
    let (status, answer) = app.api_post("/invoices/inv1/payments", meant).await;
    assert_eq!(status, 201, "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn a_payment_registered_twice_is_a_conflict() {
    let app = app_with_invoice().await;
    app.create_invoice("inv2", "c1", None, "GBP", 5_000).await;
    let mut first = payment("STRIPE", "pi_3MtwBwLkdIwHu7ix28a3tqPa", 5_000);
    first["id"] = json!("pay_1");
    let (status, created) = app.api_post("/invoices/inv1/payments", first).await;
    assert_eq!(status, 201, "{created}");

    // The same provider payment, under another id, on either invoice.
    for invoice in ["inv1", "inv2"] {
        let (status, body) = app
            .api_post(
                &format!("/invoices/{invoice}/payments"),
                payment("STRIPE", "pi_3MtwBwLkdIwHu7ix28a3tqPa", 5_000),
            )
            .await;
        assert_api_error(status, &body, 409, "conflict");
    }
    // The same payment id for another provider payment.
    let mut same_id = payment("STRIPE", "pi_other", 5_000);
    same_id["id"] = json!("pay_1");
    let (status, body) = app.api_post("/invoices/inv1/payments", same_id).await;
    assert_api_error(status, &body, 409, "conflict");

    let (_, invoice) = app.api_get("/invoices/inv1").await;
    assert_eq!(invoice["payments"], json!([created]));
    let (_, invoice) = app.api_get("/invoices/inv2").await;
    assert_eq!(invoice["payments"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn unknown_invoices_and_payments_are_not_found() {
    let app = app_with_invoice().await;
    let (status, body) = app
        .api_post(
            "/invoices/nothing/payments",
            payment("STRIPE", "pi_3MtwBwLkdIwHu7ix28a3tqPa", 100),
        )
        .await;
    assert_api_error(status, &body, 404, "not_found");
    let (status, body) = app.api_get("/payments/pay_nothing").await;
    assert_api_error(status, &body, 404, "not_found");
    let (status, body) = app.api_get("/invoices/nothing").await;
    assert_api_error(status, &body, 404, "not_found");
    app.stop().await;
}

// ---- database outage ----

#[tokio::test]
async fn an_unreachable_database_answers_503_with_retry_after() {
    let app = spawn_app_with(AppOptions {
        // Nothing listens on port 1; a request waits for the pool's acquire timeout (3 s).
        database_url: Some("postgres://settle:settle@127.0.0.1:1/settle".into()),
        ..AppOptions::default()
    })
    .await;
    let request = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = app
            .http
            .request(method, app.url(path))
            .basic_auth(API_KEY_ID, Some(API_SECRET));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    // Concurrently, so the test waits for one acquire timeout, not three.
    let responses = futures_util::future::join_all([
        request(reqwest::Method::GET, "/invoices/x", None),
        request(
            reqwest::Method::POST,
            "/customers",
            Some(json!({"id": "c1", "legalName": "C1 Ltd"})),
        ),
        request(
            reqwest::Method::POST,
            "/invoices",
            Some(invoice_body("inv1", "c1", "INV-1")),
        ),
    ])
    .await;
    for response in responses {
        let response = response.unwrap();
        let url = response.url().clone();
        assert_eq!(response.status(), 503, "{url}");
        let retry_after = response
            .headers()
            .get("retry-after")
            .unwrap_or_else(|| panic!("{url}: a Retry-After header"))
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            retry_after.parse::<u64>().is_ok_and(|seconds| seconds > 0),
            "{url}: Retry-After {retry_after:?}"
        );
        let body: Value = response.json().await.unwrap();
        assert_api_error(503, &body, 503, "database_unavailable");
    }
    app.stop().await;
}
