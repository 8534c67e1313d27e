//! The ledger: every movement of an invoice's money, and the figures derived from it. Pure.
//!
//! A movement is keyed by the provider's own money object (`MovementKey`): the payment for a
//! collection, its reversal and a GoCardless chargeback; the refund for a refund and its reversal;
//! the dispute for the funds it withdrew or reinstated. The planners add a movement only when the
//! state of its object says the money moved and the ledger does not hold that key yet, so the same
//! money reported by several events (or several event types) is counted once; the table's unique
//! key refuses a second row whatever code writes it.
//!
//! | kind                 | sign on paid | on refunded | recorded when                                           |
//! |----------------------|--------------|-------------|---------------------------------------------------------|
//! | `COLLECTED`          | +            |             | a payment becomes succeeded                             |
//! | `COLLECTION_REVERSED`| −            |             | a succeeded payment fails late (GoCardless)             |
//! | `REFUNDED`           |              | +           | a refund is issued (pending or succeeded)               |
//! | `REFUND_REVERSED`    |              | −           | an issued refund fails, is canceled or bounces          |
//! | `DISPUTE_WITHDRAWN`  | −            |             | a dispute or chargeback takes the funds                 |
//! | `DISPUTE_REINSTATED` | +            |             | a dispute is won, a chargeback cancelled                |

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

use crate::provider::Provider;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum MovementKind {
    Collected,
    CollectionReversed,
    Refunded,
    RefundReversed,
    DisputeWithdrawn,
    DisputeReinstated,
}

impl MovementKind {
    /// The stored and published name (`DISPUTE_WITHDRAWN`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One movement of money, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// The settle payment the money belongs to.
    pub payment_id: String,
    pub provider: Provider,
    /// The provider's money object: payment, refund or dispute id.
    pub provider_object_id: String,
    pub kind: MovementKind,
    /// The n-th movement of this kind on this object (see the migration: a repeat is rare).
    pub seq: i32,
    pub amount: i64,
    /// Where the amount came from (`AmountSource` names).
    pub amount_source: &'static str,
}

impl Movement {
    /// Whether this is a movement of `kind` on `object`.
    pub fn is(&self, provider: Provider, object: &str, kind: MovementKind) -> bool {
        self.provider == provider && self.provider_object_id == object && self.kind == kind
    }
}

/// The ledger of one invoice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    pub movements: Vec<Movement>,
}

impl Ledger {
    /// How many movements of `kind` the ledger holds for `object`.
    pub fn count(&self, provider: Provider, object: &str, kind: MovementKind) -> i32 {
        let count = self
            .movements
            .iter()
            .filter(|m| m.is(provider, object, kind))
            .count();
        i32::try_from(count).unwrap_or(i32::MAX)
    }

    /// The first movement of `kind` on `object`.
    pub fn find(&self, provider: Provider, object: &str, kind: MovementKind) -> Option<&Movement> {
        self.movements.iter().find(|m| m.is(provider, object, kind))
    }

    /// Whether the ledger holds a movement of `kind` for `object`.
    pub fn has(&self, provider: Provider, object: &str, kind: MovementKind) -> bool {
        self.count(provider, object, kind) > 0
    }

    /// A new movement of `kind` on `object`, numbered after the ones already there.
    pub fn next(
        &self,
        payment_id: &str,
        provider: Provider,
        object: &str,
        kind: MovementKind,
        amount: i64,
        amount_source: &'static str,
    ) -> Movement {
        Movement {
            payment_id: payment_id.to_owned(),
            provider,
            provider_object_id: object.to_owned(),
            kind,
            seq: self.count(provider, object, kind) + 1,
            amount,
            amount_source,
        }
    }

    /// The sums of one payment's movements (`None`: of the whole invoice).
    pub fn sums(&self, payment_id: Option<&str>) -> Sums {
        Sums::of(
            self.movements
                .iter()
                .filter(|m| payment_id.is_none_or(|id| id == m.payment_id))
                .map(|m| (m.kind, m.amount)),
        )
    }
}

/// The ledger's sums by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    pub collected: i64,
    pub collection_reversed: i64,
    pub refunded: i64,
    pub refund_reversed: i64,
    pub withdrawn: i64,
    pub reinstated: i64,
}

