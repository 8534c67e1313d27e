//! The SQL. Every query settle runs lives here, as functions over plain types, so the API and the
//! worker share one way of reading and writing each table. Functions take a `PgExecutor`, so the
//! same query runs on the pool or inside a caller's transaction.

pub mod customers;
pub mod invoices;
pub mod methods;
pub mod payments;
pub mod settings;

use sqlx::PgExecutor;

/// Creates the configured account if it is missing. Idempotent.
pub async fn ensure_account(db: impl PgExecutor<'_>, account_id: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO accounts (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
        .bind(account_id)
        .execute(db)
        .await?;
    Ok(())
}

/// A fresh id for rows whose id settle chooses: `<prefix>_<32 hex digits>`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}
