//! The SQL. Every query settle runs lives here, as functions over plain types, so the API, the
//! worker, the relay, the sender and the operator tools share one way of reading and writing each
//! table. Functions take a `PgExecutor` (or a connection, when they run several statements), so
//! the same query runs on the pool or inside a caller's transaction.
//!
//! Enums of the core are stored as their names (`text_column!`); database errors are classified
//! once (`DbFailure`) for the worker's retry decision and the API's status codes alike.

pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod backfill;
pub mod books;
pub mod charges;
pub mod customer_merge;
pub mod customers;
pub mod dead_letters;
pub mod events;
pub mod inbox;
pub mod invoice_state;
pub mod invoices;
pub mod ledger;
pub mod notifications;
pub mod operators;
pub mod outbox;
pub mod payment_methods;
pub mod payments;
pub mod payouts;
pub mod retention;
pub mod rows;
pub mod settings;

use sqlx::PgExecutor;

pub use self::rows::new_id;

/// Creates the configured account if it is missing. Idempotent.
pub async fn ensure_account(db: impl PgExecutor<'_>, account_id: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO accounts (id) VALUES ($1) ON CONFLICT (id) DO NOTHING",
        account_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// One round trip: is the database there?
pub async fn ping(db: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query_scalar!("SELECT 1 AS one")
        .fetch_one(db)
        .await
        .map(|_| ())
}

/// What a database error means to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// It may pass: the database is unreachable or restarting, the pool is exhausted, a
    /// serialization failure, a deadlock, a lock or statement timeout. Worth retrying.
    Unavailable,
    /// A unique constraint refused the row (the caller may know which, and why).
    UniqueViolation,
    /// Retrying cannot help: another constraint, a decode error, an SQL error (a bug).
    Permanent,
}

/// Classifies a database error. SQLSTATE classes: 08 connection exception, 40 transaction
/// rollback (serialization failure, deadlock), 53 insufficient resources, 57 operator intervention
/// (admin shutdown, statement timeout); 55P03 lock not available.
pub fn classify(error: &sqlx::Error) -> DbFailure {
    if is_outage(error) {
        return DbFailure::Unavailable;
    }
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            if db.is_unique_violation() {
                DbFailure::UniqueViolation
            } else if ["40", "53", "57"]
                .iter()
                .any(|class| code.starts_with(class))
                || code == "55P03"
                // A table missing: the schema is not migrated yet (a process started before
                // PostgreSQL came back); it will be.
                || code == "42P01"
            {
                DbFailure::Unavailable
            } else {
                DbFailure::Permanent
            }
        }
        _ => DbFailure::Permanent,
    }
}

/// Whether `error` says the database itself is out of reach (down, restarting, refusing
/// connections, the database missing), not that this statement failed: the worker then waits for
/// it instead of spending the event's attempts. A lock or statement timeout, a deadlock or a
/// serialization failure are the event's own and are not outages.
pub fn is_outage(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            // connection exceptions; admin or crash shutdown, cannot connect now; too many
            // connections; the database does not exist (yet, or renamed away); a write on a
            // primary demoted under the session (the pool moves to the new one).
            code.starts_with("08")
                || ["57P01", "57P02", "57P03", "53300", "3D000", "25006"].contains(&code)
        }
        _ => false,
    }
}

/// Stores a core enum as its name in a `text` column (and reads it back), through its
/// `IntoStaticStr` and `FromStr` (strum derives). A stored name the enum does not know is a decode
/// error, never a silent fallback.
macro_rules! text_column {
    ($($ty:ty),* $(,)?) => {$(
        impl sqlx::Type<sqlx::Postgres> for $ty {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }
        impl sqlx::postgres::PgHasArrayType for $ty {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }
        impl sqlx::Encode<'_, sqlx::Postgres> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                let name: &'static str = (*self).into();
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(name, buf)
            }
        }
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $ty {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let name = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                name.parse()
                    .map_err(|_| format!("unknown {} `{name}`", stringify!($ty)).into())
            }
        }
    )*};
}

text_column!(
    crate::provider::Provider,
    crate::provider::PaymentProvider,
    crate::reconcile::payment::PaymentStatus,
    crate::reconcile::invoice::InvoiceStatus,
    crate::reconcile::ledger::MovementKind,
    crate::reconcile::ledger::RefundState,
    crate::reconcile::refund::RefundStatus,
    crate::reconcile::dispute::DisputeStatus,
    crate::reconcile::reconciliation_events::AmountSource,
    crate::reconcile::settings::SettingsLevel,
    crate::reconcile::payment_methods::MethodStatus,
    crate::reconcile::payment_methods::Gateway,
    crate::reconcile::money::Currency,
    crate::reconcile::payout::PayoutStatus,
    crate::reconcile::charging::ChargeState,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_that_may_pass_are_unavailable() {
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), DbFailure::Unavailable);
        assert_eq!(
            classify(&sqlx::Error::Io(
                std::io::ErrorKind::ConnectionRefused.into()
            )),
            DbFailure::Unavailable
        );
        assert_eq!(classify(&sqlx::Error::RowNotFound), DbFailure::Permanent);
        assert_eq!(
            classify(&sqlx::Error::ColumnNotFound("x".into())),
            DbFailure::Permanent
        );
    }
}
