//! Stripe's payout lines: a payout's balance transactions (`GET /v1/balance_transactions?payout=…`)
//! as the lines the matcher (`reconcile::payout`) explains.

use rust_decimal::Decimal;

use crate::reconcile::events::storable;
use crate::reconcile::payout::{Line, Role, Source};

/// Stripe's `reporting_category` of a balance transaction, and how it counts.
pub fn role(reporting_category: &str) -> Role {
    match reporting_category {
        "charge"
        | "refund"
        | "refund_failure"
        | "dispute"
        | "dispute_reversal"
        | "partial_capture_reversal" => Role::Money,
        "fee" | "platform_earning" | "platform_earning_refund" => Role::Fee,
        "payout" => Role::Payout,
        // Stripe's balance transactions for a minimum balance (API version 2024-12-18.acacia),
        // and a failed payout's money coming back, in a later payout.
        "payout_reversal" | "payout_minimum_balance_hold" | "payout_minimum_balance_release" => {
            Role::Adjustment
        }
        _ => Role::Unknown,
    }
}

/// A Stripe balance transaction of a payout (`GET /v1/balance_transactions?payout=…`, with
/// `expand[]=data.source`, or without: then `source` is only an id) as a line.
pub fn line_of(transaction: &serde_json::Value) -> Result<Line, String> {
    let category = transaction["reporting_category"]
        .as_str()
        .or_else(|| transaction["type"].as_str())
        .map(|category| storable(category).into_owned())
        .ok_or("a balance transaction without `reporting_category`")?;
    let whole = |field: &str| {
        transaction[field]
            .as_i64()
            .map(Decimal::from)
            .ok_or_else(|| format!("a balance transaction without an integer `{field}`"))
    };
    let (source_id, source) = source_of(&transaction["source"]);
    // A type the reporting categories do not name apart keeps its own role.
    let role = match (role(&category), transaction["type"].as_str()) {
        (Role::Unknown, Some(kind)) => role(kind),
        (role, _) => role,
    };
    Ok(Line {
        role,
        category,
        source_id,
        source,
        gross: whole("amount")?,
        fee: whole("fee")?,
        net: whole("net")?,
    })
}

