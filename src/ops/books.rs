//! `settle books export`: a period's books for the finance team's tools (`reconcile::books` for
//! the entries, `reconcile::book_exports` for the formats, `repository::books` for the reads).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::Subcommand;
use sqlx::PgPool;

use super::shared::EXIT_OK;
use crate::config::{BooksSettings, Settings};
use crate::provider::Provider;
use crate::reconcile::book_exports::{self, Assertion, Books, File, Format, Mapped, Mapping};
use crate::reconcile::books::{self, Account};
use crate::repository::books as store;

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
}

fn parse_format(text: &str) -> Result<Format, String> {
    text.parse().map_err(|_| {
        format!(
            "`{text}`: one of csv, xero-journal, qbo-journal, ledger (the journal hledger reads)"
        )
    })
}

/// The period a request names, checked: `to` not before `from`. Its length bounds nothing (the
/// opening balances read everything before it anyway): what one reads is the account's activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Period {
    pub fn new(from: NaiveDate, to: NaiveDate) -> anyhow::Result<Self> {
        if to < from {
            bail!("the period ends ({to}) before it starts ({from})");
        }
        Ok(Self { from, to })
    }

    /// The day after the last: the period is `[from, until)`.
    fn until(self) -> NaiveDate {
        self.to.succ_opt().unwrap_or(self.to)
    }
}

/// What an export found besides its entries.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Per provider and currency: collected and not yet paid out at the period's end (with what
    /// the provider holds back).
    pub unsettled: Vec<(Provider, &'static str, i64)>,
    /// Payouts of the period whose lines the books cannot write (listed before lines kept their
    /// roles): `settle payouts fetch` lists them again.
    pub unwritable: Vec<String>,
}

/// The account's books for `period`.
pub async fn read(
    db: &PgPool,
    account_id: &str,
    period: Period,
) -> anyhow::Result<(Books, Summary)> {
    let mut tx = db.begin().await?;
    // One snapshot: the opening balances, the period and the figures asserted agree.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let (from, until) = (
        store::start_of(period.from),
        store::start_of(period.until()),
    );
    let movements = store::movements(&mut tx, account_id, from, until).await?;
    let payouts = store::payouts(
        &mut tx,
        account_id,
        Some(period.from),
        period.until(),
        false,
    )
    .await?;
    let invoices: Vec<String> = movements
        .iter()
        .map(|movement| movement.invoice_id.clone())
        .chain(payouts.written.iter().flat_map(|payout| {
            payout
                .lines
                .iter()
                .filter_map(|line| line.invoice_id.clone())
        }))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let movements_before = store::movements_before(&mut tx, account_id, from, &invoices).await?;
    let payouts_before = store::payouts(&mut tx, account_id, None, period.from, true).await?;
    let figures = store::settled_figures(&mut tx, account_id, &invoices, until).await?;
    let customers = store::customers(&mut tx, account_id, &invoices).await?;
    tx.commit().await?;

    let entries = books::period_entries(
        (&movements_before, &payouts_before.written),
        (&movements, &payouts.written),
        period.from,
    )?;
    let assertions = figures
        .into_iter()
        .map(|(invoice, currency, paid)| Assertion {
            account: Account::Receivable(invoice),
            currency,
            amount: -paid,
        })
        .collect();
    let summary = Summary {
        unsettled: books::unsettled(&entries),
        unwritable: payouts.unwritable,
    };
    let books = Books {
        account_id: account_id.to_owned(),
        from: period.from,
        to: period.to,
        entries,
        assertions,
        customers,
    };
    Ok((books, summary))
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
pub async fn run(command: Command, db: &PgPool, settings: &Settings) -> anyhow::Result<u8> {
    match command {
        Command::Export {
            from,
            to,
            account,
            format,
            out,
        } => {
            let account = account.unwrap_or_else(|| settings.account.id.clone());
            let period = Period::new(from, to)?;
            let (books, summary) = read(db, &account, period).await?;
            let files = book_exports::write(&books, &mapping(&settings.books), format)?;
            write_files(&files, out.as_deref())?;
            report(&books, &summary);
            Ok(EXIT_OK)
        }
    }
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
    for (provider, currency, amount) in &summary.unsettled {
        eprintln!(
            "collected, not yet paid out at {}: {} {currency} {amount} (minor units)",
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
