//! Payouts: a deposit's lines matched to what the ledger recorded, stored whole and once.

use settle::provider::Provider;
use settle::reconcile::payout::{self, Explained, PayoutStatus, Source};
use settle::repository::payouts;

use crate::helpers::provider_api::{GOCARDLESS_TOKEN, ProviderApi, STRIPE_KEY};
use crate::helpers::*;

/// Stripe's example balance transaction, as the line of `source` for `amount`, `fee`.
pub(crate) fn stripe_transaction(
    category: &str,
    source: serde_json::Value,
    amount: i64,
    fee: i64,
) -> serde_json::Value {
    let fixtures: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/stripe-objects.json")).unwrap();
    let mut transaction = fixtures["balance_transaction"].clone();
    transaction["reporting_category"] = category.into();
    transaction["type"] = category.into();
    transaction["source"] = source;
    transaction["amount"] = amount.into();
    transaction["fee"] = fee.into();
    transaction["net"] = (amount - fee).into();
    transaction["currency"] = "gbp".into();
    transaction
}

/// The test app's own account's Stripe payout `id`.
fn stripe_payout<'a>(app: &'a TestApp, id: &'a str) -> payouts::PayoutKey<'a> {
    payouts::PayoutKey {
        account_id: &app.settings.account.id,
        provider: Provider::Stripe,
        provider_payout_id: id,
    }
}

