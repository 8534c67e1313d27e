//! `settle books export`: a period's books for the finance team's tools (`reconcile::books` for
//! the entries, `reconcile::book_exports` for the formats, `repository::books` for the reads).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::Subcommand;
use sqlx::PgPool;

use super::shared::{EXIT_DRIFT, EXIT_OK, EXIT_PARTLY_FAILED, Output, left, print_table, right};
use crate::config::{BooksSettings, Settings};
use crate::reconcile::book_exports::{self, Books, File, Format, Mapped, Mapping};
use crate::repository::books::{Period, Summary, read};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a period's journal: every movement of money, each payout's deposit, fees and lines,
    /// and the opening balances; prints what was collected and not yet paid out.
    Export {
        /// The period's first day (UTC), YYYY-MM-DD.
        #[arg(long)]
        from: NaiveDate,
        /// The period's last day (UTC), included.
        #[arg(long)]
        to: NaiveDate,
        /// Whose (default: the configured account).
        #[arg(long)]
        account: Option<String>,
        /// csv, xero-journal, qbo-journal or ledger (hledger's plain-text journal).
        #[arg(long, value_parser = parse_format)]
        format: Format,
        /// Where to write it (default: standard output). Xero's files hold at most 300 lines:
        /// a longer export is written as `NAME-1.csv`, `NAME-2.csv`, …
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check now whether each provider holds what the books expect (its balance against what
    /// was collected and not yet paid out), and show each source's webhook gap (events the last
    /// sweep found that no webhook delivered). Exit 0: none; 5: a drift, or a gap in the last
    /// day; 4: a balance could not be read.
    Drift {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

fn parse_format(text: &str) -> Result<Format, String> {
    text.parse().map_err(|_| {
        format!(
            "`{text}`: one of csv, xero-journal, qbo-journal, ledger (the journal hledger reads)"
        )
    })
}

/// The configured chart of accounts.
pub fn mapping(settings: &BooksSettings) -> Mapping {
    Mapping {
        tax_rate: settings.tax_rate.clone(),
        accounts: settings
            .accounts
            .iter()
            .map(|(key, account)| {
                let mapped = Mapped {
                    code: account.code.clone(),
                    name: account.name.clone(),
                    tax_rate: account.tax_rate.clone(),
                };
                (key.clone(), mapped)
            })
            .collect(),
    }
}

/// Runs `settle books <command>`; without `--account`, for the configured account.
/// An export reads `reads` (a replica within its lag bound); drift compares with the providers
/// on the primary.
pub async fn run(
    command: Command,
    reads: &crate::database::Reads,
    settings: &Settings,
) -> anyhow::Result<u8> {
    let db = reads.primary();
    match command {
        Command::Export {
            from,
            to,
            account,
            format,
            out,
        } => {
            let account = account.unwrap_or_else(|| settings.account.id.clone());
            if crate::repository::accounts::find(db, &account)
                .await?
                .is_none()
            {
                bail!("no account `{account}` (settle accounts list)");
            }
            let period = Period::new(from, to).map_err(anyhow::Error::msg)?;
            let (books, summary) = read(reads.pool(), &account, period).await?;
            let files = book_exports::write(&books, &mapping(&settings.books), format)?;
            write_files(&files, out.as_deref())?;
            report(&books, &summary);
            Ok(EXIT_OK)
        }
        Command::Drift { output } => drift(db, settings, output).await,
    }
}

/// `settle books drift`.
async fn drift(db: &PgPool, settings: &Settings, output: Output) -> anyhow::Result<u8> {
    let keyring = settings.keyring()?;
    let findings = crate::payouts::drift::check(db, settings, &keyring).await;
    let gaps = crate::repository::backfill::cursors(db).await?;
    let mut rows = Vec::new();
    let mut failed = false;
    for finding in &findings {
        match &finding.drifts {
            Ok(drifts) => rows.extend(drifts.iter().map(|drift| {
                serde_json::json!({
                    "account": finding.account_id,
                    "provider": finding.provider.wire_name(),
                    "source": finding.source,
                    "currency": drift.currency.as_str(),
                    "held": drift.held,
                    "expected": drift.expected,
                    "drift": drift.drift,
                })
            })),
            Err(error) => {
                failed = true;
                eprintln!(
                    "{} {}: balance not read: {error}",
                    finding.provider.display_name(),
                    finding.source
                );
            }
        }
    }
    let drifted = rows.iter().any(|row| row["drift"] != 0);
    // A gap found in the last day: later sweeps find nothing new, the gap was still there.
    let day_ago = chrono::Utc::now() - chrono::Duration::days(1);
    let gapped = gaps
        .iter()
        .any(|gap| gap.gap_at.is_some_and(|at| at > day_ago));
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "balances": rows,
                "gaps": gaps.iter().map(|gap| serde_json::json!({
                    "provider": gap.provider.to_lowercase(),
                    "source": gap.source,
                    "lastSweepMissed": gap.last_missed,
                    "gapEvents": gap.gap_events,
                    "gapAt": gap.gap_at,
                    "sweptUntil": gap.swept_until,
                })).collect::<Vec<_>>(),
            })
        ),
        Output::Table => {
            let number = |row: &serde_json::Value, field: &str| row[field].to_string();
            print_table(
                &[
                    left("ACCOUNT"),
                    left("PROVIDER"),
                    left("SOURCE"),
                    left("CURRENCY"),
                    right("HELD"),
                    right("EXPECTED"),
                    right("DRIFT"),
                ],
                rows.iter().map(|row| {
                    vec![
                        row["account"].as_str().unwrap_or_default().to_owned(),
                        row["provider"].as_str().unwrap_or_default().to_owned(),
                        row["source"].as_str().unwrap_or_default().to_owned(),
                        row["currency"].as_str().unwrap_or_default().to_owned(),
                        number(row, "held"),
                        number(row, "expected"),
                        number(row, "drift"),
                    ]
                }),
            );
            println!();
            print_table(
                &[
                    left("PROVIDER"),
                    left("SOURCE"),
                    right("GAP EVENTS"),
                    left("SWEPT UNTIL"),
                ],
                gaps.iter().map(|gap| {
                    vec![
                        gap.provider.to_lowercase(),
                        gap.source.clone(),
                        gap.last_missed.to_string(),
                        gap.swept_until.to_rfc3339(),
                    ]
                }),
            );
        }
    }
    Ok(if drifted || gapped {
        EXIT_DRIFT
    } else if failed {
        EXIT_PARTLY_FAILED
    } else {
        EXIT_OK
    })
}

