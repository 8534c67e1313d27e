//! Payouts, pure: which of a bank deposit's lines settle can explain, what they add up to, and
//! whether that is the deposit.
//!
//! A provider pays out its balance: the money of many payments, less their fees, less refunds,
//! chargebacks and disputes, plus or minus adjustments. Each provider lists the lines of a payout
//! (Stripe's balance transactions, GoCardless's payout items); the worker reads what settle's
//! ledger knows of each line's provider object and hands it here. A line is
//! - **matched** to a payment and its invoice when its object is one settle recorded (a
//!   PaymentIntent or charge, a refund, a dispute; a GoCardless payment or refund), fees of such
//!   a payment included;
//! - **the provider's own** when it is a fee with no payment of its own, or the payout's own
//!   line in Stripe's list (the transfer out, which mirrors the deposit);
//! - **unmatched** otherwise, kept as it came, never dropped nor guessed at.
//!
//! A payout is `RECONCILED` when no line is unmatched and its lines add up to its amount exactly;
//! otherwise `PARTIALLY_MATCHED`, with the difference. Amounts are decimals in the currency's
//! minor unit: GoCardless sends its items to a tenth of a penny (it records fees more precisely
//! than it can pay them out) and says to sum them and then round to the unit; Stripe's are whole.

use std::collections::HashMap;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

use super::events::PayoutStage;

/// What a line's provider object is, as far as settle's ledger can look it up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A payment: a Stripe PaymentIntent (or a charge made without one), a GoCardless payment.
    Payment(String),
    /// A refund: Stripe `re_…`, GoCardless `RF…`.
    Refund(String),
    /// A Stripe dispute `dp_…`.
    Dispute(String),
    /// The payout itself (Stripe lists its own transfer out among its lines).
    Payout,
    /// Nothing settle can look up (an adjustment, a transfer, a fee of the account).
    None,
}

impl Source {
    /// The stored form: its kind and the ledger key it is looked up by (a charge made by a
    /// PaymentIntent is the PaymentIntent's), so a line can be matched again from storage.
    pub fn stored(&self) -> (&'static str, Option<&str>) {
        match self {
            Self::Payment(key) => ("PAYMENT", Some(key)),
            Self::Refund(key) => ("REFUND", Some(key)),
            Self::Dispute(key) => ("DISPUTE", Some(key)),
            Self::Payout => ("PAYOUT", None),
            Self::None => ("NONE", None),
        }
    }

    /// The source `stored` wrote; `None` for a kind it never writes.
    pub fn from_stored(kind: &str, key: Option<String>) -> Option<Self> {
        Some(match (kind, key) {
            ("PAYMENT", Some(key)) => Self::Payment(key),
            ("REFUND", Some(key)) => Self::Refund(key),
            ("DISPUTE", Some(key)) => Self::Dispute(key),
            ("PAYOUT", _) => Self::Payout,
            ("NONE", _) => Self::None,
            _ => return None,
        })
    }
}

/// How a line counts, from the provider's own category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[derive(strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    /// Money of a payment, a refund or a dispute: explained only by a match.
    Money,
    /// A provider fee: explained by a match, or as the provider's own.
    Fee,
    /// The payout's own line: explained by the payout, and not part of its sum.
    Payout,
    /// The provider moving the account's balance within a payout: a minimum balance held back
    /// from it or released into it, an earlier payout's reversal returning its money. Explained
    /// as the provider's own, and part of the sum.
    Adjustment,
    /// A category settle does not know: kept, unmatched.
    Unknown,
}

/// One line of a payout, as the provider listed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The provider's category: Stripe's `reporting_category`, GoCardless's item `type`.
    pub category: String,
    /// The provider's id of the line's object, as listed (`ch_…`, `re_…`, `PM…`), if any.
    pub source_id: Option<String>,
    pub source: Source,
    pub role: Role,
    pub gross: Decimal,
    pub fee: Decimal,
    pub net: Decimal,
}

