//! Automatic charging, pure: whether settle charges an invoice's method on file now, and when it
//! tries a failed automatic charge again (issue [charging], first part: the decisions; the
//! outbox's charge requests and the providers' calls build on them).
//!
//! An invoice is charged when its effective settings say `autoCharge` with a provider, a usable
//! method of that provider is on file, and it still owes money. A failed automatic charge is tried
//! again on the account's schedule (by default after 3, then 5, then 7 days: four attempts over
//! about two weeks, in the spirit of the providers' own retries), only while all of that still
//! holds; a new method on file brings the next attempt forward to now. Some failures are not
//! retried: a card that needs its holder to authenticate cannot be charged off-session, and a
//! provider that retries by itself (GoCardless `will_attempt_retry`) is not doubled.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

use super::plan::RetryOutlook;
use crate::provider::PaymentProvider;

/// The waits between automatic attempts: after the first failure, the first wait; and so on. An
/// invoice is attempted at most once more than there are waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    waits: Vec<Duration>,
}

impl RetrySchedule {
    /// Waits in whole days, each at least one: a schedule of zero waits charges once, never again.
    pub fn of_days(days: &[u16]) -> Result<Self, String> {
        if let Some(zero) = days.iter().position(|day| *day == 0) {
            return Err(format!(
                "retry wait {} is 0 days: each wait is at least a day",
                zero + 1
            ));
        }
        Ok(Self {
            waits: days
                .iter()
                .map(|day| Duration::days(i64::from(*day)))
                .collect(),
        })
    }

    /// The most automatic attempts an invoice gets: the first, and one after each wait.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.waits.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The wait after failed attempt `attempt` (1 for the first), if another attempt follows.
    fn wait_after(&self, attempt: u32) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        self.waits.get(index).copied()
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self {
            waits: vec![Duration::days(3), Duration::days(5), Duration::days(7)],
        }
    }
}

/// How the last automatic attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastAttempt {
    /// It failed at `at`: declined, insufficient funds, and the like.
    Failed { at: DateTime<Utc> },
    /// The card needs its holder to authenticate (Stripe `requires_action`): off-session, no retry
    /// can pass.
    NeedsAuthentication,
    /// The provider said it will retry by itself (GoCardless `will_attempt_retry`).
    ProviderRetries,
    /// Sent, and not answered yet (or answered a success its webhook has not applied): its
    /// webhook decides.
    InFlight,
    /// The provider refused the request itself (a 400): sending it again would be refused again.
    Refused,
    /// An operator stopped the invoice's automatic charging (`settle charges cancel`).
    Cancelled,
}

/// What the decision reads about one invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeFacts {
    /// What the invoice still owes, in minor units.
    pub owed: i64,
    /// The effective settings (invoice > billing schedule > customer > account).
    pub auto_charge: bool,
    pub provider: PaymentProvider,
    /// A usable method of that provider is on file, and since when.
    pub method_on_file_since: Option<DateTime<Utc>>,
    /// Automatic attempts made so far.
    pub attempts: u32,
    /// How the last one ended, if one was made.
    pub last: Option<LastAttempt>,
}

/// Why no automatic attempt follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAttempt {
    /// Nothing is owed: paid, or the rest is in flight elsewhere.
    NothingOwed,
    /// Auto-charge is off at some level.
    AutoChargeOff,
    /// No provider is chosen for the invoice.
    NoProvider,
    /// No usable method of the provider is on file.
    NoUsableMethod,
    /// The card needs its holder: a person must act (pay by the link, or authenticate).
    NeedsAuthentication,
    /// The provider retries by itself; settle does not double it.
    ProviderRetries,
    /// An attempt is in flight.
    InFlight,
    /// Every attempt of the schedule was made.
    ScheduleExhausted,
    /// The provider refused the last request itself.
    Refused,
    /// An operator cancelled the invoice's automatic charging.
    Cancelled,
}

