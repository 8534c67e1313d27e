//! `settle outbox parked|retry`: the reconciliation events the relay gave up on. A row a
//! subscriber's queue kept refusing (full, with `reject-publish`), or that the broker never
//! confirmed, is parked after its last attempt so it stops holding up the others
//! (`worker.outbox_max_attempts`); once the subscriber is fixed, `retry` puts it back on the relay's
//! work list with its attempts reset.

use sqlx::PgPool;

use super::shared::{EXIT_NOTHING_MATCHED, EXIT_OK, Output, left, print_table, right};
use crate::repository::outbox as store;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the parked events, oldest first (exit 3 when there is none).
    Parked {
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Put parked events back on the relay's work list, their attempts reset.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "all"])))]
    Retry {
        /// Outbox row ids (`settle outbox parked`).
        ids: Vec<i64>,
        /// Every parked event.
        #[arg(long)]
        all: bool,
    },
}

/// Runs `settle outbox <command>`.
pub async fn run(command: Command, db: &PgPool) -> anyhow::Result<u8> {
    match command {
        Command::Parked { limit, output } => parked(db, limit, output).await,
        Command::Retry { ids, all } => retry(db, &ids, all).await,
    }
}

pub async fn parked(db: &PgPool, limit: i64, output: Output) -> anyhow::Result<u8> {
    let rows = store::parked(db, limit).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Table => {
            let columns = [
                right("id"),
                left("account"),
                left("type"),
                right("attempts"),
                left("created at"),
                left("message id"),
                left("reason"),
            ];
            print_table(
                &columns,
                rows.iter().map(|row| {
                    vec![
                        row.id.to_string(),
                        row.account_id.clone(),
                        row.routing_key.clone(),
                        row.attempts.to_string(),
                        row.created_at.to_rfc3339(),
                        row.message_id.clone(),
                        row.reason.clone(),
                    ]
                }),
            );
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
