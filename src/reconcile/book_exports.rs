//! The books written for the tools finance teams use (issue 33): a plain-text journal with
//! balance assertions (hledger's format), a canonical CSV with a row per posting, and the
//! journal imports of Xero and QuickBooks Online, exactly as their importers document them.
//! Pure: entries and a mapping in, text out.
//!
//! - **ledger**: an outside tool (`hledger`) checks that every entry balances, that each payout's
//!   own account returns to zero, and that each invoice's receivable is what settle says it was
//!   paid.
//! - **csv**: one row per posting. Stripe's itemised reports' column names for what they share
//!   (`created_utc`, `currency`, `gross`, `fee`, `net`, `reporting_category`, `source_id`,
//!   `description`, `customer_id`, `invoice_id`, `automatic_payout_id`), plus the entry, the
//!   provider, the account, the payout, settle's account and the mapped code; each amount in
//!   integer minor units and as a decimal with the currency's exponent.
//! - **xero-journal**: Xero's manual journal import: `Narration, Date, Description, AccountCode,
//!   TaxRate, Amount` (signed: a debit positive); rows with one narration and date are one
//!   journal; at most 300 lines a file, so a longer export is split between journals.
//! - **qbo-journal**: QuickBooks Online's journal entry import: `Journal No., Journal Date,
//!   Account Name, Description, Debits, Credits, Name`, dates `MM/DD/YYYY`; each journal balances.
//!
//! The importers take accounts of a chart, not one per invoice: their postings are summed per
//! mapped account and customer within an entry, so a payout is a handful of lines, and the
//! invoices are named in the descriptions and the CSV.

use std::collections::HashMap;

use chrono::NaiveDate;

use super::books::{Account, Entry};
use super::money::Currency;

/// A balance an outside tool must find: `account` holds `amount` of `currency` once every entry
/// before it has posted (an invoice's receivable is minus what settle says it was paid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub account: Account,
    pub currency: Currency,
    pub amount: i64,
}

/// An amount in the currency's major unit, with its ISO 4217 exponent: `-12.34`, `500` (JPY),
/// `1.234` (KWD). Integer arithmetic only: never a float.
pub fn decimal(amount: i64, currency: Currency) -> String {
    let exponent = currency.exponent();
    let sign = if amount < 0 { "-" } else { "" };
    let magnitude = amount.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{magnitude}");
    }
    let divisor = 10_u64.pow(exponent);
    format!(
        "{sign}{}.{:0width$}",
        magnitude / divisor,
        magnitude % divisor,
        width = exponent as usize
    )
}

/// An amount as a plain-text journal writes it: `GBP -12.34`.
fn journal_amount(amount: i64, currency: Currency) -> String {
    format!("{} {}", currency.as_str(), decimal(amount, currency))
}

/// Text for a journal's description or comment: one line, no comment marker.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() || c == ';' { ' ' } else { c })
        .collect()
}

/// The entries as a plain-text accounting journal (hledger's format, which ledger reads too),
/// in date order, each payout's own account asserted back to zero after its entry, and the
/// `assertions` checked in a last entry of the period's end. An outside tool that accepts the
/// file has checked that every entry balances and every asserted balance holds.
pub fn journal(entries: &[Entry], assertions: &[Assertion], end: NaiveDate) -> String {
    use std::fmt::Write;
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| (a.date, &a.id).cmp(&(b.date, &b.id)));
    let mut text = String::new();
    for entry in sorted {
        let _ = writeln!(
            text,
            "{} {}  ; {}",
            entry.date,
            one_line(&entry.description),
            one_line(&entry.id)
        );
        for posting in &entry.postings {
            let _ = write!(
                text,
                "    {}  {}",
                posting.account.journal_name(),
                journal_amount(posting.amount, entry.currency)
            );
            if !posting.memo.is_empty() {
                let _ = write!(text, "  ; {}", one_line(&posting.memo));
            }
            text.push('\n');
        }
        let payouts = entry
            .postings
            .iter()
            .filter(|posting| matches!(posting.account, Account::InPayout(..)))
            .map(|posting| posting.account.journal_name());
        let mut asserted: Vec<String> = payouts.collect();
        asserted.dedup();
        for account in asserted {
            let zero = journal_amount(0, entry.currency);
            let _ = writeln!(text, "    {account}  {zero} = {zero}  ; back to zero");
        }
        text.push('\n');
    }
    if !assertions.is_empty() {
        let _ = writeln!(text, "{end} settle's figures  ; assertions");
        for assertion in assertions {
            let _ = writeln!(
                text,
                "    {}  {} = {}",
                assertion.account.journal_name(),
                journal_amount(0, assertion.currency),
                journal_amount(assertion.amount, assertion.currency)
            );
        }
    }
    text
}

