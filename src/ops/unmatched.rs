//! `settle unmatched list|show|discard`: the payment events waiting for their payment's
//! registration. They expire by themselves after `retention.unmatched_days`; an operator who
//! knows one will never be registered (a payment that is not the billing system's, a test) stops
//! it waiting sooner, with a reason the inbox keeps.

use anyhow::bail;
use sqlx::PgPool;

use super::shared::{EXIT_NOTHING_MATCHED, EXIT_OK, Output, left, print_table};
use super::shared::{parse_duration, parse_provider};
use crate::provider::Provider;
use crate::repository::inbox::{self, Discarding, UnmatchedEvent};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the waiting events, newest first (exit 3 when there is none).
    List {
        /// Whose (default: every account's).
        #[arg(long)]
        account: Option<String>,
        #[arg(long, value_parser = parse_provider)]
        provider: Option<Provider>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one waiting event with the body it arrived with, as JSON.
    Show {
        #[arg(value_parser = parse_provider)]
        provider: Provider,
        event_id: String,
    },
    /// Stop events waiting (recorded `discarded` with the reason): a registration of their
    /// payment then leaves them be.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["event_ids", "older_than"])))]
    Discard {
        /// These events (with --provider).
        #[arg(requires = "provider")]
        event_ids: Vec<String>,
        /// Every event that has waited longer than this (90s, 30m, 24h, 7d).
        #[arg(long, value_parser = parse_duration)]
        older_than: Option<chrono::Duration>,
        #[arg(long, value_parser = parse_provider)]
        provider: Option<Provider>,
        /// Of one account (default: every account's).
        #[arg(long)]
        account: Option<String>,
        /// Why, kept with each event.
        #[arg(long)]
        reason: String,
        /// Say which would be discarded, and discard nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

/// Runs `settle unmatched <command>`.
pub async fn run(command: Command, db: &PgPool) -> anyhow::Result<u8> {
    match command {
        Command::List {
            account,
            provider,
            limit,
            output,
        } => list(db, account.as_deref(), provider, limit, output).await,
        Command::Show { provider, event_id } => show(db, provider, &event_id).await,
        Command::Discard {
            event_ids,
            older_than,
            provider,
            account,
            reason,
            dry_run,
            output,
        } => {
            let which = crate::repository::inbox::Discarding {
                account_id: account.as_deref(),
                provider,
                event_ids: (!event_ids.is_empty()).then_some(event_ids.as_slice()),
                received_before: older_than.map(|age| chrono::Utc::now() - age),
            };
            discard(db, &which, &reason, dry_run, output).await
        }
    }
}

pub async fn list(
    db: &PgPool,
    account: Option<&str>,
    provider: Option<Provider>,
    limit: i64,
    output: Output,
) -> anyhow::Result<u8> {
    let events = inbox::list_unmatched(db, account, provider, limit).await?;
    print(&events, output)?;
    Ok(super::shared::listed(&events))
}

pub async fn show(db: &PgPool, provider: Provider, event_id: &str) -> anyhow::Result<u8> {
    let Some((event, payload)) = inbox::unmatched_event(db, provider, event_id).await? else {
        eprintln!(
            "no unmatched {} event `{event_id}`",
            provider.display_name()
        );
        return Ok(EXIT_NOTHING_MATCHED);
    };
    let mut shown = serde_json::to_value(&event)?;
    // The body as it arrived; JSON the receiver checked, so it parses.
    shown["payload"] = serde_json::from_str(&payload)?;
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(EXIT_OK)
}

pub async fn discard(
    db: &PgPool,
    which: &Discarding<'_>,
    reason: &str,
    dry_run: bool,
    output: Output,
) -> anyhow::Result<u8> {
    let events = discard_events(db, which, reason, dry_run).await?;
    if events.is_empty() {
        eprintln!("no unmatched event matched");
        return Ok(EXIT_NOTHING_MATCHED);
    }
    print(&events, output)?;
    let verb = if dry_run {
        "would be discarded"
    } else {
        "discarded"
    };
    eprintln!("{} unmatched events {verb}", events.len());
    Ok(EXIT_OK)
}

/// Discards the chosen unmatched events with the operator's reason (with `dry_run`, says which
/// would be): what `settle unmatched discard` and the console's discard both run.
pub async fn discard_events(
    db: &PgPool,
    which: &Discarding<'_>,
    reason: &str,
    dry_run: bool,
) -> anyhow::Result<Vec<UnmatchedEvent>> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().any(char::is_control) {
        bail!("--reason must say why, on one line");
    }
    let recorded = format!("discarded by an operator: {reason}");
    let events = inbox::discard_unmatched(db, which, &recorded, dry_run).await?;
    if !dry_run {
        metrics::counter!(crate::telemetry::UNMATCHED_SETTLED, "outcome" => "discarded")
            .increment(events.len() as u64);
    }
    Ok(events)
}

fn print(events: &[UnmatchedEvent], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(events)?),
        Output::Table => {
            let columns = [
                left("account"),
                left("provider"),
                left("event id"),
                left("type"),
                left("received at"),
                left("waits for"),
            ];
            print_table(
                &columns,
                events.iter().map(|event| {
                    vec![
                        event.account_id.clone(),
                        event.provider.display_name().to_owned(),
                        event.event_id.clone(),
                        event.event_type.clone(),
                        event.received_at.to_rfc3339(),
                        event.provider_payment_id.clone(),
                    ]
                }),
            );
        }
    }
    Ok(())
}
