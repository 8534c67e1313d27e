//! `settle payouts list|show|fetch`: the bank deposits settle explained, and re-listing those the
//! events missed. `--output csv` writes what an accountant imports: one row per line of each
//! payout (payout, date, invoice, customer, gross, fee, net, category, currency, source), amounts
//! in the currency's major unit.

use rust_decimal::Decimal;
use sqlx::PgPool;

use super::shared::{EXIT_NOTHING_MATCHED, EXIT_OK, Output, left, or_dash, print_table, right};
use super::shared::{parse_provider, parse_since};
use crate::api::payouts::{Payout, PayoutDetail, PayoutLine, statuses};
use crate::config::Settings;
use crate::payouts::{self, FetchReport};
use crate::provider::Provider;
use crate::providers::source::{Which, sources};
use crate::reconcile::money::Currency;
use crate::reconcile::payout::PayoutStatus;
use crate::repository::payouts as store;
use clap::Subcommand;

/// `--output table|json|csv`.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
    /// One row per line, for accounting.
    Csv,
}

/// What `payouts list` shows.
pub struct Filters {
    pub account: String,
    pub status: Option<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub limit: i64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List payouts, the most recently recorded last (exit 3 when none match).
    List {
        /// Whose (default: the configured account).
        #[arg(long)]
        account: Option<String>,
        /// EXPECTED, LISTING, RECONCILED, PARTIALLY_MATCHED, FAILED or UNLISTABLE.
        #[arg(long)]
        status: Option<String>,
        /// Recorded since: an RFC 3339 time or a duration back from now (24h, 7d).
        #[arg(long, value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// csv: one row per line of each payout, for accounting.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Show one payout (the provider's id) with its lines.
    Show {
        id: String,
        #[arg(long)]
        account: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// List the provider's payouts created since a time and the lines of each paid one, again
    /// if settle listed it before (for payouts the events missed).
    Fetch {
        /// stripe or gocardless.
        #[arg(value_parser = parse_provider)]
        provider: Provider,
        /// An RFC 3339 time or a duration back from now (24h, 7d).
        #[arg(long, value_parser = parse_since)]
        since: chrono::DateTime<chrono::Utc>,
        /// One connection's (default: the default account's and every connection's).
        #[arg(long)]
        connection: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

/// Runs `settle payouts <command>`; without `--account`, for the configured account.
pub async fn run(command: Command, db: &PgPool, settings: &Settings) -> anyhow::Result<u8> {
    let default_account = settings.account.id.clone();
    match command {
        Command::List {
            account,
            status,
            since,
            limit,
            output,
        } => {
            let filters = Filters {
                account: account.unwrap_or(default_account),
                status,
                since,
                limit,
            };
            list(db, &filters, output).await
        }
        Command::Show {
            id,
            account,
            output,
        } => show(db, &account.unwrap_or(default_account), &id, output).await,
        Command::Fetch {
            provider,
            since,
            connection,
            output,
        } => fetch(db, settings, provider, connection, since, output).await,
    }
}

pub async fn list(db: &PgPool, filters: &Filters, format: Format) -> anyhow::Result<u8> {
    let status = match filters.status.as_deref().map(str::parse::<PayoutStatus>) {
        Some(Err(_)) => anyhow::bail!(
            "--status `{}`: one of {}",
            filters.status.as_deref().unwrap_or_default(),
            statuses()
        ),
        parsed => parsed.transpose().unwrap_or_default(),
    };
    let rows = store::list(
        db,
        &filters.account,
        status,
        filters.since,
        None,
        filters.limit,
    )
    .await?;
    let mut shown = Vec::with_capacity(rows.len());
    for row in rows {
        shown.push(detail(db, row).await?);
    }
    print(&shown, format)?;
    Ok(super::shared::listed(&shown))
}

pub async fn show(db: &PgPool, account: &str, id: &str, format: Format) -> anyhow::Result<u8> {
    let Some(row) = store::find(db, account, id).await? else {
        eprintln!("no payout `{id}` in account `{account}`");
        return Ok(EXIT_NOTHING_MATCHED);
    };
    let shown = detail(db, row).await?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&shown)?),
        Format::Csv => write_csv(std::io::stdout().lock(), std::slice::from_ref(&shown))?,
        Format::Table => {
            print_payouts([&shown.payout]);
            println!();
            print_lines(&shown.lines);
        }
    }
    Ok(EXIT_OK)
}

/// A payout with its lines, as `payouts show` and the console's payout page show it.
pub async fn detail(db: &PgPool, row: store::PayoutRow) -> anyhow::Result<PayoutDetail> {
    let lines = store::lines(db, &row.key()).await?;
    Ok(PayoutDetail {
        payout: row.into(),
        lines: lines.into_iter().map(PayoutLine::from).collect(),
    })
}

fn print(shown: &[PayoutDetail], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let payouts: Vec<&Payout> = shown.iter().map(|d| &d.payout).collect();
            println!("{}", serde_json::to_string_pretty(&payouts)?);
        }
        Format::Csv => write_csv(std::io::stdout().lock(), shown)?,
        Format::Table => print_payouts(shown.iter().map(|d| &d.payout)),
    }
    Ok(())
}