impl NoAttempt {
    /// Its name in stored reasons, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NothingOwed => "nothing_owed",
            Self::AutoChargeOff => "auto_charge_off",
            Self::NoProvider => "no_provider",
            Self::NoUsableMethod => "no_usable_method",
            Self::NeedsAuthentication => "needs_authentication",
            Self::ProviderRetries => "provider_retries",
            Self::InFlight => "in_flight",
            Self::ScheduleExhausted => "schedule_exhausted",
            Self::Refused => "refused",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The next automatic attempt of an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextAttempt {
    /// Attempt `number` (1 for the first) is due now.
    Now {
        number: u32,
    },
    /// Attempt `number` is due at `at`.
    At {
        number: u32,
        at: DateTime<Utc>,
    },
    None(NoAttempt),
}

/// When the invoice is next charged automatically, as of `now`.
pub fn next_attempt(
    facts: &ChargeFacts,
    schedule: &RetrySchedule,
    now: DateTime<Utc>,
) -> NextAttempt {
    use NextAttempt::{At, None as Stop, Now};
    if facts.owed <= 0 {
        return Stop(NoAttempt::NothingOwed);
    }
    if !facts.auto_charge {
        return Stop(NoAttempt::AutoChargeOff);
    }
    if facts.provider == PaymentProvider::None {
        return Stop(NoAttempt::NoProvider);
    }
    let Some(method_since) = facts.method_on_file_since else {
        return Stop(NoAttempt::NoUsableMethod);
    };
    let number = facts.attempts.saturating_add(1);
    let failed_at = match facts.last {
        None => return Now { number },
        Some(LastAttempt::InFlight) => return Stop(NoAttempt::InFlight),
        Some(LastAttempt::NeedsAuthentication) => return Stop(NoAttempt::NeedsAuthentication),
        Some(LastAttempt::ProviderRetries) => return Stop(NoAttempt::ProviderRetries),
        Some(LastAttempt::Refused) => return Stop(NoAttempt::Refused),
        Some(LastAttempt::Cancelled) => return Stop(NoAttempt::Cancelled),
        Some(LastAttempt::Failed { at }) => at,
    };
    // A payment the billing system made that failed (no automatic attempt yet) waits the first
    // wait, as the first automatic attempt's failure would.
    let Some(wait) = schedule.wait_after(facts.attempts.max(1)) else {
        return Stop(NoAttempt::ScheduleExhausted);
    };
    // A method put on file after the failure is a new chance: tried now, not after the wait.
    let due = if method_since > failed_at {
        now
    } else {
        failed_at + wait
    };
    if due <= now {
        Now { number }
    } else {
        At { number, at: due }
    }
}

/// What the mail about a failed payment says of the next attempt, and its time when one follows.
pub fn outlook(next: NextAttempt, now: DateTime<Utc>) -> (RetryOutlook, Option<DateTime<Utc>>) {
    match next {
        NextAttempt::Now { .. } => (RetryOutlook::RetryWithMethodOnFile, Some(now)),
        NextAttempt::At { at, .. } => (RetryOutlook::RetryWithMethodOnFile, Some(at)),
        NextAttempt::None(why) => (
            match why {
                NoAttempt::NothingOwed | NoAttempt::InFlight => RetryOutlook::PaymentInFlight,
                NoAttempt::AutoChargeOff | NoAttempt::NoProvider => RetryOutlook::AutoChargeOff,
                NoAttempt::NoUsableMethod => RetryOutlook::NoUsableMethod,
                NoAttempt::NeedsAuthentication => RetryOutlook::NeedsAuthentication,
                NoAttempt::ProviderRetries => RetryOutlook::ProviderRetries,
                NoAttempt::ScheduleExhausted => RetryOutlook::AttemptsExhausted,
                NoAttempt::Refused => RetryOutlook::ChargeRefused,
                NoAttempt::Cancelled => RetryOutlook::ChargingCancelled,
            },
            None,
        ),
    }
}

/// Where one automatic attempt is (`charges.state`; the migration says what each means).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum ChargeState {
    Scheduled,
    Sending,
    Sent,
    Succeeded,
    Failed,
    NeedsAuthentication,
    ProviderRetries,
    Refused,
    Skipped,
    Cancelled,
}

impl ChargeState {
    /// Sent (or being sent): counts against the schedule.
    pub fn is_attempt(self) -> bool {
        !matches!(self, Self::Scheduled | Self::Skipped | Self::Cancelled)
    }

    /// Decided and not sent yet, or being sent: the invoice's one open attempt.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Scheduled | Self::Sending)
    }
}

