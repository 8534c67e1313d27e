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
//! | `Reserve(provider)` | the provider's own moves of the balance within a payout (a minimum balance held back, released) |
//! | `OpeningBalances` | the other side of a period's opening balances |
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Account {
    Receivable(String),
    Clearing(Provider),
    InPayout(Provider, String),
    Bank(Provider),
    Fees(Provider),
    Refunds,
    Unexplained(Provider),
    Reserve(Provider),
    #[default]
    OpeningBalances,
}

impl Account {
    /// The account's kind, as a mapping to a finance team's codes names it (`clearing`).
    pub fn category(&self) -> &'static str {
        match self {
            Self::Receivable(_) => "receivable",
            Self::Clearing(_) => "clearing",
            Self::InPayout(..) => "in_payout",
            Self::Bank(_) => "bank",
            Self::Fees(_) => "fees",
            Self::Refunds => "refunds",
            Self::Unexplained(_) => "unexplained",
            Self::Reserve(_) => "reserve",
            Self::OpeningBalances => "opening_balances",
        }
    }

    /// Whose account it is, for those kept per provider.
    pub fn provider(&self) -> Option<Provider> {
        match self {
            Self::Clearing(provider)
            | Self::InPayout(provider, _)
            | Self::Bank(provider)
            | Self::Fees(provider)
            | Self::Unexplained(provider)
            | Self::Reserve(provider) => Some(*provider),
            Self::Receivable(_) | Self::Refunds | Self::OpeningBalances => None,
        }
    }
}

/// One side of an entry: debit when positive, credit when negative, with what it is for (the
/// invoice and the provider's object, for a payout's lines; empty when the entry says it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Posting {
    pub account: Account,
    pub amount: i64,
    pub memo: String,
    /// The invoice whose money it is, when one is.
    pub invoice: Option<String>,
    /// The provider's object it comes from (`ch_…`, `re_…`, `PM…`), when one is.
    pub source: Option<String>,
}

