//! The payment state machine. Providers deliver events out of order and more than once; this
//! decides, for one payment, what an event does to it. Pure: no I/O.
//!
//! Ordering: each payment keeps the provider time of the last applied event. An event older than
//! that is *stale*: recorded, never applied. An event at the same time or newer goes through the
//! transition table below, which refuses the moves that make no sense whatever the clock says
//! (a pending event never un-collects money, a chargeback is only undone by its cancellation).
//!
//! | current \ signal | Pending | Authorised | Succeeded | Failed | AttemptFailed | Canceled | ChargedBack | ChargebackCancelled | Recorded |
//! |------------------|---------|------------|-----------|--------|---------------|----------|-------------|---------------------|----------|
//! | REGISTERED       | PENDING | AUTHORISED | SUCCEEDED | FAILED | FAILED        | CANCELED | ·           | ·                   | ·        |
//! | PENDING          | PENDING | AUTHORISED | SUCCEEDED | FAILED | FAILED        | CANCELED | ·           | ·                   | ·        |
//! | AUTHORISED       | ·       | AUTHORISED⁶| SUCCEEDED⁷| FAILED | FAILED        | CANCELED⁸| ·           | ·                   | ·        |
//! | SUCCEEDED        | ·       | ·          | SUCCEEDED | FAILED¹| ·⁵            | ·        | REVERSED    | ·                   | ·        |
//! | FAILED           | PENDING²| AUTHORISED | SUCCEEDED³| FAILED | FAILED        | CANCELED | ·           | ·                   | ·        |
//! | CANCELED         | ·       | ·          | SUCCEEDED⁴| ·      | ·             | CANCELED | ·           | ·                   | ·        |
//! | REVERSED         | ·       | ·          | ·         | ·      | ·             | ·        | REVERSED    | SUCCEEDED           | ·        |
//!
//! `·` = no change (recorded only). ¹ a late failure (GoCardless `failed` after `confirmed`)
//! reopens the invoice. ² GoCardless `resubmission_requested`. ³ a Stripe PaymentIntent may fail
//! and later succeed. ⁴ money moved: a success is applied whatever came before, except after a
//! chargeback, which only `chargeback_cancelled` undoes. ⁵ a Stripe PaymentIntent that succeeded is
//! final: a failure of one of its attempts that arrives late, or stamped the same second, never
//! moves it (only refunds and disputes move its money back). ⁶ the hold's amount or expiry
//! changed (an incremental authorisation). ⁷ the capture: what was captured is collected, the
//! rest of the hold released. ⁸ the hold released, by a cancellation or its expiry: nothing was
//! collected. An authorisation after the capture, or after the release, changes nothing: Stripe
//! stamps the authorisation's events earlier, and a same-second one is the same payment's.

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Registered,
    Pending,
    /// The amount is held on the customer's card, not collected (Stripe's separate authorisation
    /// and capture): it pays nothing until captured.
    Authorised,
    Succeeded,
    Failed,
    Canceled,
    Reversed,
}

impl PaymentStatus {
    pub const ALL: [Self; 7] = [
        Self::Registered,
        Self::Pending,
        Self::Authorised,
        Self::Succeeded,
        Self::Failed,
        Self::Canceled,
        Self::Reversed,
    ];

    /// The stored and published name (`SUCCEEDED`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the payment's amount counts towards the invoice's amount paid.
    pub fn is_collected(self) -> bool {
        self == Self::Succeeded
    }
}

/// What a provider event says about a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentSignal {
    Pending,
    /// The amount is held, to be captured later (Stripe: an uncaptured charge, a PaymentIntent
    /// that requires capture).
    Authorised,
    /// Money moved: a payment collected, or a hold captured (the amount is what was captured).
    Succeeded,
    /// The payment itself failed (GoCardless `failed`, possibly late, after `confirmed`).
    Failed,
    /// One attempt at the payment failed (Stripe): the payment may still succeed, and a success
    /// stays a success.
    AttemptFailed,
    Canceled,
    ChargedBack,
    ChargebackCancelled,
    /// Worth keeping in the inbox, changes nothing (GoCardless `chargeback_settled`, …).
    Recorded,
}

impl PaymentSignal {
    /// Whether the event says a payment (or an attempt at it) failed.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::AttemptFailed)
    }

    pub const ALL: [Self; 9] = [
        Self::Pending,
        Self::Authorised,
        Self::Succeeded,
        Self::Failed,
        Self::AttemptFailed,
        Self::Canceled,
        Self::ChargedBack,
        Self::ChargebackCancelled,
        Self::Recorded,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Move to this status (it may equal the current one: a repeated failure updates its reason).
    Apply(PaymentStatus),
    /// Older than the last applied event: recorded, not applied.
    Stale,
    /// Not a transition the table allows: recorded, not applied.
    NoChange,
}

