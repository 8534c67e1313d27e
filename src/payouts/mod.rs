//! 8. Payouts: which invoices each bank deposit pays, what the fees were, and what nothing
//!    explains.
//!
//! A payout's event, in the worker's transaction, records it (`repository::payouts::
//! record_event`): `LISTING` once its lines are final (Stripe `payout.reconciliation_completed`,
//! GoCardless `payouts.paid`). The `lister`, in every worker process and one at a time across
//! them, then lists those lines from the provider (Stripe's balance transactions, GoCardless's
//! payout items), away from any transaction since it waits on the provider's API; the pure core
//! (`reconcile::payout`) matches each to the ledger; and one transaction stores the payout whole
//! with the reconciliation event its outcome announces. `settle payouts fetch` lists the payouts
//! the events missed from the provider's payout list and puts each through the same path.
//!
//! Listing is idempotent: the lines are replaced whole, and the announcement's id is the
//! payout's and its outcome's, so a payout listed twice stores and announces nothing twice.

pub mod drift;
pub mod lister;
pub mod listing;

pub use self::listing::{FetchReport, fetch};
