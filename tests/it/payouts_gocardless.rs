//! GoCardless payouts end to end: paid-out, charged-back and refunded payments, their items in
//! tenths summed then rounded, and a payout too old to list.

use crate::helpers::provider_api::ProviderApi;
use crate::helpers::*;
use crate::payouts::{spawn_listing_app, wait_payout};

/// GoCardless's `payouts.paid`, as the fixture's event has it: links to the payout only.
pub(crate) fn gocardless_payout_paid(event_id: &str, payout: &str) -> GoCardlessEvent {
    GoCardlessEvent::new(event_id, "payouts", "paid")
        .links(serde_json::json!({"payout": payout}))
        .edit(|event| {
            event["details"] = serde_json::json!({
                "origin": "gocardless", "cause": "payout_paid",
                "description": "GoCardless has transferred the payout to the creditor's bank account."
            });
        })
}

/// A GoCardless payout as `GET /payouts/{id}` documents it.
pub(crate) fn gocardless_payout(id: &str, amount: i64, deducted_fees: i64) -> serde_json::Value {
    serde_json::json!({
        "id": id, "amount": amount, "arrival_date": "2026-11-20",
        "created_at": "2026-11-19T10:00:00.000Z", "currency": "GBP",
        "deducted_fees": deducted_fees,
        "fx": {"estimated_exchange_rate": null, "exchange_rate": null, "fx_amount": null,
               "fx_currency": "GBP"},
        "links": {"creditor": "CR000123", "creditor_bank_account": "BA000123"},
        "metadata": {}, "payout_type": "merchant", "reference": "REF-PO-GC", "status": "paid",
        "tax_currency": null
    })
}

/// A payout item as `GET /payout_items` documents it (links to the payment, and the refund of
/// a refund's item).
pub(crate) fn payout_item(
    kind: &str,
    amount: &str,
    payment: &str,
    refund: Option<&str>,
) -> serde_json::Value {
    let mut links = serde_json::json!({"payment": payment, "mandate": "MD000123"});
    if let Some(refund) = refund {
        links["refund"] = refund.into();
    }
    serde_json::json!({"amount": amount, "type": kind, "taxes": [], "links": links})
}

#[tokio::test]
async fn a_gocardless_payout_of_paid_out_charged_back_and_refunded_payments_sums_exactly_after_rounding()
 {
    let api = ProviderApi::start().await;
    let app = spawn_listing_app(&api).await;
    app.create_customer("cust").await;
    let mut payment_ids = Vec::new();
    for (n, amount) in [(1, 1500), (2, 2500), (3, 1000)] {
        let invoice = format!("inv_g{n}");
        app.create_invoice(&invoice, "cust", None, "GBP", amount)
            .await;
        let payment = app
            .register_payment(&invoice, "GOCARDLESS", &format!("PM_G{n}"), amount)
            .await;
        payment_ids.push(payment["id"].as_str().unwrap().to_owned());
        app.gocardless_payment(
            &format!("EV_G{n}"),
            "paid_out",
            &format!("PM_G{n}"),
            "2026-11-10T12:00:00.000Z",
        )
        .await;
        app.wait_invoice_status(&invoice, "PAID").await;
    }
    app.gocardless_payment(
        "EV_G3_CB",
        "charged_back",
        "PM_G3",
        "2026-11-12T12:00:00.000Z",
    )
    .await;
    app.wait_invoice_status("inv_g3", "OPEN").await;
    let (status, refund) = app
        .api_post(
            &format!("/payments/{}/refunds", payment_ids[1]),
            serde_json::json!({"providerRefundId": "RF_G2", "amount": 400}),
        )
        .await;
    assert_eq!(status, 201, "{refund}");

    // 1500 - 37.5 + 2500 - 45.5 + 1000 - 1000 - 400 = 3517: the fees come to 83.0 together, where
    // rounding each first would make 38 + 46 = 84 and the sum one penny short.
    for item in [
        payout_item("payment_paid_out", "1500.0", "PM_G1", None),
        payout_item("gocardless_fee", "-37.5", "PM_G1", None),
        payout_item("payment_paid_out", "2500.0", "PM_G2", None),
        payout_item("gocardless_fee", "-45.5", "PM_G2", None),
        payout_item("payment_paid_out", "1000.0", "PM_G3", None),
        payout_item("payment_charged_back", "-1000.0", "PM_G3", None),
        payout_item("refund", "-400.0", "PM_G2", Some("RF_G2")),
    ] {
        api.add_payout_item("PO_GC1", item);
    }
    api.add_gocardless_payout(gocardless_payout("PO_GC1", 3517, 83));
    app.deliver_gocardless([gocardless_payout_paid("EV_PO_GC1", "PO_GC1")])
        .await;
    let payout = wait_payout(&app, "PO_GC1", "RECONCILED").await;
    assert_eq!(payout["amount"], 3517);
    assert_eq!(payout["currency"], "GBP");
    assert_eq!(payout["arrivalDate"], "2026-11-20");
    assert_eq!(payout["linesNet"], 3517);
    assert_eq!(payout["linesFees"], 83);
    assert_eq!(payout["linesGross"], 3600);
    assert_eq!(payout["difference"], 0);
    let lines = payout["lines"].as_array().unwrap();
    let invoices: Vec<&str> = lines
        .iter()
        .map(|l| l["invoiceId"].as_str().unwrap())
        .collect();
    assert_eq!(
        invoices,
        [
            "inv_g1", "inv_g1", "inv_g2", "inv_g2", "inv_g3", "inv_g3", "inv_g2"
        ]
    );
    assert_eq!(lines[1]["fee"], 37.5);
    assert_eq!(lines[1]["net"], -37.5);
    assert_eq!(lines[6]["sourceId"], "RF_G2");
    assert_eq!(lines[6]["paymentId"], payment_ids[1].as_str());

    // A payout older than 6 months: GoCardless answers 410, and settle says so.
    api.expire_payout("PO_GC_OLD");
    app.deliver_gocardless([gocardless_payout_paid("EV_PO_GC_OLD", "PO_GC_OLD")])
        .await;
    let old = wait_payout(&app, "PO_GC_OLD", "UNLISTABLE").await;
    assert!(
        old["statusReason"].as_str().unwrap().contains("6 months"),
        "{old}"
    );
    assert_eq!(old["lines"], serde_json::json!([]));
    app.stop().await;
}