impl Sums {
    /// The sums of movements given as (kind, amount).
    pub fn of(movements: impl IntoIterator<Item = (MovementKind, i64)>) -> Self {
        let mut sums = Self::default();
        for (kind, amount) in movements {
            let field = match kind {
                MovementKind::Collected => &mut sums.collected,
                MovementKind::CollectionReversed => &mut sums.collection_reversed,
                MovementKind::Refunded => &mut sums.refunded,
                MovementKind::RefundReversed => &mut sums.refund_reversed,
                MovementKind::DisputeWithdrawn => &mut sums.withdrawn,
                MovementKind::DisputeReinstated => &mut sums.reinstated,
            };
            // Amounts are bounded (`MinorUnits::MAX`); saturating keeps an impossible sum sane.
            *field = field.saturating_add(amount);
        }
        sums
    }

    /// Collected and not reversed: what the customer paid, before disputes.
    pub fn collected_net(self) -> i64 {
        (self.collected - self.collection_reversed).max(0)
    }

    /// What disputes and chargebacks currently hold or took.
    pub fn held_by_disputes(self) -> i64 {
        (self.withdrawn - self.reinstated).max(0)
    }

    /// Collected, less what disputes and chargebacks hold or took.
    pub fn paid(self) -> i64 {
        (self.collected_net() - self.held_by_disputes()).max(0)
    }

    /// Refunded and not reversed.
    pub fn refunded(self) -> i64 {
        (self.refunded - self.refund_reversed).max(0)
    }

    /// What is left to refund of what was paid.
    pub fn refundable(self) -> i64 {
        (self.paid() - self.refunded()).max(0)
    }
}

/// How much of what was paid has been refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundState {
    None,
    Partial,
    Full,
}

impl RefundState {
    pub fn of(sums: Sums) -> Self {
        match sums.refunded() {
            0 => Self::None,
            refunded if refunded >= sums.collected_net() => Self::Full,
            _ => Self::Partial,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MovementKind as K;

    fn ledger(rows: &[(&str, &str, MovementKind, i64)]) -> Ledger {
        let mut ledger = Ledger::default();
        for (payment, object, kind, amount) in rows {
            let movement = ledger.next(payment, Provider::Stripe, object, *kind, *amount, "event");
            ledger.movements.push(movement);
        }
        ledger
    }

    #[test]
    fn sums_follow_the_table_of_signs() {
        let ledger = ledger(&[
            ("pay_1", "pi_1", K::Collected, 1000),
            ("pay_1", "re_1", K::Refunded, 300),
            ("pay_1", "re_2", K::Refunded, 200),
            ("pay_1", "re_2", K::RefundReversed, 200),
            ("pay_1", "dp_1", K::DisputeWithdrawn, 700),
            ("pay_2", "pi_2", K::Collected, 500),
            ("pay_2", "pi_2", K::CollectionReversed, 500),
        ]);
        let all = ledger.sums(None);
        assert_eq!(all.collected_net(), 1000);
        assert_eq!(all.held_by_disputes(), 700);
        assert_eq!(all.paid(), 300);
        assert_eq!(all.refunded(), 300);
        assert_eq!(all.refundable(), 0);
        assert_eq!(RefundState::of(all), RefundState::Partial);
        let second = ledger.sums(Some("pay_2"));
        assert_eq!((second.paid(), second.refunded()), (0, 0));
        assert_eq!(RefundState::of(second), RefundState::None);
    }

    #[test]
    fn a_repeat_of_one_kind_on_one_object_is_numbered() {
        let ledger = ledger(&[
            ("pay_1", "PM1", K::Collected, 1000),
            ("pay_1", "PM1", K::CollectionReversed, 1000),
        ]);
        let again = ledger.next(
            "pay_1",
            Provider::Stripe,
            "PM1",
            K::Collected,
            1000,
            "event",
        );
        assert_eq!(again.seq, 2);
        assert!(ledger.has(Provider::Stripe, "PM1", K::Collected));
        assert!(!ledger.has(Provider::GoCardless, "PM1", K::Collected));
    }

    #[test]
    fn a_full_refund_is_full() {
        let ledger = ledger(&[
            ("pay_1", "pi_1", K::Collected, 1000),
            ("pay_1", "re_1", K::Refunded, 400),
            ("pay_1", "re_2", K::Refunded, 600),
        ]);
        assert_eq!(RefundState::of(ledger.sums(None)), RefundState::Full);
    }

    #[test]
    fn names_round_trip() {
        for kind in MovementKind::VARIANTS {
            assert_eq!(kind.as_str().parse::<MovementKind>(), Ok(*kind));
        }
    }
}
