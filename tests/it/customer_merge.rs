//! `POST /customers/{id}/merge` (issue 34): the other customer's invoices, payments, billing
//! schedules, payment methods and settings move in one transaction or not at all; conflicts are
//! refused with 409, each named; subscribers hear `customer.merged`; and provider events naming
//! the merged customer's provider ids find the customer it now belongs to.

use serde_json::{Value, json};

use crate::helpers::*;

async fn merge(app: &TestApp, survivor: &str, body: Value) -> (u16, Value) {
    app.api_post(&format!("/customers/{survivor}/merge"), body)
        .await
}

async fn put_method(app: &TestApp, customer: &str, gateway: &str, reference: &str) -> String {
    let method_type = if gateway == "gocardless" {
        "direct_debit"
    } else {
        "card"
    };
    let (status, answer) = app
        .api_put(
            &format!("/customers/{customer}/payment-method"),
            json!({"type": method_type, "gateway": gateway, "referenceId": reference}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

async fn remove_method(app: &TestApp, customer: &str, method: &str) {
    let (status, answer) = app
        .api(
            reqwest::Method::DELETE,
            &format!("/customers/{customer}/payment-methods/{method}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
}

async fn put_settings(app: &TestApp, customer: &str, provider: &str) {
    let (status, answer) = app
        .api_put(
            &format!("/payments/settings/customers/{customer}"),
            json!({"paymentProvider": provider, "autoCharge": false}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn a_merge_moves_everything_at_once_refuses_conflicts_and_the_merged_ids_find_the_survivor() {
    let app = spawn_worker(Retries::PATIENT).await;
    let subscriber = app
        .subscribe_as("merges", "customer.merged", Default::default())
        .await;
    // Two registrations of one business, each with its Stripe and GoCardless customer.
    app.create_customer("keep").await; // cus_keep, CUKEEP
    app.create_customer("gone").await; // cus_gone, CUGONE
    app.create_invoice("inv_keep", "keep", None, "GBP", 3000)
        .await;
    let (status, answer) = app
        .api_post(
            "/billing-schedules",
            json!({"id": "bs_gone", "customerId": "gone"}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    app.create_invoice("inv_gone", "gone", Some("bs_gone"), "GBP", 5000)
        .await;
    app.register_payment("inv_gone", "STRIPE", "pi_gone", 5000)
        .await;
    // Methods on both sides, one mandate on both, and settings on both.
    put_method(&app, "keep", "gocardless", "MD0000SHARED").await;
    put_method(&app, "keep", "stripe", "cus_keep/pm_keep").await;
    let shared_of_gone = put_method(&app, "gone", "gocardless", "MD0000SHARED").await;
    let mandate_of_gone = put_method(&app, "gone", "gocardless", "MD0000GONE").await;
    put_settings(&app, "keep", "STRIPE").await;
    put_settings(&app, "gone", "GOCARDLESS").await;

    // Refused, naming both conflicts; nothing moved.
    let (status, answer) = merge(&app, "keep", json!({"customerId": "gone"})).await;
    assert_api_error(status, &answer, 409, "conflict");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("payment settings differ"), "{message}");
    assert!(message.contains("paymentProvider GOCARDLESS"), "{message}");
    assert!(message.contains("both have a method on file"), "{message}");
    assert!(message.contains(&mandate_of_gone), "{message}");
    assert_eq!(app.invoice("inv_gone").await["customerId"], "gone");

    // Settled: the same settings, and the merged customer's mandates out of use.
    put_settings(&app, "gone", "STRIPE").await;
    remove_method(&app, "gone", &mandate_of_gone).await;
    remove_method(&app, "gone", &shared_of_gone).await;
    // A stale version is refused, and rolls the whole merge back.
    let (_, keep) = app.api_get("/customers/keep").await;
    let version = keep["version"].as_i64().unwrap();
    let (status, answer) = merge(
        &app,
        "keep",
        json!({"customerId": "gone", "version": version - 1}),
    )
    .await;
    assert_api_error(status, &answer, 409, "conflict");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("is at version {version}")),
        "{answer}"
    );
    assert_eq!(app.invoice("inv_gone").await["customerId"], "gone");
    assert_eq!(app.methods_of("gone").await.len(), 2);

    let (status, merged) = merge(
        &app,
        "keep",
        json!({"customerId": "gone", "version": version}),
    )
    .await;
    assert_eq!(status, 200, "{merged}");
    assert_eq!(merged["mergedCustomerId"], "gone");
    assert_eq!(merged["invoiceIds"], json!(["inv_gone"]));
    assert_eq!(merged["billingScheduleIds"], json!(["bs_gone"]));
    assert_eq!(merged["paymentMethodIds"], json!([mandate_of_gone]));
    assert_eq!(merged["settingsMoved"], false);
    assert_eq!(merged["customer"]["version"], version + 1);

    // The merged customer is gone; its invoice, schedule and mandate are the survivor's, and the
    // mandate both held is one method.
    let (status, answer) = app.api_get("/customers/gone").await;
    assert_api_error(status, &answer, 404, "not_found");
    assert_eq!(app.invoice("inv_gone").await["customerId"], "keep");
    let (_, schedule) = app.api_get("/billing-schedules/bs_gone").await;
    assert_eq!(schedule["customerId"], "keep", "{schedule}");
    assert_eq!(
        app.methods_of("keep").await,
        [
            ("MD0000GONE".into(), "INACTIVE".into(), false),
            ("MD0000SHARED".into(), "ACTIVE".into(), false),
            ("cus_keep/pm_keep".into(), "ACTIVE".into(), true),
        ]
    );
    let (status, _) = app.api_get("/payments/settings/customers/gone").await;
    assert_eq!(status, 404, "the merged customer's settings went with it");

    // The merged customer's payment and its Stripe customer reach the survivor.
    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", "evt_pi_gone")
            .payment("pi_gone", 5000, "gbp")
            .to_bytes(),
    )
    .await;
    let paid = app.wait_invoice_status("inv_gone", "PAID").await;
    assert_eq!(paid["customerId"], "keep");
    app.deliver_stripe(
        &StripeEvent::new("payment_method.attached", "evt_pm_gone")
            .object_id("pm_after")
            .customer(Some("cus_gone"))
            .to_bytes(),
    )
    .await;
    assert_eq!(app.wait_processed("STRIPE", "evt_pm_gone").await, "applied");
    assert!(
        app.methods_of("keep")
            .await
            .contains(&("cus_gone/pm_after".into(), "ACTIVE".into(), true)),
        "a Stripe event naming the merged customer lands on the survivor"
    );

    // Subscribers hear it once.
    let messages = app.take_messages(&subscriber, 1).await;
    assert_eq!(messages.len(), 1);
    let mut body: Value = serde_json::from_slice(&messages[0].body).unwrap();
    assert_eq!(body["type"], "customer.merged");
    let data = body["data"].as_object_mut().unwrap();
    assert!(
        data.remove("sequence").unwrap().is_u64(),
        "the account's sequence"
    );
    assert_eq!(
        body["data"],
        json!({
            "customerId": "keep", "mergedCustomerId": "gone", "invoiceIds": ["inv_gone"],
            "billingScheduleIds": ["bs_gone"], "paymentMethodIds": [mandate_of_gone],
            "settingsMoved": false, "version": version + 1,
        })
    );

    // Merged once only; never into itself.
    let (status, answer) = merge(&app, "keep", json!({"customerId": "gone"})).await;
    assert_api_error(status, &answer, 404, "not_found");
    let (status, answer) = merge(&app, "keep", json!({"customerId": "keep"})).await;
    assert_validation_error(status, &answer, "customerId");
    app.stop().await;
}

#[tokio::test]
async fn the_survivor_takes_the_settings_and_provider_ids_it_lacks() {
    let app = spawn_app().await;
    let (status, answer) = app
        .api_post("/customers", json!({"id": "bare", "legalName": "Bare Ltd"}))
        .await;
    assert_eq!(status, 201, "{answer}");
    app.create_customer("full").await; // cus_full, CUFULL
    put_settings(&app, "full", "GOCARDLESS").await;
    let (status, merged) = merge(&app, "bare", json!({"customerId": "full"})).await;
    assert_eq!(status, 200, "{merged}");
    assert_eq!(merged["settingsMoved"], true);
    assert_eq!(
        merged["customer"]["externalIds"],
        json!([{"key": "Stripe", "value": "cus_full"}, {"key": "GoCardless", "value": "CUFULL"}])
    );
    let (status, settings) = app.api_get("/payments/settings/customers/bare").await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["paymentProvider"], "GOCARDLESS");
    // The ids are the survivor's own now: a new customer cannot claim them.
    let (status, answer) = app
        .api_post(
            "/customers",
            json!({"id": "claimant", "legalName": "Claimant Ltd",
                   "externalIds": [{"key": "Stripe", "value": "cus_full"}]}),
        )
        .await;
    assert_api_error(status, &answer, 409, "conflict");
    app.stop().await;
}