/// The files where `out` says, or the one file on standard output.
fn write_files(files: &[File], out: Option<&Path>) -> anyhow::Result<()> {
    let Some(out) = out else {
        if let [file] = files {
            print!("{}", file.text);
            return Ok(());
        }
        bail!(
            "the export is {} files (Xero takes at most 300 lines a file): name them with --out",
            files.len()
        );
    };
    for file in files {
        let path = named(out, file);
        std::fs::write(&path, &file.text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `out` with a file's suffix before its extension: `books.csv` → `books-2.csv`.
fn named(out: &Path, file: &File) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "books".to_owned());
    let extension = out
        .extension()
        .map(|extension| extension.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.extension.to_owned());
    out.with_file_name(format!("{stem}{}.{extension}", file.suffix))
}

/// What the export leaves out or leaves open, on standard error (the journal is on standard out).
fn report(books: &Books, summary: &Summary) {
    eprintln!(
        "{} entries from {} to {}; {} invoice balances asserted",
        books.entries.len(),
        books.from,
        books.to,
        books.assertions.len()
    );
    for (provider, code, amount) in &summary.unsettled {
        let amount = crate::reconcile::money::Currency::parse(code).map_or_else(
            |_| amount.to_string(),
            |currency| book_exports::decimal(*amount, currency),
        );
        eprintln!(
            "collected, not yet paid out at {}: {} {code} {amount}",
            books.to,
            provider.display_name()
        );
    }
    for payout in &summary.unwritable {
        eprintln!(
            "payout {payout} left out: its lines were listed before they kept their roles; \
             `settle payouts fetch` lists them again"
        );
    }
}