#[tokio::test]
async fn a_payout_is_matched_through_the_ledger_and_stored_once_however_often_it_is_listed() {
    let app = spawn_worker(Retries::PATIENT).await;
    app.create_customer("cust").await;
    app.create_invoice("inv_po1", "cust", None, "GBP", 1000)
        .await;
    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", "evt_po1")
            .payment("pi_po1", 1000, "gbp")
            .invoice_id("inv_po1")
            .to_bytes(),
    )
    .await;
    app.wait_invoice_status("inv_po1", "PAID").await;

    let fixtures: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/stripe-objects.json")).unwrap();
    let charge = |id: &str, intent: &str| {
        let mut charge = fixtures["charge"].clone();
        charge["id"] = id.into();
        charge["payment_intent"] = intent.into();
        charge
    };
    let mut own = fixtures["payout"].clone();
    own["id"] = "po_1".into();
    let listed = [
        stripe_transaction("charge", charge("ch_po1", "pi_po1"), 1000, 44),
        stripe_transaction("charge", charge("ch_elsewhere", "pi_elsewhere"), 500, 27),
        stripe_transaction("payout", own, -1429, 0),
    ];
    let lines: Vec<payout::Line> = listed
        .iter()
        .map(|t| settle::providers::stripe::payout::line_of(t).unwrap())
        .collect();
    let sources: Vec<Source> = lines.iter().map(|l| l.source.clone()).collect();
    let db = app.db();
    let knows = payouts::knows(&db, "acc_default", Provider::Stripe, &sources)
        .await
        .unwrap();
    assert_eq!(knows.len(), 1, "only pi_po1 is settle's: {knows:?}");
    let reconciled = payout::reconcile(1429, lines, &knows).unwrap();
    assert_eq!(reconciled.status, PayoutStatus::PartiallyMatched);
    assert_eq!(reconciled.difference, 0);
    let explained: Vec<Explained> = reconciled.lines.iter().map(|l| l.explained).collect();
    assert_eq!(
        explained,
        [
            Explained::Matched,
            Explained::Unmatched,
            Explained::Provider
        ]
    );

    let stored = payouts::Payout {
        provider: Provider::Stripe,
        provider_payout_id: "po_1".into(),
        account_id: "acc_default".into(),
        amount: 1429,
        currency: settle::reconcile::money::Currency::parse("GBP").unwrap(),
        arrival_date: None,
        event_id: "evt_payout".into(),
    };
    // Listed twice (an event delivered twice, a fetch after it): the second replaces the first.
    for _ in 0..2 {
        let mut tx = db.begin().await.unwrap();
        payouts::store(&mut tx, &stored, &reconciled).await.unwrap();
        tx.commit().await.unwrap();
    }
    let lines = payouts::lines(&db, &stripe_payout(&app, "po_1"))
        .await
        .unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].invoice_id.as_deref(), Some("inv_po1"));
    assert_eq!(lines[0].explained, "MATCHED");
    assert_eq!(lines[1].source_id.as_deref(), Some("ch_elsewhere"));
    assert_eq!(lines[1].invoice_id, None);
    assert_eq!(lines[1].net, rust_decimal::Decimal::from(473));
    let (status, net, unmatched): (String, i64, i32) = sqlx::query_as(
        "SELECT status, lines_net, unmatched_lines FROM payouts WHERE provider_payout_id = 'po_1'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), net, unmatched),
        ("PARTIALLY_MATCHED", 1429, 1)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_connected_accounts_payout_lines_are_listed_with_stripe_account_across_pages() {
    let api = ProviderApi::start().await;
    let fixtures: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/stripe-objects.json")).unwrap();
    let mut refund = fixtures["refund"].clone();
    refund["id"] = "re_conn".into();
    let mut charge = fixtures["charge"].clone();
    charge["id"] = "ch_conn".into();
    charge["payment_intent"] = "pi_conn".into();
    let mut own = fixtures["payout"].clone();
    own["id"] = "po_conn".into();
    let listed = [
        stripe_transaction("charge", charge, 3000, 117),
        stripe_transaction("refund", refund, -500, 0),
        stripe_transaction("payout", own, -2383, 0),
    ];
    for (n, mut transaction) in listed.into_iter().enumerate() {
        transaction["id"] = format!("txn_conn{n}").into();
        api.add_balance_transaction(Some("acct_connected"), "po_conn", transaction);
    }
    let client = settle::providers::ApiClient::new("stripe", &api.url()).unwrap();
    let key = secrecy::SecretString::from(STRIPE_KEY);
    let connected = settle::providers::stripe::api::Credentials {
        api_key: &key,
        account: Some("acct_connected"),
    };
    let lines = settle::providers::stripe::api::payout_lines(&client, &connected, "po_conn")
        .await
        .unwrap();
    let lines: Vec<payout::Line> = lines
        .iter()
        .map(|l| settle::providers::stripe::payout::line_of(l).unwrap())
        .collect();
    let sources: Vec<Source> = lines.iter().map(|l| l.source.clone()).collect();
    assert_eq!(
        sources,
        [
            Source::Payment("pi_conn".into()),
            Source::Refund("re_conn".into()),
            Source::Payout
        ]
    );
    // Two pages (the stand-in serves two a page), each asked for with the source expanded.
    let asked: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("/v1/balance_transactions"))
        .collect();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked.iter().all(|r| r.contains("expand%5B%5D=data.source")),
        "{asked:?}"
    );
    assert!(asked[1].contains("starting_after=txn_conn1"), "{asked:?}");

    // The platform's own payouts are another list: without the header, none of these.
    let platform = settle::providers::stripe::api::Credentials {
        api_key: &key,
        account: None,
    };
    let none = settle::providers::stripe::api::payout_lines(&client, &platform, "po_conn")
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn gocardless_payout_items_sum_in_tenths_and_an_old_payouts_answer_410() {
    let api = ProviderApi::start().await;
    let item = |kind: &str, amount: &str, payment: &str| {
        serde_json::json!({
            "amount": amount, "type": kind, "taxes": [],
            "links": {"payment": payment, "mandate": "MD000123"}
        })
    };
    for listed in [
        item("payment_paid_out", "1500.0", "PM0001"),
        item("payment_paid_out", "2500.0", "PM0002"),
        item("gocardless_fee", "-37.5", "PM0001"),
        item("gocardless_fee", "-45.3", "PM0002"),
        item("payment_charged_back", "-1500.0", "PM0001"),
    ] {
        api.add_payout_item("PO0001", listed);
    }
    api.expire_payout("PO_OLD");
    let client = settle::providers::ApiClient::new("gocardless", &api.url()).unwrap();
    let token = secrecy::SecretString::from(GOCARDLESS_TOKEN);
    let listed = settle::providers::gocardless::api::payout_items(&client, &token, "PO0001")
        .await
        .unwrap();
    let settle::providers::gocardless::api::PayoutItems::Listed(items) = listed else {
        panic!("listed: {listed:?}");
    };
    assert_eq!(items.len(), 5, "every page");
    let lines: Vec<payout::Line> = items
        .iter()
        .map(|i| settle::providers::gocardless::payout::line_of(i).unwrap())
        .collect();
    // 1500 + 2500 - 37.5 - 45.3 - 1500 = 2417.2, paid out as 2417p: summed, then rounded.
    let reconciled = payout::reconcile(2417, lines, &Default::default()).unwrap();
    assert_eq!(reconciled.net, 2417);
    assert_eq!(reconciled.fees, 83);
    assert_eq!(reconciled.difference, 0);

    let gone = settle::providers::gocardless::api::payout_items(&client, &token, "PO_OLD")
        .await
        .unwrap();
    assert!(
        matches!(&gone, settle::providers::gocardless::api::PayoutItems::Gone(why) if why.contains("6 months")),
        "{gone:?}"
    );
}

