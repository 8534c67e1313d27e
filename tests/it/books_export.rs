//! `settle books export` of a period the worker reconciled from provider events: Stripe payments,
//! a partial refund, a dispute lost and one won, fees, a Stripe payout and a GoCardless one
//! (fees in tenths of a penny). Each format checked as its reader checks it: hledger accepts the
//! ledger (and refuses it with a cent changed), QuickBooks' journals balance, Xero's files hold at
//! most 300 lines, the canonical CSV's rows sum to zero per entry.

use std::collections::HashMap;

use chrono::{Duration, NaiveDate, Utc};

use crate::books::hledger;
use crate::helpers::cli::settle_with;
use crate::helpers::provider_api::{GOCARDLESS_TOKEN, ProviderApi, STRIPE_KEY};
use crate::helpers::*;
use crate::payouts::{
    charges_refund_dispute_and_fee, list_payout, paid_by_stripe, refund_re_b,
    spawn_app_listing_every, spawn_listing_app, wait_payout,
};
use crate::payouts_gocardless::{gocardless_payout, gocardless_payout_paid, payout_item};

/// Stripe's `payout.reconciliation_completed` for payout `id` of `amount`, arriving on `arrival`.
fn stripe_payout_completed(id: &str, amount: i64, arrival: NaiveDate) -> Vec<u8> {
    let arrival = arrival.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp();
    StripeEvent::new("payout.reconciliation_completed", &format!("evt_{id}"))
        .object(|payout| {
            payout["id"] = id.into();
            payout["amount"] = amount.into();
            payout["currency"] = "gbp".into();
            payout["status"] = "paid".into();
            payout["arrival_date"] = arrival.into();
        })
        .to_bytes()
}

/// Stripe's dispute event for `dispute` on PaymentIntent `intent`.
async fn dispute(
    app: &TestApp,
    event: &str,
    kind: &str,
    dispute: &str,
    intent: &str,
    amount: i64,
    status: &str,
) {
    app.deliver_stripe(
        &StripeEvent::new(kind, event)
            .dispute(dispute, intent, amount, "gbp", status)
            .to_bytes(),
    )
    .await;
    app.wait_processed("STRIPE", event).await;
}

/// The worker's period: four Stripe invoices (one partly refunded, one dispute lost, one won)
/// and two GoCardless ones, paid out tomorrow by one payout of each provider.
pub(crate) async fn reconciled_period(app: &TestApp, api: &ProviderApi, tomorrow: NaiveDate) {
    app.create_customer("cust").await;
    for (invoice, intent, amount) in [
        ("inv_a", "pi_a", 1000),
        ("inv_b", "pi_b", 2000),
        ("inv_c", "pi_c", 3000),
        ("inv_d", "pi_d", 4000),
    ] {
        paid_by_stripe(app, invoice, intent, amount).await;
    }
    refund_re_b(app).await;
    dispute(
        app,
        "evt_dp_c1",
        "charge.dispute.created",
        "dp_c",
        "pi_c",
        3000,
        "needs_response",
    )
    .await;
    dispute(
        app,
        "evt_dp_c2",
        "charge.dispute.closed",
        "dp_c",
        "pi_c",
        3000,
        "lost",
    )
    .await;
    dispute(
        app,
        "evt_dp_d1",
        "charge.dispute.created",
        "dp_d",
        "pi_d",
        4000,
        "needs_response",
    )
    .await;
    dispute(
        app,
        "evt_dp_d2",
        "charge.dispute.closed",
        "dp_d",
        "pi_d",
        4000,
        "won",
    )
    .await;
    app.wait_invoice_status("inv_d", "PAID").await;

    let now = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    for (n, amount) in [(1, 1500), (2, 2500)] {
        let invoice = format!("inv_g{n}");
        app.create_invoice(&invoice, "cust", None, "GBP", amount)
            .await;
        app.register_payment(&invoice, "GOCARDLESS", &format!("PM_G{n}"), amount)
            .await;
        app.gocardless_payment(&format!("EV_G{n}"), "paid_out", &format!("PM_G{n}"), &now)
            .await;
        app.wait_invoice_status(&invoice, "PAID").await;
    }

    // 956 + 1922 + 2883 + 3850 - 500 - 4500 (the lost dispute and its 15.00 fee) - 200 = 4411.
    let listed = charges_refund_dispute_and_fee(
        "po_books",
        &[
            ("ch_a", "pi_a", 1000, 44),
            ("ch_b", "pi_b", 2000, 78),
            ("ch_c", "pi_c", 3000, 117),
            ("ch_d", "pi_d", 4000, 150),
        ],
        4411,
    );
    list_payout(api, "po_books", listed);
    app.deliver_stripe(&stripe_payout_completed("po_books", 4411, tomorrow))
        .await;
    wait_payout(app, "po_books", "RECONCILED").await;

    // 1500 - 37.5 + 2500 - 45.5 = 3917.
    for item in [
        payout_item("payment_paid_out", "1500.0", "PM_G1", None),
        payout_item("gocardless_fee", "-37.5", "PM_G1", None),
        payout_item("payment_paid_out", "2500.0", "PM_G2", None),
        payout_item("gocardless_fee", "-45.5", "PM_G2", None),
    ] {
        api.add_payout_item("PO_BOOKS", item);
    }
    let mut payout = gocardless_payout("PO_BOOKS", 3917, 83);
    payout["arrival_date"] = tomorrow.to_string().into();
    api.add_gocardless_payout(payout);
    app.deliver_gocardless([gocardless_payout_paid("EV_PO_BOOKS", "PO_BOOKS")])
        .await;
    wait_payout(app, "PO_BOOKS", "RECONCILED").await;
}

