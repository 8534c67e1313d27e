//! The books: settle's ledger and payouts as double-entry journal entries, the one model every
//! export format writes (issue 33). Pure: entries from movements and payouts, each balanced.
//!
//! The accounts, as settle names them (a mapping to a finance team's codes comes on top):
//!
//! | account | holds |
//! |---|---|
//! | `Receivable(invoice)` | what the invoice's customer owes; credited as it pays |
//! | `Clearing(provider)` | money the provider holds for the business: collected, not paid out |
//! | `InPayout(provider, payout)` | one payout's money on its way to the bank: zero once it lands |
//! | `Bank(provider)` | the deposits of the provider's payouts |
//! | `Fees(provider)` | the provider's fees, never netted away |
//! | `Refunds` | money given back to customers |
//! | `Unexplained(provider)` | payout lines nothing settle knows explains, and differences |
//!
//! A movement of the ledger moves money between an invoice's receivable and the provider's
//! clearing account (a refund: between refunds and clearing). A payout moves its lines' money
//! from clearing into the payout, its fees out to fees, and its deposit to the bank: what is left
//! in the payout's own account is zero when the lines explain the deposit, and the difference
//! otherwise, which goes to `Unexplained` so every entry balances and nothing is hidden.
//!
//! Amounts are integer minor units of the entry's currency, debits positive, credits negative.
//! A payout line's decimals (GoCardless's come to a tenth of a minor unit) are summed before
//! they are rounded, as the payout's own figures are.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::ledger::MovementKind;
use super::money::Currency;
use super::payout::{Explained, Role};
use crate::provider::Provider;

/// An account of settle's books.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Account {
    Receivable(String),
    Clearing(Provider),
    InPayout(Provider, String),
    Bank(Provider),
    Fees(Provider),
    Refunds,
    Unexplained(Provider),
}

/// One side of an entry: debit when positive, credit when negative, with what it is for (the
/// invoice and the provider's object, for a payout's lines; empty when the entry says it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub account: Account,
    pub amount: i64,
    pub memo: String,
}

/// A journal entry: postings that sum to zero, in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stable across exports: `movement:<ledger id>`, `payout:<provider>:<payout id>`.
    pub id: String,
    pub date: NaiveDate,
    pub description: String,
    pub currency: Currency,
    pub postings: Vec<Posting>,
}

impl Entry {
    pub fn is_balanced(&self) -> bool {
        self.postings
            .iter()
            .try_fold(0_i64, |sum, posting| sum.checked_add(posting.amount))
            == Some(0)
    }
}

/// A movement of the ledger, as the books read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookMovement {
    pub id: i64,
    pub invoice_id: String,
    pub provider: Provider,
    pub provider_object_id: String,
    pub kind: MovementKind,
    pub amount: i64,
    pub currency: Currency,
    pub date: NaiveDate,
}

/// The entry of one movement: money between the invoice's receivable (or refunds) and the
/// provider's clearing account.
pub fn movement_entry(movement: &BookMovement) -> Entry {
    let receivable = Account::Receivable(movement.invoice_id.clone());
    let clearing = Account::Clearing(movement.provider);
    // (debited, credited)
    let (debit, credit) = match movement.kind {
        MovementKind::Collected | MovementKind::DisputeReinstated => (clearing, receivable),
        MovementKind::CollectionReversed | MovementKind::DisputeWithdrawn => (receivable, clearing),
        MovementKind::Refunded => (Account::Refunds, clearing),
        MovementKind::RefundReversed => (clearing, Account::Refunds),
    };
    Entry {
        id: format!("movement:{}", movement.id),
        date: movement.date,
        description: format!(
            "{} {} of invoice {}",
            movement.kind.as_str(),
            movement.provider_object_id,
            movement.invoice_id
        ),
        currency: movement.currency,
        postings: moved(debit, credit, movement.amount, "").into(),
    }
}