/// A payout's row as the events left it: status, its reason, amount and currency.
async fn payout_row(
    db: &sqlx::PgPool,
    id: &str,
) -> (String, Option<String>, Option<i64>, Option<String>) {
    sqlx::query_as(
        "SELECT status, status_reason, amount, currency FROM payouts WHERE provider_payout_id = $1",
    )
    .bind(id)
    .fetch_one(db)
    .await
    .unwrap()
}

/// Stripe's `payout.*` event for the fixture payout `id`, `automatic` or manual.
pub(crate) fn stripe_payout_event(
    event_type: &str,
    event_id: &str,
    id: &str,
    automatic: bool,
) -> Vec<u8> {
    StripeEvent::new(event_type, event_id)
        .payout(id, automatic)
        .to_bytes()
}

#[tokio::test]
async fn payout_events_move_a_payout_forward_only_and_a_failure_is_final() {
    let app = spawn_worker(Retries::PATIENT).await;
    let db = app.db();
    let wait_status = |id: &'static str, status: &'static str| {
        let db = db.clone();
        poll_until(status, WAIT, move || {
            let db = db.clone();
            async move {
                let row: Option<(String,)> =
                    sqlx::query_as("SELECT status FROM payouts WHERE provider_payout_id = $1")
                        .bind(id)
                        .fetch_optional(&db)
                        .await
                        .unwrap();
                row.filter(|(now,)| now == status).map(|_| ())
            }
        })
    };

    // Sent, then its lines final, then failed after all (Stripe sends `payout.failed` after
    // `payout.paid` when the bank returns the money).
    app.deliver_stripe(&stripe_payout_event(
        "payout.paid",
        "evt_po_paid",
        "po_auto",
        true,
    ))
    .await;
    wait_status("po_auto", "EXPECTED").await;
    assert_eq!(
        payout_row(&db, "po_auto").await,
        ("EXPECTED".into(), None, Some(1100), Some("GBP".into()))
    );
    app.deliver_stripe(&stripe_payout_event(
        "payout.reconciliation_completed",
        "evt_po_done",
        "po_auto",
        true,
    ))
    .await;
    wait_status("po_auto", "LISTING").await;
    app.deliver_stripe(&stripe_payout_event(
        "payout.failed",
        "evt_po_failed",
        "po_auto",
        true,
    ))
    .await;
    wait_status("po_auto", "FAILED").await;
    // Subscribers hear that the money is not in the bank.
    let failed = announced(&db, "po_auto").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "payout.failed");
    // An account's payout, in the id: another account may hold a payout of the same id.
    assert_eq!(
        failed[0].1["id"],
        format!("stripe:{}/po_auto:payout.failed", app.settings.account.id)
    );
    assert_eq!(
        failed[0].1["data"]["statusReason"],
        "account_closed: The bank account has been closed"
    );
    // A late `payout.paid` (another delivery id) does not undo the failure.
    app.deliver_stripe(&stripe_payout_event(
        "payout.paid",
        "evt_po_paid_late",
        "po_auto",
        true,
    ))
    .await;
    app.wait_processed("STRIPE", "evt_po_paid_late").await;
    assert_eq!(
        payout_row(&db, "po_auto").await,
        (
            "FAILED".into(),
            Some("account_closed: The bank account has been closed".into()),
            Some(1100),
            Some("GBP".into())
        )
    );

    // A manual payout cannot be listed: recorded, and said why.
    app.deliver_stripe(&stripe_payout_event(
        "payout.paid",
        "evt_po_manual",
        "po_manual",
        false,
    ))
    .await;
    wait_status("po_manual", "UNLISTABLE").await;
    let (_, reason, _, _) = payout_row(&db, "po_manual").await;
    assert!(reason.unwrap().contains("manual payout"));

    // GoCardless's event only links the payout: listing it will say how much.
    app.deliver_gocardless([GoCardlessEvent::new("EV_PO1", "payouts", "paid")
        .links(serde_json::json!({"payout": "PO000123"}))
        .edit(|event| {
            event["details"] = serde_json::json!({
                "origin": "gocardless", "cause": "payout_paid",
                "description": "GoCardless has transferred the payout to the creditor's bank account."
            });
        })])
    .await;
    wait_status("PO000123", "LISTING").await;
    assert_eq!(
        payout_row(&db, "PO000123").await,
        ("LISTING".into(), None, None, None)
    );
    app.stop().await;
}

