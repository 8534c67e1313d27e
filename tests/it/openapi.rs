//! The OpenAPI document and the router come from one list; these tests catch a route missing from
//! the document, a documented operation with no route, and the contract's paths going missing.

use crate::helpers::*;

#[tokio::test]
async fn every_documented_operation_is_routed_and_the_contract_is_documented() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let document: serde_json::Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().expect("paths");

    let contract = [
        ("put", "/payments/settings/customers/{id}"),
        ("put", "/payments/settings/billing-schedules/{id}"),
        ("put", "/payments/settings/invoices/{id}"),
        ("get", "/payments/settings/customers/{id}"),
        ("get", "/invoices/{id}/payment-settings"),
        ("post", "/customers"),
        ("get", "/customers/{id}"),
        ("put", "/customers/{id}"),
        ("put", "/customers/{id}/payment-method"),
        ("get", "/customers/{id}/payment-methods"),
        ("delete", "/customers/{id}/payment-methods/{method}"),
        ("get", "/customers"),
        ("patch", "/customers/{id}"),
        ("delete", "/customers/{id}"),
        ("post", "/customers/search"),
        ("post", "/customers/bulk"),
        ("post", "/customers/{id}/merge"),
        ("post", "/billing-schedules"),
        ("get", "/billing-schedules/{id}"),
        ("post", "/invoices"),
        ("get", "/invoices"),
        ("get", "/invoices/{id}"),
        ("post", "/invoices/{id}/payments"),
        ("get", "/payments/unmatched"),
        ("get", "/payments/{id}"),
    ];
    for (method, path) in contract {
        assert!(
            paths.get(path).and_then(|item| item.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }

    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let Ok(method) = method.to_uppercase().parse::<reqwest::Method>() else {
                continue;
            };
            let concrete = path.replace("{id}", "no-such-id");
            let response = app
                .http
                .request(method.clone(), app.url(&concrete))
                .basic_auth(API_KEY_ID, Some(API_SECRET))
                .header("Content-Type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            // An unrouted path is axum's bare 404 or a 405; a routed one answers in the API's shape.
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert!(
                body.contains("\"error\"") || (200..300).contains(&status),
                "{method} {path} is documented but not routed: {status} {body:?}"
            );
            operations += 1;
        }
    }
    assert!(operations >= contract.len());
    app.stop().await;
}

/// Every operation that takes a body documents the 415 of a body not sent as `application/json`.
#[tokio::test]
async fn every_operation_with_a_body_documents_415() {
    let app = spawn_app().await;
    let document = app.get_json(&app.url("/openapi.json")).await;
    let mut with_body = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            if operation.get("requestBody").is_some() {
                with_body += 1;
                assert!(
                    responses.get("415").is_some(),
                    "{method} {path} does not document 415"
                );
            } else {
                assert!(
                    responses.get("415").is_none(),
                    "{method} {path} takes no body"
                );
            }
        }
    }
    assert!(
        with_body >= 11,
        "the eleven of today, at least: {with_body}"
    );
    app.stop().await;
}
