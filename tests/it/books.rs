//! The books' proof, checked by an outside tool: a period's entries (payments, a partial refund,
//! a dispute lost and one won, a Stripe payout with fees and a line nothing explains, a
//! GoCardless payout whose fees come to tenths of a penny) written as a plain-text journal, which
//! Debian's `hledger` accepts; the same journal with one cent changed, it refuses.

use chrono::NaiveDate;
use settle::provider::Provider;
use settle::reconcile::book_exports::{Assertion, journal};
use settle::reconcile::books::{
    Account, BookLine, BookMovement, BookPayout, Entry, movement_entry, payout_entry,
};
use settle::reconcile::ledger::{MovementKind, Sums};
use settle::reconcile::money::Currency;
use settle::reconcile::payout::{Explained, Role};

fn gbp() -> Currency {
    Currency::parse("GBP").unwrap()
}

fn day(n: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, n).unwrap()
}

fn movement(
    id: i64,
    provider: Provider,
    invoice: &str,
    object: &str,
    kind: MovementKind,
    amount: i64,
) -> BookMovement {
    BookMovement {
        id,
        invoice_id: invoice.into(),
        provider,
        provider_object_id: object.into(),
        kind,
        amount,
        currency: gbp(),
        date: day(1 + id as u32),
    }
}

fn line(
    role: Role,
    explained: Explained,
    invoice: Option<&str>,
    source: &str,
    gross: &str,
    fee: &str,
) -> BookLine {
    BookLine {
        role,
        explained,
        invoice_id: invoice.map(str::to_owned),
        source_id: Some(source.into()),
        gross: gross.parse().unwrap(),
        fee: fee.parse().unwrap(),
    }
}

/// The period's movements, and its two payouts' entries.
fn period() -> (Vec<BookMovement>, Vec<Entry>) {
    use MovementKind::*;
    use Provider::{GoCardless, Stripe};
    let movements = vec![
        movement(1, Stripe, "inv_a", "pi_a", Collected, 10_000),
        movement(2, Stripe, "inv_a", "re_a", Refunded, 2_500),
        movement(3, Stripe, "inv_b", "pi_b", Collected, 5_000),
        movement(4, Stripe, "inv_b", "dp_b", DisputeWithdrawn, 5_000),
        movement(5, Stripe, "inv_c", "pi_c", Collected, 3_000),
        movement(6, Stripe, "inv_c", "dp_c", DisputeWithdrawn, 3_000),
        movement(7, Stripe, "inv_c", "dp_c", DisputeReinstated, 3_000),
        movement(8, GoCardless, "inv_d", "PM0001", Collected, 5_000),
        movement(9, GoCardless, "inv_e", "PM0002", Collected, 5_000),
    ];
    let stripe = BookPayout {
        provider: Stripe,
        payout_id: "po_1".into(),
        date: day(20),
        currency: gbp(),
        // 10000 - 320 - 2500 + 5000 - 175 - 5000 - 1500 (the lost dispute and its fee) + 3000
        // - 117 + 1500 - 74 - 200
        amount: 9_614,
        lines: vec![
            line(
                Role::Money,
                Explained::Matched,
                Some("inv_a"),
                "ch_a",
                "10000",
                "320",
            ),
            line(
                Role::Money,
                Explained::Matched,
                Some("inv_a"),
                "re_a",
                "-2500",
                "0",
            ),
            line(
                Role::Money,
                Explained::Matched,
                Some("inv_c"),
                "ch_c",
                "3000",
                "117",
            ),
            line(
                Role::Money,
                Explained::Unmatched,
                None,
                "ch_stray",
                "1500",
                "74",
            ),
            line(Role::Fee, Explained::Provider, None, "txn_fee", "-200", "0"),
            line(
                Role::Money,
                Explained::Matched,
                Some("inv_b"),
                "ch_b",
                "5000",
                "175",
            ),
            line(
                Role::Money,
                Explained::Matched,
                Some("inv_b"),
                "dp_b",
                "-5000",
                "1500",
            ),
            line(
                Role::Payout,
                Explained::Provider,
                None,
                "po_1",
                "-9614",
                "0",
            ),
        ],
    };
    let gocardless = BookPayout {
        provider: GoCardless,
        payout_id: "PO0001".into(),
        date: day(21),
        currency: gbp(),
        amount: 9_963,
        lines: vec![
            line(
                Role::Money,
                Explained::Matched,
                Some("inv_d"),
                "PM0001",
                "5000",
                "18.8",
            ),
            line(
                Role::Money,
                Explained::Matched,
                Some("inv_e"),
                "PM0002",
                "5000",
                "18.7",
            ),
        ],
    };
    let mut entries: Vec<Entry> = movements.iter().map(movement_entry).collect();
    for payout in [&stripe, &gocardless] {
        entries.push(payout_entry(payout).unwrap());
    }
    (movements, entries)
}

