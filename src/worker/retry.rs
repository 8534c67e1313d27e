//! Where a failed delivery goes next: a retry tier, or the dead-letter queue. Pure, so the policy
//! is tested apart from RabbitMQ.

/// The next step for a delivery that failed its `attempt`-th time (1 for the first delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Republish to the retry tier at this index (its TTL is the delay).
    Retry {
        tier: usize,
    },
    DeadLetter,
}

/// A failure that may pass is retried until `max_attempts` deliveries have failed; attempt `n`
/// waits in tier `min(n, tiers)` (1-based), so later attempts wait longest. One that cannot pass is
/// dead-lettered at once.
pub fn next_step(retryable: bool, attempt: u32, max_attempts: u32, tiers: usize) -> NextStep {
    if retryable && attempt < max_attempts && tiers > 0 {
        let tier = (attempt.saturating_sub(1) as usize).min(tiers - 1);
        NextStep::Retry { tier }
    } else {
        NextStep::DeadLetter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_climb_the_tiers_then_dead_letter() {
        let steps: Vec<_> = (1..=6)
            .map(|attempt| next_step(true, attempt, 5, 3))
            .collect();
        assert_eq!(
            steps,
            [
                NextStep::Retry { tier: 0 },
                NextStep::Retry { tier: 1 },
                NextStep::Retry { tier: 2 },
                NextStep::Retry { tier: 2 },
                NextStep::DeadLetter,
                NextStep::DeadLetter,
            ]
        );
    }

    #[test]
    fn a_failure_that_cannot_pass_is_dead_lettered_at_once() {
        assert_eq!(next_step(false, 1, 5, 3), NextStep::DeadLetter);
        assert_eq!(
            next_step(true, 1, 1, 3),
            NextStep::DeadLetter,
            "one attempt allowed"
        );
    }
}