/// The transition table (see the module doc).
pub fn transition(current: PaymentStatus, signal: PaymentSignal) -> Option<PaymentStatus> {
    use PaymentSignal as S;
    use PaymentStatus as P;
    match (current, signal) {
        (_, S::Recorded) => None,
        (P::Registered | P::Pending | P::Failed, S::Pending) => Some(P::Pending),
        (P::Registered | P::Pending | P::Authorised | P::Failed, S::Authorised) => {
            Some(P::Authorised)
        }
        (P::Reversed, S::Succeeded) => None,
        (_, S::Succeeded) => Some(P::Succeeded),
        (P::Registered | P::Pending | P::Authorised | P::Succeeded | P::Failed, S::Failed) => {
            Some(P::Failed)
        }
        (P::Registered | P::Pending | P::Authorised | P::Failed, S::AttemptFailed) => {
            Some(P::Failed)
        }
        (P::Registered | P::Pending | P::Authorised | P::Failed | P::Canceled, S::Canceled) => {
            Some(P::Canceled)
        }
        (P::Succeeded | P::Reversed, S::ChargedBack) => Some(P::Reversed),
        (P::Reversed, S::ChargebackCancelled) => Some(P::Succeeded),
        _ => None,
    }
}

/// Decides what an event at `event_at` does to a payment whose last applied event was at
/// `last_event_at`.
pub fn decide(
    current: PaymentStatus,
    last_event_at: Option<DateTime<Utc>>,
    signal: PaymentSignal,
    event_at: DateTime<Utc>,
) -> Decision {
    if last_event_at.is_some_and(|last| event_at < last) {
        return Decision::Stale;
    }
    match transition(current, signal) {
        Some(next) => Decision::Apply(next),
        None => Decision::NoChange,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentSignal as S;
    use PaymentStatus as P;

    /// The table of the module doc, row by row, as data: every (state, signal) pair.
    fn expected(current: PaymentStatus, signal: PaymentSignal) -> Option<PaymentStatus> {
        let open = [
            Some(P::Pending),
            Some(P::Authorised),
            Some(P::Succeeded),
            Some(P::Failed),
            Some(P::Failed),
            Some(P::Canceled),
            None,
            None,
            None,
        ];
        let row: [Option<PaymentStatus>; 9] = match current {
            P::Registered | P::Pending | P::Failed => open,
            // As an open payment, except that a pending event never un-authorises it.
            P::Authorised => {
                let mut row = open;
                row[0] = None;
                row
            }
            P::Succeeded => [
                None,
                None,
                Some(P::Succeeded),
                Some(P::Failed),
                None,
                None,
                Some(P::Reversed),
                None,
                None,
            ],
            P::Canceled => [
                None,
                None,
                Some(P::Succeeded),
                None,
                None,
                Some(P::Canceled),
                None,
                None,
                None,
            ],
            P::Reversed => [
                None,
                None,
                None,
                None,
                None,
                None,
                Some(P::Reversed),
                Some(P::Succeeded),
                None,
            ],
        };
        let column = PaymentSignal::ALL
            .iter()
            .position(|s| *s == signal)
            .unwrap();
        row[column]
    }

    #[test]
    fn every_state_and_signal_pair_follows_the_documented_table() {
        let mut pairs = 0;
        for current in PaymentStatus::ALL {
            for signal in PaymentSignal::ALL {
                assert_eq!(
                    transition(current, signal),
                    expected(current, signal),
                    "{current:?} × {signal:?}"
                );
                pairs += 1;
            }
        }
        assert_eq!(pairs, 63);
    }

    #[test]
    fn older_events_are_stale_whatever_they_say() {
        let later = DateTime::from_timestamp(2_000, 0).unwrap();
        let earlier = DateTime::from_timestamp(1_000, 0).unwrap();
        for current in PaymentStatus::ALL {
            for signal in PaymentSignal::ALL {
                assert_eq!(
                    decide(current, Some(later), signal, earlier),
                    Decision::Stale
                );
            }
        }
    }

    #[test]
    fn same_time_or_newer_events_go_through_the_table() {
        let at = DateTime::from_timestamp(1_000, 0).unwrap();
        for last in [None, Some(at)] {
            assert_eq!(
                decide(P::Pending, last, S::Succeeded, at),
                Decision::Apply(P::Succeeded)
            );
            assert_eq!(
                decide(P::Succeeded, last, S::Pending, at),
                Decision::NoChange
            );
        }
    }

    #[test]
    fn only_succeeded_counts_as_collected() {
        for status in PaymentStatus::ALL {
            assert_eq!(status.is_collected(), status == P::Succeeded);
            assert_eq!(status.as_str().parse(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
}
