//! What every console handler shares.

use std::sync::Arc;

use sqlx::PgPool;

use super::limits::SignInLimits;
use crate::api::ApiState;
use crate::broker::Broker;
use crate::sealed::Keyring;
use crate::supervise::Supervisor;

#[derive(Clone)]
pub struct ConsoleState {
    /// The primary: sign-in, sessions, the audit log's writes and every action.
    pub db: PgPool,
    /// Where the pages read: a replica within its lag bound, else the primary.
    pub reads: crate::database::Reads,
    /// The API's own state: an invoice's page reads it as `GET /invoices/{id}` does.
    pub api: ApiState,
    /// Replays publish through the process's own supervised connection.
    pub broker: Broker,
    /// Seals replayed events as `settle dlq replay` does.
    pub keyring: Arc<Keyring>,
    /// The process's background tasks, for the overview.
    pub supervisor: Supervisor,
    /// `Secure` on the session cookie: off only when the admin listener is on a loopback
    /// address (a browser on the same machine, plain HTTP).
    pub secure_cookie: bool,
    pub sign_in_limits: Arc<SignInLimits>,
    /// What each webhook endpoint of this process received in the last hour.
    pub traffic: Arc<crate::ingress::traffic::Traffic>,
    /// The chart of accounts the books' exports use (`[books]`).
    pub books: Arc<crate::reconcile::book_exports::Mapping>,
}