/// A `run` process (API and worker) whose payout lister reads the stand-in every second, with
/// the platform's keys; no backfill sweeps.
pub(crate) async fn spawn_listing_app(api: &ProviderApi) -> TestApp {
    spawn_app_listing_every(api, 1, |_| {}).await
}

/// The same, its lister every `seconds` (0: never), with `more` settings.
pub(crate) async fn spawn_app_listing_every(
    api: &ProviderApi,
    seconds: u64,
    more: impl FnOnce(&mut settle::config::Settings) + Send + 'static,
) -> TestApp {
    let base = api.url();
    spawn_app_with(AppOptions {
        role: settle::role::Role::Run,
        tweak: Box::new(move |settings| {
            settings.stripe.api_key = STRIPE_KEY.into();
            settings.stripe.api_base = base.clone();
            settings.gocardless.access_token = GOCARDLESS_TOKEN.into();
            settings.gocardless.api_base = base;
            settings.backfill.interval_secs = 0;
            settings.payouts.list_interval_secs = seconds;
            Retries::PATIENT.apply_to(settings);
            more(settings);
        }),
        ..AppOptions::default()
    })
    .await
}

/// The payout as `GET /payouts/{id}` shows it once it has `status`.
pub(crate) async fn wait_payout(app: &TestApp, id: &str, status: &str) -> serde_json::Value {
    poll_until(&format!("payout {id} to be {status}"), WAIT, || async {
        let (code, body) = app.api_get(&format!("/payouts/{id}")).await;
        (code == 200 && body["status"] == status).then_some(body)
    })
    .await
}

pub(crate) fn fixture_object(kind: &str) -> serde_json::Value {
    let fixtures: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/stripe-objects.json")).unwrap();
    fixtures[kind].clone()
}

/// Stripe's fixture object of `kind` as `id`, of the PaymentIntent `intent` (none for a payout).
pub(crate) fn of_intent(kind: &str, id: &str, intent: &str) -> serde_json::Value {
    let mut object = fixture_object(kind);
    object["id"] = id.into();
    if !intent.is_empty() {
        object["payment_intent"] = intent.into();
    }
    object
}

/// Stripe's `refund.created` of 5.00 of `pi_b` (`re_b`), processed.
pub(crate) async fn refund_re_b(app: &TestApp) {
    app.deliver_stripe(
        &StripeEvent::new("refund.created", "evt_re_b")
            .refund("re_b", "pi_b", 500, "gbp", "succeeded")
            .to_bytes(),
    )
    .await;
    app.wait_processed("STRIPE", "evt_re_b").await;
}

/// A payout's balance transactions: `charges` (id, PaymentIntent, amount, fee), then a refund
/// of 5.00 (`re_b`, of `pi_b`), a dispute of 30.00 with its 15.00 fee (`dp_c`, of `pi_c`), a
/// Stripe fee of the account's (2.00, no source), and the payout's own line of `deposit`.
pub(crate) fn charges_refund_dispute_and_fee(
    payout: &str,
    charges: &[(&str, &str, i64, i64)],
    deposit: i64,
) -> Vec<serde_json::Value> {
    let mut listed: Vec<serde_json::Value> = charges
        .iter()
        .map(|(id, intent, amount, fee)| {
            stripe_transaction("charge", charge(id, intent), *amount, *fee)
        })
        .collect();
    listed.extend([
        stripe_transaction("refund", of_intent("refund", "re_b", "pi_b"), -500, 0),
        stripe_transaction("dispute", of_intent("dispute", "dp_c", "pi_c"), -3000, 1500),
        stripe_transaction("fee", serde_json::Value::Null, -200, 0),
        stripe_transaction("payout", of_intent("payout", payout, ""), -deposit, 0),
    ]);
    listed
}