/// The object a balance transaction moved money for: expanded (an object with its `object`
/// kind; a charge made by a PaymentIntent is settle's payment under the PaymentIntent's id), or
/// an id whose prefix tells its kind.
fn source_of(source: &serde_json::Value) -> (Option<String>, Source) {
    let Some(id) = source.as_str().or_else(|| source["id"].as_str()) else {
        return (None, Source::None);
    };
    let kind = source["object"]
        .as_str()
        .or_else(|| id.split_once('_').map(|(prefix, _)| prefix));
    let id = storable(id).into_owned();
    let source = match kind {
        Some("charge" | "ch" | "py") => Source::Payment(
            source["payment_intent"]
                .as_str()
                .map_or_else(|| id.clone(), str::to_owned),
        ),
        Some("refund" | "re" | "pyr") => Source::Refund(id.clone()),
        Some("dispute" | "dp") => Source::Dispute(id.clone()),
        Some("payout" | "po") => Source::Payout,
        _ => Source::None,
    };
    (Some(id), source)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::reconcile::payout::{Explained, Known, PayoutStatus, reconcile};

    fn whole(n: i64) -> Decimal {
        Decimal::from(n)
    }

    fn stripe_fixtures() -> serde_json::Value {
        serde_json::from_str(include_str!("../../../tests/fixtures/stripe-objects.json")).unwrap()
    }

    #[test]
    fn stripe_balance_transactions_become_lines_expanded_or_not() {
        let fixtures = stripe_fixtures();
        // The fixture's own transaction: a charge, `source` an id.
        let line = line_of(&fixtures["balance_transaction"]).unwrap();
        assert_eq!(line.category, "charge");
        assert_eq!(line.role, Role::Money);
        assert_eq!(
            line.source,
            Source::Payment("ch_1PgafuB7WZ01zgkWXYmPNZs8".into())
        );
        assert_eq!(
            (line.gross, line.fee, line.net),
            (whole(100), whole(0), whole(100))
        );

        // Expanded: a charge of a PaymentIntent is the PaymentIntent's payment.
        let mut charge = fixtures["charge"].clone();
        charge["payment_intent"] = "pi_expanded".into();
        let mut transaction = fixtures["balance_transaction"].clone();
        transaction["source"] = charge;
        transaction["amount"] = 2000.into();
        transaction["fee"] = 88.into();
        transaction["net"] = 1912.into();
        let line = line_of(&transaction).unwrap();
        assert_eq!(line.source, Source::Payment("pi_expanded".into()));
        assert_eq!(
            (line.gross, line.fee, line.net),
            (whole(2000), whole(88), whole(1912))
        );

        for (object, category, expected) in [
            (
                "refund",
                "refund",
                Source::Refund(fixtures["refund"]["id"].as_str().unwrap().into()),
            ),
            (
                "dispute",
                "dispute",
                Source::Dispute(fixtures["dispute"]["id"].as_str().unwrap().into()),
            ),
            ("payout", "payout", Source::Payout),
        ] {
            let mut transaction = fixtures["balance_transaction"].clone();
            transaction["source"] = fixtures[object].clone();
            transaction["reporting_category"] = category.into();
            assert_eq!(line_of(&transaction).unwrap().source, expected, "{object}");
        }

        let mut broken = fixtures["balance_transaction"].clone();
        broken["fee"] = "a lot".into();
        assert!(line_of(&broken).unwrap_err().contains("`fee`"));
    }

    /// A charge of 10.00 (fee 0.50), 1.00 held back for the account's minimum balance, and 3.00
    /// of an earlier payout that failed coming back: a deposit of 11.50, all of it explained.
    #[test]
    fn a_minimum_balance_hold_and_a_failed_payouts_reversal_are_the_providers_own_and_summed() {
        let fixtures = stripe_fixtures();
        let transaction =
            |kind: &str, category: Option<&str>, source: &str, amount: i64, fee: i64| {
                let mut transaction = fixtures["balance_transaction"].clone();
                transaction["type"] = kind.into();
                transaction["reporting_category"] =
                    category.map_or(serde_json::Value::Null, Into::into);
                transaction["source"] = if source.is_empty() {
                    serde_json::Value::Null
                } else {
                    source.into()
                };
                transaction["amount"] = amount.into();
                transaction["fee"] = fee.into();
                transaction["net"] = (amount - fee).into();
                line_of(&transaction).unwrap()
            };
        let lines = vec![
            transaction("charge", Some("charge"), "ch_paid", 1000, 50),
            // The minimum balance types (2024-12-18.acacia) as `type`, with no category of
            // their own: the type decides.
            transaction(
                "payout_minimum_balance_hold",
                Some("other_adjustment"),
                "",
                -100,
                0,
            ),
            transaction(
                "payout_failure",
                Some("payout_reversal"),
                "po_earlier",
                300,
                0,
            ),
            transaction("payout", Some("payout"), "po_this", -1150, 0),
        ];
        assert_eq!(lines[1].role, Role::Adjustment);
        assert_eq!(lines[2].role, Role::Adjustment);
        let known = HashMap::from([(
            Source::Payment("ch_paid".into()),
            Known {
                payment_id: "pay_inv_1".into(),
                invoice_id: "inv_1".into(),
            },
        )]);
        let reconciled = reconcile(1150, lines, &known).unwrap();
        assert_eq!(
            reconciled.status,
            PayoutStatus::Reconciled,
            "{reconciled:?}"
        );
        assert_eq!((reconciled.net, reconciled.difference), (1150, 0));
        let explained: Vec<Explained> = reconciled.lines.iter().map(|l| l.explained).collect();
        assert_eq!(
            explained,
            [
                Explained::Matched,
                Explained::Provider,
                Explained::Provider,
                Explained::Provider
            ]
        );
    }

    #[test]
    fn every_category_has_a_role_and_new_ones_are_unknown() {
        for category in [
            "charge",
            "refund",
            "dispute",
            "dispute_reversal",
            "refund_failure",
        ] {
            assert_eq!(role(category), Role::Money, "{category}");
        }
        assert_eq!(role("fee"), Role::Fee);
        assert_eq!(role("payout"), Role::Payout);
        assert_eq!(role("topup"), Role::Unknown);
    }
}
