//! An invoice's amount paid and status follow from its payments: the sum of those that currently
//! count as collected. So a reversal (late failure, chargeback) reopens the invoice by itself.

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum InvoiceStatus {
    Open,
    PartiallyPaid,
    Paid,
    /// Open, and the most recent payment attempt failed.
    PaymentFailed,
}

impl InvoiceStatus {
    /// The stored and published name (`PARTIALLY_PAID`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether money counts towards it (a move from one of these to a lower state is a reopening).
    fn rank(self) -> u8 {
        match self {
            Self::Open | Self::PaymentFailed => 0,
            Self::PartiallyPaid => 1,
            Self::Paid => 2,
        }
    }
}

/// What the invoice still owes (never negative: an over-paid invoice owes nothing).
pub fn outstanding(amount_due: i64, amount_paid: i64) -> i64 {
    amount_due.saturating_sub(amount_paid).max(0)
}

/// Whether a payment attempt of `amount` may be registered on an invoice that still owes
/// `outstanding`: more than that is refused unless the caller says the over-payment is meant.
pub fn check_attempt(amount: i64, outstanding: i64, allow_overpayment: bool) -> Result<(), String> {
    if amount <= outstanding || allow_overpayment {
        Ok(())
    } else {
        Err(format!(
            "{amount} is more than the {outstanding} the invoice still owes; set allowOverpayment to register it anyway"
        ))
    }
}

/// The invoice's totals after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvoiceTotals {
    pub amount_paid: i64,
    pub status: InvoiceStatus,
    /// Paid more than due: recorded and flagged, never silently absorbed.
    pub overpaid: bool,
}

/// Derives the totals from the collected amounts and whether the latest attempt failed.
pub fn totals(amount_due: i64, collected: &[i64], latest_attempt_failed: bool) -> InvoiceTotals {
    // Amounts are bounded (`MinorUnits::MAX`), so this cannot saturate in practice; saturating
    // rather than wrapping keeps an impossible sum from ever turning negative.
    let amount_paid = collected.iter().copied().fold(0_i64, i64::saturating_add);
    let status = if amount_paid >= amount_due {
        InvoiceStatus::Paid
    } else if amount_paid > 0 {
        InvoiceStatus::PartiallyPaid
    } else if latest_attempt_failed {
        InvoiceStatus::PaymentFailed
    } else {
        InvoiceStatus::Open
    };
    InvoiceTotals {
        amount_paid,
        status,
        overpaid: amount_paid > amount_due,
    }
}

/// What an invoice's change of status announces to subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceChange {
    Reopened,
    Paid,
    PartiallyPaid,
    PaymentFailed,
}

/// The changes an invoice's move from (`before`, `amount_paid_before`) to `after` announces.
pub fn status_events(
    before: InvoiceStatus,
    after: InvoiceTotals,
    amount_paid_before: i64,
) -> Vec<InvoiceChange> {
    let mut events = Vec::new();
    if after.amount_paid < amount_paid_before || after.status.rank() < before.rank() {
        events.push(InvoiceChange::Reopened);
    }
    match after.status {
        InvoiceStatus::Paid if before != InvoiceStatus::Paid => events.push(InvoiceChange::Paid),
        InvoiceStatus::PartiallyPaid if after.amount_paid != amount_paid_before => {
            events.push(InvoiceChange::PartiallyPaid)
        }
        InvoiceStatus::PaymentFailed if before != InvoiceStatus::PaymentFailed => {
            events.push(InvoiceChange::PaymentFailed)
        }
        _ => {}
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use InvoiceChange as C;
    use InvoiceStatus as I;

    #[test]
    fn partial_payments_add_up_to_paid() {
        assert_eq!(totals(1000, &[], false).status, I::Open);
        assert_eq!(totals(1000, &[], true).status, I::PaymentFailed);
        assert_eq!(totals(1000, &[400], true).status, I::PartiallyPaid);
        let paid = totals(1000, &[400, 600], false);
        assert_eq!(
            (paid.amount_paid, paid.status, paid.overpaid),
            (1000, I::Paid, false)
        );
        let over = totals(1000, &[400, 700], false);
        assert_eq!(
            (over.amount_paid, over.status, over.overpaid),
            (1100, I::Paid, true)
        );
    }

    #[test]
    fn an_attempt_above_what_is_owed_needs_allow_overpayment() {
        assert_eq!(outstanding(12_500, 2_500), 10_000);
        assert_eq!(outstanding(1_000, 1_500), 0, "over-paid owes nothing");
        assert!(check_attempt(10_000, 10_000, false).is_ok());
        assert!(check_attempt(999_999_999, 12_500, true).is_ok());
        assert_eq!(
            check_attempt(999_999_999, 12_500, false).unwrap_err(),
            "999999999 is more than the 12500 the invoice still owes; set allowOverpayment to register it anyway"
        );
    }

    #[test]
    fn a_zero_invoice_is_paid() {
        assert_eq!(totals(0, &[], false).status, I::Paid);
    }

    #[test]
    fn status_changes_announce_themselves() {
        assert_eq!(
            status_events(I::Open, totals(1000, &[1000], false), 0),
            [C::Paid]
        );
        assert_eq!(
            status_events(I::Open, totals(1000, &[300], false), 0),
            [C::PartiallyPaid]
        );
        assert_eq!(
            status_events(I::Open, totals(1000, &[], true), 0),
            [C::PaymentFailed]
        );
        assert_eq!(
            status_events(I::Paid, totals(1000, &[], true), 1000),
            [C::Reopened, C::PaymentFailed]
        );
        assert_eq!(
            status_events(I::Paid, totals(1000, &[], false), 1000),
            [C::Reopened]
        );
        assert!(status_events(I::Paid, totals(1000, &[1000], false), 1000).is_empty());
        assert!(status_events(I::PaymentFailed, totals(1000, &[], true), 0).is_empty());
    }
}