/// A period's books, ready to write.
#[derive(Debug, Clone)]
pub struct Books {
    /// Whose: the account of settle's the export is of.
    pub account_id: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Opening balances first, then the period's entries.
    pub entries: Vec<Entry>,
    /// What an outside tool must find at the period's end (the ledger format checks them).
    pub assertions: Vec<Assertion>,
    /// Each invoice's customer: `(id, name)`.
    pub customers: HashMap<String, (String, String)>,
}

/// What a finance team calls one of settle's accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapped {
    pub code: Option<String>,
    pub name: Option<String>,
    pub tax_rate: Option<String>,
}

/// settle's categories of account to a chart of accounts. Keys are a category (`clearing`,
/// `fees`: `Account::category`), or a provider and a category (`stripe_clearing`), which wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    /// The tax rate of every line whose account names none (Xero requires one).
    pub tax_rate: String,
    pub accounts: HashMap<String, Mapped>,
}

/// One account's code, name and tax rate, as the mapping and the defaults give them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    key: String,
    code: Option<String>,
    name: String,
    tax_rate: String,
}

impl Mapping {
    fn resolve(&self, account: &Account) -> Resolved {
        let category = account.category();
        let key = match account.provider() {
            Some(provider) => format!("{}_{category}", provider.wire_name()),
            None => category.to_owned(),
        };
        let mapped = self
            .accounts
            .get(&key)
            .or_else(|| self.accounts.get(category))
            .cloned()
            .unwrap_or_default();
        Resolved {
            code: mapped.code,
            name: mapped.name.unwrap_or_else(|| default_name(account)),
            tax_rate: mapped.tax_rate.unwrap_or_else(|| self.tax_rate.clone()),
            key,
        }
    }
}

/// The name of an account no mapping names: QuickBooks' own for receivables and opening
/// balances, the provider's and the category's for the rest.
fn default_name(account: &Account) -> String {
    let provider = account.provider().map(|p| p.display_name()).unwrap_or("");
    match account {
        Account::Receivable(_) => "Accounts Receivable (A/R)".to_owned(),
        Account::OpeningBalances => "Opening Balance Equity".to_owned(),
        Account::Refunds => "Refunds".to_owned(),
        Account::Clearing(_) => format!("{provider} Clearing"),
        Account::InPayout(..) => format!("{provider} Payouts in Transit"),
        Account::Bank(_) => format!("{provider} Deposits"),
        Account::Fees(_) => format!("{provider} Fees"),
        Account::Unexplained(_) => format!("{provider} Unexplained"),
        Account::Reserve(_) => format!("{provider} Reserve"),
    }
}

/// The formats `settle books export` writes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr
)]
#[derive(strum::VariantArray)]
#[strum(serialize_all = "kebab-case")]
pub enum Format {
    Csv,
    XeroJournal,
    QboJournal,
    Ledger,
}

/// One file of an export: a name's suffix (`-2` for Xero's second file) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub suffix: String,
    pub extension: &'static str,
    pub text: String,
}

