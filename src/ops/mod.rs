//! Operator commands: `settle accounts …`, `settle connections …`, `settle api-keys …`,
//! `settle dlq …`, `settle events replay`, `settle operators …`, `settle outbox …`, `settle payouts …` and `settle charges …`. Each is a function over the
//! database and the broker that returns an exit code: 0 done, 3 nothing matched, 4 partly failed.
//! `main` adds 1 for any other failure (the database or the broker unreachable, …) and 2 for a
//! usage or configuration error (clap's own convention).

pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod backfill;
pub mod books;
pub mod charges;
pub mod dlq;
pub mod events;
pub mod operators;
pub mod outbox;
pub mod payouts;
pub mod secret_input;
pub mod shared;
pub mod unmatched;

pub use self::shared::{
    EXIT_NOTHING_MATCHED, EXIT_OK, EXIT_PARTLY_FAILED, Output, connect_broker, listed,
    parse_duration, parse_provider, parse_since, sources_exit,
};