/// An invoice's attempts so far, as the schedule reads them: how many were made, and how the
/// last one (or an operator's cancellation) ended. `rows`: (state, when it ended), in number
/// order.
pub fn history(
    rows: impl IntoIterator<Item = (ChargeState, Option<DateTime<Utc>>)>,
) -> (u32, Option<LastAttempt>) {
    let mut attempts = 0u32;
    let mut last = None;
    for (state, ended_at) in rows {
        if state.is_attempt() {
            attempts = attempts.saturating_add(1);
        }
        last = match state {
            ChargeState::Scheduled | ChargeState::Skipped => last,
            // A success stays in flight until its webhook moves the invoice's figures: the
            // figures, not the attempt, say nothing is owed.
            ChargeState::Sending | ChargeState::Sent | ChargeState::Succeeded => {
                Some(LastAttempt::InFlight)
            }
            ChargeState::Failed => Some(LastAttempt::Failed {
                at: ended_at.unwrap_or(DateTime::<Utc>::MIN_UTC),
            }),
            ChargeState::NeedsAuthentication => Some(LastAttempt::NeedsAuthentication),
            ChargeState::ProviderRetries => Some(LastAttempt::ProviderRetries),
            ChargeState::Refused => Some(LastAttempt::Refused),
            ChargeState::Cancelled => Some(LastAttempt::Cancelled),
        };
    }
    (attempts, last)
}

