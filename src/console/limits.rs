//! How often anyone may try to sign in to the console.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Sign-in attempts per operator name a minute, and for all names together.
const ATTEMPTS_PER_NAME: u32 = 5;
const ATTEMPTS_IN_ALL: u32 = 60;
/// Names tracked by the per-name limiter before the idle ones are forgotten.
const TRACKED_NAMES: usize = 10_000;

/// How often anyone may try to sign in. Every attempt counts, so guessing is slow whatever the
/// answers; an operator who mistypes a few times waits a minute.
pub struct SignInLimits {
    per_name: DefaultKeyedRateLimiter<String>,
    in_all: DefaultDirectRateLimiter,
}

impl Default for SignInLimits {
    fn default() -> Self {
        let per_minute = |n| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Self {
            per_name: RateLimiter::keyed(per_minute(ATTEMPTS_PER_NAME)),
            in_all: RateLimiter::direct(per_minute(ATTEMPTS_IN_ALL)),
        }
    }
}

impl SignInLimits {
    pub fn admit(&self, name: &str) -> bool {
        if self.per_name.len() > TRACKED_NAMES {
            self.per_name.retain_recent();
        }
        self.in_all.check().is_ok() && self.per_name.check_key(&name.to_owned()).is_ok()
    }
}
