//! A period of one account's books, read for `reconcile::books`: the movements and paid payouts
//! (with their lines) of the period, what came before it summed to what the opening balances
//! need, and settle's own figures for the invoices the period touches.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::provider::Provider;
use crate::reconcile::book_exports::{Assertion, Books};
use crate::reconcile::books::{self, Account, BookLine, BookMovement, BookPayout};
use crate::reconcile::ledger::MovementKind;
use crate::reconcile::money::Currency;
use crate::reconcile::payout::{Explained, Role};

/// The period a request names, checked: `to` not before `from`. Its length bounds nothing (the
/// opening balances read everything before it anyway): what one reads is the account's activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Period {
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Self, String> {
        if to < from {
            return Err(format!("the period ends ({to}) before it starts ({from})"));
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

/// Why a period's books could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Books(#[from] crate::reconcile::books::BookError),
}

/// The account's books for `period`.
pub async fn read(
    db: &sqlx::PgPool,
    account_id: &str,
    period: Period,
) -> Result<(Books, Summary), ReadError> {
    let mut tx = db.begin().await?;
    // One snapshot: the opening balances, the period and the figures asserted agree.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let (from, until) = (start_of(period.from), start_of(period.until()));
    let during = movements(&mut tx, account_id, from, until).await?;
    let paid = payouts(
        &mut tx,
        account_id,
        Some(period.from),
        period.until(),
        false,
    )
    .await?;
    let invoices: Vec<String> = during
        .iter()
        .map(|movement| movement.invoice_id.clone())
        .chain(paid.written.iter().flat_map(|payout| {
            payout
                .lines
                .iter()
                .filter_map(|line| line.invoice_id.clone())
        }))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let earlier = movements_before(&mut tx, account_id, from, &invoices).await?;
    let paid_earlier = payouts(&mut tx, account_id, None, period.from, true).await?;
    let figures = settled_figures(&mut tx, account_id, &invoices, until).await?;
    let customers = customers(&mut tx, account_id, &invoices).await?;
    tx.commit().await?;

    let entries = books::period_entries(
        (&earlier, &paid_earlier.written),
        (&during, &paid.written),
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
        unwritable: paid.unwritable,
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

/// The first instant of `day`, UTC: periods are whole UTC days.
pub fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

#[derive(sqlx::FromRow)]
struct MovementRow {
    id: i64,
    invoice_id: String,
    provider: Provider,
    provider_object_id: String,
    kind: MovementKind,
    amount: i64,
    currency: Currency,
    occurred_at: DateTime<Utc>,
}

impl MovementRow {
    fn book(self) -> BookMovement {
        BookMovement {
            id: self.id,
            invoice_id: self.invoice_id,
            provider: self.provider,
            provider_object_id: self.provider_object_id,
            kind: self.kind,
            amount: self.amount,
            currency: self.currency,
            date: self.occurred_at.date_naive(),
        }
    }
}

/// The account's movements that happened from `from` up to (not including) `until`, oldest first.
pub async fn movements(
    db: &mut PgConnection,
    account_id: &str,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> sqlx::Result<Vec<BookMovement>> {
    let rows: Vec<MovementRow> = sqlx::query_as(
        "SELECT id, invoice_id, provider, provider_object_id, kind, amount::bigint AS amount,
             currency, occurred_at
         FROM money_movements
         WHERE account_id = $1 AND occurred_at >= $2 AND occurred_at < $3
         ORDER BY occurred_at, id",
    )
    .bind(account_id)
    .bind(from)
    .bind(until)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(MovementRow::book).collect())
}

/// The account's movements before `until`, summed per kind, provider, currency and invoice, with
/// the invoices outside `invoices` summed together (under an empty id): what the opening
/// balances need, in one row per invoice the period names, not one per movement ever.
pub async fn movements_before(
    db: &mut PgConnection,
    account_id: &str,
    until: DateTime<Utc>,
    invoices: &[String],
) -> sqlx::Result<Vec<BookMovement>> {
    let rows: Vec<MovementRow> = sqlx::query_as(
        "SELECT min(id) AS id,
             CASE WHEN invoice_id = ANY($3) THEN invoice_id ELSE '' END AS invoice_id,
             provider, '' AS provider_object_id, kind, sum(amount)::bigint AS amount, currency,
             max(occurred_at) AS occurred_at
         FROM money_movements
         WHERE account_id = $1 AND occurred_at < $2
         GROUP BY 2, provider, kind, currency
         ORDER BY 2, provider, kind, currency",
    )
    .bind(account_id)
    .bind(until)
    .bind(invoices)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(MovementRow::book).collect())
}

#[derive(sqlx::FromRow)]
struct PayoutRow {
    provider: Provider,
    provider_payout_id: String,
    arrival_date: NaiveDate,
    currency: Currency,
    amount: i64,
}

#[derive(sqlx::FromRow)]
struct LineRow {
    provider: Provider,
    provider_payout_id: String,
    role: Option<String>,
    explained: String,
    invoice_id: Option<String>,
    source_id: Option<String>,
    gross: Decimal,
    fee: Decimal,
}

/// A period's payouts, and those the books cannot write (lines stored before they kept their
/// roles: `settle payouts fetch` lists them again).
#[derive(Debug, Default)]
pub struct Payouts {
    pub written: Vec<BookPayout>,
    pub unwritable: Vec<String>,
}

/// Where a payout's deposit is in the books: lines listed (reconciled or not), or a deposit the
/// provider will not list. One expected or waiting to be listed is still in clearing; a failed
/// one never reached the bank.
const IN_THE_BOOKS: &str = "('RECONCILED', 'PARTIALLY_MATCHED', 'UNLISTABLE')";

/// The account's payouts that arrived from `from` up to (not including) `until` (`None`: from
/// the first), each with its lines; `summed`: lines summed per role and explanation (for the
/// opening balances, where no line is named), each gross rounded as `payout_entry` rounds it.
pub async fn payouts(
    db: &mut PgConnection,
    account_id: &str,
    from: Option<NaiveDate>,
    until: NaiveDate,
    summed: bool,
) -> sqlx::Result<Payouts> {
    let payouts: Vec<PayoutRow> = sqlx::query_as(&format!(
        "SELECT provider, provider_payout_id, arrival_date, currency, amount::bigint AS amount
         FROM payouts
         WHERE account_id = $1 AND status IN {IN_THE_BOOKS}
           AND ($2::date IS NULL OR arrival_date >= $2) AND arrival_date < $3
           AND currency IS NOT NULL AND amount IS NOT NULL
         ORDER BY arrival_date, provider, provider_payout_id"
    ))
    .bind(account_id)
    .bind(from)
    .bind(until)
    .fetch_all(&mut *db)
    .await?;
    let lines_sql = if summed {
        "l.provider, l.provider_payout_id, l.role, l.explained, NULL AS invoice_id,
         NULL AS source_id, sum(round(l.gross)) AS gross,
         sum(round(l.gross)) - sum(l.gross - l.fee) AS fee"
    } else {
        "l.provider, l.provider_payout_id, l.role, l.explained, l.invoice_id, l.source_id,
         l.gross, l.fee"
    };
    let group = if summed {
        "GROUP BY l.provider, l.provider_payout_id, l.role, l.explained"
    } else {
        ""
    };
    let order = if summed { "" } else { ", l.position" };
    let lines: Vec<LineRow> = sqlx::query_as(&format!(
        "SELECT {lines_sql}
         FROM payout_lines l JOIN payouts p USING (account_id, provider, provider_payout_id)
         WHERE p.account_id = $1 AND p.status IN {IN_THE_BOOKS}
           AND ($2::date IS NULL OR p.arrival_date >= $2) AND p.arrival_date < $3
         {group}
         ORDER BY l.provider, l.provider_payout_id{order}"
    ))
    .bind(account_id)
    .bind(from)
    .bind(until)
    .fetch_all(&mut *db)
    .await?;
    let mut by_payout: HashMap<(Provider, String), Vec<LineRow>> = HashMap::new();
    for line in lines {
        by_payout
            .entry((line.provider, line.provider_payout_id.clone()))
            .or_default()
            .push(line);
    }
    let mut found = Payouts::default();
    for payout in payouts {
        let rows = by_payout
            .remove(&(payout.provider, payout.provider_payout_id.clone()))
            .unwrap_or_default();
        let lines: Option<Vec<BookLine>> = rows.into_iter().map(book_line).collect();
        match lines {
            Some(lines) => found.written.push(BookPayout {
                provider: payout.provider,
                payout_id: payout.provider_payout_id,
                date: payout.arrival_date,
                currency: payout.currency,
                amount: payout.amount,
                lines,
            }),
            None => found.unwritable.push(payout.provider_payout_id),
        }
    }
    Ok(found)
}

fn book_line(row: LineRow) -> Option<BookLine> {
    let explained = match row.explained.as_str() {
        "MATCHED" => Explained::Matched,
        "PROVIDER" => Explained::Provider,
        _ => Explained::Unmatched,
    };
    Some(BookLine {
        role: row.role?.parse::<Role>().ok()?,
        explained,
        invoice_id: row.invoice_id,
        source_id: row.source_id,
        gross: row.gross,
        fee: row.fee,
    })
}

/// settle's figures for `invoices` whose money last moved before `until`: `(invoice, currency,
/// amount paid)`. An invoice whose money moved later has figures the period's end never saw.
pub async fn settled_figures(
    db: &mut PgConnection,
    account_id: &str,
    invoices: &[String],
    until: DateTime<Utc>,
) -> sqlx::Result<Vec<(String, Currency, i64)>> {
    sqlx::query_as(
        "SELECT i.id, i.currency, i.amount_paid::bigint
         FROM invoices i
         WHERE i.account_id = $1 AND i.id = ANY($2)
           AND NOT EXISTS (SELECT 1 FROM money_movements m
                           WHERE m.account_id = $1 AND m.invoice_id = i.id
                             AND m.occurred_at >= $3)
         ORDER BY i.id",
    )
    .bind(account_id)
    .bind(invoices)
    .bind(until)
    .fetch_all(db)
    .await
}

/// Each of `invoices`' customer: `invoice → (customer id, legal name)`.
pub async fn customers(
    db: &mut PgConnection,
    account_id: &str,
    invoices: &[String],
) -> sqlx::Result<HashMap<String, (String, String)>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT i.id, c.id, c.legal_name
         FROM invoices i JOIN customers c ON c.account_id = i.account_id AND c.id = i.customer_id
         WHERE i.account_id = $1 AND i.id = ANY($2)",
    )
    .bind(account_id)
    .bind(invoices)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(invoice, customer, name)| (invoice, (customer, name)))
        .collect())
}