/// `transactions` as the stand-in's balance transactions of payout `payout` (ids
/// `txn_<payout>_<n>`).
pub(crate) fn list_payout(
    api: &ProviderApi,
    payout: &str,
    transactions: impl IntoIterator<Item = serde_json::Value>,
) {
    for (n, mut transaction) in transactions.into_iter().enumerate() {
        transaction["id"] = format!("txn_{payout}_{n}").into();
        api.add_balance_transaction(None, payout, transaction);
    }
}

/// Stripe's charge fixture, of the PaymentIntent `intent`.
pub(crate) fn charge(id: &str, intent: &str) -> serde_json::Value {
    let mut charge = fixture_object("charge");
    charge["id"] = id.into();
    charge["payment_intent"] = intent.into();
    charge
}

/// `payout.reconciliation_completed` for an automatic GBP payout `id` of `amount`.
pub(crate) fn reconciliation_completed(event_id: &str, id: &str, amount: i64) -> Vec<u8> {
    StripeEvent::new("payout.reconciliation_completed", event_id)
        .object(|payout| {
            payout["id"] = id.into();
            payout["amount"] = amount.into();
            payout["currency"] = "gbp".into();
            payout["status"] = "paid".into();
        })
        .to_bytes()
}

/// Pays invoice `invoice` (GBP `amount`) with the PaymentIntent `intent`.
pub(crate) async fn paid_by_stripe(app: &TestApp, invoice: &str, intent: &str, amount: i64) {
    app.create_invoice(invoice, "cust", None, "GBP", amount)
        .await;
    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", &format!("evt_{intent}"))
            .payment(intent, amount, "gbp")
            .invoice_id(invoice)
            .to_bytes(),
    )
    .await;
    app.wait_invoice_status(invoice, "PAID").await;
}

