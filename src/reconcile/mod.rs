//! 3. The domain core, pure: the domain events provider events become (each provider's reading
//!    of its JSON is in `providers`), the payment state machine, the planner that turns one event
//!    into its effects, payouts' matcher and statuses, automatic charging's decisions (`charging`),
//!    invoice totals, payment settings and their overrides, payment-method references, money, and
//!    the books (`books`: the ledger and payouts as balanced journal entries). No
//!    axum, lapin, sqlx or tokio here: the worker reads state and writes effects, the repository
//!    holds the SQL.

pub mod book_exports;
pub mod books;
pub mod charging;
pub mod customer_merge;
pub mod dispute;
pub mod events;
pub mod invoice;
pub mod ledger;
pub mod money;
pub mod outcome;
pub mod payment;
pub mod payment_methods;
pub mod payout;
pub mod plan;
pub mod reconciliation_events;
pub mod refund;
pub mod routing;
pub mod settings;
