//! An invoice's figures and status follow from its ledger (`reconcile::ledger`): what was collected,
//! less what disputes hold or took, is the amount paid. So a reversal (late failure, chargeback,
//! lost dispute) reopens the invoice by itself, and a won dispute pays it again.
//!
//! | situation                                        | status                                      |
//! |--------------------------------------------------|---------------------------------------------|
//! | a dispute holds funds of a payment, outcome open | `DISPUTED`                                  |
//! | paid ≥ due (a zero invoice too)                  | `PAID` (refunds leave it paid: `refundState`)|
//! | 0 < paid < due                                   | `PARTIALLY_PAID`                            |
//! | nothing paid, the latest attempt failed          | `PAYMENT_FAILED`                            |
//! | nothing paid                                     | `OPEN`                                      |

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

use super::ledger::{RefundState, Sums};

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
    /// A dispute holds funds of one of its payments and its outcome is not known yet.
    Disputed,
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
            Self::Paid | Self::Disputed => 2,
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

/// The invoice's figures after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvoiceFigures {
    /// Collected, less what disputes and chargebacks hold or took.
    pub amount_paid: i64,
    pub amount_refunded: i64,
    /// What open disputes claim.
    pub amount_in_dispute: i64,
    pub refund_state: RefundState,
    pub status: InvoiceStatus,
    /// Paid more than due: recorded and flagged, never silently absorbed.
    pub overpaid: bool,
}

impl InvoiceFigures {
    /// Paid less refunded: what the business keeps.
    pub fn amount_net(&self) -> i64 {
        self.amount_paid - self.amount_refunded
    }
}

/// Derives the figures from the ledger's sums, what open disputes claim, and whether the latest
/// attempt failed (see the module doc's table).
pub fn figures(
    amount_due: i64,
    sums: Sums,
    amount_in_dispute: i64,
    latest_attempt_failed: bool,
) -> InvoiceFigures {
    let amount_paid = sums.paid();
    let status = if amount_in_dispute > 0 {
        InvoiceStatus::Disputed
    } else if amount_paid >= amount_due {
        InvoiceStatus::Paid
    } else if amount_paid > 0 {
        InvoiceStatus::PartiallyPaid
    } else if latest_attempt_failed {
        InvoiceStatus::PaymentFailed
    } else {
        InvoiceStatus::Open
    };
    InvoiceFigures {
        amount_paid,
        amount_refunded: sums.refunded(),
        amount_in_dispute,
        refund_state: RefundState::of(sums),
        status,
        overpaid: amount_paid > amount_due,
    }
}

/// What an invoice's change announces to subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceChange {
    Reopened,
    Paid,
    PartiallyPaid,
    PaymentFailed,
    Disputed,
    Refunded,
}

