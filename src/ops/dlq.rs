//! `settle dlq list|show|replay|purge`: dead letters as the DLQ consumer copied them into the
//! `dead_letters` table.
//!
//! Replay republishes each dead letter to the work queue with confirms and only then marks it
//! replayed: an interrupted replay never loses a message, at worst it sends one twice, which the
//! worker's inbox absorbs.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::shared::parse_duration;
use super::shared::{
    EXIT_NOTHING_MATCHED, EXIT_OK, EXIT_PARTLY_FAILED, Output, left, or_dash, print_table, right,
};
use crate::broker::Broker;
use crate::config::Settings;
use crate::envelope::QueuedEvent;
use crate::repository::dead_letters::{self as store, DeadLetter, Selection};
use clap::Subcommand;

/// Which dead letters a command applies to.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Filters {
    /// Only this provider (stripe or gocardless).
    #[arg(long, value_parser = super::shared::parse_provider)]
    pub provider: Option<crate::provider::Provider>,
    /// Only this reason (invoice_not_found, currency_mismatch, unparseable, …).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only those dead-lettered since: an RFC 3339 time or a duration back from now (24h, 7d).
    #[arg(long, value_parser = super::shared::parse_since)]
    pub since: Option<DateTime<Utc>>,
}

impl Filters {
    fn selection<'a>(&'a self, ids: &'a [i64], limit: i64) -> Selection<'a> {
        Selection {
            ids,
            provider: self.provider.map(crate::provider::Provider::wire_name),
            reason: self.reason.as_deref(),
            since: self.since,
            not_replayed: false,
            limit,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List dead letters (exit 3 when none match).
    List {
        #[command(flatten)]
        filters: Filters,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one dead letter with its payload and failure history.
    Show { id: i64 },
    /// Republish dead letters to the work queue, with confirms, then mark them replayed.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "all", "reason"])))]
    Replay {
        /// Dead-letter ids.
        ids: Vec<i64>,
        /// Every dead letter matching the filters that was not replayed yet (implied by
        /// --reason alone: `replay --reason unknown_account`).
        #[arg(long)]
        all: bool,
        /// With --all: those already replayed too.
        #[arg(long, requires = "all")]
        include_replayed: bool,
        #[command(flatten)]
        filters: Filters,
        /// Say what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete dead letters. Destructive: needs --yes.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "older_than"])))]
    Purge {
        ids: Vec<i64>,
        /// Those dead-lettered longer ago than this (90s, 30m, 24h, 7d).
        #[arg(long, value_parser = parse_duration)]
        older_than: Option<chrono::Duration>,
        /// Confirm the deletion.
        #[arg(long, required = true)]
        yes: bool,
    },
}

/// Runs `settle dlq <command>`.
pub async fn run(command: Command, db: &PgPool, settings: &Settings) -> anyhow::Result<u8> {
    match command {
        Command::List {
            filters,
            limit,
            output,
        } => list(db, &filters, limit, output).await,
        Command::Show { id } => show(db, id).await,
        Command::Replay {
            ids,
            all: _,
            include_replayed,
            filters,
            dry_run,
        } => replay(db, settings, &ids, &filters, include_replayed, dry_run).await,
        Command::Purge {
            ids,
            older_than,
            yes: _,
        } => purge(db, &ids, older_than).await,
    }
}

pub async fn list(
    db: &PgPool,
    filters: &Filters,
    limit: i64,
    output: Output,
) -> anyhow::Result<u8> {
    let rows = store::select(db, &filters.selection(&[], limit)).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Table => {
            let columns = [
                right("id"),
                left("event id"),
                left("provider"),
                left("type"),
                left("reason"),
                right("attempts"),
                left("dead-lettered at"),
                right("replayed"),
            ];
            print_table(
                &columns,
                rows.iter().map(|row| {
                    vec![
                        row.id.to_string(),
                        or_dash(row.event_id.as_deref()),
                        or_dash(row.provider.as_deref()),
                        or_dash(row.event_type.as_deref()),
                        row.reason.clone(),
                        row.attempts.to_string(),
                        row.dead_lettered_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        row.replay_count.to_string(),
                    ]
                }),
            );
        }
    }
    Ok(if rows.is_empty() {
        EXIT_NOTHING_MATCHED
    } else {
        EXIT_OK
    })
}

pub async fn show(db: &PgPool, id: i64) -> anyhow::Result<u8> {
    let Some(Letter {
        row,
        headers,
        payload,
    }) = letter(db, id).await?
    else {
        eprintln!("no dead letter {id}");
        return Ok(EXIT_NOTHING_MATCHED);
    };
    let shown = serde_json::json!({
        "deadLetter": row,
        "failureHistory": {
            "reason": row.reason,
            "attempts": row.attempts,
            "firstFailureAt": row.first_failure_at,
            "lastFailureAt": row.last_failure_at,
            "lastError": row.last_error,
            "replayCount": row.replay_count,
            "replayedAt": row.replayed_at,
        },
        "headers": headers,
        "payload": payload,
    });
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(EXIT_OK)
}

/// One dead letter with the message it keeps.
pub struct Letter {
    pub row: DeadLetter,
    pub headers: serde_json::Value,
    /// The body as JSON, or as a string when it is not JSON.
    pub payload: serde_json::Value,
}

/// The dead letter `id`, as `settle dlq show` and the console's letter page show it.
pub async fn letter(db: &PgPool, id: i64) -> anyhow::Result<Option<Letter>> {
    let Some(row) = store::select(db, &Filters::default().selection(&[id], 1))
        .await?
        .pop()
    else {
        return Ok(None);
    };
    let (headers, body) = store::message(db, id).await?;
    let payload = serde_json::from_slice::<serde_json::Value>(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok(Some(Letter {
        row,
        headers,
        payload,
    }))
}

pub async fn replay(
    db: &PgPool,
    settings: &Settings,
    ids: &[i64],
    filters: &Filters,
    include_replayed: bool,
    dry_run: bool,
) -> anyhow::Result<u8> {
    let rows = replayable(db, ids, filters, include_replayed).await?;
    if rows.is_empty() {
        eprintln!("no dead letter matched");
        return Ok(EXIT_NOTHING_MATCHED);
    }
    if dry_run {
        for row in &rows {
            println!(
                "would replay {} ({} {})",
                row.id,
                row.event_id.as_deref().unwrap_or("-"),
                row.reason
            );
        }
        return Ok(EXIT_OK);
    }
    let broker = super::shared::connect_broker(settings).await?;
    let keyring = settings.keyring()?;
    let replayed = replay_letters(db, &broker, &keyring, &rows).await;
    broker.close().await;
    for (row, result) in rows.iter().zip(&replayed) {
        let event_id = row.event_id.as_deref().unwrap_or("-");
        match result {
            Ok(()) => println!("replayed {} ({event_id})", row.id),
            Err(error) => eprintln!("could not replay {}: {error:#}", row.id),
        }
    }
    Ok(if replayed.iter().all(Result::is_ok) {
        EXIT_OK
    } else {
        EXIT_PARTLY_FAILED
    })
}

/// The dead letters a replay applies to: the ids named (replayed before or not), else those
/// matching the filters that are still waiting (all of them with `include_replayed`). What
/// `settle dlq replay` and the console's replay both count, show in a dry run and replay.
pub async fn replayable(
    db: &PgPool,
    ids: &[i64],
    filters: &Filters,
    include_replayed: bool,
) -> anyhow::Result<Vec<DeadLetter>> {
    let selection = Selection {
        // `--all` means what is still waiting; an id named, or --include-replayed, replays again.
        not_replayed: ids.is_empty() && !include_replayed,
        ..filters.selection(ids, i64::MAX)
    };
    Ok(store::select(db, &selection).await?)
}

/// Replays each dead letter in turn, one result each, in order: one that fails does not stop
/// the others.
pub async fn replay_letters(
    db: &PgPool,
    broker: &Broker,
    keyring: &crate::sealed::Keyring,
    rows: &[DeadLetter],
) -> Vec<anyhow::Result<()>> {
    let mut results = Vec::with_capacity(rows.len());
    for row in rows {
        results.push(replay_one(db, broker, keyring, row).await);
    }
    results
}

async fn replay_one(
    db: &PgPool,
    broker: &Broker,
    keyring: &crate::sealed::Keyring,
    row: &DeadLetter,
) -> anyhow::Result<()> {
    let (headers, body) = store::message(db, row.id).await?;
    let headers = match headers {
        serde_json::Value::Object(headers) => headers,
        _ => serde_json::Map::new(),
    };
    // As the receiver queued it: the same message id and provider headers, no failure headers,
    // sealed again by this operator's keyring (one queued before seals, or refused `unsealed`,
    // is an operator's to vouch for).
    let message = QueuedEvent::from_headers(&headers, body)?
        .to_work_queue_message(broker.topology(), keyring);
    // Confirmed first, marked second: a crash between the two replays it again, never loses it.
    broker.publish_all(std::slice::from_ref(&message)).await?;
    store::mark_replayed(db, row.id).await?;
    Ok(())
}

pub async fn purge(
    db: &PgPool,
    ids: &[i64],
    older_than: Option<chrono::Duration>,
) -> anyhow::Result<u8> {
    let deleted = purge_letters(db, ids, older_than).await?;
    println!("purged {deleted} dead letter(s)");
    Ok(if deleted == 0 {
        EXIT_NOTHING_MATCHED
    } else {
        EXIT_OK
    })
}

/// Deletes the dead letters named (none: any) dead-lettered longer ago than `older_than` (none:
/// any time); how many. What `settle dlq purge` and the console's purge both run.
pub async fn purge_letters(
    db: &PgPool,
    ids: &[i64],
    older_than: Option<chrono::Duration>,
) -> anyhow::Result<u64> {
    let cutoff = older_than.map(|age| Utc::now() - age);
    Ok(store::purge(db, ids, cutoff).await?)
}
