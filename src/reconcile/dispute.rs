//! The dispute state machine (Stripe disputes; GoCardless chargebacks are payment events). Pure.
//!
//! An inquiry (`warning_*`) moves no money: it is recorded and the business told. A dispute
//! (`needs_response`, `under_review`) withdraws its amount — its own, which may differ from the
//! charge's — until it is won; lost, the funds stay withdrawn and the invoice reopens. The ledger
//! holds at most one withdrawal and one reinstatement per dispute, whichever of
//! `charge.dispute.created|updated|closed|funds_withdrawn|funds_reinstated` reports them. Status
//! only moves forward:
//!
//! | current \ observed | Inquiry | InquiryClosed | Open | Won | Lost |
//! |--------------------|---------|---------------|------|-----|------|
//! | (none)             | INQUIRY | INQUIRY_CLOSED| OPEN | WON | LOST |
//! | INQUIRY            | ·       | INQUIRY_CLOSED| OPEN | WON | LOST |
//! | INQUIRY_CLOSED     | ·       | ·             | OPEN | WON | LOST |
//! | OPEN               | ·       | ·             | ·    | WON | LOST |
//! | WON, LOST          | ·       | ·             | ·    | ·   | ·    |

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum DisputeStatus {
    /// An inquiry (Stripe `warning_needs_response`, `warning_under_review`): no money held.
    Inquiry,
    /// An inquiry closed without becoming a dispute (`warning_closed`).
    InquiryClosed,
    /// Funds withdrawn, outcome pending (`needs_response`, `under_review`).
    Open,
    Won,
    Lost,
}

impl DisputeStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    fn rank(self) -> u8 {
        match self {
            Self::Inquiry => 0,
            Self::InquiryClosed => 1,
            Self::Open => 2,
            Self::Won | Self::Lost => 3,
        }
    }

    /// Whether the dispute holds (or took) the funds: a dispute, not an inquiry, not won.
    pub fn withdraws_funds(self) -> bool {
        matches!(self, Self::Open | Self::Lost)
    }

    /// Whether its outcome is pending (the invoice is `DISPUTED` meanwhile).
    pub fn is_pending(self) -> bool {
        self == Self::Open
    }

    pub fn is_inquiry(self) -> bool {
        matches!(self, Self::Inquiry | Self::InquiryClosed)
    }
}

/// The dispute's next status, when `observed` moves it (see the module doc).
pub fn transition(
    current: Option<DisputeStatus>,
    observed: DisputeStatus,
) -> Option<DisputeStatus> {
    match current {
        None => Some(observed),
        Some(current) => (observed.rank() > current.rank()).then_some(observed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DisputeStatus as D;

    #[test]
    fn every_pair_follows_the_documented_table() {
        let all = [D::Inquiry, D::InquiryClosed, D::Open, D::Won, D::Lost];
        let expected = |current: Option<D>, observed: D| -> Option<D> {
            let forward = match current {
                None => true,
                Some(D::Inquiry) => observed != D::Inquiry,
                Some(D::InquiryClosed) => matches!(observed, D::Open | D::Won | D::Lost),
                Some(D::Open) => matches!(observed, D::Won | D::Lost),
                Some(D::Won | D::Lost) => false,
            };
            forward.then_some(observed)
        };
        for current in std::iter::once(None).chain(all.map(Some)) {
            for observed in all {
                assert_eq!(
                    transition(current, observed),
                    expected(current, observed),
                    "{current:?} × {observed:?}"
                );
            }
        }
    }

    #[test]
    fn only_a_dispute_not_an_inquiry_withdraws_funds() {
        for status in D::VARIANTS {
            assert_eq!(
                status.withdraws_funds(),
                matches!(status, D::Open | D::Lost)
            );
            assert_eq!(status.as_str().parse::<D>(), Ok(*status));
        }
    }
}
