//! Customers as wallee's customer API has them (issue 34): its fields, `PATCH` with optimistic
//! locking (`version`, `If-Match`, `ETag`), `GET /customers` with filters and keyset pages, and
//! `DELETE`, refused while money is owed or in flight.

use serde_json::{Value, json};

use crate::helpers::cli::account_with_key;
use crate::helpers::*;

async fn patch(app: &TestApp, id: &str, body: Value) -> (u16, Value) {
    app.api(
        reqwest::Method::PATCH,
        &format!("/customers/{id}"),
        Some(body),
    )
    .await
}

/// `PATCH` with `If-Match: <if_match>`: status, `ETag`, body.
async fn patch_if_match(
    app: &TestApp,
    id: &str,
    if_match: &str,
    body: Value,
) -> (u16, String, Value) {
    let key = ApiKey::configured();
    let response = app
        .http
        .patch(app.url(&format!("/customers/{id}")))
        .basic_auth(&key.id, Some(&key.secret))
        .header("if-match", if_match)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, etag, response.json().await.unwrap())
}

#[tokio::test]
async fn wallee_s_fields_are_kept_and_bad_ones_are_named() {
    let app = spawn_app().await;
    let fields = json!({
        "id": "cust_w", "legalName": "Wallee Kunde AG", "givenName": "Grace", "familyName": "Hopper",
        "preferredCurrency": "CHF", "language": "de-CH",
        "metadata": {"crm": "A-1", "segment": "enterprise"},
    });
    let (status, created) = app.api_post("/customers", fields.clone()).await;
    assert_eq!(status, 201, "{created}");
    for key in [
        "givenName",
        "familyName",
        "preferredCurrency",
        "language",
        "metadata",
    ] {
        assert_eq!(created[key], fields[key], "{key}");
    }
    assert_eq!(created["version"], 1);
    let mut metadata = serde_json::Map::new();
    for n in 0..51 {
        metadata.insert(format!("k{n}"), json!("v"));
    }
    for (field, value, named) in [
        ("preferredCurrency", json!("EURO"), "preferredCurrency"),
        ("language", json!("en_GB!"), "language"),
        ("metadata", Value::Object(metadata), "metadata"),
        ("metadata", json!({"k": "v".repeat(501)}), "metadata.k"),
        ("metadata", json!({"": "v"}), "metadata."),
    ] {
        let (status, body) = app
            .api_put("/customers/cust_w", json!({ field: value }))
            .await;
        assert_validation_error(status, &body, named);
    }
    let (_, read) = app.api_get("/customers/cust_w").await;
    assert_eq!(read["version"], 1, "nothing refused was written: {read}");
    app.stop().await;
}

#[tokio::test]
async fn of_two_writers_that_read_one_version_exactly_one_wins_and_the_other_is_told_the_current_one()
 {
    let app = spawn_app().await;
    app.create_customer("cust_race").await;
    let key = ApiKey::configured();
    let response = app
        .http
        .get(app.url("/customers/cust_race"))
        .basic_auth(&key.id, Some(&key.secret))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["etag"], "\"1\"");

    // Two services read version 1 and update at once.
    let (first, second) = tokio::join!(
        patch(&app, "cust_race", json!({"version": 1, "label": "first"})),
        patch(&app, "cust_race", json!({"version": 1, "label": "second"})),
    );
    let mut outcomes = [first, second];
    outcomes.sort_by_key(|(status, _)| *status);
    let [(won, winner), (lost, loser)] = outcomes;
    assert_eq!((won, lost), (200, 409), "{winner} {loser}");
    assert_eq!(winner["version"], 2);
    assert_eq!(loser["error"]["code"], "conflict", "{loser}");
    assert!(
        loser["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at version 2, not 1"),
        "{loser}"
    );
    let (_, read) = app.api_get("/customers/cust_race").await;
    assert_eq!(read["label"], winner["label"], "the loser wrote nothing");

    // If-Match carries the version as the ETag gave it.
    let (status, etag, body) =
        patch_if_match(&app, "cust_race", "\"2\"", json!({"label": "third"})).await;
    assert_eq!((status, etag.as_str()), (200, "\"3\""), "{body}");
    let (status, _, body) =
        patch_if_match(&app, "cust_race", "\"2\"", json!({"label": "late"})).await;
    assert_eq!(status, 409, "{body}");
    let (status, _, body) = patch_if_match(&app, "cust_race", "W/\"3\"", json!({})).await;
    assert_validation_error(status, &body, "If-Match");
    let (status, _, body) = patch_if_match(&app, "cust_race", "\"3\"", json!({"version": 2})).await;
    assert_validation_error(status, &body, "version");
    // No version at all is refused, not taken as "any".
    let (status, body) = patch(&app, "cust_race", json!({"label": "blind"})).await;
    assert_validation_error(status, &body, "version");
    let (status, body) = patch(&app, "cust_nobody", json!({"version": 1})).await;
    assert_eq!(status, 404, "{body}");
    app.stop().await;
}

