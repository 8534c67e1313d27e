//! What every route of the API is served with.

use std::sync::Arc;

use sqlx::PgPool;

use super::credentials::ConfiguredKey;
use crate::reconcile::settings::AccountDefaults;
use crate::worker::apply::Policy;

/// What the API needs: the database, the configured credentials and the default account. No
/// broker: the API only reads and writes PostgreSQL. Each request is served for its caller's
/// account (`extract::Caller`), never for another.
#[derive(Clone)]
pub struct ApiState {
    pub db: PgPool,
    /// Where the lists read: a replica within its lag bound, else the primary (`db`).
    pub reads: crate::database::Reads,
    /// `SETTLE_API_CREDENTIALS`: the default account's keys, as digests. Keys made with
    /// `settle api-keys create` are looked up in the database.
    pub credentials: Arc<[ConfiguredKey]>,
    /// The default (configured) account: the configured credentials' account.
    pub account_id: Arc<str>,
    /// Payment settings used when no level of an invoice sets them, the account's own included.
    pub defaults: AccountDefaults,
    /// The worker's policy: a payment's registration applies the events that waited for it, and
    /// decides as the worker would (for the caller's account: `worker::apply::policy_for`).
    pub policy: Arc<Policy>,
    pub body_limit: usize,
    /// Whether the schema is migrated: until it is, every route answers 503
    /// `migrations_pending` before touching a table (a query racing a migration can meet its
    /// locks, or a table that is not there yet).
    pub schema: tokio::sync::watch::Receiver<bool>,
}