/// A journal entry: postings that sum to zero, in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stable across exports: `movement:<ledger id>`, `payout:<provider>:<payout id>`.
    pub id: String,
    pub date: NaiveDate,
    pub description: String,
    /// What moved, in Stripe's reporting categories' words: `charge`, `refund`, `dispute`,
    /// `dispute_reversal`, `charge_failure`, `refund_failure`, `payout`, `opening_balance`.
    pub category: &'static str,
    pub provider: Option<Provider>,
    /// The payout it is, for a payout's entry.
    pub payout: Option<String>,
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
    let mut postings = moved(debit, credit, movement.amount, "");
    for posting in &mut postings {
        posting.invoice = Some(movement.invoice_id.clone());
        posting.source = Some(movement.provider_object_id.clone());
    }
    Entry {
        id: format!("movement:{}", movement.id),
        date: movement.date,
        description: format!(
            "{} {} of invoice {}",
            movement.kind.as_str(),
            movement.provider_object_id,
            movement.invoice_id
        ),
        category: match movement.kind {
            MovementKind::Collected => "charge",
            MovementKind::CollectionReversed => "charge_failure",
            MovementKind::Refunded => "refund",
            MovementKind::RefundReversed => "refund_failure",
            MovementKind::DisputeWithdrawn => "dispute",
            MovementKind::DisputeReinstated => "dispute_reversal",
        },
        provider: Some(movement.provider),
        payout: None,
        currency: movement.currency,
        postings: postings.into(),
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
            // The provider holding back or releasing some of the balance: money still the
            // business's, at the provider.
            (_, Role::Adjustment) => Account::Reserve(payout.provider),
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
            invoice: line.invoice_id.clone(),
            source: line.source_id.clone(),
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
        ..Posting::default()
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
        category: "payout",
        provider: Some(payout.provider),
        payout: Some(payout.payout_id.clone()),
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
            ..Posting::default()
        },
        Posting {
            account: from,
            amount: -amount,
            memo: memo.to_owned(),
            ..Posting::default()
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

/// A period's entries, in order: the opening balances (from everything before it), then its
/// movements' and payouts' own entries.
pub fn period_entries(
    before: (&[BookMovement], &[BookPayout]),
    during: (&[BookMovement], &[BookPayout]),
    from: NaiveDate,
) -> Result<Vec<Entry>, BookError> {
    let earlier = entries_of(before.0, before.1)?;
    let mut entries = entries_of(during.0, during.1)?;
    let touched: std::collections::HashSet<&str> = during
        .0
        .iter()
        .map(|movement| movement.invoice_id.as_str())
        .chain(during.1.iter().flat_map(|payout| {
            payout
                .lines
                .iter()
                .filter_map(|line| line.invoice_id.as_deref())
        }))
        .collect();
    let mut opening = opening_entries(&earlier, &touched, from.pred_opt().unwrap_or(from));
    opening.append(&mut entries);
    Ok(opening)
}

fn entries_of(movements: &[BookMovement], payouts: &[BookPayout]) -> Result<Vec<Entry>, BookError> {
    let mut entries: Vec<Entry> = movements.iter().map(movement_entry).collect();
    for payout in payouts {
        entries.push(payout_entry(payout)?);
    }
    Ok(entries)
}

/// One entry per currency carrying each account's balance after `earlier`, against
/// `OpeningBalances`: the receivables of the invoices in `touched` only (the period's file
/// names those; the others' balances stay in the opening account), every other account in full.
pub fn opening_entries(
    earlier: &[Entry],
    touched: &std::collections::HashSet<&str>,
    date: NaiveDate,
) -> Vec<Entry> {
    let mut by_currency: std::collections::BTreeMap<&'static str, (Currency, Vec<Posting>)> =
        std::collections::BTreeMap::new();
    let currencies: std::collections::HashMap<&'static str, Currency> = earlier
        .iter()
        .map(|entry| (entry.currency.as_str(), entry.currency))
        .collect();
    let mut sorted: Vec<((Account, &'static str), i64)> = balances(earlier).into_iter().collect();
    sorted.sort_by(|a, b| (a.0.1, a.0.0.journal_name()).cmp(&(b.0.1, b.0.0.journal_name())));
    for ((account, code), balance) in sorted {
        let kept = match &account {
            Account::Receivable(invoice) => touched.contains(invoice.as_str()),
            _ => true,
        };
        if balance == 0 || !kept {
            continue;
        }
        let invoice = match &account {
            Account::Receivable(invoice) => Some(invoice.clone()),
            _ => None,
        };
        by_currency
            .entry(code)
            .or_insert_with(|| (currencies[code], Vec::new()))
            .1
            .push(Posting {
                account,
                amount: balance,
                memo: "the balance before the period".to_owned(),
                invoice,
                source: None,
            });
    }
    by_currency
        .into_iter()
        .map(|(code, (currency, mut postings))| {
            let total: i64 = postings
                .iter()
                .fold(0_i64, |sum, posting| sum.saturating_add(posting.amount));
            postings.push(Posting {
                account: Account::OpeningBalances,
                amount: -total,
                memo: "the balances before the period".to_owned(),
                ..Posting::default()
            });
            Entry {
                id: format!("opening:{code}"),
                date,
                description: "Opening balances".to_owned(),
                category: "opening_balance",
                provider: None,
                payout: None,
                currency,
                postings,
            }
        })
        .collect()
}

/// What each provider holds for the business once `entries` have posted, per currency: collected
/// and not yet paid out (its clearing account), plus what it holds back (its reserve).
pub fn unsettled(entries: &[Entry]) -> Vec<(Provider, &'static str, i64)> {
    let mut held: std::collections::BTreeMap<(&'static str, &'static str), (Provider, i64)> =
        std::collections::BTreeMap::new();
    for ((account, currency), balance) in balances(entries) {
        if let Account::Clearing(provider) | Account::Reserve(provider) = account {
            let slot = held
                .entry((provider.wire_name(), currency))
                .or_insert((provider, 0));
            slot.1 = slot.1.saturating_add(balance);
        }
    }
    held.into_iter()
        .map(|((_, currency), (provider, amount))| (provider, currency, amount))
        .collect()
}

/// A provider's balance against what settle's books expect it to hold, in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub currency: Currency,
    /// What the provider says it holds and has not paid out (net of its fees).
    pub held: i64,
    /// What the books say it holds: collected and not yet in a paid payout, less the payouts on
    /// their way whose lines are not in the books yet.
    pub expected: i64,
    /// `held - expected`: above zero, money settle does not know of (a missed payment); below,
    /// money settle counts that the provider does not hold (a missed refund or dispute, or the
    /// provider's fees on money not yet paid out).
    pub drift: i64,
}

/// Each currency's drift for `provider`: its balance (`held`, currencies as the provider writes
/// them, summed), against `unsettled` (from `unsettled`) less `in_flight` (payouts paid or
/// leaving, not yet in the books), for every currency either side names. A currency the provider names that ISO 4217 does not is an
/// error naming it.
pub fn drift(
    provider: Provider,
    unsettled: &[(Provider, &'static str, i64)],
    in_flight: &[(Currency, i64)],
    held: &[(String, i64)],
) -> Result<Vec<Drift>, String> {
    let mut by_currency: std::collections::BTreeMap<&'static str, (Currency, i64, i64)> =
        std::collections::BTreeMap::new();
    for (currency, amount) in held {
        let currency = Currency::parse_any_case(currency)
            .map_err(|error| format!("{} balance: {error}", provider.display_name()))?;
        let slot = by_currency
            .entry(currency.as_str())
            .or_insert((currency, 0, 0));
        slot.1 = slot.1.saturating_add(*amount);
    }
    for (owner, code, amount) in unsettled {
        if *owner != provider {
            continue;
        }
        let currency = Currency::parse(code)?;
        let slot = by_currency.entry(code).or_insert((currency, 0, 0));
        slot.2 = slot.2.saturating_add(*amount);
    }
    for (currency, amount) in in_flight {
        let slot = by_currency
            .entry(currency.as_str())
            .or_insert((*currency, 0, 0));
        slot.2 = slot.2.saturating_sub(*amount);
    }
    // A currency at zero on both sides stays: its gauge must come back to zero, not keep the
    // last drift it had.
    Ok(by_currency
        .into_values()
        .map(|(currency, held, expected)| Drift {
            currency,
            held,
            expected,
            drift: held.saturating_sub(expected),
        })
        .collect())
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
            Self::Reserve(provider) => format!("assets:reserve:{}", provider.wire_name()),
            Self::OpeningBalances => "equity:opening-balances".to_owned(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn gbp() -> Currency {
        Currency::parse("GBP").unwrap()
    }

    pub(crate) fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 7).unwrap()
    }

    pub(crate) fn movement(
        id: i64,
        invoice: &str,
        kind: MovementKind,
        amount: i64,
    ) -> BookMovement {
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
    fn drift_is_the_provider_s_balance_less_what_the_books_expect_per_currency() {
        let unsettled = [
            (Provider::Stripe, "GBP", 10_000),
            (Provider::GoCardless, "GBP", 7_000),
            (Provider::Stripe, "EUR", 500),
        ];
        let in_flight = [(gbp(), 4_000)];
        let held = [
            ("gbp".to_owned(), 5_000),
            ("gbp".to_owned(), 1_000),
            ("usd".to_owned(), 300),
        ];
        let found = drift(Provider::Stripe, &unsettled, &in_flight, &held).unwrap();
        let figures: Vec<(&str, i64, i64, i64)> = found
            .iter()
            .map(|d| (d.currency.as_str(), d.held, d.expected, d.drift))
            .collect();
        assert_eq!(
            figures,
            [
                ("EUR", 0, 500, -500),
                ("GBP", 6_000, 6_000, 0),
                ("USD", 300, 0, 300)
            ]
        );
        let hostile = [("g\u{0}p".to_owned(), 1)];
        assert!(drift(Provider::Stripe, &[], &[], &hostile).is_err());
    }
}
