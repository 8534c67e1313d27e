//! The books: a period's journal to download in each format `settle books export` writes (its
//! own functions: `repository::books::read`, `reconcile::book_exports::write`), what the last
//! drift checks found for the operator's accounts, and, for an operator of every account, the
//! sources' webhook gaps and the last self-audits (`settle audit`).

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, NaiveDate, Utc};
use serde::Deserialize;

use super::page::{Chrome, Refusal, money, time};
use super::session::Signed;
use super::state::ConsoleState;
use crate::reconcile::book_exports::{self, Format};
use crate::repository::audit as audits;
use crate::repository::books::{self as store, Period};

/// The last audits shown.
const AUDITS_SHOWN: i64 = 10;

struct DriftShown {
    account: String,
    provider: &'static str,
    source: String,
    held: String,
    expected: String,
    drift: String,
    drifted: bool,
    checked: String,
}

struct GapShown {
    provider: String,
    source: String,
    last_sweep: i32,
    last_gap: String,
}

struct AuditShown {
    finished: String,
    since: String,
    invoices: i32,
    events: i32,
    differences: Vec<String>,
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "books.html")]
struct BooksPage {
    chrome: Chrome,
    accounts: Vec<String>,
    from: NaiveDate,
    to: NaiveDate,
    drifts: Vec<DriftShown>,
    /// `None`: the operator is scoped, and sources and audits belong to no one account.
    gaps: Option<Vec<GapShown>>,
    audits: Option<Vec<AuditShown>>,
}

pub async fn page(
    State(state): State<ConsoleState>,
    signed: Signed,
) -> Result<impl IntoResponse, Refusal> {
    let accounts = signed.accounts(&state).await?;
    let today = Utc::now().date_naive();
    let from = today.with_day(1).unwrap_or(today);
    let drifts = store::checks(state.reads.pool(), Some(&accounts))
        .await?
        .into_iter()
        .map(|check| {
            let code = check.currency.as_str();
            DriftShown {
                account: check.account_id,
                provider: check.provider.wire_name(),
                source: check.source,
                held: money(check.held, code),
                expected: money(check.expected, code),
                drift: money(check.drift, code),
                drifted: check.drift != 0,
                checked: time(&check.checked_at),
            }
        })
        .collect();
    let every_account = signed.require_every_account("the sources' gaps").is_ok();
    let (gaps, audits) = if every_account {
        let gaps = crate::repository::backfill::cursors(state.reads.pool())
            .await?
            .into_iter()
            .map(|cursor| GapShown {
                provider: cursor.provider.to_lowercase(),
                source: cursor.source,
                last_sweep: cursor.last_missed,
                last_gap: cursor.gap_at.map_or_else(
                    || "never".to_owned(),
                    |at| format!("{} events, {}", cursor.gap_events, time(&at)),
                ),
            })
            .collect();
        let audits = audits::runs(state.reads.pool(), AUDITS_SHOWN)
            .await?
            .into_iter()
            .map(|run| AuditShown {
                finished: time(&run.finished_at),
                since: time(&run.since),
                invoices: run.invoices,
                events: run.events,
                differences: run.differences.0,
            })
            .collect();
        (Some(gaps), Some(audits))
    } else {
        (None, None)
    };
    Ok(BooksPage {
        chrome: signed.chrome(),
        accounts,
        from,
        to: today,
        drifts,
        gaps,
        audits,
    })
}

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    account: String,
    from: NaiveDate,
    to: NaiveDate,
    format: String,
    /// Which of Xero's files, when the export is several.
    part: Option<usize>,
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "books_parts.html")]
struct PartsPage {
    chrome: Chrome,
    count: usize,
    links: Vec<(String, String)>,
}

/// The period's journal as a download; an export of several files (Xero's 300 lines) answers
/// with a page linking each.
pub async fn export(
    State(state): State<ConsoleState>,
    signed: Signed,
    Query(query): Query<ExportQuery>,
) -> Result<Response, Refusal> {
    if !signed.may_read(&query.account) {
        return Err(Refusal::NotFound(format!("no account {}", query.account)));
    }
    let format: Format = query
        .format
        .parse()
        .map_err(|_| Refusal::BadRequest(format!("no format `{}`", query.format)))?;
    let period = Period::new(query.from, query.to).map_err(Refusal::BadRequest)?;
    let (books, _) = store::read(state.reads.pool(), &query.account, period)
        .await
        .map_err(|error| Refusal::Internal(error.into()))?;
    let files = book_exports::write(&books, &state.books, format)
        .map_err(|error| Refusal::BadRequest(error.to_string()))?;
    let name = format!(
        "settle-{}-{}-{}",
        safe(&query.account),
        query.from,
        query.to
    );
    let chosen = match (files.len(), query.part) {
        (1, _) => files.first(),
        (_, Some(part)) => files.get(part.wrapping_sub(1)),
        (count, None) => {
            let links = files
                .iter()
                .enumerate()
                .map(|(index, file)| {
                    let href = format!(
                        "/console/books/export?account={}&from={}&to={}&format={}&part={}",
                        form_urlencoded::byte_serialize(query.account.as_bytes())
                            .collect::<String>(),
                        query.from,
                        query.to,
                        query.format,
                        index + 1
                    );
                    (href, format!("{name}{}.{}", file.suffix, file.extension))
                })
                .collect();
            return Ok(PartsPage {
                chrome: signed.chrome(),
                count,
                links,
            }
            .into_response());
        }
    };
    let file = chosen.ok_or_else(|| Refusal::NotFound("no such part".to_owned()))?;
    let content_type = match format {
        Format::Ledger => "text/plain; charset=utf-8",
        _ => "text/csv; charset=utf-8",
    };
    let attachment = format!(
        "attachment; filename=\"{name}{}.{}\"",
        file.suffix, file.extension
    );
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, attachment),
        ],
        file.text.clone(),
    )
        .into_response())
}

/// An account id as part of a file name: its letters, digits, `_` and `-` only.
fn safe(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(64)
        .collect()
}
