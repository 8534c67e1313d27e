//! Provider events for the tests, and the signatures the receiver checks.
//!
//! The builders (`StripeEvent`, `GoCardlessEvent`, `gocardless_batch`) live in
//! `tests/fixtures/events.rs`, shared with the unit tests in `src/`; this adds what only the
//! integration tests need.

use secrecy::SecretString;

use super::{GOCARDLESS_SECRET, STRIPE_SECRET};

#[path = "../../fixtures/events.rs"]
mod events;

pub use events::*;

pub fn stripe_signature(body: &[u8], timestamp: i64) -> String {
    settle::providers::stripe::sign(&SecretString::from(STRIPE_SECRET), timestamp, body)
}

pub fn gocardless_signature(body: &[u8]) -> String {
    settle::providers::gocardless::sign(&SecretString::from(GOCARDLESS_SECRET), body)
}

/// The body of a Stripe event `id` of `event_type` created now, carrying Stripe's example object
/// unchanged: for tests of the receiver, which only needs a well-formed, signed event.
pub fn stripe_event(event_type: &str, id: &str) -> Vec<u8> {
    StripeEvent::new(event_type, id)
        .created(chrono::Utc::now().timestamp())
        .to_bytes()
}
