//! `settle backfill`: the provider's events of a window that the inbox does not hold, queued
//! through the receiver's exchange (`backfill`), with a line per source of what it found.

use sqlx::PgPool;

use super::shared::{EXIT_NOTHING_MATCHED, Output, left, or_dash, print_table, right};
use super::shared::{parse_provider, parse_since};
use crate::backfill::{self, Report};
use crate::config::Settings;
use crate::provider::Provider;
use crate::providers::Window;
use crate::providers::source::{Which, sources};

/// How long Stripe keeps events listable.
const STRIPE_RETENTION_DAYS: i64 = 30;

/// What a backfill looks at.
pub enum Mode {
    /// The provider's events of a window.
    Events(Window),
    /// Stripe's PaymentIntents of unpaid invoices (`backfill::verify`).
    VerifyOpenInvoices,
}

/// What to backfill.
pub struct Request<'a> {
    pub provider: Provider,
    pub which: Which,
    pub mode: Mode,
    pub types: &'a [String],
    pub dry_run: bool,
    pub output: Output,
}

/// `settle backfill <provider> [--connection C | --all] --since T [--until T] [--types …]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// stripe or gocardless.
    #[arg(value_parser = parse_provider)]
    provider: Provider,
    /// One connection's events (default: the default account's, from the configured API key).
    #[arg(long, conflicts_with = "all")]
    connection: Option<String>,
    /// The default account's (when its key is configured) and every connection's of the provider.
    #[arg(long)]
    all: bool,
    /// From: an RFC 3339 time or a duration back from now (24h, 7d). Stripe keeps 30 days.
    #[arg(long, value_parser = parse_since, required_unless_present = "verify_open_invoices")]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// To (default: now).
    #[arg(long, value_parser = parse_since)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only these event types (Stripe), comma-separated.
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    /// Say what would be queued, queue nothing.
    #[arg(long)]
    dry_run: bool,
    /// Instead of listing events, ask Stripe about every PaymentIntent registered against an
    /// unpaid invoice and not settled yet, and queue an event for each one Stripe says settled.
    #[arg(long, conflicts_with_all = ["since", "until", "types"])]
    verify_open_invoices: bool,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

/// Runs `settle backfill …`.
pub async fn run_args(args: Args, db: &PgPool, settings: &Settings) -> anyhow::Result<u8> {
    let which = match (args.connection, args.all) {
        (Some(id), _) => Which::Connection(id),
        (None, true) => Which::All,
        (None, false) => Which::Default,
    };
    let mode = match args.since {
        Some(since) if !args.verify_open_invoices => Mode::Events(Window {
            since,
            until: args.until,
        }),
        _ => Mode::VerifyOpenInvoices,
    };
    let request = Request {
        provider: args.provider,
        which,
        mode,
        types: &args.types,
        dry_run: args.dry_run,
        output: args.output,
    };
    run(db, settings, &request).await
}

/// Exit 0 when every source was read and every missed event queued; 1 when none was; 4 when
/// some were; 3 when no source matched.
pub async fn run(db: &PgPool, settings: &Settings, request: &Request<'_>) -> anyhow::Result<u8> {
    if matches!(request.mode, Mode::VerifyOpenInvoices) && request.provider != Provider::Stripe {
        anyhow::bail!("--verify-open-invoices asks Stripe about PaymentIntents: stripe only");
    }
    if !request.types.is_empty() && request.provider != Provider::Stripe {
        anyhow::bail!("--types filters Stripe's event list only (GoCardless lists every event)");
    }
    if let Mode::Events(window) = &request.mode {
        let retained = chrono::Utc::now() - chrono::Duration::days(STRIPE_RETENTION_DAYS);
        if request.provider == Provider::Stripe && window.since < retained {
            eprintln!(
                "warning: Stripe keeps events for {STRIPE_RETENTION_DAYS} days; older ones are not listed (--verify-open-invoices asks about the payments themselves)"
            );
        }
    }
    let keyring = settings.keyring()?;
    let sources = sources(db, settings, &keyring, request.provider, &request.which).await?;
    if sources.is_empty() {
        eprintln!(
            "no {} source: configure the default account's API key or add a connection with one",
            request.provider.display_name()
        );
        return Ok(EXIT_NOTHING_MATCHED);
    }
    let broker = match request.dry_run {
        true => None,
        false => Some(super::shared::connect_broker(settings).await?),
    };
    let mut reports = Vec::with_capacity(sources.len());
    for source in &sources {
        reports.push(match request.mode {
            Mode::Events(window) => {
                backfill::run(db, broker.as_ref(), &keyring, source, window, request.types).await
            }
            Mode::VerifyOpenInvoices => {
                backfill::verify::run(db, broker.as_ref(), &keyring, source).await
            }
        });
    }
    if let Some(broker) = broker {
        broker.close().await;
    }
    print(&reports, request.output, request.dry_run)?;
    let failed = reports
        .iter()
        .filter(|r| r.error.is_some() || r.failed > 0)
        .count();
    Ok(super::shared::sources_exit(failed, reports.len()))
}

fn print(reports: &[Report], output: Output, dry_run: bool) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(reports)?),
        Output::Table => {
            let queued = if dry_run { "would queue" } else { "queued" };
            let columns = [
                left("source"),
                right("found"),
                right("already known"),
                right(queued),
                right("failed"),
                left("error"),
            ];
            print_table(
                &columns,
                reports.iter().map(|r| {
                    vec![
                        r.source.clone(),
                        r.found.to_string(),
                        r.known.to_string(),
                        r.queued.to_string(),
                        r.failed.to_string(),
                        or_dash(r.error.as_deref()),
                    ]
                }),
            );
        }
    }
    Ok(())
}
