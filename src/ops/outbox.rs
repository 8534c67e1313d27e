//! `settle outbox parked|retry|resend`: the reconciliation events the relay gave up on, and one
//! sent again on an operator's word. A row a
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
    /// Publish a reconciliation event again, with the same id (a subscriber that lost it gets it;
    /// one that has it drops it): exit 3 when the account has no such event.
    Resend {
        /// Its message id (`stripe:evt_…:invoice.paid`).
        message_id: String,
        /// Whose (default: the configured account).
        #[arg(long)]
        account: Option<String>,
    },
}

/// Runs `settle outbox <command>`; `resend` without `--account` for the configured account.
pub async fn run(command: Command, db: &PgPool, default_account: &str) -> anyhow::Result<u8> {
    match command {
        Command::Parked { limit, output } => parked(db, limit, output).await,
        Command::Retry { ids, all } => retry(db, &ids, all).await,
        Command::Resend {
            message_id,
            account,
        } => {
            let account = account.as_deref().unwrap_or(default_account);
            Ok(match resend(db, account, &message_id).await? {
                Resent::Queued => {
                    println!("{message_id} is on the relay's work list again");
                    EXIT_OK
                }
                Resent::Waiting => {
                    println!("{message_id} is waiting for the relay already");
                    EXIT_OK
                }
                Resent::NotFound => {
                    eprintln!("no reconciliation event {message_id} in account {account}");
                    EXIT_NOTHING_MATCHED
                }
            })
        }
    }
}

/// What a resend did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resent {
    Queued,
    /// It had not been published yet: it goes out once, as it would have.
    Waiting,
    NotFound,
}

/// Puts the account's reconciliation event back on the relay's work list and wakes the relay:
/// what `settle outbox resend` and the console's resend both run.
pub async fn resend(db: &PgPool, account: &str, message_id: &str) -> anyhow::Result<Resent> {
    let resent = match store::resend(db, account, message_id).await? {
        Some(true) => Resent::Queued,
        Some(false) => Resent::Waiting,
        None => Resent::NotFound,
    };
    if resent == Resent::Queued {
        store::notify_relay(db).await?;
    }
    Ok(resent)
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
