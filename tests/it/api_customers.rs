//! Customers (`POST /customers`, `GET` and `PUT /customers/{id}`) and their payment methods
//! (`PUT /customers/{id}/payment-method`, `GET /customers/{id}/payment-methods`).

use chrono::Datelike;
use serde_json::{Value, json};

use crate::helpers::*;

/// The seed's customer body, every field set.
fn acme(id: &str) -> Value {
    json!({
        "id": id,
        "address": {
            "country": "GB",
            "line1": "1 Long Lane",
            "line2": "Unit 4",
            "postcode": "SE1 4PG",
            "town": "London",
            "state": "Greater London",
        },
        "billingEmails": ["accounts@acme.example", "finance@acme.example"],
        "contactName": "Ada Lovelace",
        "customerAliases": ["ACME", "Acme Trading"],
        "email": "ada@acme.example",
        "externalIds": [
            {"key": "Stripe", "value": "cus_NffrFeUfNV2Hib"},
            {"key": "GoCardless", "value": "CU000123ABCDEF"},
        ],
        "label": "Key account",
        "legalName": "Acme Trading Ltd",
        "taxStatus": "TAXED",
        "telephone": "+44 20 7946 0000",
        "url": "https://acme.example",
    })
}

/// `body` with `key` set to `value` (`null` removes it).
fn with(mut body: Value, key: &str, value: Value) -> Value {
    let object = body.as_object_mut().unwrap();
    if value.is_null() {
        object.remove(key);
    } else {
        object.insert(key.to_owned(), value);
    }
    body
}

/// The fields a customer created without them has (wallee's, issue 34).
fn unset_wallee_fields() -> [(&'static str, Value); 6] {
    [
        ("givenName", Value::Null),
        ("familyName", Value::Null),
        ("preferredCurrency", Value::Null),
        ("language", Value::Null),
        ("metadata", json!({})),
        ("version", json!(1)),
    ]
}

fn timestamp(body: &Value, field: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let text = body[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string: {body}"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{field} {text:?}: {e}"))
}

/// `body` without its two timestamps, after checking they are RFC 3339.
fn without_timestamps(body: &Value) -> Value {
    timestamp(body, "createdAt");
    timestamp(body, "updatedAt");
    let mut body = body.clone();
    let object = body.as_object_mut().unwrap();
    object.remove("createdAt");
    object.remove("updatedAt");
    body
}

#[tokio::test]
async fn a_customer_created_with_every_seed_field_reads_back_exactly() {
    let app = spawn_app().await;
    let request = acme("cust_acme");
    let (status, created) = app.api_post("/customers", request.clone()).await;
    assert_eq!(status, 201, "{created}");

    let mut expected = with(request, "sequenceAccountId", json!("acc_default"));
    // wallee's fields the seed's body does not have: unset, and the first version.
    for (key, value) in unset_wallee_fields() {
        expected[key] = value;
    }
    assert_eq!(without_timestamps(&created), expected);
    assert_eq!(created["createdAt"], created["updatedAt"]);

    let (status, read) = app.api_get("/customers/cust_acme").await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read, created);
    app.stop().await;
}

