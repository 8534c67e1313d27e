//! GoCardless's payout lines: a payout's items (`GET /payout_items?payout=…`) as the lines the
//! matcher (`reconcile::payout`) explains.

use rust_decimal::Decimal;

use crate::reconcile::events::storable;
use crate::reconcile::payout::{Line, Role, Source};

/// GoCardless's payout item `type`, and how it counts.
pub fn role(item_type: &str) -> Role {
    match item_type {
        "payment_paid_out"
        | "payment_failed"
        | "payment_charged_back"
        | "payment_refunded"
        | "refund"
        | "refund_funds_returned" => Role::Money,
        "gocardless_fee" | "app_fee" | "app_fee_refund" | "surcharge_fee" | "revenue_share" => {
            Role::Fee
        }
        _ => Role::Unknown,
    }
}

/// A GoCardless payout item (`GET /payout_items?payout=…`) as a line. An item is one signed
/// amount: a fee's is the fee (a debit), anything else's the money.
pub fn line_of(item: &serde_json::Value) -> Result<Line, String> {
    let category = item["type"]
        .as_str()
        .map(|category| storable(category).into_owned())
        .ok_or("a payout item without `type`")?;
    let amount = amount(
        item["amount"]
            .as_str()
            .ok_or("a payout item without a string `amount`")?,
    )?;
    let links = &item["links"];
    let link = |name: &str| links[name].as_str().map(|id| storable(id).into_owned());
    let (source_id, source) = match (link("refund"), link("payment")) {
        (Some(refund), _) => (Some(refund.clone()), Source::Refund(refund)),
        (None, Some(payment)) => (Some(payment.clone()), Source::Payment(payment)),
        (None, None) => (None, Source::None),
    };
    let role = role(&category);
    let (gross, fee) = if role == Role::Fee {
        (Decimal::ZERO, -amount)
    } else {
        (amount, Decimal::ZERO)
    };
    Ok(Line {
        category,
        source_id,
        source,
        role,
        gross,
        fee,
        net: amount,
    })
}

/// A GoCardless item amount, a decimal string to a tenth of the minor unit (`"-23.4"`).
pub fn amount(text: &str) -> Result<Decimal, String> {
    text.trim()
        .parse::<Decimal>()
        .map_err(|_| format!("payout item amount `{text}` is not a decimal"))
}
#[cfg(test)]
mod tests {
    use super::*;

    fn whole(n: i64) -> Decimal {
        Decimal::from(n)
    }

    #[test]
    fn bad_amounts_are_named() {
        let error = amount("12,5").unwrap_err();
        assert!(error.contains("`12,5`"), "{error}");
    }

    #[test]
    fn gocardless_items_become_lines_with_their_tenths() {
        let item = |kind: &str, amount: &str, links: serde_json::Value| serde_json::json!({"amount": amount, "type": kind, "links": links, "taxes": []});
        let paid = line_of(&item(
            "payment_paid_out",
            "1000.0",
            serde_json::json!({"payment": "PM1", "mandate": "MD1"}),
        ))
        .unwrap();
        assert_eq!(paid.source, Source::Payment("PM1".into()));
        assert_eq!(
            (paid.gross, paid.fee, paid.net),
            (whole(1000), whole(0), whole(1000))
        );
        let fee = line_of(&item(
            "gocardless_fee",
            "-23.4",
            serde_json::json!({"payment": "PM1"}),
        ))
        .unwrap();
        assert_eq!(fee.role, Role::Fee);
        assert_eq!(fee.fee, "23.4".parse::<Decimal>().unwrap());
        assert_eq!(fee.net, "-23.4".parse::<Decimal>().unwrap());
        let refund = line_of(&item(
            "refund",
            "-500.0",
            serde_json::json!({"payment": "PM1", "refund": "RF1"}),
        ))
        .unwrap();
        assert_eq!(refund.source, Source::Refund("RF1".into()));
        let bare = line_of(&item("fx", "12.0", serde_json::json!({}))).unwrap();
        assert_eq!((bare.source, bare.role), (Source::None, Role::Unknown));
        assert!(line_of(&serde_json::json!({"type": "refund", "amount": 5})).is_err());
    }

    #[test]
    fn every_item_type_has_a_role_and_new_ones_are_unknown() {
        for kind in [
            "payment_paid_out",
            "payment_failed",
            "payment_charged_back",
            "payment_refunded",
            "refund",
            "refund_funds_returned",
        ] {
            assert_eq!(role(kind), Role::Money, "{kind}");
        }
        for kind in ["gocardless_fee", "app_fee", "surcharge_fee"] {
            assert_eq!(role(kind), Role::Fee, "{kind}");
        }
        assert_eq!(role("fx"), Role::Unknown);
    }
}