/// What settle's ledger says a line's object belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub payment_id: String,
    pub invoice_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Explained {
    /// Settle's payment and invoice.
    Matched,
    /// The provider's own: a fee of the account, the payout's own line.
    Provider,
    Unmatched,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MatchedLine {
    pub line: Line,
    pub explained: Explained,
    pub known: Option<Known>,
}

/// Where a payout is: its event's news (`Expected`, `Listing`, `Failed`, `Unlistable`), then
/// what matching its listed lines found (`Reconciled`, `PartiallyMatched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum PayoutStatus {
    /// Paid (Stripe `payout.paid`), its lines not final yet.
    Expected,
    /// Its lines are final: waiting for the payout lister.
    Listing,
    /// Every line explained, and they add up to the deposit.
    Reconciled,
    /// A line unexplained, or a difference from the deposit.
    PartiallyMatched,
    /// The money did not reach the bank: final.
    Failed,
    /// The provider will not list its lines (a manual Stripe payout; GoCardless after 6 months).
    Unlistable,
}

impl PayoutStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The status an event's stage stands for.
fn status_of(stage: &PayoutStage) -> PayoutStatus {
    match stage {
        PayoutStage::Expected => PayoutStatus::Expected,
        PayoutStage::Listable => PayoutStatus::Listing,
        PayoutStage::Unlistable(_) => PayoutStatus::Unlistable,
        PayoutStage::Failed(_) => PayoutStatus::Failed,
    }
}

/// What a payout event moves a payout in `current` to (`None`: not stored yet), or `None` when
/// it does not move it. Events arrive in any order and move a payout only forward: `Failed` is
/// final, and any other payout fails (the money is not in the bank, whatever came before); one
/// expected or waiting to be listed may become listable or unlistable; a listed one is not put
/// back to be listed or expected.
pub fn advance(current: Option<PayoutStatus>, stage: &PayoutStage) -> Option<PayoutStatus> {
    use PayoutStatus as S;
    let next = status_of(stage);
    match current {
        None => Some(next),
        Some(S::Failed) => None,
        Some(_) if next == S::Failed => Some(next),
        Some(S::Expected | S::Listing) if next != S::Expected => Some(next),
        Some(_) => None,
    }
}

/// Whether a payout in `status` is listed: one waiting for it; on request (`again`), one listed
/// before too, whose lines settle may now know more of.
pub fn listable(status: PayoutStatus, again: bool) -> bool {
    status == PayoutStatus::Listing
        || again
            && matches!(
                status,
                PayoutStatus::Reconciled | PayoutStatus::PartiallyMatched
            )
}

/// A payout's lines explained and summed.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciled {
    /// `Reconciled` or `PartiallyMatched`.
    pub status: PayoutStatus,
    pub lines: Vec<MatchedLine>,
    /// Sums of the lines that make up the deposit (the payout's own line left out), rounded to
    /// the currency's unit after summing.
    pub gross: i64,
    pub fees: i64,
    pub net: i64,
    /// The deposit less what its lines add up to: 0 when they explain it exactly.
    pub difference: i64,
    pub unmatched: usize,
}

/// Explains `lines` with what the ledger `knows` of their objects, and sums them against the
/// payout's `amount` (minor units). The figures are the provider's: sums that overflow a
/// `Decimal` or an amount (`i64`) refuse the payout with the reason, never panic nor wrap.
pub fn reconcile(
    amount: i64,
    lines: Vec<Line>,
    knows: &HashMap<Source, Known>,
) -> Result<Reconciled, String> {
    let lines: Vec<MatchedLine> = lines.into_iter().map(|line| explain(line, knows)).collect();
    let sum = |what: &str, part: fn(&Line) -> Decimal| {
        lines
            .iter()
            .filter(|l| l.line.role != Role::Payout)
            .try_fold(Decimal::ZERO, |total, l| total.checked_add(part(&l.line)))
            .and_then(to_unit)
            .ok_or_else(|| {
                format!("the payout's lines' {what} add up to more than an amount can hold")
            })
    };
    let (gross, fees, net) = (
        sum("gross amounts", |l| l.gross)?,
        sum("fees", |l| l.fee)?,
        sum("net amounts", |l| l.net)?,
    );
    let unmatched = lines
        .iter()
        .filter(|l| l.explained == Explained::Unmatched)
        .count();
    let difference = amount
        .checked_sub(net)
        .ok_or("the payout's amount less its lines' net is more than an amount can hold")?;
    let status = if unmatched == 0 && difference == 0 {
        PayoutStatus::Reconciled
    } else {
        PayoutStatus::PartiallyMatched
    };
    Ok(Reconciled {
        status,
        lines,
        gross,
        fees,
        net,
        difference,
        unmatched,
    })
}