/// The account's payouts of `provider` paid or leaving whose lines are not in the books yet
/// (`EXPECTED`, `LISTING`), summed per currency: money no longer at the provider, still in
/// clearing.
pub async fn in_flight(
    db: impl sqlx::PgExecutor<'_>,
    account_id: &str,
    provider: Provider,
) -> sqlx::Result<Vec<(Currency, i64)>> {
    sqlx::query_as(
        "SELECT currency, sum(amount)::bigint FROM payouts
         WHERE account_id = $1 AND provider = $2 AND status IN ('EXPECTED', 'LISTING')
           AND currency IS NOT NULL AND amount IS NOT NULL
         GROUP BY currency ORDER BY currency",
    )
    .bind(account_id)
    .bind(provider)
    .fetch_all(db)
    .await
}

/// One balance check's finding, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Check {
    pub account_id: String,
    pub provider: Provider,
    pub source: String,
    pub currency: Currency,
    pub held: i64,
    pub expected: i64,
    pub drift: i64,
    pub checked_at: DateTime<Utc>,
}

/// Replaces what the last check of `source` found for the account with `drifts`.
pub async fn record_checks(
    db: &sqlx::PgPool,
    account_id: &str,
    provider: Provider,
    source: &str,
    drifts: &[crate::reconcile::books::Drift],
) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "DELETE FROM provider_balance_checks
         WHERE account_id = $1 AND provider = $2 AND source = $3",
    )
    .bind(account_id)
    .bind(provider)
    .bind(source)
    .execute(&mut *tx)
    .await?;
    for drift in drifts {
        sqlx::query(
            "INSERT INTO provider_balance_checks
                 (account_id, provider, source, currency, held, expected, drift)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(account_id)
        .bind(provider)
        .bind(source)
        .bind(drift.currency)
        .bind(drift.held)
        .bind(drift.expected)
        .bind(drift.drift)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// What the last checks found, of the accounts in `accounts` (all when `None`).
pub async fn checks(
    db: impl sqlx::PgExecutor<'_>,
    accounts: Option<&[String]>,
) -> sqlx::Result<Vec<Check>> {
    sqlx::query_as(
        "SELECT account_id, provider, source, currency, held, expected, drift, checked_at
         FROM provider_balance_checks
         WHERE $1::text[] IS NULL OR account_id = ANY($1)
         ORDER BY account_id, provider, source, currency",
    )
    .bind(accounts)
    .fetch_all(db)
    .await
}