/// Why the books cannot be written in a format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error(
        "Xero needs an account code for `{0}`: set `code` under [books.accounts.{0}] (or under \
         its category without the provider)"
    )]
    NoCode(String),
    #[error("entry {0} has {1} lines once summed per account; Xero takes at most {MAX_XERO_ROWS}")]
    TooLong(String, usize),
    #[error("writing CSV: {0}")]
    Csv(String),
}

/// Xero's limit, 300 lines a file, less the header.
pub const MAX_XERO_ROWS: usize = 299;

/// The books in `format`: one file, or several for Xero's limit.
pub fn write(books: &Books, mapping: &Mapping, format: Format) -> Result<Vec<File>, ExportError> {
    let one = |extension, text| {
        vec![File {
            suffix: String::new(),
            extension,
            text,
        }]
    };
    Ok(match format {
        Format::Ledger => one(
            "journal",
            journal(&books.entries, &books.assertions, books.to),
        ),
        Format::Csv => one("csv", canonical_csv(books, mapping)?),
        Format::QboJournal => one("csv", qbo_journal(books, mapping)?),
        Format::XeroJournal => xero_journal(books, mapping)?,
    })
}

fn csv_text(rows: Vec<Vec<String>>) -> Result<String, ExportError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer
            .write_record(&row)
            .map_err(|error| ExportError::Csv(error.to_string()))?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|error| ExportError::Csv(error.to_string()))?;
    String::from_utf8(bytes).map_err(|error| ExportError::Csv(error.to_string()))
}

const CSV_COLUMNS: [&str; 22] = [
    "entry_id",
    "created_utc",
    "provider",
    "account",
    "reporting_category",
    "currency",
    "amount_minor",
    "amount",
    "gross",
    "fee",
    "net",
    "ledger_account",
    "account_code",
    "account_name",
    "tax_rate",
    "source_id",
    "automatic_payout_id",
    "payout_id",
    "invoice_id",
    "customer_id",
    "description",
    "memo",
];

/// One row per posting; a fee's posting has its amount as `fee` (gross zero), every other's as
/// `gross`, so `net = gross - fee` on each row and the rows of an entry sum to zero.
fn canonical_csv(books: &Books, mapping: &Mapping) -> Result<String, ExportError> {
    let mut rows = vec![CSV_COLUMNS.iter().map(|c| (*c).to_owned()).collect()];
    for entry in &books.entries {
        for posting in &entry.postings {
            let resolved = mapping.resolve(&posting.account);
            let is_fee = matches!(posting.account, Account::Fees(_));
            let amount = decimal(posting.amount, entry.currency);
            let zero = decimal(0, entry.currency);
            let (gross, fee) = if is_fee {
                (zero, decimal(-posting.amount, entry.currency))
            } else {
                (amount.clone(), zero)
            };
            let customer = posting
                .invoice
                .as_ref()
                .and_then(|invoice| books.customers.get(invoice))
                .map(|(id, _)| id.clone());
            let payout = entry.payout.clone().unwrap_or_default();
            let automatic_payout = match entry.provider {
                Some(crate::provider::Provider::Stripe) => payout.clone(),
                _ => String::new(),
            };
            rows.push(vec![
                entry.id.clone(),
                entry.date.to_string(),
                entry
                    .provider
                    .map(|p| p.wire_name().to_owned())
                    .unwrap_or_default(),
                books.account_id.clone(),
                if is_fee { "fee" } else { entry.category }.to_owned(),
                entry.currency.as_str().to_owned(),
                posting.amount.to_string(),
                amount.clone(),
                gross,
                fee,
                amount,
                posting.account.journal_name(),
                resolved.code.unwrap_or_default(),
                resolved.name,
                resolved.tax_rate,
                posting.source.clone().unwrap_or_default(),
                automatic_payout,
                payout,
                posting.invoice.clone().unwrap_or_default(),
                customer.unwrap_or_default(),
                entry.description.clone(),
                posting.memo.clone(),
            ]);
        }
    }
    csv_text(rows)
}

