//! `settle outbox parked|retry`: the reconciliation events the relay gave up on. A row a
//! subscriber's queue kept refusing (full, with `reject-publish`), or that the broker never
//! confirmed, is parked after its last attempt so it stops holding up the others
//! (`worker.outbox_max_attempts`); once the subscriber is fixed, `retry` puts it back on the relay's
//! work list with its attempts reset.

use sqlx::PgPool;

use super::shared::{EXIT_NOTHING_MATCHED, EXIT_OK, Output};
use crate::repository::outbox as store;

pub async fn parked(db: &PgPool, limit: i64, output: Output) -> anyhow::Result<u8> {
    let rows = store::parked(db, limit).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Table => {
            println!(
                "{:>10}  {:<20}  {:<28}  {:>8}  {:<25}  message id / reason",
                "id", "account", "type", "attempts", "created at"
            );
            for row in &rows {
                println!(
                    "{:>10}  {:<20}  {:<28}  {:>8}  {:<25}  {}\n{:>10}  {}",
                    row.id,
                    row.account_id,
                    row.routing_key,
                    row.attempts,
                    row.created_at.to_rfc3339(),
                    row.message_id,
                    "",
                    row.reason
                );
            }
        }
    }
    Ok(super::shared::listed(&rows))
}

pub async fn retry(db: &PgPool, ids: &[i64], all: bool) -> anyhow::Result<u8> {
    let which = if all { None } else { Some(ids) };
    let retried = store::unpark(db, which).await?;
    if retried == 0 {
        eprintln!("no parked reconciliation event matched");
        return Ok(EXIT_NOTHING_MATCHED);
    }
    println!("{retried} parked reconciliation events back on the relay's work list");
    Ok(EXIT_OK)
}