fn explain(line: Line, knows: &HashMap<Source, Known>) -> MatchedLine {
    let known = knows.get(&line.source).cloned();
    let explained = match (line.role, &known) {
        (Role::Payout, _) if line.source == Source::Payout => Explained::Provider,
        (Role::Adjustment, _) => Explained::Provider,
        (Role::Money | Role::Fee, Some(_)) => Explained::Matched,
        (Role::Fee, None) if line.source == Source::None => Explained::Provider,
        _ => Explained::Unmatched,
    };
    MatchedLine {
        known: known.filter(|_| explained == Explained::Matched),
        line,
        explained,
    }
}

/// A sum to the currency's unit: the nearest, a half away from zero; `None` beyond an `i64`.
fn to_unit(sum: Decimal) -> Option<i64> {
    let rounded = sum.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    i64::try_from(rounded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(n: i64) -> Decimal {
        Decimal::from(n)
    }

    fn line(category: &str, source: Source, role: Role, gross: i64, fee: i64) -> Line {
        Line {
            category: category.into(),
            source_id: match &source {
                Source::Payment(id) | Source::Refund(id) | Source::Dispute(id) => Some(id.clone()),
                _ => None,
            },
            source,
            role,
            gross: whole(gross),
            fee: whole(fee),
            net: whole(gross - fee),
        }
    }

    fn knows(entries: &[(Source, &str)]) -> HashMap<Source, Known> {
        entries
            .iter()
            .map(|(source, invoice)| {
                let known = Known {
                    payment_id: format!("pay_{invoice}"),
                    invoice_id: (*invoice).to_owned(),
                };
                (source.clone(), known)
            })
            .collect()
    }

    #[test]
    fn charges_a_refund_a_dispute_and_fees_all_known_reconcile_exactly() {
        let pi = |n: u8| Source::Payment(format!("pi_{n}"));
        let lines = vec![
            line("charge", pi(1), Role::Money, 10_000, 320),
            line("charge", pi(2), Role::Money, 5_000, 170),
            line("charge", pi(3), Role::Money, 2_000, 80),
            line(
                "refund",
                Source::Refund("re_1".into()),
                Role::Money,
                -1_500,
                0,
            ),
            line(
                "dispute",
                Source::Dispute("dp_1".into()),
                Role::Money,
                -2_000,
                1_500,
            ),
            line("fee", Source::None, Role::Fee, -200, 0),
            line("payout", Source::Payout, Role::Payout, -11_230, 0),
        ];
        let known = knows(&[
            (pi(1), "inv_1"),
            (pi(2), "inv_2"),
            (pi(3), "inv_3"),
            (Source::Refund("re_1".into()), "inv_1"),
            (Source::Dispute("dp_1".into()), "inv_2"),
        ]);
        let reconciled = reconcile(11_230, lines, &known).unwrap();
        assert_eq!(reconciled.status, PayoutStatus::Reconciled);
        assert_eq!(
            (reconciled.gross, reconciled.fees, reconciled.net),
            (13_300, 2_070, 11_230)
        );
        assert_eq!(reconciled.difference, 0);
        let invoices: Vec<Option<&str>> = reconciled
            .lines
            .iter()
            .map(|l| l.known.as_ref().map(|k| k.invoice_id.as_str()))
            .collect();
        assert_eq!(
            invoices,
            [
                Some("inv_1"),
                Some("inv_2"),
                Some("inv_3"),
                Some("inv_1"),
                Some("inv_2"),
                None,
                None
            ]
        );
        assert_eq!(reconciled.lines[5].explained, Explained::Provider);
        assert_eq!(reconciled.lines[6].explained, Explained::Provider);
    }

    #[test]
    fn a_charge_settle_never_saw_is_kept_unmatched_and_the_payout_is_partly_matched() {
        let lines = vec![
            line(
                "charge",
                Source::Payment("pi_1".into()),
                Role::Money,
                10_000,
                320,
            ),
            line(
                "charge",
                Source::Payment("pi_unknown".into()),
                Role::Money,
                4_000,
                140,
            ),
        ];
        let known = knows(&[(Source::Payment("pi_1".into()), "inv_1")]);
        let reconciled = reconcile(13_540, lines, &known).unwrap();
        assert_eq!(reconciled.status, PayoutStatus::PartiallyMatched);
        assert_eq!(reconciled.unmatched, 1);
        // The sums still add up: what is missing is an explanation, not money.
        assert_eq!(reconciled.difference, 0);
        assert_eq!(reconciled.lines[1].explained, Explained::Unmatched);
        assert_eq!(reconciled.lines[1].known, None);
        assert_eq!(
            reconciled.lines[1].line.source_id.as_deref(),
            Some("pi_unknown")
        );
    }

    #[test]
    fn lines_that_do_not_add_up_to_the_deposit_show_the_difference() {
        let lines = vec![line(
            "charge",
            Source::Payment("pi_1".into()),
            Role::Money,
            1_000,
            30,
        )];
        let known = knows(&[(Source::Payment("pi_1".into()), "inv_1")]);
        let reconciled = reconcile(1_000, lines, &known).unwrap();
        assert_eq!(reconciled.status, PayoutStatus::PartiallyMatched);
        assert_eq!(reconciled.difference, 30);
        assert_eq!(reconciled.unmatched, 0);
    }

    #[test]
    fn unknown_categories_and_sourceless_money_are_kept_unmatched() {
        let lines = vec![
            line("adjustment", Source::None, Role::Unknown, 500, 0),
            line(
                "something_new",
                Source::Payment("pi_1".into()),
                Role::Unknown,
                100,
                0,
            ),
            line("charge", Source::None, Role::Money, 100, 0),
            // A fee naming a payment settle does not know is not the account's own fee.
            line("fee", Source::Payment("pi_x".into()), Role::Fee, -10, 0),
        ];
        let known = knows(&[(Source::Payment("pi_1".into()), "inv_1")]);
        let reconciled = reconcile(690, lines, &known).unwrap();
        assert!(
            reconciled
                .lines
                .iter()
                .all(|l| l.explained == Explained::Unmatched)
        );
        assert!(reconciled.lines.iter().all(|l| l.known.is_none()));
        assert_eq!(reconciled.status, PayoutStatus::PartiallyMatched);
        assert_eq!(reconciled.difference, 0);
    }

    #[test]
    fn gocardless_tenths_are_summed_then_rounded_never_rounded_one_by_one() {
        // Three fees of 0.4p each: rounded one by one they would vanish (0 + 0 + 0); summed
        // they are 1.2p, which rounds to 1p. The deposit is 3000 - 1 = 2999p.
        let payment = |n: u8| Source::Payment(format!("PM{n}"));
        let item = |kind: &str, source: Source, amount: &str| {
            let amount: Decimal = amount.parse().unwrap();
            let role = if kind == "gocardless_fee" {
                Role::Fee
            } else {
                Role::Money
            };
            Line {
                category: kind.into(),
                source_id: None,
                source,
                role,
                gross: if role == Role::Fee {
                    Decimal::ZERO
                } else {
                    amount
                },
                fee: if role == Role::Fee {
                    -amount
                } else {
                    Decimal::ZERO
                },
                net: amount,
            }
        };
        let lines = vec![
            item("payment_paid_out", payment(1), "1000.0"),
            item("payment_paid_out", payment(2), "1000.0"),
            item("payment_paid_out", payment(3), "1000.0"),
            item("gocardless_fee", payment(1), "-0.4"),
            item("gocardless_fee", payment(2), "-0.4"),
            item("gocardless_fee", payment(3), "-0.4"),
        ];
        let known = knows(&[
            (payment(1), "inv_1"),
            (payment(2), "inv_2"),
            (payment(3), "inv_3"),
        ]);
        let reconciled = reconcile(2_999, lines, &known).unwrap();
        assert_eq!(reconciled.net, 2_999);
        assert_eq!(reconciled.fees, 1);
        assert_eq!(reconciled.status, PayoutStatus::Reconciled);
    }

    #[test]
    fn figures_that_overflow_refuse_the_payout_with_a_reason() {
        let line = |net: Decimal| Line {
            category: "payment_paid_out".into(),
            source_id: None,
            source: Source::None,
            role: Role::Money,
            gross: net,
            fee: Decimal::ZERO,
            net,
        };
        let none = HashMap::new();
        // Two GoCardless items near Decimal's limit (about 7.9e28): their sum does not fit.
        let huge: Decimal = "49999999999999999999999999999".parse().unwrap();
        let refused = reconcile(1, vec![line(huge), line(huge)], &none).unwrap_err();
        assert!(refused.contains("gross amounts"), "{refused}");
        // A sum that fits a Decimal but not an amount.
        let beyond = Decimal::from(i64::MAX) + Decimal::ONE;
        let refused = reconcile(1, vec![line(beyond)], &none).unwrap_err();
        assert!(
            refused.contains("more than an amount can hold"),
            "{refused}"
        );
        // Lines that fit, whose difference from the deposit does not.
        let refused = reconcile(1, vec![line(Decimal::from(i64::MIN))], &none).unwrap_err();
        assert!(refused.contains("less its lines' net"), "{refused}");
        // At the edge, still counted.
        let edge = reconcile(i64::MAX, vec![line(Decimal::from(i64::MAX))], &none).unwrap();
        assert_eq!((edge.net, edge.difference), (i64::MAX, 0));
    }

    #[test]
    fn halves_round_away_from_zero() {
        assert_eq!(to_unit("2.5".parse().unwrap()), Some(3));
        assert_eq!(to_unit("-2.5".parse().unwrap()), Some(-3));
        assert_eq!(to_unit("2.4".parse().unwrap()), Some(2));
    }

    #[test]
    fn a_lines_source_and_role_read_back_as_stored() {
        for source in [
            Source::Payment("pi_1".into()),
            Source::Refund("re_1".into()),
            Source::Dispute("dp_1".into()),
            Source::Payout,
            Source::None,
        ] {
            let (kind, key) = source.stored();
            assert_eq!(
                Source::from_stored(kind, key.map(str::to_owned)),
                Some(source.clone())
            );
        }
        assert_eq!(Source::from_stored("PAYMENT", None), None);
        for role in [
            Role::Money,
            Role::Fee,
            Role::Payout,
            Role::Adjustment,
            Role::Unknown,
        ] {
            let stored: &'static str = role.into();
            assert_eq!(stored.parse::<Role>(), Ok(role));
        }
    }

    /// Every status an event can meet, against every stage: the table of `advance`.
    #[test]
    fn a_payout_event_moves_a_payout_only_forward() {
        use PayoutStatus as S;
        let failure = crate::reconcile::events::Failure {
            code: Some("account_closed".into()),
            message: None,
        };
        let stages = [
            PayoutStage::Expected,
            PayoutStage::Listable,
            PayoutStage::Unlistable("manual"),
            PayoutStage::Failed(failure),
        ];
        // current → (expected, listable, unlistable, failed)
        let table: [(Option<S>, [Option<S>; 4]); 7] = [
            (
                None,
                [
                    Some(S::Expected),
                    Some(S::Listing),
                    Some(S::Unlistable),
                    Some(S::Failed),
                ],
            ),
            (
                Some(S::Expected),
                [None, Some(S::Listing), Some(S::Unlistable), Some(S::Failed)],
            ),
            (
                Some(S::Listing),
                [None, Some(S::Listing), Some(S::Unlistable), Some(S::Failed)],
            ),
            (Some(S::Reconciled), [None, None, None, Some(S::Failed)]),
            (
                Some(S::PartiallyMatched),
                [None, None, None, Some(S::Failed)],
            ),
            (Some(S::Unlistable), [None, None, None, Some(S::Failed)]),
            (Some(S::Failed), [None, None, None, None]),
        ];
        for (current, expected) in table {
            for (stage, want) in stages.iter().zip(expected) {
                assert_eq!(advance(current, stage), want, "{current:?} + {stage:?}");
            }
        }
    }

    #[test]
    fn outcomes_and_failures_announce_and_waiting_is_listed() {
        use PayoutStatus as S;
        let announced: Vec<S> = S::VARIANTS
            .iter()
            .copied()
            .filter(|status| {
                let data = PayoutData {
                    status: *status,
                    ..data()
                };
                ReconciliationEvent::of_payout(data).is_some()
            })
            .collect();
        assert_eq!(announced, [S::Reconciled, S::PartiallyMatched, S::Failed]);
        for status in S::VARIANTS.iter().copied() {
            assert_eq!(listable(status, false), status == S::Listing, "{status:?}");
            assert_eq!(
                listable(status, true),
                matches!(status, S::Listing | S::Reconciled | S::PartiallyMatched),
                "{status:?}"
            );
            assert_eq!(status.as_str().parse::<S>(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }

    use crate::reconcile::reconciliation_events::{PayoutData, ReconciliationEvent};

    fn data() -> PayoutData {
        PayoutData {
            provider: crate::provider::Provider::Stripe,
            provider_payout_id: "po_1".into(),
            status: PayoutStatus::Reconciled,
            amount: Some(100),
            currency: None,
            arrival_date: None,
            lines_gross: None,
            lines_fees: None,
            lines_net: None,
            difference: None,
            unmatched_lines: None,
            invoice_ids: vec![],
            status_reason: None,
        }
    }
}
