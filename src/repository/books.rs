//! A period of one account's books, read for `reconcile::books`: the movements and paid payouts
//! (with their lines) of the period, what came before it summed to what the opening balances
//! need, and settle's own figures for the invoices the period touches.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::provider::Provider;
use crate::reconcile::books::{BookLine, BookMovement, BookPayout};
use crate::reconcile::ledger::MovementKind;
use crate::reconcile::money::Currency;
use crate::reconcile::payout::{Explained, Role};

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
