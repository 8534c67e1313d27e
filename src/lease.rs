//! Leases: work that runs in one process at a time across a deployment. The outbox relay holds
//! one, so reconciliation events go out in commit order (an invoice's in the order they were
//! applied), as one relay would send them; the backfill sweep holds one, so no two processes
//! list the providers' events at once.
//!
//! A lease is a session-level advisory lock on a PostgreSQL session of its own, not the pool's,
//! so it lives exactly as long as that session: a process that dies lets it go with its
//! connection. With an expiry, the session also runs with `idle_session_timeout`, so a holder
//! that stops answering (SIGSTOP, a stalled host) loses the lease when PostgreSQL ends its idle
//! session, and another process takes it; the holder's every `hold` is a round trip that keeps
//! the session busy while it works.

use std::time::Duration;

use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

/// The advisory lock keys, `settle.` and a letter as eight ASCII bytes, so they collide with no
/// other user's numbers.
pub const OUTBOX_RELAY: i64 = 0x7365_7474_6c65_2e72; // "settle.r"
pub const BACKFILL_SWEEP: i64 = 0x7365_7474_6c65_2e62; // "settle.b"
pub const PAYOUT_LISTING: i64 = 0x7365_7474_6c65_2e70; // "settle.p"
pub const DRIFT_CHECK: i64 = 0x7365_7474_6c65_2e64; // "settle.d"

/// A lease's name in `settle_lease_held{lease}`.
fn name(key: i64) -> &'static str {
    match key {
        OUTBOX_RELAY => "relay",
        BACKFILL_SWEEP => "backfill_sweep",
        PAYOUT_LISTING => "payout_listing",
        DRIFT_CHECK => "drift_check",
        _ => "other",
    }
}

pub struct Lease {
    key: i64,
    /// How long an idle holder keeps the lease; `None`: as long as its session lives.
    expiry: Option<Duration>,
    session: Option<PgConnection>,
    held: bool,
}

impl Lease {
    pub fn new(key: i64, expiry: Option<Duration>) -> Self {
        Self {
            key,
            expiry,
            session: None,
            held: false,
        }
    }

    /// Whether this process holds the lease now, taking it if it is free. A database that does
    /// not answer counts as not holding it: the session is dropped, and the next call starts a
    /// new one.
    pub async fn hold(&mut self, db: &PgPool) -> bool {
        let held = self.hold_or_lose(db).await;
        metrics::gauge!(crate::telemetry::LEASE_HELD, "lease" => name(self.key))
            .set(f64::from(u8::from(held)));
        held
    }

    async fn hold_or_lose(&mut self, db: &PgPool) -> bool {
        match self.try_hold(db).await {
            Ok(held) => held,
            Err(error) => {
                if self.held {
                    tracing::warn!(%error, key = self.key, "lost a lease's session; the lease is free for another process");
                }
                self.session = None;
                self.held = false;
                false
            }
        }
    }

    async fn try_hold(&mut self, db: &PgPool) -> sqlx::Result<bool> {
        let session = match &mut self.session {
            Some(session) => session,
            None => {
                let mut session = db.connect_options().connect().await?;
                crate::database::refuse_standby(&mut session).await?;
                if let Some(expiry) = self.expiry {
                    sqlx::query(&format!(
                        "SET idle_session_timeout = {}",
                        expiry.as_millis()
                    ))
                    .execute(&mut session)
                    .await?;
                }
                self.held = false;
                self.session.insert(session)
            }
        };
        if self.held {
            // The lock is the session's: if the session still answers, it is still ours.
            sqlx::query_scalar!("SELECT 1 AS alive")
                .fetch_one(&mut *session)
                .await?;
        } else {
            self.held =
                sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "held!""#, self.key)
                    .fetch_one(&mut *session)
                    .await?;
        }
        Ok(self.held)
    }

    /// The lease's own session, while the lease is held: work done in a transaction on it is
    /// fenced by the lease. Nobody else can take the lease while that transaction is open (the
    /// session is busy, so `idle_session_timeout` does not end it), and if the session ends, the
    /// lease and the transaction's row locks go together: a new holder never starts while an old
    /// holder's pass is half done.
    pub fn session(&mut self) -> Option<&mut PgConnection> {
        if self.held {
            self.session.as_mut()
        } else {
            None
        }
    }

    /// Gives the lease up (ending its session).
    pub async fn release(mut self) {
        metrics::gauge!(crate::telemetry::LEASE_HELD, "lease" => name(self.key)).set(0.0);
        if let Some(session) = self.session.take() {
            let _ = session.close().await;
        }
    }
}