/// A payout line, as the books read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookLine {
    pub role: Role,
    pub explained: Explained,
    pub invoice_id: Option<String>,
    pub source_id: Option<String>,
    pub gross: Decimal,
    pub fee: Decimal,
}

/// A paid payout with its lines, as the books read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookPayout {
    pub provider: Provider,
    pub payout_id: String,
    pub date: NaiveDate,
    pub currency: Currency,
    /// The deposit, in minor units.
    pub amount: i64,
    pub lines: Vec<BookLine>,
}

/// Why a payout cannot be written as an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("payout {0}: its lines come to more than an amount can be")]
    Overflow(String),
}

/// The entry of one payout: each money line from clearing (or, when nothing settle knows
/// explains it, from `Unexplained`) into the payout's own account, the fees out of it, the
/// deposit to the bank, and what is left (the difference) to `Unexplained`, so the payout's own
/// account ends at zero.
pub fn payout_entry(payout: &BookPayout) -> Result<Entry, BookError> {
    let overflow = || BookError::Overflow(payout.payout_id.clone());
    let in_payout = Account::InPayout(payout.provider, payout.payout_id.clone());
    let mut postings = Vec::new();
    // What the lines leave for the bank, summed exactly, rounded once: the payout's own
    // `lines_net`, so what this leaves unexplained is the payout's `difference`.
    let mut net = Decimal::ZERO;
    let mut into_payout = 0_i64;
    for line in &payout.lines {
        if line.role == Role::Payout {
            // The payout's own line is the deposit, posted below.
            continue;
        }
        net = line
            .gross
            .checked_sub(line.fee)
            .and_then(|line_net| net.checked_add(line_net))
            .ok_or_else(overflow)?;
        if line.role == Role::Fee && line.explained == Explained::Provider {
            // A fee of the account, with no object: all of it is fee (through `net`).
            continue;
        }
        let gross = minor_units(line.gross).ok_or_else(overflow)?;
        if gross == 0 {
            continue;
        }
        let from = match (line.explained, line.role) {
            (Explained::Matched, Role::Money | Role::Fee) => Account::Clearing(payout.provider),
            _ => Account::Unexplained(payout.provider),
        };
        into_payout = into_payout.checked_add(gross).ok_or_else(overflow)?;
        let memo = match (&line.invoice_id, &line.source_id) {
            (Some(invoice), Some(source)) => format!("invoice {invoice} ({source})"),
            (Some(invoice), None) => format!("invoice {invoice}"),
            (None, Some(source)) => format!("{source}: nothing settle knows explains it"),
            (None, None) => "a line nothing settle knows explains".to_owned(),
        };
        postings.push(Posting {
            account: from,
            amount: -gross,
            memo,
        });
    }
    let net = minor_units(net).ok_or_else(overflow)?;
    // The fees are what the lines' money less what they leave: a tenth of a minor unit is
    // rounded once, in the net, never twice.
    let fees = into_payout.checked_sub(net).ok_or_else(overflow)?;
    let left = net.checked_sub(payout.amount).ok_or_else(overflow)?;
    postings.push(Posting {
        account: in_payout.clone(),
        amount: into_payout,
        memo: "the lines' money".to_owned(),
    });
    if fees != 0 {
        postings.extend(moved(
            Account::Fees(payout.provider),
            in_payout.clone(),
            fees,
            "the provider's fees",
        ));
    }
    postings.extend(moved(
        Account::Bank(payout.provider),
        in_payout.clone(),
        payout.amount,
        "the deposit",
    ));
    if left != 0 {
        // The lines do not explain the deposit: the difference, named, not absorbed.
        postings.extend(moved(
            Account::Unexplained(payout.provider),
            in_payout,
            left,
            "the difference the lines leave",
        ));
    }
    Ok(Entry {
        id: format!(
            "payout:{}:{}",
            payout.provider.wire_name(),
            payout.payout_id
        ),
        date: payout.date,
        description: format!(
            "{} payout {}",
            payout.provider.display_name(),
            payout.payout_id
        ),
        currency: payout.currency,
        postings,
    })
}

