//! `settle payouts list|show|fetch`: the bank deposits settle explained, and re-listing those the
//! events missed. `--output csv` writes what an accountant imports: one row per line of each
//! payout (payout, date, invoice, customer, gross, fee, net, category, currency, source), amounts
//! in the currency's major unit.

use rust_decimal::Decimal;
use sqlx::PgPool;

use super::shared::{EXIT_NOTHING_MATCHED, EXIT_OK};
use crate::api::payouts::{Payout, PayoutDetail, PayoutLine, statuses};
use crate::config::Settings;
use crate::payouts::{self, FetchReport};
use crate::provider::Provider;
use crate::providers::source::{Which, sources};
use crate::reconcile::money::Currency;
use crate::reconcile::payout::PayoutStatus;
use crate::repository::payouts as store;

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
        Format::Csv => write_csv(std::slice::from_ref(&shown))?,
        Format::Table => {
            print_payouts([&shown.payout]);
            println!();
            print_lines(&shown.lines);
        }
    }
    Ok(EXIT_OK)
}

async fn detail(db: &PgPool, row: store::PayoutRow) -> anyhow::Result<PayoutDetail> {
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
        Format::Csv => write_csv(shown)?,
        Format::Table => print_payouts(shown.iter().map(|d| &d.payout)),
    }
    Ok(())
}

fn print_payouts<'a>(payouts: impl IntoIterator<Item = &'a Payout>) {
    let or_dash = |value: Option<i64>| value.map_or("-".to_owned(), |v| v.to_string());
    println!(
        "{:<30}  {:<10}  {:<17}  {:>10}  {:<8}  {:<10}  {:>10}  {:>10}  {:>9}",
        "payout",
        "provider",
        "status",
        "amount",
        "currency",
        "arrival",
        "lines net",
        "difference",
        "unmatched"
    );
    for p in payouts {
        println!(
            "{:<30}  {:<10}  {:<17}  {:>10}  {:<8}  {:<10}  {:>10}  {:>10}  {:>9}",
            p.id,
            p.provider.wire_name(),
            p.status.as_str(),
            or_dash(p.amount),
            p.currency.as_ref().map_or("-", Currency::as_str),
            p.arrival_date.map_or("-".to_owned(), |d| d.to_string()),
            or_dash(p.lines_net),
            or_dash(p.difference),
            or_dash(p.unmatched_lines.map(i64::from)),
        );
        if let Some(reason) = &p.status_reason {
            println!("  {reason}");
        }
    }
}

fn print_lines(lines: &[PayoutLine]) {
    println!(
        "{:<24}  {:<30}  {:<9}  {:<24}  {:>10}  {:>8}  {:>10}",
        "category", "source", "explained", "invoice", "gross", "fee", "net"
    );
    for l in lines {
        println!(
            "{:<24}  {:<30}  {:<9}  {:<24}  {:>10}  {:>8}  {:>10}",
            l.category,
            l.source_id.as_deref().unwrap_or("-"),
            l.explained,
            l.invoice_id.as_deref().unwrap_or("-"),
            l.gross,
            l.fee,
            l.net
        );
    }
}

/// The accountant's rows: one per line, amounts in the currency's major unit.
fn write_csv(shown: &[PayoutDetail]) -> anyhow::Result<()> {
    let mut out = csv::Writer::from_writer(std::io::stdout().lock());
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
fn major_units(minor: Decimal, currency: Option<Currency>) -> String {
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

fn print_reports(reports: &[FetchReport], format: super::shared::Output) -> anyhow::Result<()> {
    match format {
        super::shared::Output::Json => println!("{}", serde_json::to_string_pretty(reports)?),
        super::shared::Output::Table => {
            println!(
                "{:<40}  {:>6}  {:>10}  {:>17}  {:>13}  {:>6}  error",
                "source", "found", "reconciled", "partially matched", "without lines", "failed"
            );
            for r in reports {
                println!(
                    "{:<40}  {:>6}  {:>10}  {:>17}  {:>13}  {:>6}  {}",
                    r.source,
                    r.found,
                    r.reconciled,
                    r.partially_matched,
                    r.without_lines,
                    r.failed,
                    r.error.as_deref().unwrap_or("-")
                );
            }
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