/// An entry's postings summed per mapped account (and customer, on receivables): what an
/// importer's chart of accounts can take.
struct Line {
    resolved: Resolved,
    customer: Option<String>,
    amount: i64,
    description: String,
}

fn summed(entry: &Entry, books: &Books, mapping: &Mapping) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for posting in &entry.postings {
        let resolved = mapping.resolve(&posting.account);
        let customer = match posting.account {
            Account::Receivable(_) => posting
                .invoice
                .as_ref()
                .and_then(|invoice| books.customers.get(invoice))
                .map(|(_, name)| name.clone()),
            _ => None,
        };
        let description = match (&posting.invoice, posting.memo.is_empty()) {
            (Some(invoice), _) => format!("invoice {invoice}"),
            (None, false) => posting.memo.clone(),
            (None, true) => entry.description.clone(),
        };
        let found = lines.iter().position(|line| {
            (
                &line.resolved.code,
                &line.resolved.name,
                &line.resolved.tax_rate,
                &line.customer,
            ) == (
                &resolved.code,
                &resolved.name,
                &resolved.tax_rate,
                &customer,
            )
        });
        match found {
            Some(at) => {
                lines[at].amount = lines[at].amount.saturating_add(posting.amount);
                counts[at] += 1;
                lines[at].description = format!("{}: {} lines", entry.description, counts[at]);
            }
            None => {
                lines.push(Line {
                    resolved,
                    customer,
                    amount: posting.amount,
                    description,
                });
                counts.push(1);
            }
        }
    }
    lines.retain(|line| line.amount != 0);
    lines
}

fn narration(entry: &Entry) -> String {
    format!("{} [{}]", entry.description, entry.id)
}

/// Xero's manual journals, at most 300 lines a file; a journal is never split between files.
fn xero_journal(books: &Books, mapping: &Mapping) -> Result<Vec<File>, ExportError> {
    let header = || -> Vec<String> {
        [
            "Narration",
            "Date",
            "Description",
            "AccountCode",
            "TaxRate",
            "Amount",
        ]
        .map(str::to_owned)
        .into()
    };
    let mut files: Vec<Vec<Vec<String>>> = vec![vec![header()]];
    for entry in &books.entries {
        let mut rows = Vec::new();
        for line in summed(entry, books, mapping) {
            let code = line
                .resolved
                .code
                .clone()
                .ok_or_else(|| ExportError::NoCode(line.resolved.key.clone()))?;
            rows.push(vec![
                narration(entry),
                entry.date.format("%d/%m/%Y").to_string(),
                line.description,
                code,
                line.resolved.tax_rate,
                decimal(line.amount, entry.currency),
            ]);
        }
        if rows.len() > MAX_XERO_ROWS {
            return Err(ExportError::TooLong(entry.id.clone(), rows.len()));
        }
        let written = files.last().map_or(0, |file| file.len() - 1);
        if written + rows.len() > MAX_XERO_ROWS {
            files.push(vec![header()]);
        }
        if let Some(file) = files.last_mut() {
            file.extend(rows);
        }
    }
    let count = files.len();
    files
        .into_iter()
        .enumerate()
        .map(|(index, rows)| {
            Ok(File {
                suffix: if count == 1 {
                    String::new()
                } else {
                    format!("-{}", index + 1)
                },
                extension: "csv",
                text: csv_text(rows)?,
            })
        })
        .collect()
}