/// Each invoice's receivable is minus what settle says it was paid.
fn invoice_assertions(movements: &[BookMovement]) -> Vec<Assertion> {
    let mut invoices: Vec<&str> = movements.iter().map(|m| m.invoice_id.as_str()).collect();
    invoices.sort_unstable();
    invoices.dedup();
    invoices
        .into_iter()
        .map(|invoice| {
            let sums = Sums::of(
                movements
                    .iter()
                    .filter(|m| m.invoice_id == invoice)
                    .map(|m| (m.kind, m.amount)),
            );
            Assertion {
                account: Account::Receivable(invoice.into()),
                currency: gbp(),
                amount: -sums.paid(),
            }
        })
        .collect()
}

/// `hledger -f <journal> balance`: its exit status and what it printed.
pub(crate) fn hledger(journal: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("settle-books-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("period.journal");
    std::fs::write(&file, journal).unwrap();
    let output = std::process::Command::new("hledger")
        .arg("-f")
        .arg(&file)
        .arg("balance")
        .output()
        .expect("hledger (scripts/services.sh start installs it)");
    std::fs::remove_dir_all(&dir).unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), said)
}

#[test]
fn hledger_accepts_a_period_s_journal_and_refuses_it_with_one_cent_changed() {
    let (movements, entries) = period();
    assert!(entries.iter().all(Entry::is_balanced));
    let text = journal(&entries, &invoice_assertions(&movements), day(31));
    let (accepted, said) = hledger(&text);
    assert!(accepted, "{said}\n{text}");
    // What the period leaves: each payout's own account at zero, the fees, the banks.
    for (account, balance) in [
        ("assets:bank:stripe", "GBP 96.14"),
        ("assets:bank:gocardless", "GBP 99.63"),
        ("expenses:fees:stripe", "GBP 23.86"),
        ("expenses:fees:gocardless", "GBP 0.37"),
        ("equity:unexplained:stripe", "GBP -15.00"),
    ] {
        let row = said
            .lines()
            .find(|row| row.trim_end().ends_with(account))
            .unwrap_or_else(|| panic!("no {account} in\n{said}"));
        assert!(row.contains(balance), "{account}: {row}");
    }
    assert!(
        !said.contains("in-payout"),
        "every payout's account back to zero:\n{said}"
    );

    // One cent more collected for inv_a, on both sides: the entry still balances, inv_a's
    // receivable no longer matches settle's figures.
    let tampered = text.replacen(
        "    assets:clearing:stripe  GBP 100.00\n    assets:receivable:inv_a  GBP -100.00",
        "    assets:clearing:stripe  GBP 100.01\n    assets:receivable:inv_a  GBP -100.01",
        1,
    );
    assert_ne!(
        tampered, text,
        "the journal has inv_a's collection as expected"
    );
    let (accepted, said) = hledger(&tampered);
    assert!(!accepted, "a changed cent must fail:\n{said}");
    assert!(said.contains("balance assertion"), "{said}");
    // One cent on one side only: the entry no longer balances.
    let unbalanced = text.replacen("GBP 96.14", "GBP 96.15", 1);
    let (accepted, said) = hledger(&unbalanced);
    assert!(!accepted, "an unbalanced entry must fail:\n{said}");
}
