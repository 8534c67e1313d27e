//! The seed API's payment-settings contract, and the effective settings of an invoice.

use serde_json::json;

use crate::helpers::*;

async fn app_with_invoice() -> TestApp {
    let app = spawn_app().await;
    app.create_customer("cust1").await;
    let (status, body) = app
        .api_post(
            "/billing-schedules",
            json!({"id": "bs1", "customerId": "cust1"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    app.create_invoice("inv1", "cust1", Some("bs1"), "GBP", 10_000)
        .await;
    app
}

#[tokio::test]
async fn the_seed_example_round_trips_exactly() {
    let app = app_with_invoice().await;
    let response = app
        .http
        .put(app.url("/payments/settings/customers/cust1"))
        .basic_auth(API_KEY_ID, Some(API_SECRET))
        .header("Sequence-Version", "2024-07-30")
        .header("Content-Type", "application/json")
        .body(r#"{"paymentProvider":"STRIPE"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "exactly the seed's four fields: {body}");
    assert!(body["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(body["sequenceAccountId"], "acc_default");
    assert_eq!(body["customerId"], "cust1");
    assert_eq!(body["paymentProvider"], "STRIPE");

    // A second PUT updates the same settings record.
    let (status, again) = app
        .api_put(
            "/payments/settings/customers/cust1",
            json!({"paymentProvider": "GOCARDLESS"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], body["id"]);
    assert_eq!(again["paymentProvider"], "GOCARDLESS");
    let (status, stored) = app.api_get("/payments/settings/customers/cust1").await;
    assert_eq!(status, 200);
    assert_eq!(stored, again);
    app.stop().await;
}

#[tokio::test]
async fn each_level_answers_with_its_own_id_field_and_auto_charge_once_set() {
    let app = app_with_invoice().await;
    let (status, body) = app
        .api_put(
            "/payments/settings/billing-schedules/bs1",
            json!({"paymentProvider": "GOCARDLESS", "autoCharge": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["billingScheduleId"], "bs1");
    assert_eq!(body["autoCharge"], true);
    assert!(body.get("customerId").is_none());

    let (status, body) = app
        .api_put(
            "/payments/settings/invoices/inv1",
            json!({"paymentProvider": "NONE"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["invoiceId"], "inv1");
    assert_eq!(body["paymentProvider"], "NONE");
    app.stop().await;
}

async fn effective(app: &TestApp) -> serde_json::Value {
    let (status, body) = app.api_get("/invoices/inv1/payment-settings").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// PUTs settings on one level, asserting they were stored (200), and returns what was stored.
async fn put_settings(app: &TestApp, path: &str, settings: serde_json::Value) -> serde_json::Value {
    let (status, stored) = app.api_put(path, settings).await;
    assert_eq!(status, 200, "{stored}");
    stored
}

#[tokio::test]
async fn effective_settings_follow_invoice_then_schedule_then_customer_then_default() {
    let app = app_with_invoice().await;
    assert_eq!(
        effective(&app).await,
        json!({"paymentProvider": {"value": "NONE", "source": "ACCOUNT_DEFAULT"},
               "autoCharge": {"value": false, "source": "ACCOUNT_DEFAULT"}})
    );

    put_settings(
        &app,
        "/payments/settings/customers/cust1",
        json!({"paymentProvider": "STRIPE", "autoCharge": true}),
    )
    .await;
    put_settings(
        &app,
        "/payments/settings/billing-schedules/bs1",
        json!({"paymentProvider": "GOCARDLESS"}),
    )
    .await;
    assert_eq!(
        effective(&app).await,
        json!({"paymentProvider": {"value": "GOCARDLESS", "source": "BILLING_SCHEDULE"},
               "autoCharge": {"value": true, "source": "CUSTOMER"}})
    );

    put_settings(
        &app,
        "/payments/settings/invoices/inv1",
        json!({"paymentProvider": "STRIPE", "autoCharge": false}),
    )
    .await;
    assert_eq!(
        effective(&app).await,
        json!({"paymentProvider": {"value": "STRIPE", "source": "INVOICE"},
               "autoCharge": {"value": false, "source": "INVOICE"}})
    );

    // null clears a field: the next level decides again. autoCharge left out stays as it was.
    let cleared = put_settings(
        &app,
        "/payments/settings/invoices/inv1",
        json!({"paymentProvider": null}),
    )
    .await;
    assert_eq!(cleared["paymentProvider"], serde_json::Value::Null);
    assert_eq!(cleared["autoCharge"], false);
    assert_eq!(
        effective(&app).await,
        json!({"paymentProvider": {"value": "GOCARDLESS", "source": "BILLING_SCHEDULE"},
               "autoCharge": {"value": false, "source": "INVOICE"}})
    );
    put_settings(
        &app,
        "/payments/settings/invoices/inv1",
        json!({"paymentProvider": null, "autoCharge": null}),
    )
    .await;
    assert_eq!(effective(&app).await["autoCharge"]["source"], "CUSTOMER");

    // The invoice read carries the same effective settings.
    let (_, invoice) = app.api_get("/invoices/inv1").await;
    assert_eq!(invoice["paymentSettings"], effective(&app).await);
    app.stop().await;
}

#[tokio::test]
async fn invalid_settings_requests_are_refused_with_the_reason() {
    let app = app_with_invoice().await;
    let (status, body) = app
        .api_put(
            "/payments/settings/customers/cust1",
            json!({"paymentProvider": "PAYPAL"}),
        )
        .await;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("paymentProvider"), "{message}");
    for allowed in ["STRIPE", "GOCARDLESS", "NONE"] {
        assert!(message.contains(allowed), "{message}");
    }

    let (status, body) = app
        .api_put("/payments/settings/customers/cust1", json!({}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("paymentProvider")
    );

    let (status, body) = app
        .api_put(
            "/payments/settings/customers/cust1",
            json!({"paymentProvider": "STRIPE", "autoCharge": "yes"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("autoCharge")
    );

    let (status, _) = app
        .api_put(
            "/payments/settings/customers/nobody",
            json!({"paymentProvider": "STRIPE"}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .api_put(
            "/payments/settings/invoices/nothing",
            json!({"paymentProvider": "STRIPE"}),
        )
        .await;
    assert_eq!(status, 404);

    let response = app
        .http
        .put(app.url("/payments/settings/customers/cust1"))
        .basic_auth(API_KEY_ID, Some(API_SECRET))
        .header("Sequence-Version", "2023-01-01")
        .json(&json!({"paymentProvider": "STRIPE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Sequence-Version")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_settings_body_over_the_limit_is_a_json_413() {
    let app = app_with_invoice().await;
    let limit = app.settings.http.body_limit_bytes;
    let padding = "x".repeat(limit);
    let (status, body) = app
        .api_put(
            "/payments/settings/customers/cust1",
            json!({"paymentProvider": "STRIPE", "padding": padding}),
        )
        .await;
    assert_api_error(status, &body, 413, "body_too_large");
    app.stop().await;
}

#[tokio::test]
async fn missing_or_bad_credentials_get_401() {
    let app = app_with_invoice().await;
    let put = |auth: Option<(&'static str, &'static str)>| {
        let mut request = app
            .http
            .put(app.url("/payments/settings/customers/cust1"))
            .json(&json!({"paymentProvider": "STRIPE"}));
        if let Some((id, secret)) = auth {
            request = request.basic_auth(id, Some(secret));
        }
        request.send()
    };
    for auth in [
        None,
        Some((API_KEY_ID, "wrong")),
        Some(("other", API_SECRET)),
    ] {
        let response = put(auth).await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        // No `WWW-Authenticate`: a browser would prompt, then cache the credentials and send
        // them with every later request, a cross-site form's included.
        assert!(
            !response.headers().contains_key("www-authenticate"),
            "{auth:?}: {:?}",
            response.headers()
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let response = app
        .http
        .get(app.url("/invoices/inv1"))
        .header("Authorization", "Bearer something")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(!response.headers().contains_key("www-authenticate"));
    app.stop().await;
}
