//! Payouts learn late (issue 29, deliverable 4): a payout listed while one of its lines' payments
//! was not registered yet is matched again, from its stored lines and without asking Stripe again,
//! once the payment is; its new outcome is announced as a new version.

use crate::helpers::provider_api::ProviderApi;
use crate::payouts::{
    charge, fixture_object, paid_by_stripe, reconciliation_completed, spawn_listing_app,
    stripe_transaction, wait_payout,
};

#[tokio::test]
async fn a_partly_matched_payout_is_matched_again_when_its_payment_is_registered_and_announced_anew()
 {
    let api = ProviderApi::start().await;
    let app = spawn_listing_app(&api).await;
    let subscriber = app.subscribe().await;
    app.create_customer("cust").await;
    paid_by_stripe(&app, "inv_known", "pi_known", 1000).await;

    // A charge settle knows and one it does not know yet: 956 + 1922 = 2878.
    let mut own = fixture_object("payout");
    own["id"] = "po_late".into();
    let listed = [
        stripe_transaction("charge", charge("ch_known", "pi_known"), 1000, 44),
        stripe_transaction("charge", charge("ch_late", "pi_late"), 2000, 78),
        stripe_transaction("payout", own, -2878, 0),
    ];
    for (n, mut transaction) in listed.into_iter().enumerate() {
        transaction["id"] = format!("txn_late{n}").into();
        api.add_balance_transaction(None, "po_late", transaction);
    }
    app.deliver_stripe(&reconciliation_completed("evt_po_late", "po_late", 2878))
        .await;
    let partly = wait_payout(&app, "po_late", "PARTIALLY_MATCHED").await;
    assert_eq!(partly["unmatchedLines"], 1, "{partly}");
    let listings = || {
        api.requests()
            .iter()
            .filter(|r| r.contains("balance_transactions"))
            .count()
    };
    let listed_before = listings();

    // The payment the unmatched line is of, registered and paid after the listing.
    paid_by_stripe(&app, "inv_late", "pi_late", 2000).await;
    let reconciled = wait_payout(&app, "po_late", "RECONCILED").await;
    assert_eq!(reconciled["unmatchedLines"], 0, "{reconciled}");
    assert_eq!(reconciled["difference"], 0, "{reconciled}");
    assert_eq!(
        listings(),
        listed_before,
        "matched again without asking Stripe"
    );

    // Both outcomes announced, the second as version 2 (beside each invoice's two events).
    let account = &app.settings.account.id;
    let messages = app.take_messages(&subscriber, 6).await;
    let mut announced: Vec<String> = messages
        .iter()
        .filter(|m| m.routing_key.starts_with("payout."))
        .filter_map(|m| m.message_id.clone())
        .collect();
    announced.sort();
    assert_eq!(
        announced,
        [
            format!("stripe:{account}/po_late/v2:payout.reconciled"),
            format!("stripe:{account}/po_late:payout.partially_matched"),
        ]
    );
    app.stop().await;
}