async fn ids(app: &TestApp, query: &str) -> Vec<String> {
    let (status, page) = app.api_get(&format!("/customers?{query}")).await;
    assert_eq!(status, 200, "{page}");
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn customers_are_listed_by_every_filter_in_pages_that_inserts_do_not_disturb() {
    let app = spawn_app().await;
    for (id, name, email) in [
        ("c_b", "Beta 100% Ltd", "ops@beta.example"),
        ("c_d", "Delta Ltd", "Ops@Delta.example"),
        ("c_f", "Beta_Foxtrot GmbH", "f@foxtrot.example"),
        ("c_h", "Hotel plc", "h@hotel.example"),
    ] {
        let (status, body) = app
            .api_post(
                "/customers",
                json!({"id": id, "legalName": name, "email": email,
                       "externalIds": [{"key": "Stripe", "value": format!("cus_{id}")},
                                       {"key": "Xero", "value": format!("XERO-{id}")}]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    assert_eq!(ids(&app, "email=ops%40delta.EXAMPLE").await, ["c_d"]);
    assert_eq!(ids(&app, "externalId=cus_c_f").await, ["c_f"]);
    assert_eq!(ids(&app, "externalId=XERO-c_h").await, ["c_h"]);
    assert_eq!(ids(&app, "namePrefix=beta").await, ["c_b", "c_f"]);
    // `%` and `_` are letters in a prefix, not LIKE's wildcards.
    assert_eq!(ids(&app, "namePrefix=Beta%20100%25").await, ["c_b"]);
    assert_eq!(ids(&app, "namePrefix=Beta_").await, ["c_f"]);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let since = form_urlencoded::byte_serialize(future.as_bytes()).collect::<String>();
    assert!(ids(&app, &format!("createdSince={since}")).await.is_empty());
    assert_eq!(
        ids(&app, "namePrefix=beta&email=f%40foxtrot.example").await,
        ["c_f"]
    );

    // Pages of two; customers created while paging, before and after the cursor.
    let (_, first) = app.api_get("/customers?limit=2").await;
    let mut seen: Vec<String> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    app.create_customer("c_a").await;
    app.create_customer("c_z").await;
    let mut cursor = first["nextCursor"].as_str().map(str::to_owned);
    while let Some(next) = cursor {
        let (status, page) = app
            .api_get(&format!("/customers?limit=2&cursor={next}"))
            .await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        cursor = page["nextCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(
        seen,
        ["c_b", "c_d", "c_f", "c_h", "c_z"],
        "each once, in order"
    );
    let (status, body) = app.api_get("/customers?cursor=%21%21").await;
    assert_validation_error(status, &body, "cursor");
    let (status, body) = app.api_get("/customers?limit=0").await;
    assert_validation_error(status, &body, "limit");
    let (status, body) = app
        .api_get(&format!("/customers?namePrefix={}", "x".repeat(600)))
        .await;
    assert_validation_error(status, &body, "namePrefix");
    app.stop().await;
}

#[tokio::test]
async fn a_customer_is_deleted_only_once_nothing_is_owed_or_in_flight_and_its_paid_invoice_stays() {
    let app = spawn_worker(Retries::PATIENT).await;
    app.create_customer("cust_del").await;
    app.create_invoice("inv_del", "cust_del", None, "GBP", 1_000)
        .await;
    app.register_payment("inv_del", "STRIPE", "pi_del", 1_000)
        .await;
    let (status, body) = app
        .api_put(
            "/customers/cust_del/payment-method",
            json!({"type": "card", "provider": "STRIPE", "referenceId": "cus_cust_del/pm_del"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .api_put(
            "/payments/settings/customers/cust_del",
            json!({"paymentProvider": "STRIPE", "autoCharge": true}),
        )
        .await;
    assert!(status < 300, "{body}");

    let delete = || app.api(reqwest::Method::DELETE, "/customers/cust_del", None);
    let (status, refused) = delete().await;
    assert_eq!(status, 409, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("invoice inv_del is OPEN"), "{message}");
    assert!(
        message.contains("of invoice inv_del is REGISTERED"),
        "{message}"
    );

    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", "evt_del")
            .payment("pi_del", 1_000, "gbp")
            .invoice_id("inv_del")
            .to_bytes(),
    )
    .await;
    app.wait_invoice_status("inv_del", "PAID").await;
    let (status, body) = delete().await;
    assert_eq!(status, 204, "{body}");

    let (status, _) = app.api_get("/customers/cust_del").await;
    assert_eq!(status, 404);
    assert!(
        ids(&app, "").await.is_empty(),
        "a deleted customer is not listed"
    );
    let (status, _) = app.api_get("/customers/cust_del/payment-methods").await;
    assert_eq!(status, 404);
    let (status, invoice) = app.api_get("/invoices/inv_del").await;
    assert_eq!(
        (status, invoice["amountPaid"].as_i64()),
        (200, Some(1_000)),
        "{invoice}"
    );
    let (status, body) = patch(&app, "cust_del", json!({"version": 2})).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = delete().await;
    assert_eq!(status, 404, "deleted once");
    // Its Stripe customer id is free for another customer.
    let (status, body) = app
        .api_post(
            "/customers",
            json!({"id": "cust_new", "legalName": "New Ltd",
                   "externalIds": [{"key": "Stripe", "value": "cus_cust_del"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // A provider event naming that Stripe customer finds the customer it belongs to now.
    app.deliver_stripe(
        &StripeEvent::new("payment_method.attached", "evt_pm_new")
            .object_id("pm_new")
            .customer(Some("cus_cust_del"))
            .to_bytes(),
    )
    .await;
    assert_eq!(app.wait_processed("STRIPE", "evt_pm_new").await, "applied");
    assert_eq!(
        app.methods_of("cust_new").await,
        [("cus_cust_del/pm_new".into(), "ACTIVE".into(), true)]
    );
    let settings: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payment_settings WHERE level = 'CUSTOMER' AND target_id = 'cust_del'",
    )
    .fetch_one(&app.db())
    .await
    .unwrap();
    assert_eq!(settings, 0, "its payment settings went with it");
    app.stop().await;
}

#[tokio::test]
async fn an_invoice_registered_while_its_customer_is_deleted_never_lands_on_the_deleted_customer() {
    let app = spawn_app().await;
    app.create_customer("racer").await;
    // A delete of `racer` under way: it holds the customer's row, as `DELETE /customers/{id}`
    // (and a merge) does, and has not committed yet.
    let db = app.db();
    let mut deleting = db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM customers WHERE id = 'racer' FOR UPDATE")
        .execute(&mut *deleting)
        .await
        .unwrap();
    let registering = {
        let app_url = app.url("/invoices");
        let http = app.http.clone();
        let key = ApiKey::configured();
        tokio::spawn(async move {
            let response = http
                .post(app_url)
                .basic_auth(&key.id, Some(&key.secret))
                .json(
                    &json!({"id": "inv_racer", "customerId": "racer", "number": "INV-R",
                               "currency": "GBP", "amountDue": 100}),
                )
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        })
    };
    // The registration waits on the customer's row.
    poll_until(
        "the registration to wait for the delete",
        std::time::Duration::from_secs(10),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;
    sqlx::query("UPDATE customers SET deleted_at = now() WHERE id = 'racer'")
        .execute(&mut *deleting)
        .await
        .unwrap();
    deleting.commit().await.unwrap();
    let (status, answer) = registering.await.unwrap();
    assert_api_error(status, &answer, 404, "not_found");
    let (status, _) = app.api_get("/invoices/inv_racer").await;
    assert_eq!(status, 404, "no invoice of a deleted customer");
    app.stop().await;
}

async fn search(app: &TestApp, query: Value) -> (u16, Value) {
    app.api_post("/customers/search", query).await
}

/// The ids a search finds, in its order.
async fn found(app: &TestApp, query: Value) -> Vec<String> {
    let (status, body) = search(app, query).await;
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn leaf(field: &str, operator: &str, value: Value) -> Value {
    json!({"type": "LEAF", "fieldName": field, "operator": operator, "value": value})
}

#[tokio::test]
async fn a_search_in_wallee_s_filter_language_finds_orders_and_pages_within_the_account() {
    let app = spawn_app().await;
    for (id, name, email, currency) in [
        ("s_1", "Alpha Ltd", "a@x.example", json!("GBP")),
        ("s_2", "Beta Ltd", "b@y.example", json!("EUR")),
        ("s_3", "Gamma Ltd", "c@x.example", Value::Null),
        ("s_4", "Delta 50% Ltd", "d@z.example", json!("GBP")),
    ] {
        let mut body = json!({"id": id, "legalName": name, "email": email,
                              "externalIds": [{"key": "Xero", "value": format!("X-{id}")}]});
        if !currency.is_null() {
            body["preferredCurrency"] = currency;
        }
        let (status, created) = app.api_post("/customers", body).await;
        assert_eq!(status, 201, "{created}");
    }
    let and = |children: Vec<Value>| json!({"type": "AND", "children": children});
    let or = |children: Vec<Value>| json!({"type": "OR", "children": children});
    assert_eq!(
        found(
            &app,
            json!({"filter": and(vec![
                leaf("email", "CONTAINS", json!("@X.")),
                leaf("preferredCurrency", "EQUALS", json!("GBP")),
            ])})
        )
        .await,
        ["s_1"]
    );
    // `%` is a character, not a wildcard.
    assert_eq!(
        found(
            &app,
            json!({"filter": or(vec![
                leaf("id", "EQUALS", json!("s_2")),
                leaf("legalName", "CONTAINS", json!("50%")),
            ])})
        )
        .await,
        ["s_2", "s_4"]
    );
    assert_eq!(
        found(
            &app,
            json!({"filter": leaf("preferredCurrency", "ISNULL", Value::Null)})
        )
        .await,
        ["s_3"]
    );
    assert_eq!(
        found(
            &app,
            json!({"filter": leaf("externalId", "EQUALS", json!("X-s_3"))})
        )
        .await,
        ["s_3"]
    );
    let (status, _) = app
        .api_put("/customers/s_2", json!({"label": "edited"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        found(
            &app,
            json!({"filter": and(vec![
                leaf("version", "GREATER_THAN", json!(1)),
                or(vec![leaf("email", "NOTNULL", Value::Null)]),
            ])})
        )
        .await,
        ["s_2"]
    );
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    assert!(
        found(
            &app,
            json!({"filter": leaf("createdAt", "GREATER_THAN", json!(future))})
        )
        .await
        .is_empty()
    );
    // Ordered, then paged.
    let ordered = json!({"orderBys": [{"fieldName": "legalName", "sorting": "DESC"}],
                         "numberOfEntities": 2, "startingEntity": 1});
    assert_eq!(found(&app, ordered).await, ["s_4", "s_2"]);

    // Another account's key finds none of these.
    let other = account_with_key(&app, "acc_search").await;
    let (status, body) = app
        .api_as(
            &other,
            reqwest::Method::POST,
            "/customers/search",
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, body["data"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{body}"
    );

    // Every mistake is named where it is.
    let deep = (0..6).fold(leaf("id", "EQUALS", json!("s_1")), |inner, _| {
        and(vec![inner])
    });
    let many: Vec<Value> = (0..51).map(|_| leaf("id", "EQUALS", json!("x"))).collect();
    for (query, named) in [
        (
            json!({"filter": and(vec![leaf("id", "EQUALS", json!("s_1")), leaf("password", "EQUALS", json!("x"))])}),
            "filter.children[1].fieldName",
        ),
        (
            json!({"filter": leaf("id", "LIKE", json!("s_%"))}),
            "filter.operator",
        ),
        (
            json!({"filter": leaf("externalId", "CONTAINS", json!("X"))}),
            "filter.operator",
        ),
        (
            json!({"filter": leaf("version", "EQUALS", json!("one"))}),
            "filter.value",
        ),
        (
            json!({"filter": leaf("createdAt", "LESS_THAN", json!("yesterday"))}),
            "filter.value",
        ),
        (
            json!({"filter": leaf("email", "ISNULL", json!("x"))}),
            "filter.value",
        ),
        (
            json!({"filter": leaf("email", "EQUALS", Value::Null)}),
            "filter.value",
        ),
        (
            json!({"filter": json!({"type": "NOT", "children": []})}),
            "filter.type",
        ),
        (
            json!({"filter": json!({"type": "OR", "children": []})}),
            "filter.children",
        ),
        (
            json!({"filter": deep}),
            "filter.children[0].children[0].children[0].children[0].children[0]",
        ),
        (json!({"filter": or(many)}), "filter.children[50]"),
        (
            json!({"orderBys": [{"fieldName": "telephone"}]}),
            "orderBys[0].fieldName",
        ),
        (
            json!({"orderBys": [{"fieldName": "id", "sorting": "UP"}]}),
            "orderBys[0].sorting",
        ),
        (json!({"numberOfEntities": 101}), "numberOfEntities"),
        (json!({"startingEntity": -1}), "startingEntity"),
    ] {
        let (status, body) = search(&app, query).await;
        assert_validation_error(status, &body, named);
    }
    let (status, body) = search(
        &app,
        json!({"filter": leaf("id", "EQUALS", json!("s_1")), "where": "1=1"}),
    )
    .await;
    assert_eq!(status, 400, "unknown keys are refused: {body}");
    app.stop().await;
}

#[tokio::test]
async fn a_bulk_request_answers_each_item_as_its_own_request_and_a_bad_one_changes_nothing() {
    let app = spawn_app().await;
    app.create_customer("b_kept").await;
    app.create_customer("b_owing").await;
    app.create_invoice("inv_owing", "b_owing", None, "GBP", 500)
        .await;
    app.create_customer("b_gone").await;
    let items = json!({"items": [
        {"operation": "CREATE", "customer": {"id": "b_new", "legalName": "New Ltd", "language": "fr-CA"}},
        {"operation": "CREATE", "customer": {"id": "b_bad", "legalName": "Bad Ltd", "preferredCurrency": "EURO"}},
        {"operation": "UPDATE", "id": "b_kept", "version": 1, "customer": {"label": "first"}},
        {"operation": "UPDATE", "id": "b_kept", "version": 1, "customer": {"label": "stale"}},
        {"operation": "UPDATE", "id": "b_kept", "customer": {"telephone": 7}},
        {"operation": "DELETE", "id": "b_owing"},
        {"operation": "DELETE", "id": "b_gone"},
        {"operation": "ARCHIVE", "id": "b_kept"},
        {"operation": "DELETE"},
        "not an item",
    ]});
    let (status, body) = app.api_post("/customers/bulk", items).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<i64> = results
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [201, 400, 200, 409, 400, 409, 204, 400, 400, 400],
        "{body}"
    );
    assert_eq!(results[0]["customer"]["language"], "fr-CA");
    assert!(
        results[1]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("preferredCurrency"),
        "{body}"
    );
    assert_eq!(results[2]["customer"]["version"], 2);
    assert!(
        results[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at version 2, not 1")
    );
    assert!(
        results[4]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("telephone"),
        "{body}"
    );
    assert!(
        results[5]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invoice inv_owing is OPEN")
    );
    assert!(
        results[7]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("items[7].operation")
    );
    assert!(
        results[8]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("items[8].id")
    );

    // What was refused changed nothing; what was accepted applied.
    assert_eq!(app.api_get("/customers/b_bad").await.0, 404);
    assert_eq!(app.api_get("/customers/b_owing").await.0, 200);
    assert_eq!(app.api_get("/customers/b_gone").await.0, 404);
    let (_, kept) = app.api_get("/customers/b_kept").await;
    assert_eq!(
        (kept["label"].as_str(), kept["version"].as_i64()),
        (Some("first"), Some(2))
    );

    let too_many: Vec<Value> = (0..101)
        .map(|n| json!({"operation": "DELETE", "id": format!("x{n}")}))
        .collect();
    let (status, body) = app
        .api_post("/customers/bulk", json!({"items": too_many}))
        .await;
    assert_validation_error(status, &body, "items");
    let (status, body) = app.api_post("/customers/bulk", json!({"items": []})).await;
    assert_validation_error(status, &body, "items");
    app.stop().await;
}