/// The idempotency key of automatic attempt `number` of an invoice: the same for every send of
/// that attempt (a crash, a redelivery, two workers), so the provider creates one payment. A
/// digest of the three, so that it fits the providers' bounds (Stripe's keys, 255 characters;
/// GoCardless's metadata values, which carry it back in webhooks) whatever the ids' lengths.
pub fn idempotency_key(account_id: &str, invoice_id: &str, number: u32) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(account_id)
        .chain_update([0])
        .chain_update(invoice_id)
        .chain_update([0])
        .chain_update(number.to_be_bytes())
        .finalize();
    format!("settle-charge-{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn facts() -> ChargeFacts {
        ChargeFacts {
            owed: 12_500,
            auto_charge: true,
            provider: PaymentProvider::Stripe,
            method_on_file_since: Some(at(-DAY)),
            attempts: 0,
            last: None,
        }
    }

    #[test]
    fn an_invoice_is_charged_at_once_only_when_every_condition_holds() {
        let schedule = RetrySchedule::default();
        let now = at(0);
        assert_eq!(
            next_attempt(&facts(), &schedule, now),
            NextAttempt::Now { number: 1 }
        );
        type Change = fn(&mut ChargeFacts);
        let cases: [(Change, NoAttempt); 4] = [
            (|f| f.owed = 0, NoAttempt::NothingOwed),
            (|f| f.auto_charge = false, NoAttempt::AutoChargeOff),
            (
                |f| f.provider = PaymentProvider::None,
                NoAttempt::NoProvider,
            ),
            (|f| f.method_on_file_since = None, NoAttempt::NoUsableMethod),
        ];
        for (change, why) in cases {
            let mut changed = facts();
            change(&mut changed);
            assert_eq!(
                next_attempt(&changed, &schedule, now),
                NextAttempt::None(why)
            );
        }
    }

    #[test]
    fn a_failed_charge_is_retried_after_each_wait_until_the_schedule_ends() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.attempts(), 4);
        // (attempts made, failed at, now) → next
        let cases = [
            (
                1,
                0,
                DAY,
                NextAttempt::At {
                    number: 2,
                    at: at(3 * DAY),
                },
            ),
            (1, 0, 3 * DAY, NextAttempt::Now { number: 2 }),
            (
                2,
                3 * DAY,
                4 * DAY,
                NextAttempt::At {
                    number: 3,
                    at: at(8 * DAY),
                },
            ),
            (
                3,
                8 * DAY,
                9 * DAY,
                NextAttempt::At {
                    number: 4,
                    at: at(15 * DAY),
                },
            ),
            (
                4,
                15 * DAY,
                30 * DAY,
                NextAttempt::None(NoAttempt::ScheduleExhausted),
            ),
        ];
        for (attempts, failed, now, expected) in cases {
            let state = ChargeFacts {
                attempts,
                last: Some(LastAttempt::Failed { at: at(failed) }),
                ..facts()
            };
            assert_eq!(
                next_attempt(&state, &schedule, at(now)),
                expected,
                "{attempts}"
            );
        }
    }

    #[test]
    fn a_new_method_on_file_brings_the_retry_forward_and_some_failures_stop_retries() {
        let schedule = RetrySchedule::default();
        let failed = ChargeFacts {
            attempts: 1,
            last: Some(LastAttempt::Failed { at: at(0) }),
            method_on_file_since: Some(at(DAY)),
            ..facts()
        };
        assert_eq!(
            next_attempt(&failed, &schedule, at(DAY)),
            NextAttempt::Now { number: 2 }
        );
        for (last, why) in [
            (
                LastAttempt::NeedsAuthentication,
                NoAttempt::NeedsAuthentication,
            ),
            (LastAttempt::ProviderRetries, NoAttempt::ProviderRetries),
            (LastAttempt::InFlight, NoAttempt::InFlight),
            (LastAttempt::Refused, NoAttempt::Refused),
            (LastAttempt::Cancelled, NoAttempt::Cancelled),
        ] {
            let state = ChargeFacts {
                attempts: 1,
                last: Some(last),
                ..facts()
            };
            assert_eq!(
                next_attempt(&state, &schedule, at(DAY)),
                NextAttempt::None(why)
            );
        }
        // A payment the billing system made failed: the first automatic attempt waits the first
        // wait.
        let theirs = ChargeFacts {
            attempts: 0,
            last: Some(LastAttempt::Failed { at: at(0) }),
            ..facts()
        };
        assert_eq!(
            next_attempt(&theirs, &schedule, at(DAY)),
            NextAttempt::At {
                number: 1,
                at: at(3 * DAY)
            }
        );
        // Turning auto-charge off stops the attempts not yet made.
        let off = ChargeFacts {
            auto_charge: false,
            ..failed
        };
        assert_eq!(
            next_attempt(&off, &schedule, at(DAY)),
            NextAttempt::None(NoAttempt::AutoChargeOff)
        );
    }

    #[test]
    fn the_history_counts_attempts_made_and_reads_the_last_ending() {
        use ChargeState as C;
        let failed = Some(at(0));
        assert_eq!(history([]), (0, None));
        assert_eq!(
            history([(C::Failed, failed), (C::Scheduled, None)]),
            (1, Some(LastAttempt::Failed { at: at(0) }))
        );
        // Skipped is no attempt and leaves the last ending as it was.
        assert_eq!(
            history([(C::Failed, failed), (C::Skipped, None)]),
            (1, Some(LastAttempt::Failed { at: at(0) }))
        );
        assert_eq!(
            history([(C::Failed, failed), (C::Succeeded, Some(at(DAY)))]),
            (2, Some(LastAttempt::InFlight))
        );
        assert_eq!(
            history([(C::Failed, failed), (C::Cancelled, None)]),
            (1, Some(LastAttempt::Cancelled))
        );
    }

    #[test]
    fn the_mail_names_the_next_attempt_or_why_none_follows() {
        let next = NextAttempt::At {
            number: 2,
            at: at(3 * DAY),
        };
        assert_eq!(
            outlook(next, at(0)),
            (RetryOutlook::RetryWithMethodOnFile, Some(at(3 * DAY)))
        );
        assert_eq!(
            outlook(NextAttempt::None(NoAttempt::ScheduleExhausted), at(0)),
            (RetryOutlook::AttemptsExhausted, None)
        );
        assert_eq!(
            outlook(NextAttempt::None(NoAttempt::NeedsAuthentication), at(0)).0,
            RetryOutlook::NeedsAuthentication
        );
    }

    #[test]
    fn schedules_are_whole_days_and_keys_are_one_per_attempt() {
        assert_eq!(RetrySchedule::of_days(&[]).unwrap().attempts(), 1);
        assert!(
            RetrySchedule::of_days(&[2, 0])
                .unwrap_err()
                .contains("wait 2")
        );
        assert_eq!(
            RetrySchedule::of_days(&[3, 5, 7]).unwrap(),
            RetrySchedule::default()
        );
        let key = idempotency_key("acc_1", "inv_1", 2);
        assert_eq!(key, idempotency_key("acc_1", "inv_1", 2));
        assert!(
            key.starts_with("settle-charge-") && key.len() == 46,
            "{key}"
        );
        // The separators keep `a`+`b/c` and `a/b`+`c` apart.
        assert_ne!(
            idempotency_key("acc_1", "inv_12", 2),
            idempotency_key("acc_1i", "nv_12", 2)
        );
        assert_ne!(
            idempotency_key("acc_1", "inv_1", 1),
            idempotency_key("acc_1", "inv_1", 2)
        );
    }
}