/// The changes an invoice's move from `before` to `after` announces. A dispute that opens
/// withdraws funds but is announced as `Disputed`, not as a reopening; the reopening comes if it
/// is lost.
pub fn status_events(before: &InvoiceFigures, after: &InvoiceFigures) -> Vec<InvoiceChange> {
    use InvoiceStatus as S;
    let mut events = Vec::new();
    let reopened = match (before.status, after.status) {
        (_, S::Disputed) => false,
        (S::Disputed, after) => after.rank() < S::Paid.rank(),
        _ => after.amount_paid < before.amount_paid || after.status.rank() < before.status.rank(),
    };
    if reopened {
        events.push(InvoiceChange::Reopened);
    }
    match after.status {
        S::Disputed if before.status != S::Disputed => events.push(InvoiceChange::Disputed),
        S::Paid if before.status != S::Paid => events.push(InvoiceChange::Paid),
        S::PartiallyPaid
            if after.amount_paid != before.amount_paid || before.status != S::PartiallyPaid =>
        {
            events.push(InvoiceChange::PartiallyPaid)
        }
        S::PaymentFailed if before.status != S::PaymentFailed => {
            events.push(InvoiceChange::PaymentFailed)
        }
        _ => {}
    }
    if after.amount_refunded > before.amount_refunded {
        events.push(InvoiceChange::Refunded);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use InvoiceChange as C;
    use InvoiceStatus as I;

    /// The figures of an invoice of `due` whose payments collected `collected`.
    fn totals(due: i64, collected: &[i64], latest_failed: bool) -> InvoiceFigures {
        let sums = Sums {
            collected: collected.iter().sum(),
            ..Sums::default()
        };
        figures(due, sums, 0, latest_failed)
    }

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
    fn every_row_of_the_status_table() {
        let sums = |collected, withdrawn, reinstated, refunded| Sums {
            collected,
            withdrawn,
            reinstated,
            refunded,
            ..Sums::default()
        };
        // A dispute holds funds, outcome open: disputed, whatever the sums say.
        let disputed = figures(1000, sums(1000, 1000, 0, 0), 1000, false);
        assert_eq!((disputed.status, disputed.amount_paid), (I::Disputed, 0));
        // Lost: the funds stay withdrawn and the invoice is open again (or part paid).
        assert_eq!(
            figures(1000, sums(1000, 1000, 0, 0), 0, false).status,
            I::Open
        );
        assert_eq!(
            figures(1000, sums(1500, 1000, 0, 0), 0, false).status,
            I::PartiallyPaid
        );
        assert_eq!(
            figures(1000, sums(1000, 1000, 0, 0), 0, true).status,
            I::PaymentFailed
        );
        // Won: reinstated, paid again.
        assert_eq!(
            figures(1000, sums(1000, 1000, 1000, 0), 0, false).status,
            I::Paid
        );
        // Refunded in part or in full: still paid, the refund state says how much went back.
        let partly = figures(1000, sums(1000, 0, 0, 300), 0, false);
        assert_eq!(
            (partly.status, partly.refund_state, partly.amount_net()),
            (I::Paid, RefundState::Partial, 700)
        );
        let fully = figures(1000, sums(1000, 0, 0, 1000), 0, false);
        assert_eq!(
            (fully.status, fully.refund_state),
            (I::Paid, RefundState::Full)
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
        let open = totals(1000, &[], false);
        let paid = totals(1000, &[1000], false);
        let failed = totals(1000, &[], true);
        assert_eq!(status_events(&open, &paid), [C::Paid]);
        assert_eq!(
            status_events(&open, &totals(1000, &[300], false)),
            [C::PartiallyPaid]
        );
        assert_eq!(status_events(&open, &failed), [C::PaymentFailed]);
        assert_eq!(
            status_events(&paid, &failed),
            [C::Reopened, C::PaymentFailed]
        );
        assert_eq!(status_events(&paid, &open), [C::Reopened]);
        assert!(status_events(&paid, &paid).is_empty());
        assert!(status_events(&failed, &failed).is_empty());
    }

    #[test]
    fn a_dispute_announces_itself_and_its_outcome() {
        let paid = totals(1000, &[1000], false);
        let held = Sums {
            collected: 1000,
            withdrawn: 1000,
            ..Sums::default()
        };
        let disputed = figures(1000, held, 1000, false);
        assert_eq!(status_events(&paid, &disputed), [C::Disputed]);
        let lost = figures(1000, held, 0, false);
        assert_eq!(status_events(&disputed, &lost), [C::Reopened]);
        // Lost for part of the payment: reopened, and partly paid (the amount paid did not move).
        let part = Sums {
            collected: 1000,
            withdrawn: 400,
            ..Sums::default()
        };
        let partly = figures(1000, part, 0, false);
        assert_eq!(
            status_events(&figures(1000, part, 400, false), &partly),
            [C::Reopened, C::PartiallyPaid]
        );
        assert_eq!(status_events(&disputed, &paid), [C::Paid]);
        let refunded = figures(
            1000,
            Sums {
                collected: 1000,
                refunded: 250,
                ..Sums::default()
            },
            0,
            false,
        );
        assert_eq!(status_events(&paid, &refunded), [C::Refunded]);
    }
}
