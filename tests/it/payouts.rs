//! Payouts: a deposit's lines matched to what the ledger recorded, stored whole and once.

use settle::provider::Provider;
use settle::reconcile::payout::{self, Explained, Source, Status};
use settle::repository::payouts;

use crate::helpers::provider_api::{GOCARDLESS_TOKEN, ProviderApi, STRIPE_KEY};
use crate::helpers::*;

/// Stripe's example balance transaction, as the line of `source` for `amount`, `fee`.
fn stripe_transaction(
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
        .map(|t| payout::stripe_line(t).unwrap())
        .collect();
    let sources: Vec<Source> = lines.iter().map(|l| l.source.clone()).collect();
    let db = app.db();
    let knows = payouts::knows(&db, "acc_default", Provider::Stripe, &sources)
        .await
        .unwrap();
    assert_eq!(knows.len(), 1, "only pi_po1 is settle's: {knows:?}");
    let reconciled = payout::reconcile(1429, lines, &knows);
    assert_eq!(reconciled.status, Status::PartiallyMatched);
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
        currency: "GBP".into(),
        arrival_date: None,
        event_id: "evt_payout".into(),
    };
    // Listed twice (an event delivered twice, a fetch after it): the second replaces the first.
    for _ in 0..2 {
        let mut tx = db.begin().await.unwrap();
        payouts::store(&mut tx, &stored, &reconciled).await.unwrap();
        tx.commit().await.unwrap();
    }
    let lines = payouts::lines(&db, Provider::Stripe, "po_1").await.unwrap();
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
    let client = settle::provider_api::ApiClient::new("stripe", &api.url()).unwrap();
    let key = secrecy::SecretString::from(STRIPE_KEY);
    let connected = settle::provider_api::stripe::Credentials {
        api_key: &key,
        account: Some("acct_connected"),
    };
    let lines = settle::provider_api::stripe::payout_lines(&client, &connected, "po_conn")
        .await
        .unwrap();
    let lines: Vec<payout::Line> = lines
        .iter()
        .map(|l| payout::stripe_line(l).unwrap())
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
    let platform = settle::provider_api::stripe::Credentials {
        api_key: &key,
        account: None,
    };
    let none = settle::provider_api::stripe::payout_lines(&client, &platform, "po_conn")
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
    let client = settle::provider_api::ApiClient::new("gocardless", &api.url()).unwrap();
    let token = secrecy::SecretString::from(GOCARDLESS_TOKEN);
    let listed = settle::provider_api::gocardless::payout_items(&client, &token, "PO0001")
        .await
        .unwrap();
    let settle::provider_api::gocardless::PayoutItems::Listed(items) = listed else {
        panic!("listed: {listed:?}");
    };
    assert_eq!(items.len(), 5, "every page");
    let lines: Vec<payout::Line> = items
        .iter()
        .map(|i| payout::gocardless_line(i).unwrap())
        .collect();
    // 1500 + 2500 - 37.5 - 45.3 - 1500 = 2417.2, paid out as 2417p: summed, then rounded.
    let reconciled = payout::reconcile(2417, lines, &Default::default());
    assert_eq!(reconciled.net, 2417);
    assert_eq!(reconciled.fees, 83);
    assert_eq!(reconciled.difference, 0);

    let gone = settle::provider_api::gocardless::payout_items(&client, &token, "PO_OLD")
        .await
        .unwrap();
    assert!(
        matches!(&gone, settle::provider_api::gocardless::PayoutItems::Gone(why) if why.contains("6 months")),
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
fn stripe_payout_event(event_type: &str, event_id: &str, id: &str, automatic: bool) -> Vec<u8> {
    StripeEvent::new(event_type, event_id)
        .object(|payout| {
            payout["id"] = id.into();
            payout["automatic"] = automatic.into();
            payout["currency"] = "gbp".into();
            if event_type == "payout.failed" {
                payout["status"] = "failed".into();
                payout["failure_code"] = "account_closed".into();
                payout["failure_message"] = "The bank account has been closed".into();
            }
        })
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
