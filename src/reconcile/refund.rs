//! The refund state machine: what an event says about one refund, and when its money moves.
//! Pure.
//!
//! A refund counts (`REFUNDED` in the ledger) from the moment it is issued, pending or succeeded:
//! that is when the provider takes it from the balance. It is reversed (`REFUND_REVERSED`) when it
//! fails, is canceled or bounces, even after it succeeded: the provider gives the money back. A
//! refund first seen as failed never moved money. Status only moves forward:
//!
//! | current \ observed | Pending  | Succeeded | Failed | Canceled |
//! |--------------------|----------|-----------|--------|----------|
//! | (none), REGISTERED | PENDING  | SUCCEEDED | FAILED | CANCELED |
//! | PENDING            | ·        | SUCCEEDED | FAILED | CANCELED |
//! | SUCCEEDED          | ·        | ·         | FAILED | CANCELED |
//! | FAILED, CANCELED   | ·        | ·         | ·      | ·        |

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    /// Registered by the billing system; no provider event yet.
    Registered,
    Pending,
    Succeeded,
    Failed,
    Canceled,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    fn rank(self) -> u8 {
        match self {
            Self::Registered => 0,
            Self::Pending => 1,
            Self::Succeeded => 2,
            Self::Failed | Self::Canceled => 3,
        }
    }

    /// Issued: the money left the balance.
    pub fn is_issued(self) -> bool {
        matches!(self, Self::Pending | Self::Succeeded)
    }

    /// Failed or canceled: the money, if it left, came back.
    pub fn is_reversed(self) -> bool {
        matches!(self, Self::Failed | Self::Canceled)
    }
}

/// The refund's next status, when `observed` moves it (see the module doc).
pub fn transition(current: Option<RefundStatus>, observed: RefundStatus) -> Option<RefundStatus> {
    let current = current.unwrap_or(RefundStatus::Registered);
    (observed.rank() > current.rank()).then_some(observed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RefundStatus as R;

    #[test]
    fn every_pair_follows_the_documented_table() {
        let observed = [R::Pending, R::Succeeded, R::Failed, R::Canceled];
        let table: [(Option<R>, [Option<R>; 4]); 6] = [
            (None, observed.map(Some)),
            (Some(R::Registered), observed.map(Some)),
            (
                Some(R::Pending),
                [None, Some(R::Succeeded), Some(R::Failed), Some(R::Canceled)],
            ),
            (
                Some(R::Succeeded),
                [None, None, Some(R::Failed), Some(R::Canceled)],
            ),
            (Some(R::Failed), [None; 4]),
            (Some(R::Canceled), [None; 4]),
        ];
        for (current, row) in table {
            for (observed, expected) in observed.iter().zip(row) {
                assert_eq!(
                    transition(current, *observed),
                    expected,
                    "{current:?} × {observed:?}"
                );
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for status in R::VARIANTS {
            assert_eq!(status.as_str().parse::<R>(), Ok(*status));
        }
    }
}