/// QuickBooks Online's journal entries: each journal number balances; the receivable lines name
/// the customer (QuickBooks requires a name on A/R lines).
fn qbo_journal(books: &Books, mapping: &Mapping) -> Result<String, ExportError> {
    let mut rows: Vec<Vec<String>> = vec![
        [
            "Journal No.",
            "Journal Date",
            "Account Name",
            "Description",
            "Debits",
            "Credits",
            "Name",
        ]
        .map(str::to_owned)
        .into(),
    ];
    for (number, entry) in books.entries.iter().enumerate() {
        // At most 21 characters: the period's start and the entry's place in it.
        let journal = format!("S{}-{:05}", books.from.format("%Y%m%d"), number + 1);
        for line in summed(entry, books, mapping) {
            let magnitude = decimal(line.amount.saturating_abs(), entry.currency);
            let (debit, credit) = if line.amount > 0 {
                (magnitude, String::new())
            } else {
                (String::new(), magnitude)
            };
            rows.push(vec![
                journal.clone(),
                entry.date.format("%m/%d/%Y").to_string(),
                line.resolved.name,
                format!("{} [{}]", line.description, entry.id),
                debit,
                credit,
                line.customer.unwrap_or_default(),
            ]);
        }
    }
    csv_text(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::books::movement_entry;
    use crate::reconcile::books::tests::{date, gbp, movement};
    use crate::reconcile::ledger::MovementKind;

    #[test]
    fn a_journal_names_hostile_ids_safely_and_writes_amounts_with_their_exponent() {
        let name = Account::Receivable("inv 1;  x:y".into()).journal_name();
        assert_eq!(name, "assets:receivable:inv%201%3B%20%20x%3Ay");
        assert_eq!(journal_amount(-1_234, gbp()), "GBP -12.34");
        assert_eq!(journal_amount(5, gbp()), "GBP 0.05");
        assert_eq!(
            journal_amount(500, Currency::parse("JPY").unwrap()),
            "JPY 500"
        );
        assert_eq!(
            journal_amount(1_234, Currency::parse("KWD").unwrap()),
            "KWD 1.234"
        );
        let entry = movement_entry(&movement(1, "inv_1", MovementKind::Collected, 1_000));
        let text = journal(
            &[entry],
            &[Assertion {
                account: Account::Receivable("inv_1".into()),
                currency: gbp(),
                amount: -1_000,
            }],
            date(),
        );
        assert!(
            text.contains("    assets:clearing:stripe  GBP 10.00\n"),
            "{text}"
        );
        assert!(
            text.contains("    assets:receivable:inv_1  GBP 0.00 = GBP -10.00\n"),
            "{text}"
        );
    }

    #[test]
    fn xero_files_hold_at_most_300_lines_and_never_split_a_journal() {
        let entries: Vec<Entry> = (1..=200)
            .map(|n| {
                movement_entry(&movement(
                    n,
                    &format!("inv_{n}"),
                    MovementKind::Collected,
                    n,
                ))
            })
            .collect();
        let books = Books {
            account_id: "acct".into(),
            from: date(),
            to: date(),
            entries,
            assertions: Vec::new(),
            customers: HashMap::new(),
        };
        let coded = |code: &str| Mapped {
            code: Some(code.into()),
            ..Mapped::default()
        };
        let mapping = Mapping {
            tax_rate: "No VAT".into(),
            accounts: HashMap::from([
                ("receivable".into(), coded("610")),
                ("clearing".into(), coded("1210")),
            ]),
        };
        let files = write(&books, &mapping, Format::XeroJournal).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(
            files.iter().map(|f| f.suffix.as_str()).collect::<Vec<_>>(),
            ["-1", "-2"]
        );
        let mut narrations = std::collections::HashSet::new();
        for file in &files {
            let lines: Vec<&str> = file.text.lines().collect();
            assert!(lines.len() <= 300, "{}", lines.len());
            assert_eq!(
                lines[0],
                "Narration,Date,Description,AccountCode,TaxRate,Amount"
            );
            for line in &lines[1..] {
                let narration = line.split(',').next().unwrap();
                // A journal's two lines are in one file: a narration seen in an earlier file
                // never comes back.
                let first_here = !narrations.contains(narration);
                assert!(
                    first_here || lines.iter().filter(|l| l.starts_with(narration)).count() == 2
                );
                narrations.insert(narration.to_owned());
            }
        }
        assert_eq!(narrations.len(), 200);
        assert!(
            files[0]
                .text
                .contains(",07/12/2026,invoice inv_1,1210,No VAT,0.01\n")
        );
    }
}