/// `amount` moved into `to` out of `from`: a debit of `to`, a credit of `from`.
fn moved(to: Account, from: Account, amount: i64, memo: &str) -> [Posting; 2] {
    [
        Posting {
            account: to,
            amount,
            memo: memo.to_owned(),
        },
        Posting {
            account: from,
            amount: -amount,
            memo: memo.to_owned(),
        },
    ]
}

/// A decimal of minor units as whole minor units, half away from zero.
fn minor_units(value: Decimal) -> Option<i64> {
    value
        .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
}

/// Each account's balance after `entries`, per currency: what an outside tool should find.
pub fn balances(entries: &[Entry]) -> std::collections::HashMap<(Account, &'static str), i64> {
    let mut balances = std::collections::HashMap::new();
    for entry in entries {
        for posting in &entry.postings {
            let balance = balances
                .entry((posting.account.clone(), entry.currency.as_str()))
                .or_insert(0_i64);
            *balance = balance.saturating_add(posting.amount);
        }
    }
    balances
}

/// A balance an outside tool must find: `account` holds `amount` of `currency` once every entry
/// before it has posted (an invoice's receivable is minus what settle says it was paid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub account: Account,
    pub currency: Currency,
    pub amount: i64,
}

impl Account {
    /// The account's name in a plain-text journal (hledger, ledger): `assets:clearing:stripe`.
    /// Ids are anyone's text, so every character but letters, digits, `_`, `.` and `-` is
    /// percent-encoded: no id can end a name (two spaces), start a comment (`;`) or make a sub
    /// account (`:`).
    pub fn journal_name(&self) -> String {
        let id = |text: &str| -> String {
            text.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                        c.to_string()
                    } else {
                        let mut buffer = [0_u8; 4];
                        c.encode_utf8(&mut buffer)
                            .bytes()
                            .map(|byte| format!("%{byte:02X}"))
                            .collect()
                    }
                })
                .collect()
        };
        match self {
            Self::Receivable(invoice) => format!("assets:receivable:{}", id(invoice)),
            Self::Clearing(provider) => format!("assets:clearing:{}", provider.wire_name()),
            Self::InPayout(provider, payout) => {
                format!("assets:in-payout:{}:{}", provider.wire_name(), id(payout))
            }
            Self::Bank(provider) => format!("assets:bank:{}", provider.wire_name()),
            Self::Fees(provider) => format!("expenses:fees:{}", provider.wire_name()),
            Self::Refunds => "revenue:refunds".to_owned(),
            Self::Unexplained(provider) => {
                format!("equity:unexplained:{}", provider.wire_name())
            }
        }
    }
}

/// An amount as a plain-text journal writes it: `GBP -12.34`, with the currency's exponent.
fn journal_amount(amount: i64, currency: Currency) -> String {
    let exponent = currency.exponent();
    let sign = if amount < 0 { "-" } else { "" };
    let magnitude = amount.unsigned_abs();
    if exponent == 0 {
        return format!("{currency} {sign}{magnitude}", currency = currency.as_str());
    }
    let divisor = 10_u64.pow(exponent);
    format!(
        "{currency} {sign}{}.{:0width$}",
        magnitude / divisor,
        magnitude % divisor,
        currency = currency.as_str(),
        width = exponent as usize
    )
}

/// Text for a journal's description or comment: one line, no comment marker.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() || c == ';' { ' ' } else { c })
        .collect()
}