#[tokio::test]
async fn a_customer_created_with_only_a_legal_name_has_empty_lists_and_nulls() {
    let app = spawn_app().await;
    let (status, created) = app
        .api_post(
            "/customers",
            json!({"id": "c1", "legalName": "Minimal Ltd"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        without_timestamps(&created),
        json!({
            "id": "c1",
            "sequenceAccountId": "acc_default",
            "legalName": "Minimal Ltd",
            "contactName": null,
            "email": null,
            "billingEmails": [],
            "telephone": null,
            "url": null,
            "label": null,
            "taxStatus": null,
            "address": null,
            "customerAliases": [],
            "externalIds": [],
            "givenName": null,
            "familyName": null,
            "preferredCurrency": null,
            "language": null,
            "metadata": {},
            "version": 1,
        })
    );
    app.stop().await;
}

#[tokio::test]
async fn an_update_changes_the_fields_sent_and_keeps_the_rest() {
    let app = spawn_app().await;
    let (status, created) = app.api_post("/customers", acme("cust_acme")).await;
    assert_eq!(status, 201, "{created}");

    // The seed's update-customer body: some fields, the external ids as a new list.
    let update = json!({
        "address": {
            "country": "IE",
            "line1": "2 Grand Canal Square",
            "line2": "Docklands",
            "postcode": "D02 A342",
            "town": "Dublin",
            "state": "Leinster",
        },
        "billingEmails": ["ap@acme.example"],
        "email": "grace@acme.example",
        "externalIds": [{"key": "Stripe", "value": "cus_Q2nEwBgVoKf9aX"}],
        "legalName": "Acme Trading (Ireland) Ltd",
    });
    let (status, updated) = app.api_put("/customers/cust_acme", update.clone()).await;
    assert_eq!(status, 200, "{updated}");

    let mut expected = without_timestamps(&created);
    for (key, value) in update.as_object().unwrap() {
        expected[key] = value.clone();
    }
    // A PUT keeps its meaning (no version asked) and counts as an update.
    expected["version"] = json!(2);
    assert_eq!(without_timestamps(&updated), expected);
    assert_eq!(updated["createdAt"], created["createdAt"]);
    assert!(
        timestamp(&updated, "updatedAt") > timestamp(&created, "updatedAt"),
        "updatedAt moves on: {created} → {updated}"
    );
    let (status, read) = app.api_get("/customers/cust_acme").await;
    assert_eq!(status, 200);
    assert_eq!(read, updated);

    // An empty update changes nothing but the time and the version.
    let (status, unchanged) = app.api_put("/customers/cust_acme", json!({})).await;
    assert_eq!(status, 200, "{unchanged}");
    expected["version"] = json!(3);
    assert_eq!(without_timestamps(&unchanged), expected);
    app.stop().await;
}

#[tokio::test]
async fn provider_customer_ids_left_out_of_an_update_are_released() {
    let app = spawn_app().await;
    let (status, body) = app.api_post("/customers", acme("cust_acme")).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .api_put(
            "/customers/cust_acme",
            json!({"externalIds": [{"key": "Stripe", "value": "cus_Q2nEwBgVoKf9aX"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["externalIds"],
        json!([{"key": "Stripe", "value": "cus_Q2nEwBgVoKf9aX"}])
    );

    // The old Stripe and GoCardless ids now belong to nobody; the new Stripe id is taken.
    let (status, body) = app
        .api_post(
            "/customers",
            json!({
                "id": "cust_other",
                "legalName": "Other Ltd",
                "externalIds": [
                    {"key": "Stripe", "value": "cus_NffrFeUfNV2Hib"},
                    {"key": "GoCardless", "value": "CU000123ABCDEF"},
                ],
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .api_post(
            "/customers",
            json!({
                "id": "cust_third",
                "legalName": "Third Ltd",
                "externalIds": [{"key": "Stripe", "value": "cus_Q2nEwBgVoKf9aX"}],
            }),
        )
        .await;
    assert_api_error(status, &body, 409, "conflict");
    app.stop().await;
}

#[tokio::test]
async fn invalid_customer_fields_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (
            "email",
            with(acme("c1"), "email", json!("ada.acme.example")),
        ),
        (
            "billingEmails[1]",
            with(
                acme("c1"),
                "billingEmails",
                json!(["accounts@acme.example", "finance at acme"]),
            ),
        ),
        (
            "address.country",
            with(
                acme("c1"),
                "address",
                json!({"country": "UK", "line1": "1 Long Lane", "town": "London"}),
            ),
        ),
        ("legalName", with(acme("c1"), "legalName", Value::Null)),
        ("legalName", with(acme("c1"), "legalName", json!("  "))),
        (
            "externalIds[0].value",
            with(
                acme("c1"),
                "externalIds",
                json!([{"key": "Stripe", "value": "NffrFeUfNV2Hib"}]),
            ),
        ),
        (
            "externalIds[1].value",
            with(
                acme("c1"),
                "externalIds",
                json!([
                    {"key": "Stripe", "value": "cus_NffrFeUfNV2Hib"},
                    {"key": "GoCardless", "value": "cus_NffrFeUfNV2Hib"},
                ]),
            ),
        ),
        (
            "externalIds[1].key",
            with(
                acme("c1"),
                "externalIds",
                json!([
                    {"key": "Stripe", "value": "cus_A"},
                    {"key": "Stripe", "value": "cus_B"},
                ]),
            ),
        ),
        ("id", with(acme("c1"), "id", json!("a/b"))),
    ];
    for (field, body) in cases {
        let (status, answer) = app.api_post("/customers", body.clone()).await;
        assert_validation_error(status, &answer, field);
        let (status, _) = app.api_get("/customers/c1").await;
        assert_eq!(status, 404, "nothing is stored for {body}");
    }

    // The same checks on update; a refused update changes nothing.
    let (status, created) = app.api_post("/customers", acme("c1")).await;
    assert_eq!(status, 201, "{created}");
    for (field, body) in [
        ("email", json!({"email": "not-an-email"})),
        (
            "billingEmails[1]",
            json!({"billingEmails": ["a@b.co", "b@"]}),
        ),
        ("address.country", json!({"address": {"country": "UK"}})),
        ("legalName", json!({"legalName": ""})),
        (
            "externalIds[0].value",
            json!({"externalIds": [{"key": "Stripe", "value": "pm_123"}]}),
        ),
    ] {
        let (status, answer) = app.api_put("/customers/c1", body).await;
        assert_validation_error(status, &answer, field);
    }
    let (status, read) = app.api_get("/customers/c1").await;
    assert_eq!(status, 200);
    assert_eq!(read, created);
    app.stop().await;
}

#[tokio::test]
async fn every_string_and_list_is_bounded_and_the_error_names_the_limit() {
    let app = spawn_app().await;
    let long = |n: usize| json!("x".repeat(n));
    let emails: Vec<String> = (0..51).map(|i| format!("b{i}@acme.example")).collect();
    let cases = [
        (
            "legalName",
            with(acme("c1"), "legalName", long(200_000)),
            "at most 512 characters",
        ),
        (
            "contactName",
            with(acme("c1"), "contactName", long(513)),
            "at most 512 characters",
        ),
        (
            "telephone",
            with(acme("c1"), "telephone", long(65)),
            "at most 64 characters",
        ),
        (
            "billingEmails",
            with(acme("c1"), "billingEmails", json!(emails)),
            "at most 50 entries",
        ),
        (
            "address.line1",
            with(acme("c1"), "address", json!({"line1": "x".repeat(513)})),
            "at most 512 characters",
        ),
        // The address the sender would refuse is refused here already (lettre parses both).
        (
            "email",
            with(acme("c1"), "email", json!("ada..lovelace@acme.example")),
            "not an email",
        ),
    ];
    for (field, body, limit) in cases {
        let (status, answer) = app.api_post("/customers", body).await;
        assert_validation_error(status, &answer, field);
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(limit), "{message}");
    }
    let (status, _) = app.api_get("/customers/c1").await;
    assert_eq!(status, 404, "nothing was stored");
    app.stop().await;
}

/// A NUL was a 500 (PostgreSQL refuses it in text); every control character is now a 400 naming
/// the field, wherever free text enters: customers, their payment methods, billing schedules.
#[tokio::test]
async fn control_characters_in_free_text_are_refused_naming_the_field() {
    let app = spawn_app().await;
    for (field, body) in [
        (
            "legalName",
            with(acme("c1"), "legalName", json!("Acme\0 Ltd")),
        ),
        (
            "contactName",
            with(acme("c1"), "contactName", json!("Ada\nLovelace")),
        ),
        (
            "address.line1",
            with(acme("c1"), "address", json!({"line1": "1 Long\tLane"})),
        ),
        (
            "customerAliases[1]",
            with(
                acme("c1"),
                "customerAliases",
                json!(["ACME", "\u{1b}[31mAcme"]),
            ),
        ),
        (
            "externalIds[0].key",
            with(
                acme("c1"),
                "externalIds",
                json!([{"key": "CRM\r", "value": "42"}]),
            ),
        ),
    ] {
        let (status, answer) = app.api_post("/customers", body).await;
        assert_validation_error(status, &answer, field);
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("control characters"),
            "{answer}"
        );
    }
    let (status, _) = app.api_get("/customers/c1").await;
    assert_eq!(status, 404, "nothing was stored");

    app.create_customer("c1").await;
    let (status, answer) = app
        .api_put("/customers/c1", json!({"legalName": "Acme\0"}))
        .await;
    assert_validation_error(status, &answer, "legalName");
    let mut method = card_method();
    method["billingDetails"]["name"] = json!("Ada\0");
    let (status, answer) = put_method(&app, "c1", method).await;
    assert_validation_error(status, &answer, "billingDetails.name");
    assert!(methods(&app, "c1").await.is_empty(), "nothing was stored");
    let (status, answer) = app
        .api_post(
            "/billing-schedules",
            json!({"id": "bs1", "customerId": "c1", "name": "Monthly\0"}),
        )
        .await;
    assert_validation_error(status, &answer, "name");
    app.stop().await;
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_named_on_create_as_on_update() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    for (field, value) in [
        ("billingEmails", json!("accounts@acme.example")),
        ("legalName", json!(42)),
        ("externalIds", json!({"key": "Stripe", "value": "cus_A"})),
    ] {
        let (status, answer) = app
            .api_put("/customers/c1", json!({ field: value.clone() }))
            .await;
        assert_validation_error(status, &answer, field);
        let (status, answer) = app
            .api_post("/customers", with(acme("c2"), field, value))
            .await;
        assert_validation_error(status, &answer, field);
    }
    let (status, _) = app.api_get("/customers/c2").await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn a_taken_customer_id_or_provider_customer_id_is_a_conflict() {
    let app = spawn_app().await;
    let (status, original) = app.api_post("/customers", acme("c1")).await;
    assert_eq!(status, 201, "{original}");

    let (status, body) = app
        .api_post(
            "/customers",
            json!({"id": "c1", "legalName": "Someone Else Ltd"}),
        )
        .await;
    assert_api_error(status, &body, 409, "conflict");

    for external in [
        json!({"key": "Stripe", "value": "cus_NffrFeUfNV2Hib"}),
        json!({"key": "GoCardless", "value": "CU000123ABCDEF"}),
    ] {
        let (status, body) = app
            .api_post(
                "/customers",
                json!({"id": "c2", "legalName": "Two Ltd", "externalIds": [external]}),
            )
            .await;
        assert_api_error(status, &body, 409, "conflict");
        let (status, _) = app.api_get("/customers/c2").await;
        assert_eq!(status, 404);
    }

    // Claiming another customer's Stripe id by update is a conflict too.
    app.create_customer("c3").await;
    let (status, body) = app
        .api_put(
            "/customers/c3",
            json!({"externalIds": [{"key": "Stripe", "value": "cus_NffrFeUfNV2Hib"}]}),
        )
        .await;
    assert_api_error(status, &body, 409, "conflict");
    let (_, c3) = app.api_get("/customers/c3").await;
    assert_eq!(c3["externalIds"][0]["value"], "cus_c3");

    let (status, read) = app.api_get("/customers/c1").await;
    assert_eq!(status, 200);
    assert_eq!(read, original);
    app.stop().await;
}

#[tokio::test]
async fn unknown_customers_are_not_found() {
    let app = spawn_app().await;
    let (status, body) = app.api_get("/customers/nobody").await;
    assert_api_error(status, &body, 404, "not_found");
    let (status, body) = app
        .api_put("/customers/nobody", json!({"legalName": "Nobody Ltd"}))
        .await;
    assert_api_error(status, &body, 404, "not_found");
    let (status, body) = app.api_get("/customers/nobody/payment-methods").await;
    assert_api_error(status, &body, 404, "not_found");
    let (status, body) = app
        .api_put(
            "/customers/nobody/payment-method",
            json!({"type": "direct_debit", "provider": "GOCARDLESS", "referenceId": "MD0001"}),
        )
        .await;
    assert_api_error(status, &body, 404, "not_found");
    // The update did not create the customer.
    let (status, _) = app.api_get("/customers/nobody").await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_is_a_validation_error() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    for (method, path) in [
        (reqwest::Method::POST, "/customers"),
        (reqwest::Method::PUT, "/customers/c1"),
        (reqwest::Method::PUT, "/customers/c1/payment-method"),
    ] {
        let response = app
            .http
            .request(method, app.url(path))
            .basic_auth(API_KEY_ID, Some(API_SECRET))
            .header("Content-Type", "application/json")
            .body(r#"{"id": "c2", "legalName": "#)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_validation_error(status, &body, "body");
    }
    app.stop().await;
}

/// A browser can POST a cross-site form as `text/plain` (or urlencoded, or multipart) without a
/// preflight, and its body can be valid JSON: a body not sent as `application/json` is a 415 and
/// nothing is written.
#[tokio::test]
async fn a_body_not_sent_as_json_is_415_and_nothing_is_created() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    let send = |method: reqwest::Method, path: &str, content_type: Option<&str>, body: &Value| {
        let mut request = app
            .http
            .request(method, app.url(path))
            .basic_auth(API_KEY_ID, Some(API_SECRET))
            .body(body.to_string());
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let label = json!({"label": "changed"});
    for content_type in [
        Some("text/plain"),
        Some("text/plain; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let (status, answer) = send(
            reqwest::Method::POST,
            "/customers",
            content_type,
            &acme("c2"),
        )
        .await;
        assert_api_error(status, &answer, 415, "unsupported_media_type");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("application/json"), "{message}");
        let (status, answer) =
            send(reqwest::Method::PUT, "/customers/c1", content_type, &label).await;
        assert_api_error(status, &answer, 415, "unsupported_media_type");
    }
    let (status, _) = app.api_get("/customers/c2").await;
    assert_eq!(status, 404, "nothing was created");
    let (_, c1) = app.api_get("/customers/c1").await;
    assert_eq!(c1["label"], Value::Null, "nothing was changed");

    // The media type is case-insensitive and may carry parameters.
    let (status, answer) = send(
        reqwest::Method::POST,
        "/customers",
        Some("Application/JSON; charset=utf-8"),
        &acme("c2"),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    app.stop().await;
}

// ---- payment methods ----

/// A card expiry `years` years from now, as (month, year).
fn expiry_in(years: i32) -> (u32, i32) {
    let today = chrono::Utc::now().date_naive();
    (today.month(), today.year() + years)
}

fn card_method() -> Value {
    let (month, year) = expiry_in(3);
    json!({
        "type": "card",
        "provider": "STRIPE",
        "referenceId": "cus_c1/card_1MvoiELkdIwHu7ixOeFh0f4s",
        "billingDetails": {
            "address": {
                "city": "London",
                "country": "GB",
                "line1": "1 Long Lane",
                "line2": "Unit 4",
                "postalCode": "SE1 4PG",
                "state": "Greater London",
            },
            "email": "ada@acme.example",
            "name": "Ada Lovelace",
            "phone": "+44 20 7946 0000",
        },
        "card": {"expMonth": month, "expYear": year},
    })
}

fn payment_method_method() -> Value {
    json!({
        "type": "card",
        "provider": "STRIPE",
        "referenceId": "cus_c1/pm_1MqLiJLkdIwHu7ixUEgbFdYF",
    })
}

fn mandate_method() -> Value {
    json!({
        "type": "direct_debit",
        "provider": "GOCARDLESS",
        "referenceId": "MD0000XH9A3T4C",
        "billingDetails": {"email": "finance@acme.example", "name": "Acme Trading Ltd"},
    })
}

async fn put_method(app: &TestApp, customer: &str, method: Value) -> (u16, Value) {
    app.api_put(&format!("/customers/{customer}/payment-method"), method)
        .await
}

async fn methods(app: &TestApp, customer: &str) -> Vec<Value> {
    let (status, body) = app
        .api_get(&format!("/customers/{customer}/payment-methods"))
        .await;
    assert_eq!(status, 200, "{body}");
    body.as_array().expect("a list").clone()
}

/// Checks the answer to a PUT of `sent` and returns the method's id.
fn assert_method(answer: &Value, customer: &str, sent: &Value) -> String {
    let id = answer["id"].as_str().expect("an id").to_owned();
    assert!(!id.is_empty());
    timestamp(answer, "updatedAt");
    let mut rest = answer.clone();
    let object = rest.as_object_mut().unwrap();
    object.remove("id");
    object.remove("updatedAt");
    assert_eq!(
        rest,
        json!({
            "sequenceAccountId": "acc_default",
            "customerId": customer,
            "provider": sent["provider"],
            "gateway": sent["provider"].as_str().unwrap().to_lowercase(),
            "reconciled": true,
            "type": sent["type"],
            "referenceId": sent["referenceId"],
            "status": "ACTIVE",
            "onFile": true,
            "billingDetails": billing_details_as_answered(&sent["billingDetails"]),
            "card": sent["card"],
            "metadata": {},
        })
    );
    id
}

/// Billing details as the API answers them: every field present, `null` when not sent.
fn billing_details_as_answered(sent: &Value) -> Value {
    if sent.is_null() {
        return Value::Null;
    }
    let field = |value: &Value, key: &str| value.get(key).cloned().unwrap_or(Value::Null);
    let address = &sent["address"];
    json!({
        "address": if address.is_null() {
            Value::Null
        } else {
            json!({
                "city": field(address, "city"),
                "country": field(address, "country"),
                "line1": field(address, "line1"),
                "line2": field(address, "line2"),
                "postalCode": field(address, "postalCode"),
                "state": field(address, "state"),
            })
        },
        "email": field(sent, "email"),
        "name": field(sent, "name"),
        "phone": field(sent, "phone"),
    })
}

#[tokio::test]
async fn payment_methods_in_the_three_seed_shapes_are_listed_with_the_last_on_file() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    assert!(methods(&app, "c1").await.is_empty());

    let mut ids = Vec::new();
    for sent in [card_method(), payment_method_method(), mandate_method()] {
        let (status, answer) = put_method(&app, "c1", sent.clone()).await;
        assert_eq!(status, 200, "{sent} → {answer}");
        ids.push(assert_method(&answer, "c1", &sent));
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "three distinct methods: {ids:?}");

    let listed = methods(&app, "c1").await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let on_file: Vec<&Value> = listed.iter().filter(|m| m["onFile"] == true).collect();
    assert_eq!(on_file.len(), 1, "exactly one method on file: {listed:?}");
    assert_eq!(on_file[0]["id"], ids[2].as_str());
    assert_eq!(on_file[0]["referenceId"], "MD0000XH9A3T4C");
    assert_eq!(
        listed[0]["id"],
        ids[2].as_str(),
        "the method on file is listed first"
    );
    for method in &listed {
        assert_eq!(method["status"], "ACTIVE");
        assert_eq!(method["customerId"], "c1");
    }
    // The card kept its billing details and expiry.
    let card = listed.iter().find(|m| m["id"] == ids[0].as_str()).unwrap();
    assert_eq!(card["billingDetails"], card_method()["billingDetails"]);
    assert_eq!(card["card"], card_method()["card"]);
    assert_eq!(card["onFile"], false);

    // Another customer's methods are their own.
    app.create_customer("c2").await;
    assert!(methods(&app, "c2").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn putting_a_known_method_again_puts_it_back_on_file_without_a_duplicate() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    let (status, card) = put_method(&app, "c1", card_method()).await;
    assert_eq!(status, 200, "{card}");
    let (status, mandate) = put_method(&app, "c1", mandate_method()).await;
    assert_eq!(status, 200, "{mandate}");

    // The same card again with a new expiry and no billing details.
    let (month, year) = expiry_in(5);
    let again = json!({
        "type": "card",
        "provider": "STRIPE",
        "referenceId": card_method()["referenceId"],
        "card": {"expMonth": month, "expYear": year},
    });
    let (status, answer) = put_method(&app, "c1", again).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], card["id"], "the same method, updated");
    assert_eq!(answer["onFile"], true);
    assert_eq!(answer["card"], json!({"expMonth": month, "expYear": year}));
    assert_eq!(answer["billingDetails"], card_method()["billingDetails"]);

    let listed = methods(&app, "c1").await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["id"], card["id"]);
    assert_eq!(listed[0]["onFile"], true);
    assert_eq!(listed[1]["id"], mandate["id"]);
    assert_eq!(listed[1]["onFile"], false);
    app.stop().await;
}

#[tokio::test]
async fn a_card_expiring_this_month_is_accepted() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    let (month, year) = expiry_in(0);
    let mut method = card_method();
    method["card"] = json!({"expMonth": month, "expYear": year});
    let (status, answer) = put_method(&app, "c1", method).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["card"], json!({"expMonth": month, "expYear": year}));
    app.stop().await;
}

#[tokio::test]
async fn invalid_payment_methods_are_refused_naming_the_field() {
    let app = spawn_app().await;
    app.create_customer("c1").await;
    let today = chrono::Utc::now().date_naive();
    // The month before this one.
    let (past_month, past_year) = if today.month() == 1 {
        (12, today.year() - 1)
    } else {
        (today.month() - 1, today.year())
    };
    let (month, year) = expiry_in(2);
    let card_with = |card: Value| {
        let mut method = card_method();
        method["card"] = card;
        method
    };
    let cases = [
        (
            "referenceId",
            json!({"type": "direct_debit", "provider": "GOCARDLESS", "referenceId": "cus_x"}),
        ),
        (
            "referenceId",
            json!({"type": "card", "provider": "STRIPE", "referenceId": "pm_1"}),
        ),
        (
            "referenceId",
            json!({"type": "card", "provider": "STRIPE", "referenceId": "cus_A/src_1"}),
        ),
        (
            "referenceId",
            json!({"type": "direct_debit", "provider": "STRIPE", "referenceId": "MD0000XH9A3T4C"}),
        ),
        (
            "type",
            json!({"type": "card", "provider": "GOCARDLESS", "referenceId": "MD0000XH9A3T4C"}),
        ),
        (
            "type",
            json!({"type": "direct_debit", "provider": "STRIPE",
                   "referenceId": "cus_c1/card_1MvoiELkdIwHu7ixOeFh0f4s"}),
        ),
        (
            "type",
            json!({"type": "cheque", "provider": "STRIPE", "referenceId": "cus_A"}),
        ),
        (
            "provider",
            json!({"type": "card", "provider": "PAYPAL", "referenceId": "cus_A"}),
        ),
        (
            "card.expMonth",
            card_with(json!({"expMonth": 13, "expYear": year})),
        ),
        (
            "card.expMonth",
            card_with(json!({"expMonth": 0, "expYear": year})),
        ),
        (
            "card.expYear",
            card_with(json!({"expMonth": month, "expYear": 26})),
        ),
        (
            "card.expYear",
            card_with(json!({"expMonth": past_month, "expYear": past_year})),
        ),
        (
            "card",
            json!({"type": "direct_debit", "provider": "GOCARDLESS",
                   "referenceId": "MD0000XH9A3T4C",
                   "card": {"expMonth": month, "expYear": year}}),
        ),
        ("billingDetails.email", {
            let mut method = card_method();
            method["billingDetails"]["email"] = json!("ada at acme");
            method
        }),
        ("billingDetails.address.country", {
            let mut method = card_method();
            method["billingDetails"]["address"]["country"] = json!("UK");
            method
        }),
    ];
    for (field, method) in cases {
        let (status, answer) = put_method(&app, "c1", method.clone()).await;
        assert_validation_error(status, &answer, field);
    }
    assert!(
        methods(&app, "c1").await.is_empty(),
        "nothing refused was stored"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_stripe_reference_must_name_the_customers_own_stripe_customer() {
    let app = spawn_app().await;
    app.create_customer("c1").await; // registered with Stripe customer cus_c1
    let (status, body) = put_method(
        &app,
        "c1",
        json!({"type": "card", "provider": "STRIPE", "referenceId": "cus_someoneelse/pm_1"}),
    )
    .await;
    assert_validation_error(status, &body, "referenceId");
    assert!(methods(&app, "c1").await.is_empty(), "nothing stored");
    app.stop().await;
}
