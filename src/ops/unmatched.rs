//! `settle unmatched list|show|discard`: the payment events waiting for their payment's
//! registration. They expire by themselves after `retention.unmatched_days`; an operator who
//! knows one will never be registered (a payment that is not the billing system's, a test) stops
//! it waiting sooner, with a reason the inbox keeps.

use anyhow::bail;
use sqlx::PgPool;

use super::shared::{EXIT_NOTHING_MATCHED, EXIT_OK, Output};
use crate::provider::Provider;
use crate::repository::inbox::{self, Discarding, UnmatchedEvent};

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
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().any(char::is_control) {
        bail!("--reason must say why, on one line");
    }
    let recorded = format!("discarded by an operator: {reason}");
    let events = inbox::discard_unmatched(db, which, &recorded, dry_run).await?;
    if events.is_empty() {
        eprintln!("no unmatched event matched");
        return Ok(EXIT_NOTHING_MATCHED);
    }
    if !dry_run {
        metrics::counter!(crate::telemetry::UNMATCHED_SETTLED, "outcome" => "discarded")
            .increment(events.len() as u64);
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

fn print(events: &[UnmatchedEvent], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(events)?),
        Output::Table => {
            println!(
                "{:<20}  {:<10}  {:<32}  {:<32}  {:<25}  waits for",
                "account", "provider", "event id", "type", "received at"
            );
            for event in events {
                println!(
                    "{:<20}  {:<10}  {:<32}  {:<32}  {:<25}  {}",
                    event.account_id,
                    event.provider.display_name(),
                    event.event_id,
                    event.event_type,
                    event.received_at.to_rfc3339(),
                    event.provider_payment_id
                );
            }
        }
    }
    Ok(())
}