/// The entries as a plain-text accounting journal (hledger's format, which ledger reads too),
/// in date order, each payout's own account asserted back to zero after its entry, and the
/// `assertions` checked in a last entry of the period's end. An outside tool that accepts the
/// file has checked that every entry balances and every asserted balance holds.
pub fn journal(entries: &[Entry], assertions: &[Assertion], end: NaiveDate) -> String {
    use std::fmt::Write;
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| (a.date, &a.id).cmp(&(b.date, &b.id)));
    let mut text = String::new();
    for entry in sorted {
        let _ = writeln!(
            text,
            "{} {}  ; {}",
            entry.date,
            one_line(&entry.description),
            one_line(&entry.id)
        );
        for posting in &entry.postings {
            let _ = write!(
                text,
                "    {}  {}",
                posting.account.journal_name(),
                journal_amount(posting.amount, entry.currency)
            );
            if !posting.memo.is_empty() {
                let _ = write!(text, "  ; {}", one_line(&posting.memo));
            }
            text.push('\n');
        }
        let payouts = entry
            .postings
            .iter()
            .filter(|posting| matches!(posting.account, Account::InPayout(..)))
            .map(|posting| posting.account.journal_name());
        let mut asserted: Vec<String> = payouts.collect();
        asserted.dedup();
        for account in asserted {
            let zero = journal_amount(0, entry.currency);
            let _ = writeln!(text, "    {account}  {zero} = {zero}  ; back to zero");
        }
        text.push('\n');
    }
    if !assertions.is_empty() {
        let _ = writeln!(text, "{end} settle's figures  ; assertions");
        for assertion in assertions {
            let _ = writeln!(
                text,
                "    {}  {} = {}",
                assertion.account.journal_name(),
                journal_amount(0, assertion.currency),
                journal_amount(assertion.amount, assertion.currency)
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gbp() -> Currency {
        Currency::parse("GBP").unwrap()
    }

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 7).unwrap()
    }

    fn movement(id: i64, invoice: &str, kind: MovementKind, amount: i64) -> BookMovement {
        BookMovement {
            id,
            invoice_id: invoice.into(),
            provider: Provider::Stripe,
            provider_object_id: format!("obj_{id}"),
            kind,
            amount,
            currency: gbp(),
            date: date(),
        }
    }

    /// A line of `gross` minor units and a fee in tenths of a minor unit.
    fn line(role: Role, explained: Explained, gross: i64, fee_tenths: i64) -> BookLine {
        let invoice = (explained == Explained::Matched).then(|| "inv_1".to_owned());
        BookLine {
            role,
            explained,
            invoice_id: invoice,
            source_id: None,
            gross: Decimal::from(gross),
            fee: Decimal::new(fee_tenths, 1),
        }
    }

    fn balance(entries: &[Entry], account: Account) -> i64 {
        balances(entries)
            .get(&(account, "GBP"))
            .copied()
            .unwrap_or_default()
    }

    #[test]
    fn an_invoice_s_receivable_is_what_settle_says_it_was_paid() {
        use MovementKind::*;
        let movements = [
            movement(1, "inv_1", Collected, 10_000),
            movement(2, "inv_1", Refunded, 2_500),
            movement(3, "inv_1", DisputeWithdrawn, 7_500),
            movement(4, "inv_1", DisputeReinstated, 7_500),
            movement(5, "inv_2", Collected, 4_000),
            movement(6, "inv_2", CollectionReversed, 4_000),
            movement(7, "inv_1", RefundReversed, 500),
        ];
        let entries: Vec<Entry> = movements.iter().map(movement_entry).collect();
        assert!(entries.iter().all(Entry::is_balanced));
        for invoice in ["inv_1", "inv_2"] {
            let sums = crate::reconcile::ledger::Sums::of(
                movements
                    .iter()
                    .filter(|m| m.invoice_id == invoice)
                    .map(|m| (m.kind, m.amount)),
            );
            assert_eq!(
                balance(&entries, Account::Receivable(invoice.into())),
                -sums.paid(),
                "{invoice}"
            );
        }
        assert_eq!(balance(&entries, Account::Refunds), 2_000);
        assert_eq!(
            balance(&entries, Account::Clearing(Provider::Stripe)),
            10_000 - 2_000,
            "what the provider holds: collected less refunded"
        );
    }

    #[test]
    fn a_payout_moves_its_lines_out_of_clearing_its_fees_to_fees_and_returns_to_zero() {
        let payout = BookPayout {
            provider: Provider::Stripe,
            payout_id: "po_1".into(),
            date: date(),
            currency: gbp(),
            amount: 8_406,
            lines: vec![
                line(Role::Money, Explained::Matched, 10000, 3200),
                line(Role::Money, Explained::Matched, -2500, 0),
                line(Role::Money, Explained::Unmatched, 1500, 740),
                line(Role::Fee, Explained::Provider, -200, 0),
                line(Role::Payout, Explained::Provider, -8406, 0),
            ],
        };
        let entry = payout_entry(&payout).unwrap();
        assert!(entry.is_balanced(), "{entry:#?}");
        let entries = [entry];
        let in_payout = Account::InPayout(Provider::Stripe, "po_1".into());
        assert_eq!(balance(&entries, in_payout), 0);
        assert_eq!(balance(&entries, Account::Fees(Provider::Stripe)), 594);
        assert_eq!(balance(&entries, Account::Bank(Provider::Stripe)), 8_406);
        assert_eq!(
            balance(&entries, Account::Clearing(Provider::Stripe)),
            -7_500
        );
        assert_eq!(
            balance(&entries, Account::Unexplained(Provider::Stripe)),
            -1_500,
            "money nothing explains came from somewhere settle cannot name"
        );
    }

    #[test]
    fn a_difference_and_tenths_of_a_penny_are_named_not_absorbed() {
        let payout = BookPayout {
            provider: Provider::GoCardless,
            payout_id: "PO1".into(),
            date: date(),
            currency: gbp(),
            // The lines leave 9,962.5 pence (9,963 once rounded); 9,964 arrived: the payout's
            // difference is a penny.
            amount: 9_964,
            lines: vec![
                line(Role::Money, Explained::Matched, 5000, 188),
                line(Role::Money, Explained::Matched, 5000, 187),
            ],
        };
        let entry = payout_entry(&payout).unwrap();
        assert!(entry.is_balanced(), "{entry:#?}");
        let entries = [entry];
        assert_eq!(balance(&entries, Account::Fees(Provider::GoCardless)), 37);
        assert_eq!(
            balance(
                &entries,
                Account::InPayout(Provider::GoCardless, "PO1".into())
            ),
            0
        );
        assert_eq!(
            balance(&entries, Account::Unexplained(Provider::GoCardless)),
            -1
        );
        assert_eq!(
            balance(&entries, Account::Bank(Provider::GoCardless)),
            9_964
        );
    }

    #[test]
    fn a_journal_names_hostile_ids_safely_and_writes_amounts_with_their_exponent() {
        let name = Account::Receivable("inv 1;  x:y".into()).journal_name();
        assert_eq!(name, "assets:receivable:inv%201%3B%20%20x%3Ay");
        assert_eq!(journal_amount(-1_234, gbp()), "GBP -12.34");
        assert_eq!(journal_amount(5, gbp()), "GBP 0.05");
        assert_eq!(
            journal_amount(500, Currency::parse("JPY").unwrap()),
            "JPY 500"
        );
        assert_eq!(
            journal_amount(1_234, Currency::parse("KWD").unwrap()),
            "KWD 1.234"
        );
        let entry = movement_entry(&movement(1, "inv_1", MovementKind::Collected, 1_000));
        let text = journal(
            &[entry],
            &[Assertion {
                account: Account::Receivable("inv_1".into()),
                currency: gbp(),
                amount: -1_000,
            }],
            date(),
        );
        assert!(
            text.contains("    assets:clearing:stripe  GBP 10.00\n"),
            "{text}"
        );
        assert!(
            text.contains("    assets:receivable:inv_1  GBP 0.00 = GBP -10.00\n"),
            "{text}"
        );
    }
}
