//! Payment methods in Chargebee's shapes (issue 34): every type Chargebee names, on every gateway
//! in its reference format, a gateway settle does not reconcile kept and said so, metadata, and
//! `DELETE /customers/{id}/payment-methods/{method}` handing over to the next method on file, as a
//! provider's cancelled mandate does. Every change reaches subscribers.

use serde_json::{Value, json};

use crate::helpers::*;

async fn put_method(app: &TestApp, customer: &str, method: Value) -> (u16, Value) {
    app.api_put(&format!("/customers/{customer}/payment-method"), method)
        .await
}

async fn remove(app: &TestApp, customer: &str, method: &str) -> (u16, Value) {
    app.api(
        reqwest::Method::DELETE,
        &format!("/customers/{customer}/payment-methods/{method}"),
        None,
    )
    .await
}

/// The `payment_method.updated` messages the subscriber got, each with an id of its own:
/// (reference, status, on file).
async fn method_events(app: &TestApp, queue: &str, count: usize) -> Vec<(String, String, bool)> {
    let messages = app.take_messages(queue, count).await;
    let mut ids: Vec<String> = messages
        .iter()
        .map(|m| m.message_id.clone().expect("a message id"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), messages.len(), "every change is its own message");
    messages
        .iter()
        .filter(|m| m.routing_key == "payment_method.updated")
        .map(|m| {
            let body: Value = serde_json::from_slice(&m.body).unwrap();
            let data = &body["data"];
            (
                data["referenceId"].as_str().unwrap().to_owned(),
                data["status"].as_str().unwrap().to_owned(),
                data["onFile"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_chargebee_type_on_its_gateways_is_kept_and_unreconciled_gateways_are_said_so() {
    let app = spawn_app().await;
    app.create_customer("cb").await; // Stripe cus_cb, GoCardless CUCB
    let accepted = [
        ("card", "stripe", "cus_cb/pm_1MqLiJLkdIwHu7ixUEgbFdYF", true),
        ("direct_debit", "gocardless", "MD0000XH9A3T4C", true),
        ("direct_debit", "stripe", "cus_cb/ba_1MqLiJLkdIwHu7ix", true),
        ("card", "braintree", "84961217/kq7x2mn", false),
        (
            "paypal_express_checkout",
            "paypal_express_checkout",
            "B-5YM63185LP1226425",
            false,
        ),
        (
            "paypal_express_checkout",
            "braintree",
            "84961217/paypal_3vb",
            false,
        ),
        (
            "amazon_payments",
            "amazon_payments",
            "B01-5271946-3412345",
            false,
        ),
        ("card", "authorize_net", "1504320987/1503637215", false),
        (
            "direct_debit",
            "adyen",
            "shopper-cb/8415718415566342",
            false,
        ),
        ("card", "worldpay", "9f1c6c1e-2a4b-4c8e", false),
    ];
    for (method_type, gateway, reference, reconciled) in accepted {
        let (status, answer) = put_method(
            &app,
            "cb",
            json!({"type": method_type, "gateway": gateway, "referenceId": reference,
                   "metadata": {"source": "chargebee", "gateway": gateway}}),
        )
        .await;
        assert_eq!(status, 200, "{gateway} {reference}: {answer}");
        assert_eq!(answer["gateway"], gateway);
        assert_eq!(answer["type"], method_type);
        assert_eq!(answer["reconciled"], reconciled, "{gateway}");
        let provider = match gateway {
            "stripe" => json!("STRIPE"),
            "gocardless" => json!("GOCARDLESS"),
            _ => Value::Null,
        };
        assert_eq!(answer["provider"], provider, "{gateway}");
        assert_eq!(answer["onFile"], true);
        assert_eq!(
            answer["metadata"],
            json!({"source": "chargebee", "gateway": gateway})
        );
    }
    // The seeds' `provider` still names the gateway; with both, they must agree.
    let (status, answer) = put_method(
        &app,
        "cb",
        json!({"type": "card", "provider": "STRIPE", "referenceId": "cus_cb/card_1"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["gateway"], "stripe");
    // Metadata left out keeps what is stored; sent, it replaces it.
    let (_, answer) = put_method(
        &app,
        "cb",
        json!({"type": "card", "gateway": "braintree", "referenceId": "84961217/kq7x2mn"}),
    )
    .await;
    assert_eq!(answer["metadata"]["source"], "chargebee", "{answer}");
    assert_eq!(app.methods_of("cb").await.len(), accepted.len() + 1);

    let refused = [
        (
            json!({"type": "card", "referenceId": "cus_cb/pm_1"}),
            "gateway",
        ),
        (
            json!({"type": "card", "gateway": "braintree", "provider": "STRIPE", "referenceId": "a/b"}),
            "gateway",
        ),
        (
            json!({"type": "amazon_payments", "gateway": "stripe", "referenceId": "cus_cb/pm_1"}),
            "type",
        ),
        (
            json!({"type": "card", "gateway": "gocardless", "referenceId": "MD0001"}),
            "type",
        ),
        (
            json!({"type": "paypal_express_checkout", "gateway": "adyen", "referenceId": "s/1"}),
            "type",
        ),
        (
            json!({"type": "card", "gateway": "braintree", "referenceId": "84961217"}),
            "referenceId",
        ),
        (
            json!({"type": "paypal_express_checkout", "gateway": "paypal_express_checkout", "referenceId": "B-12"}),
            "referenceId",
        ),
        (
            json!({"type": "amazon_payments", "gateway": "amazon_payments", "referenceId": "B01-1-2"}),
            "referenceId",
        ),
        (
            json!({"type": "card", "gateway": "worldpay", "referenceId": "has a space"}),
            "referenceId",
        ),
        (
            json!({"type": "card", "gateway": "stripe", "referenceId": "cus_other/pm_1"}),
            "referenceId",
        ),
        (
            json!({"type": "card", "gateway": "braintree", "referenceId": "a/b",
                   "metadata": {"": "empty key"}}),
            "metadata.",
        ),
    ];
    for (body, field) in refused {
        let (status, answer) = put_method(&app, "cb", body).await;
        assert_validation_error(status, &answer, field);
    }
    let (status, answer) = put_method(
        &app,
        "cb",
        json!({"type": "card", "gateway": "not_a_gateway", "referenceId": "a/b"}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn a_method_on_a_gateway_settle_does_not_reconcile_is_never_charged() {
    let app = spawn_app().await;
    app.create_customer("bt").await;
    app.create_invoice("inv_bt", "bt", None, "GBP", 5000).await;
    let (status, answer) = app
        .api_put(
            "/payments/settings/customers/bt",
            json!({"paymentProvider": "STRIPE", "autoCharge": true}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = put_method(
        &app,
        "bt",
        json!({"type": "card", "gateway": "braintree", "referenceId": "84961217/kq7x2mn"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let invoice = app.invoice("inv_bt").await;
    assert_eq!(
        invoice["nextCharge"]["noneBecause"], "no_usable_method",
        "{invoice}"
    );
    app.stop().await;
}

#[tokio::test]
async fn removing_the_method_on_file_hands_over_to_the_next_and_subscribers_hear_each_change() {
    let app = spawn_worker(Retries::PATIENT).await;
    let subscriber = app.subscribe().await;
    app.create_customer("rm").await;
    let mut ids = Vec::new();
    for (method_type, gateway, reference) in [
        ("card", "stripe", "cus_rm/pm_first"),
        (
            "paypal_express_checkout",
            "paypal_express_checkout",
            "B-5YM63185LP1226425",
        ),
        ("direct_debit", "gocardless", "MD0000RM"),
    ] {
        let (status, answer) = put_method(
            &app,
            "rm",
            json!({"type": method_type, "gateway": gateway, "referenceId": reference}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    // The mandate is on file; removed, the PayPal agreement (on file most recently) takes over.
    let (status, answer) = remove(&app, "rm", &ids[2]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["removed"]["status"], "INACTIVE");
    assert_eq!(answer["removed"]["onFile"], false);
    assert_eq!(answer["onFile"]["referenceId"], "B-5YM63185LP1226425");
    // A method not on file goes without a hand-over.
    let (status, answer) = remove(&app, "rm", &ids[0]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["onFile"]["referenceId"], "B-5YM63185LP1226425");
    let (status, answer) = remove(&app, "rm", &ids[1]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["onFile"], Value::Null, "nothing usable is left");
    assert_eq!(
        app.methods_of("rm").await,
        [
            ("B-5YM63185LP1226425".into(), "INACTIVE".into(), false),
            ("MD0000RM".into(), "INACTIVE".into(), false),
            ("cus_rm/pm_first".into(), "INACTIVE".into(), false),
        ]
    );
    // Removing it again changes and announces nothing; unknown ids are 404.
    let (status, answer) = remove(&app, "rm", &ids[1]).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = remove(&app, "rm", "pm_nobody").await;
    assert_api_error(status, &answer, 404, "not_found");
    let (status, answer) = remove(&app, "nobody", &ids[1]).await;
    assert_api_error(status, &answer, 404, "not_found");

    let announced = method_events(&app, &subscriber, 7).await;
    let on = |r: &str| (r.to_owned(), "ACTIVE".to_owned(), true);
    let off = |r: &str| (r.to_owned(), "INACTIVE".to_owned(), false);
    assert_eq!(
        announced,
        [
            on("cus_rm/pm_first"),
            on("B-5YM63185LP1226425"),
            on("MD0000RM"),
            off("MD0000RM"),
            on("B-5YM63185LP1226425"),
            off("cus_rm/pm_first"),
            off("B-5YM63185LP1226425"),
        ]
    );
    assert!(
        app.take_messages(&subscriber, 0).await.is_empty(),
        "nothing more"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_cancelled_mandate_on_file_hands_over_to_the_next_method_too() {
    let app = spawn_worker(Retries::PATIENT).await;
    let subscriber = app.subscribe().await;
    app.create_customer("gc").await;
    for (method_type, gateway, reference) in [
        ("card", "stripe", "cus_gc/pm_card"),
        ("direct_debit", "gocardless", "MD0000GC"),
    ] {
        let (status, answer) = put_method(
            &app,
            "gc",
            json!({"type": method_type, "gateway": gateway, "referenceId": reference}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    app.deliver_gocardless(vec![
        GoCardlessEvent::new("EV_MC", "mandates", "cancelled")
            .links(json!({"mandate": "MD0000GC"}))
            .created_at("2026-11-02T12:00:01.000Z"),
    ])
    .await;
    assert_eq!(app.wait_processed("GOCARDLESS", "EV_MC").await, "applied");
    assert_eq!(
        app.methods_of("gc").await,
        [
            ("MD0000GC".into(), "INACTIVE".into(), false),
            ("cus_gc/pm_card".into(), "ACTIVE".into(), true),
        ]
    );
    let announced = method_events(&app, &subscriber, 4).await;
    assert_eq!(
        announced[2..],
        [
            ("MD0000GC".into(), "INACTIVE".into(), false),
            ("cus_gc/pm_card".into(), "ACTIVE".into(), true),
        ]
    );
    app.stop().await;
}