fn print_payouts<'a>(payouts: impl IntoIterator<Item = &'a Payout>) {
    let number = |value: Option<i64>| or_dash(value.map(|v| v.to_string()).as_deref());
    let columns = [
        left("payout"),
        left("provider"),
        left("status"),
        right("amount"),
        left("currency"),
        left("arrival"),
        right("lines net"),
        right("difference"),
        right("unmatched"),
        left("reason"),
    ];
    print_table(
        &columns,
        payouts.into_iter().map(|p| {
            vec![
                p.id.clone(),
                p.provider.wire_name().to_owned(),
                p.status.as_str().to_owned(),
                number(p.amount),
                or_dash(p.currency.as_ref().map(Currency::as_str)),
                or_dash(p.arrival_date.map(|d| d.to_string()).as_deref()),
                number(p.lines_net),
                number(p.difference),
                number(p.unmatched_lines.map(i64::from)),
                p.status_reason.clone().unwrap_or_default(),
            ]
        }),
    );
}

fn print_lines(lines: &[PayoutLine]) {
    let columns = [
        left("category"),
        left("source"),
        left("explained"),
        left("invoice"),
        right("gross"),
        right("fee"),
        right("net"),
    ];
    print_table(
        &columns,
        lines.iter().map(|l| {
            vec![
                l.category.clone(),
                or_dash(l.source_id.as_deref()),
                l.explained.clone(),
                or_dash(l.invoice_id.as_deref()),
                l.gross.to_string(),
                l.fee.to_string(),
                l.net.to_string(),
            ]
        }),
    );
}

/// The accountant's rows: one per line, amounts in the currency's major unit (`--output csv`,
/// and the console's download).
pub fn write_csv(to: impl std::io::Write, shown: &[PayoutDetail]) -> anyhow::Result<()> {
    let mut out = csv::Writer::from_writer(to);
    out.write_record([
        "payout", "date", "invoice", "customer", "gross", "fee", "net", "category", "currency",
        "source",
    ])?;
    for detail in shown {
        let payout = &detail.payout;
        let currency = payout.currency;
        let major = |minor: Decimal| major_units(minor, currency);
        let date = payout
            .arrival_date
            .unwrap_or_else(|| payout.created_at.date_naive())
            .to_string();
        for line in &detail.lines {
            out.write_record([
                payout.id.as_str(),
                date.as_str(),
                line.invoice_id.as_deref().unwrap_or(""),
                line.customer_id.as_deref().unwrap_or(""),
                major(line.gross).as_str(),
                major(line.fee).as_str(),
                major(line.net).as_str(),
                line.category.as_str(),
                currency.as_ref().map_or("", Currency::as_str),
                line.source_id.as_deref().unwrap_or(""),
            ])?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `minor` in the currency's major unit, with at least its decimals: 1000 GBP pence is `10.00`,
/// GoCardless's 37.5 pence `0.375`, 500 JPY `500`.
pub fn major_units(minor: Decimal, currency: Option<Currency>) -> String {
    let exponent = currency.map_or(2, Currency::exponent);
    let mut major = minor;
    major.set_scale(major.scale() + exponent).ok();
    let major = major.normalize();
    let shown = major.scale().max(exponent) as usize;
    format!("{major:.shown$}")
}

/// Lists the provider's payouts created since `since` for every source (or `connection`'s), and
/// the lines of each paid one. Exit 0 when every source was read, 1 when none was, 4 when some
/// were, 3 when there is no source.
pub async fn fetch(
    db: &PgPool,
    settings: &Settings,
    provider: Provider,
    connection: Option<String>,
    since: chrono::DateTime<chrono::Utc>,
    format: super::shared::Output,
) -> anyhow::Result<u8> {
    let keyring = settings.keyring()?;
    let which = connection.map_or(Which::All, Which::Connection);
    let sources = sources(db, settings, &keyring, provider, &which).await?;
    if sources.is_empty() {
        eprintln!(
            "no {} source: configure the default account's API key or add a connection with one",
            provider.display_name()
        );
        return Ok(EXIT_NOTHING_MATCHED);
    }
    let mut reports = Vec::with_capacity(sources.len());
    for source in &sources {
        reports.push(payouts::fetch(db, source, since).await);
    }
    print_reports(&reports, format)?;
    let failed = reports
        .iter()
        .filter(|r| r.error.is_some() || r.failed > 0)
        .count();
    Ok(super::shared::sources_exit(failed, reports.len()))
}

fn print_reports(reports: &[FetchReport], format: Output) -> anyhow::Result<()> {
    match format {
        Output::Json => println!("{}", serde_json::to_string_pretty(reports)?),
        Output::Table => {
            let columns = [
                left("source"),
                right("found"),
                right("reconciled"),
                right("partially matched"),
                right("without lines"),
                right("failed"),
                left("error"),
            ];
            print_table(
                &columns,
                reports.iter().map(|r| {
                    vec![
                        r.source.clone(),
                        r.found.to_string(),
                        r.reconciled.to_string(),
                        r.partially_matched.to_string(),
                        r.without_lines.to_string(),
                        r.failed.to_string(),
                        or_dash(r.error.as_deref()),
                    ]
                }),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_written_in_the_major_unit_with_at_least_its_decimals() {
        let gbp = Currency::parse("GBP").ok();
        let jpy = Currency::parse("JPY").ok();
        let kwd = Currency::parse("KWD").ok();
        assert_eq!(major_units(Decimal::from(1000), gbp), "10.00");
        assert_eq!(major_units(Decimal::from(-44), gbp), "-0.44");
        assert_eq!(major_units(Decimal::new(375, 1), gbp), "0.375");
        assert_eq!(major_units(Decimal::new(-15000, 1), gbp), "-15.00");
        assert_eq!(major_units(Decimal::from(500), jpy), "500");
        assert_eq!(major_units(Decimal::from(1234), kwd), "1.234");
    }
}