/// `settle books export` of the period: (exit code, standard output, standard error).
pub(crate) async fn export(
    app: &TestApp,
    from: NaiveDate,
    to: NaiveDate,
    format: &str,
    extra: &[(&str, &str)],
    out: Option<&std::path::Path>,
) -> (i32, String, String) {
    let (from, to) = (from.to_string(), to.to_string());
    let mut args = vec![
        "books", "export", "--from", &from, "--to", &to, "--format", format,
    ];
    let out = out.map(|path| path.display().to_string());
    if let Some(out) = &out {
        args.extend(["--out", out]);
    }
    settle_with(app, &args, extra).await
}

fn rows(text: &str) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            headers
                .iter()
                .zip(record.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// A decimal of the major unit as minor units (GBP): "12.34" → 1234.
fn pence(text: &str) -> i64 {
    if text.is_empty() {
        return 0;
    }
    let (sign, digits) = text.strip_prefix('-').map_or((1, text), |rest| (-1, rest));
    let (whole, fraction) = digits.split_once('.').unwrap();
    assert_eq!(fraction.len(), 2, "GBP's exponent is 2: {text}");
    sign * (whole.parse::<i64>().unwrap() * 100 + fraction.parse::<i64>().unwrap())
}

#[tokio::test]
async fn a_reconciled_period_exports_in_every_format_and_each_reader_accepts_it() {
    let api = ProviderApi::start().await;
    let app = spawn_listing_app(&api).await;
    let today = Utc::now().date_naive();
    let tomorrow = today + Duration::days(1);
    reconciled_period(&app, &api, tomorrow).await;
    // Stripe's payments happened when the fixture's objects say: the period starts there.
    let first: NaiveDate = sqlx::query_scalar("SELECT min(occurred_at)::date FROM money_movements")
        .fetch_one(&app.db())
        .await
        .unwrap();
    let (from, to) = (first, today + Duration::days(2));

    // The ledger: hledger checks every entry, each payout's account back to zero, and each
    // invoice's receivable against settle's own figures (amount_paid).
    let (code, journal, said) = export(&app, from, to, "ledger", &[], None).await;
    assert_eq!(code, 0, "{said}");
    assert!(
        journal.contains("= GBP -20.00"),
        "inv_b's paid figure is asserted:\n{journal}"
    );
    let (accepted, balances) = hledger(&journal);
    assert!(accepted, "{balances}\n{journal}");
    for (account, balance) in [
        ("assets:bank:stripe", "GBP 44.11"),
        ("assets:bank:gocardless", "GBP 39.17"),
        ("expenses:fees:stripe", "GBP 20.89"),
        ("expenses:fees:gocardless", "GBP 0.83"),
        ("revenue:refunds", "GBP 5.00"),
    ] {
        let row = balances
            .lines()
            .find(|row| row.trim_end().ends_with(account))
            .unwrap_or_else(|| panic!("no {account} in\n{balances}"));
        assert!(row.contains(balance), "{account}: {row}");
    }
    assert!(
        !balances.contains("assets:clearing") && !balances.contains("in-payout"),
        "everything collected was paid out, every payout's account is back to zero:\n{balances}"
    );
    assert!(
        said.contains("4 invoice balances asserted") || said.contains("invoice balances asserted"),
        "{said}"
    );
    let tampered = journal.replacen(
        "    assets:clearing:stripe  GBP 10.00\n    assets:receivable:inv_a  GBP -10.00",
        "    assets:clearing:stripe  GBP 10.01\n    assets:receivable:inv_a  GBP -10.01",
        1,
    );
    assert_ne!(
        tampered, journal,
        "inv_a's collection is in the journal:\n{journal}"
    );
    let (accepted, refused) = hledger(&tampered);
    assert!(
        !accepted && refused.contains("balance assertion"),
        "{refused}"
    );

    // A period that starts after the money moved opens with its balances: hledger still agrees.
    let (code, later, said) = export(&app, tomorrow, to, "ledger", &[], None).await;
    assert_eq!(code, 0, "{said}");
    assert!(later.contains("Opening balances"), "{later}");
    let (accepted, balances) = hledger(&later);
    assert!(accepted, "{balances}\n{later}");

    // The canonical CSV: Stripe's names, each entry's rows summing to zero, minor units and
    // decimals agreeing.
    let (code, text, said) = export(&app, from, to, "csv", &[], None).await;
    assert_eq!(code, 0, "{said}");
    let csv_rows = rows(&text);
    for column in [
        "created_utc",
        "currency",
        "gross",
        "fee",
        "net",
        "reporting_category",
        "source_id",
        "description",
        "customer_id",
        "invoice_id",
        "automatic_payout_id",
        "provider",
        "account",
        "payout_id",
        "amount_minor",
        "amount",
    ] {
        assert!(csv_rows[0].contains_key(column), "{column}");
    }
    let mut sums: HashMap<&str, i64> = HashMap::new();
    for row in &csv_rows {
        let minor: i64 = row["amount_minor"].parse().unwrap();
        assert_eq!(pence(&row["amount"]), minor, "{row:?}");
        assert_eq!(
            pence(&row["net"]),
            pence(&row["gross"]) - pence(&row["fee"]),
            "{row:?}"
        );
        *sums.entry(row["entry_id"].as_str()).or_default() += minor;
    }
    assert!(sums.values().all(|sum| *sum == 0), "{sums:?}");
    let fees: i64 = csv_rows
        .iter()
        .filter(|row| row["reporting_category"] == "fee")
        .map(|row| row["amount_minor"].parse::<i64>().unwrap())
        .sum();
    assert_eq!(
        fees,
        2089 + 83,
        "the fees are their own lines, never netted away"
    );
    assert!(
        csv_rows
            .iter()
            .any(|row| row["automatic_payout_id"] == "po_books"
                && row["invoice_id"] == "inv_b"
                && row["customer_id"] == "cust"),
        "{text}"
    );

    // QuickBooks: each journal number balances; A/R lines name the customer.
    let (code, text, said) = export(&app, from, to, "qbo-journal", &[], None).await;
    assert_eq!(code, 0, "{said}");
    assert!(
        text.starts_with("Journal No.,Journal Date,Account Name,Description,Debits,Credits,Name\n")
    );
    let mut journals: HashMap<String, i64> = HashMap::new();
    for row in rows(&text) {
        let date = &row["Journal Date"];
        assert!(
            NaiveDate::parse_from_str(date, "%m/%d/%Y").is_ok(),
            "{date}"
        );
        assert!(
            row["Debits"].is_empty() != row["Credits"].is_empty(),
            "{row:?}"
        );
        if row["Account Name"] == "Accounts Receivable (A/R)" {
            assert_eq!(row["Name"], "cust Ltd", "{row:?}");
        }
        *journals.entry(row["Journal No."].clone()).or_default() +=
            pence(&row["Debits"]) - pence(&row["Credits"]);
    }
    assert!(journals.len() >= 12, "{journals:?}");
    assert!(journals.values().all(|sum| *sum == 0), "{journals:?}");

    // Bad input is named: an account that does not exist, a period that ends before it starts.
    let args = [
        "books",
        "export",
        "--from",
        "2026-12-02",
        "--to",
        "2026-12-01",
        "--format",
        "csv",
    ];
    let (code, _, said) = settle_with(&app, &args, &[]).await;
    assert_ne!(code, 0);
    assert!(
        said.contains("the period ends (2026-12-01) before it starts (2026-12-02)"),
        "{said}"
    );
    let args = [
        "books",
        "export",
        "--from",
        "2026-12-01",
        "--to",
        "2026-12-03",
        "--format",
        "csv",
        "--account",
        "acc_nobody",
    ];
    let (code, _, said) = settle_with(&app, &args, &[]).await;
    assert_ne!(code, 0);
    assert!(said.contains("no account `acc_nobody`"), "{said}");

    // Xero: every account needs a code; with them, files of at most 300 lines.
    let (code, _, said) = export(&app, from, to, "xero-journal", &[], None).await;
    assert_ne!(code, 0);
    assert!(
        said.contains("Xero needs an account code for `stripe_clearing`"),
        "{said}"
    );
    let codes = [
        ("SETTLE__BOOKS__ACCOUNTS__RECEIVABLE__CODE", "610"),
        ("SETTLE__BOOKS__ACCOUNTS__CLEARING__CODE", "1210"),
        ("SETTLE__BOOKS__ACCOUNTS__IN_PAYOUT__CODE", "1220"),
        ("SETTLE__BOOKS__ACCOUNTS__BANK__CODE", "090"),
        ("SETTLE__BOOKS__ACCOUNTS__FEES__CODE", "404"),
        ("SETTLE__BOOKS__ACCOUNTS__REFUNDS__CODE", "260"),
        ("SETTLE__BOOKS__ACCOUNTS__UNEXPLAINED__CODE", "999"),
        ("SETTLE__BOOKS__ACCOUNTS__RESERVE__CODE", "1230"),
        ("SETTLE__BOOKS__ACCOUNTS__OPENING_BALANCES__CODE", "3000"),
        ("SETTLE__BOOKS__ACCOUNTS__GOCARDLESS_BANK__CODE", "091"),
    ];
    let dir = std::env::temp_dir().join(format!("settle-xero-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (code, _, said) = export(
        &app,
        from,
        to,
        "xero-journal",
        &codes,
        Some(&dir.join("books.csv")),
    )
    .await;
    assert_eq!(code, 0, "{said}");
    let text = std::fs::read_to_string(dir.join("books.csv")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(text.lines().count() <= 300);
    assert!(text.starts_with("Narration,Date,Description,AccountCode,TaxRate,Amount\n"));
    let xero = rows(&text);
    let mut by_narration: HashMap<String, i64> = HashMap::new();
    for row in &xero {
        assert!(
            NaiveDate::parse_from_str(&row["Date"], "%d/%m/%Y").is_ok(),
            "{row:?}"
        );
        assert_eq!(row["TaxRate"], "Tax Exempt");
        *by_narration.entry(row["Narration"].clone()).or_default() += pence(&row["Amount"]);
    }
    assert!(
        by_narration.values().all(|sum| *sum == 0),
        "{by_narration:?}"
    );
    assert!(
        xero.iter()
            .any(|row| row["AccountCode"] == "091" && row["Amount"] == "39.17"),
        "the provider's own code wins: {text}"
    );
    app.stop().await;
}

/// `settle books drift --output json` against the stand-in: (exit code, what it found).
pub(crate) async fn drift_now(app: &TestApp, api: &ProviderApi) -> (i32, serde_json::Value) {
    let base = api.url();
    let keys = [
        ("STRIPE_API_KEY", STRIPE_KEY),
        ("STRIPE_API_BASE", base.as_str()),
        ("GOCARDLESS_ACCESS_TOKEN", GOCARDLESS_TOKEN),
        ("GOCARDLESS_API_BASE", base.as_str()),
    ];
    let (code, said, err) = settle_with(app, &["books", "drift", "--output", "json"], &keys).await;
    let found = serde_json::from_str(&said).unwrap_or_else(|e| panic!("{e}: {said}{err}"));
    (code, found)
}

/// The `settle_provider_balance_drift` series of `provider` in GBP, as `/metrics` shows it.
async fn drift_metric(app: &TestApp, provider: &str) -> Option<f64> {
    let text = app.metrics_text().await;
    text.lines()
        .filter(|line| line.starts_with("settle_provider_balance_drift{"))
        .find(|line| {
            line.contains(&format!("provider=\"{provider}\"")) && line.contains("currency=\"GBP\"")
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn drift_is_zero_when_the_providers_hold_what_the_books_expect_and_names_money_that_moved_without_an_event()
 {
    let api = ProviderApi::start().await;
    let app =
        spawn_app_listing_every(&api, 1, |settings| settings.books.drift_interval_secs = 1).await;
    let today = Utc::now().date_naive();
    reconciled_period(&app, &api, today + Duration::days(1)).await;
    // Everything collected was paid out: each provider holds nothing, as the books expect.
    api.set_stripe_balance(None, "gbp", 0, 0);
    api.set_gocardless_balance("confirmed_funds", "GBP", 0);
    let (code, found) = drift_now(&app, &api).await;
    assert_eq!(code, 0, "{found}");
    let drifts: Vec<i64> = found["balances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["drift"].as_i64().unwrap())
        .collect();
    assert_eq!(drifts, [0, 0], "{found}");

    // Money reaches Stripe's balance without an event settle saw (7.50, pending), and a
    // GoCardless payment settle collected is not in GoCardless's confirmed funds.
    api.set_stripe_balance(None, "gbp", 0, 750);
    app.create_invoice("inv_g3", "cust", None, "GBP", 1200)
        .await;
    app.register_payment("inv_g3", "GOCARDLESS", "PM_G3", 1200)
        .await;
    let now = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    app.gocardless_payment("EV_G3", "paid_out", "PM_G3", &now)
        .await;
    app.wait_invoice_status("inv_g3", "PAID").await;
    let (code, found) = drift_now(&app, &api).await;
    assert_eq!(code, 5, "{found}");
    let figures: Vec<(String, i64, i64, i64)> = found["balances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["provider"].as_str().unwrap().to_owned(),
                row["held"].as_i64().unwrap(),
                row["expected"].as_i64().unwrap(),
                row["drift"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        figures,
        [
            ("stripe".to_owned(), 750, 0, 750),
            ("gocardless".to_owned(), 0, 1200, -1200),
        ]
    );
    // The worker's own check exports the same.
    poll_until("the worker's drift check", WAIT, || async {
        let stripe = drift_metric(&app, "stripe").await;
        let gocardless = drift_metric(&app, "gocardless").await;
        (stripe == Some(750.0) && gocardless == Some(-1200.0)).then_some(())
    })
    .await;
    // GoCardless confirms the payment (less its fee): the drift is the fee the books learn at
    // the payout.
    api.set_gocardless_balance("confirmed_funds", "GBP", 1170);
    poll_until("the gocardless drift to be its fee", WAIT, || async {
        drift_metric(&app, "gocardless")
            .await
            .filter(|drift| *drift == -30.0)
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn the_audit_rebuilds_the_period_from_its_events_and_names_a_difference_made_on_purpose() {
    let api = ProviderApi::start().await;
    let app = spawn_listing_app(&api).await;
    reconciled_period(&app, &api, Utc::now().date_naive() + Duration::days(1)).await;
    let audit = ["audit", "--since", "1h", "--output", "json"];
    let (code, said, err) = settle_with(&app, &audit, &[]).await;
    assert_eq!(code, 0, "{said}{err}");
    let report: serde_json::Value = serde_json::from_str(&said).unwrap();
    assert_eq!(report["invoices"], 6, "{report}");
    assert_eq!(report["differences"], serde_json::json!([]), "{report}");
    assert_eq!(report["notApplied"], serde_json::json!([]), "{report}");
    let live_tables_untouched: i64 = sqlx::query_scalar("SELECT count(*) FROM money_movements")
        .fetch_one(&app.db())
        .await
        .unwrap();
    assert_eq!(live_tables_untouched, 10, "the replay wrote nothing live");

    // A hand edit: a penny more paid on inv_a, and inv_d's reinstatement gone.
    let db = app.db();
    sqlx::query("UPDATE invoices SET amount_paid = amount_paid + 1 WHERE id = 'inv_a'")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("DELETE FROM money_movements WHERE kind = 'DISPUTE_REINSTATED'")
        .execute(&db)
        .await
        .unwrap();
    let (code, said, err) = settle_with(&app, &audit, &[]).await;
    assert_eq!(code, 5, "{said}{err}");
    let report: serde_json::Value = serde_json::from_str(&said).unwrap();
    let differences: Vec<&str> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(differences.len(), 3, "{differences:#?}");
    assert!(
        differences
            .iter()
            .any(|d| d.starts_with("live:    invoice")
                && d.contains("/inv_a: status PAID, paid 1001")),
        "{differences:#?}"
    );
    assert!(
        differences
            .iter()
            .any(|d| d.starts_with("rebuilt: invoice")
                && d.contains("/inv_a: status PAID, paid 1000")),
        "{differences:#?}"
    );
    assert!(
        differences
            .iter()
            .any(|d| d.starts_with("rebuilt: ledger") && d.contains("DISPUTE_REINSTATED dp_d")),
        "{differences:#?}"
    );
    let schemas: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'settle_audit_%'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(schemas, 0, "the scratch schemas are dropped");
    app.stop().await;
}