/// The outbox's messages about payout `id`: (type, payload).
async fn announced(db: &sqlx::PgPool, id: &str) -> Vec<(String, serde_json::Value)> {
    sqlx::query_as(
        "SELECT routing_key, payload FROM outbox WHERE payload->'data'->>'providerPayoutId' = $1
         ORDER BY id",
    )
    .bind(id)
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_stripe_payout_of_charges_a_partial_refund_a_dispute_and_fees_is_reconciled_to_its_invoices()
 {
    let api = ProviderApi::start().await;
    let app = spawn_listing_app(&api).await;
    let subscriber = app.subscribe().await;
    app.create_customer("cust").await;
    paid_by_stripe(&app, "inv_a", "pi_a", 1000).await;
    paid_by_stripe(&app, "inv_b", "pi_b", 2000).await;
    paid_by_stripe(&app, "inv_c", "pi_c", 3000).await;
    refund_re_b(&app).await;
    app.deliver_stripe(
        &StripeEvent::new("charge.dispute.created", "evt_dp_c")
            .dispute("dp_c", "pi_c", 3000, "gbp", "needs_response")
            .to_bytes(),
    )
    .await;
    app.wait_processed("STRIPE", "evt_dp_c").await;

    // 956 + 1922 + 2883 - 500 - 4500 (the dispute and its 15.00 fee) - 200 (a Stripe fee of
    // the account's, no source) = 561.
    let listed = charges_refund_dispute_and_fee(
        "po_e2e",
        &[
            ("ch_a", "pi_a", 1000, 44),
            ("ch_b", "pi_b", 2000, 78),
            ("ch_c", "pi_c", 3000, 117),
        ],
        561,
    );
    list_payout(&api, "po_e2e", listed);
    let completed = reconciliation_completed("evt_po_e2e", "po_e2e", 561);
    app.deliver_stripe(&completed).await;
    let payout = wait_payout(&app, "po_e2e", "RECONCILED").await;
    assert_eq!(payout["amount"], 561);
    assert_eq!(payout["linesNet"], 561);
    assert_eq!(payout["linesGross"], 2300);
    assert_eq!(payout["linesFees"], 1739);
    assert_eq!(payout["difference"], 0);
    assert_eq!(payout["unmatchedLines"], 0);
    let lines = payout["lines"].as_array().unwrap();
    let explained: Vec<(&str, &str, Option<&str>)> = lines
        .iter()
        .map(|l| {
            (
                l["category"].as_str().unwrap(),
                l["explained"].as_str().unwrap(),
                l["invoiceId"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        explained,
        [
            ("charge", "MATCHED", Some("inv_a")),
            ("charge", "MATCHED", Some("inv_b")),
            ("charge", "MATCHED", Some("inv_c")),
            ("refund", "MATCHED", Some("inv_b")),
            ("dispute", "MATCHED", Some("inv_c")),
            ("fee", "PROVIDER", None),
            ("payout", "PROVIDER", None),
        ]
    );
    assert_eq!(lines[4]["fee"], 1500.0);
    assert_eq!(lines[4]["net"], -4500.0);
    assert_eq!(lines[0]["customerId"], "cust");

    // The invoice says which payout carried its money: its charge less its refund.
    let invoice = app.invoice("inv_b").await;
    assert_eq!(invoice["payouts"].as_array().unwrap().len(), 1, "{invoice}");
    assert_eq!(invoice["payouts"][0]["payoutId"], "po_e2e");
    assert_eq!(invoice["payouts"][0]["status"], "RECONCILED");
    assert_eq!(invoice["payouts"][0]["net"], 1422.0);

    // Subscribers hear it once.
    let messages = app.take_messages(&subscriber, 1).await;
    let payout_messages: Vec<serde_json::Value> = messages
        .iter()
        .filter(|m| m.routing_key.starts_with("payout."))
        .map(|m| serde_json::from_slice(&m.body).unwrap())
        .collect();
    assert_eq!(payout_messages.len(), 1, "{payout_messages:?}");
    let message = &payout_messages[0];
    assert_eq!(
        message["id"],
        format!(
            "stripe:{}/po_e2e:payout.reconciled",
            app.settings.account.id
        )
    );
    assert_eq!(message["type"], "payout.reconciled");
    assert_eq!(
        message["data"]["invoiceIds"],
        serde_json::json!(["inv_a", "inv_b", "inv_c"])
    );
    assert_eq!(message["data"]["linesNet"], 561);

    // The event again (a redelivery) and another delivery of the same outcome: nothing twice.
    app.deliver_stripe(&completed).await;
    app.deliver_stripe(&reconciliation_completed("evt_po_e2e_again", "po_e2e", 561))
        .await;
    app.wait_processed("STRIPE", "evt_po_e2e_again").await;
    let db = app.db();
    assert_eq!(
        payouts::lines(&db, &stripe_payout(&app, "po_e2e"))
            .await
            .unwrap()
            .len(),
        7
    );
    assert_eq!(announced(&db, "po_e2e").await.len(), 1);
    let asked = api
        .requests()
        .into_iter()
        .filter(|r| r.contains("payout=po_e2e"))
        .count();
    assert_eq!(asked, 4, "listed once, in 4 pages of 2");

    // A payout with a charge settle never saw: kept, unmatched, and the payout says so.
    api.add_balance_transaction(
        None,
        "po_other",
        stripe_transaction("charge", charge("ch_unknown", "pi_unknown"), 800, 32),
    );
    let mut own = fixture_object("payout");
    own["id"] = "po_other".into();
    api.add_balance_transaction(None, "po_other", stripe_transaction("payout", own, -768, 0));
    app.deliver_stripe(&reconciliation_completed("evt_po_other", "po_other", 768))
        .await;
    let payout = wait_payout(&app, "po_other", "PARTIALLY_MATCHED").await;
    assert_eq!(payout["unmatchedLines"], 1);
    assert_eq!(payout["difference"], 0);
    assert_eq!(payout["lines"][0]["explained"], "UNMATCHED");
    assert_eq!(payout["lines"][0]["sourceId"], "ch_unknown");
    assert_eq!(payout["lines"][0]["invoiceId"], serde_json::Value::Null);
    let (kind, data) = &announced(&db, "po_other").await[0];
    assert_eq!(kind, "payout.partially_matched");
    assert_eq!(data["data"]["unmatchedLines"], 1);

    let (code, page) = app.api_get("/payouts?status=RECONCILED").await;
    assert_eq!(code, 200);
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["po_e2e"]);
    let (code, body) = app.api_get("/payouts?status=PAID").await;
    assert_validation_error(code, &body, "status");
    // Paged in the order settle recorded them.
    let (_, first) = app.api_get("/payouts?limit=1").await;
    assert_eq!(first["data"][0]["id"], "po_e2e");
    let cursor = first["nextCursor"].as_str().unwrap();
    let (_, second) = app
        .api_get(&format!("/payouts?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(second["data"][0]["id"], "po_other");
    assert_eq!(second["nextCursor"], serde_json::Value::Null);
    let (code, body) = app.api_get("/payouts?cursor=nonsense").await;
    assert_validation_error(code, &body, "cursor");
    app.stop().await;
}

#[tokio::test]
async fn a_connected_accounts_payout_is_listed_with_its_stripe_account() {
    let api = ProviderApi::start().await;
    let app = spawn_listing_app(&api).await;
    let (code, _, err) = settle(
        &app,
        &[
            "connections",
            "add",
            "--account",
            &app.settings.account.id,
            "--provider",
            "stripe",
            "--external-id",
            "acct_po_conn",
            "--mode",
            "test",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    app.create_customer("cust").await;
    app.create_invoice("inv_conn", "cust", None, "GBP", 1000)
        .await;
    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", "evt_conn_paid")
            .connected("acct_po_conn")
            .payment("pi_conn_po", 1000, "gbp")
            .invoice_id("inv_conn")
            .to_bytes(),
    )
    .await;
    app.wait_invoice_status("inv_conn", "PAID").await;
    let mut own = fixture_object("payout");
    own["id"] = "po_conn_e2e".into();
    for transaction in [
        stripe_transaction("charge", charge("ch_conn_po", "pi_conn_po"), 1000, 44),
        stripe_transaction("payout", own, -956, 0),
    ] {
        api.add_balance_transaction(Some("acct_po_conn"), "po_conn_e2e", transaction);
    }
    let completed = StripeEvent::new("payout.reconciliation_completed", "evt_conn_po")
        .connected("acct_po_conn")
        .object(|payout| {
            payout["id"] = "po_conn_e2e".into();
            payout["amount"] = 956.into();
            payout["currency"] = "gbp".into();
            payout["status"] = "paid".into();
        });
    app.deliver_stripe(&completed.to_bytes()).await;
    // The stand-in lists a connected account's transactions only with its `Stripe-Account`.
    let payout = wait_payout(&app, "po_conn_e2e", "RECONCILED").await;
    assert_eq!(payout["lines"][0]["invoiceId"], "inv_conn");
    assert_eq!(payout["linesNet"], 956);
    app.stop().await;
}

#[tokio::test]
async fn fetch_lists_the_payouts_events_missed_and_a_second_fetch_stores_nothing_twice() {
    let api = ProviderApi::start().await;
    let app = spawn_app_listing_every(&api, 0, |_| {}).await;
    app.create_customer("cust").await;
    paid_by_stripe(&app, "inv_f", "pi_f", 1000).await;
    let now = chrono::Utc::now().timestamp();
    let payout = |id: &str, status: &str, automatic: bool| {
        let mut payout = fixture_object("payout");
        payout["id"] = id.into();
        payout["amount"] = 956.into();
        payout["currency"] = "gbp".into();
        payout["created"] = (now - 60).into();
        payout["status"] = status.into();
        payout["automatic"] = automatic.into();
        if status == "failed" {
            payout["failure_code"] = "no_account".into();
            payout["failure_message"] =
                "The bank account details on file are probably incorrect.".into();
        }
        payout
    };
    api.set_stripe_payout(None, payout("po_f", "paid", true));
    api.set_stripe_payout(None, payout("po_f_manual", "paid", false));
    api.set_stripe_payout(None, payout("po_f_failed", "failed", true));
    api.set_stripe_payout(None, payout("po_f_on_its_way", "in_transit", true));
    let mut own = fixture_object("payout");
    own["id"] = "po_f".into();
    for transaction in [
        stripe_transaction("charge", charge("ch_f", "pi_f"), 1000, 44),
        stripe_transaction("payout", own, -956, 0),
    ] {
        api.add_balance_transaction(None, "po_f", transaction);
    }
    let keys = [
        ("STRIPE_API_KEY", STRIPE_KEY),
        ("STRIPE_API_BASE", &api.url()),
    ];
    let fetch = [
        "payouts", "fetch", "stripe", "--since", "1h", "--output", "json",
    ];
    let db = app.db();
    for _ in 0..2 {
        let (code, out, err) = settle_with(&app, &fetch, &keys).await;
        assert_eq!(code, 0, "{out}{err}");
        let reports: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(reports[0]["found"], 3, "{reports}");
        assert_eq!(reports[0]["reconciled"], 1, "{reports}");
        assert_eq!(reports[0]["withoutLines"], 2, "{reports}");
        assert_eq!(
            payouts::lines(&db, &stripe_payout(&app, "po_f"))
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(announced(&db, "po_f").await.len(), 1);
        assert_eq!(announced(&db, "po_f_failed").await.len(), 1);
    }
    assert_eq!(payout_row(&db, "po_f_manual").await.0, "UNLISTABLE");
    assert_eq!(payout_row(&db, "po_f_failed").await.0, "FAILED");
    let (code, _) = app.api_get("/payouts/po_f_on_its_way").await;
    assert_eq!(code, 404, "not paid yet: not recorded");

    // The accountant's rows: one per line, in pounds.
    let (code, out, err) = settle(&app, &["payouts", "show", "po_f", "--output", "csv"]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(
        rows,
        [
            "payout,date,invoice,customer,gross,fee,net,category,currency,source",
            "po_f,2009-02-13,inv_f,cust,10.00,0.44,9.56,charge,GBP,ch_f",
            "po_f,2009-02-13,,,-9.56,0.00,-9.56,payout,GBP,po_f",
        ]
    );
    let (code, out, _) = settle(&app, &["payouts", "list", "--status", "FAILED"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("po_f_failed") && out.contains("no_account"),
        "{out}"
    );
    let (code, _, err) = settle(&app, &["payouts", "list", "--status", "PAID"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("one of EXPECTED"), "{err}");
    app.stop().await;
}

#[tokio::test]
async fn a_payout_whose_provider_is_down_keeps_waiting_says_why_and_is_listed_once_it_answers() {
    use crate::helpers::provider_api::Refusal;
    let api = ProviderApi::start().await;
    let app = spawn_listing_app(&api).await;
    app.create_customer("cust").await;
    paid_by_stripe(&app, "inv_down", "pi_down", 1000).await;
    let mut own = fixture_object("payout");
    own["id"] = "po_down".into();
    for transaction in [
        stripe_transaction("charge", charge("ch_down", "pi_down"), 1000, 44),
        stripe_transaction("payout", own, -956, 0),
    ] {
        api.add_balance_transaction(None, "po_down", transaction);
    }
    // Every attempt of the first listing answered 500 (the client tries 5 times).
    api.refuse_next(&[Refusal::ServerError; 5]);
    app.deliver_stripe(&reconciliation_completed("evt_po_down", "po_down", 956))
        .await;
    let waiting = poll_until("the failed listing's reason", WAIT, || async {
        let (code, body) = app.api_get("/payouts/po_down").await;
        (code == 200 && body["statusReason"].is_string()).then_some(body)
    })
    .await;
    assert_eq!(waiting["status"], "LISTING", "{waiting}");
    assert!(
        waiting["statusReason"].as_str().unwrap().contains("500"),
        "{waiting}"
    );
    assert!(
        app.metric(r#"settle_payout_listing_failures_total{provider="stripe"}"#)
            .await
            >= 1.0
    );
    // The next round lists it, and the reason is gone.
    let payout = wait_payout(&app, "po_down", "RECONCILED").await;
    assert_eq!(payout["statusReason"], serde_json::Value::Null);
    assert_eq!(payout["lines"][0]["invoiceId"], "inv_down");
    app.stop().await;
}
