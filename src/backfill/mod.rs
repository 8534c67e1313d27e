//! 7. Backfill: what the webhooks missed, recovered from the providers' own event lists and put
//!    through the same pipeline. Each listed event the inbox does not hold is published to the
//!    webhooks exchange exactly as the receiver would have published it (message id
//!    `<provider>:<event id>`, the same headers, the event's exact JSON), marked `source:
//!    backfill`, with confirms. The worker's inbox is what makes this safe to repeat: an event
//!    queued twice (a webhook arriving meanwhile, a backfill run again) is applied once.
//!
//! A *source* (`providers::source`) is one account's event list at one provider: the default account's (the keys in
//! `[stripe]` / `[gocardless]`) or a connection's (its own API key; a Stripe connection without
//! one is read with the platform's key and `Stripe-Account`). A connection's events carry its id,
//! so the worker routes them to its account as if they had come to its endpoint.
//!
//! `settle backfill` runs it on demand; the worker's `sweeper` runs it every interval.

pub mod queue;
pub mod sweeper;
pub mod verify;

pub use self::queue::{Report, run};
