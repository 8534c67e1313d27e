//! A stand-in for Stripe's and GoCardless's APIs on a fixed address, serving what a JSON file
//! holds: the README's payout walk-through ("From payment to bank") runs settle against it, as
//! the integration tests do (it is their stand-in, `tests/it/helpers/provider_api.rs`).
//!
//! ```sh
//! cargo run --example provider_standin -- 127.0.0.1:56790 examples/payout_walkthrough.json
//! ```
//!
//! The file: `{"balance_transactions": [{"payout": "po_…", "account": null, "transaction": {…}}],
//! "stripe_payouts": [{…}], "payout_items": [{"payout": "PO…", "item": {…}}],
//! "gocardless_payouts": [{…}]}`, every key optional. Keys: `sk_test_standin`,
//! `gc_access_standin`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/it/helpers/provider_api.rs"]
mod provider_api;

use serde_json::Value;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(file)) = (args.next(), args.next()) else {
        eprintln!("usage: provider_standin <address> <file.json>");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(&file).unwrap_or_else(|error| {
        eprintln!("{file}: {error}");
        std::process::exit(2);
    });
    let held: Value = serde_json::from_str(&text).unwrap_or_else(|error| {
        eprintln!("{file}: not JSON: {error}");
        std::process::exit(2);
    });
    let api = provider_api::ProviderApi::start_on(&addr).await;
    let each = |key: &str| held[key].as_array().cloned().unwrap_or_default();
    for line in each("balance_transactions") {
        let payout = line["payout"]
            .as_str()
            .expect("each balance transaction's `payout`");
        api.add_balance_transaction(
            line["account"].as_str(),
            payout,
            line["transaction"].clone(),
        );
    }
    for payout in each("stripe_payouts") {
        let account = payout["account"].as_str().map(str::to_owned);
        api.set_stripe_payout(account.as_deref(), payout);
    }
    for item in each("payout_items") {
        let payout = item["payout"]
            .as_str()
            .expect("each payout item's `payout`");
        api.add_payout_item(payout, item["item"].clone());
    }
    for payout in each("gocardless_payouts") {
        api.add_gocardless_payout(payout);
    }
    println!("provider stand-in on {}", api.url());
    tokio::signal::ctrl_c().await.ok();
}
