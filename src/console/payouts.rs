//! Payouts: each bank deposit of the operator's accounts, newest first; one payout's lines with
//! what each matched (an invoice's payment, the provider's own fee) or did not, the difference
//! between the deposit and its lines, and the accountant's CSV, all through `settle payouts`'
//! own functions (`ops::payouts`).

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::page::{Chrome, Refusal, label, money};
use super::session::Signed;
use super::state::ConsoleState;
use crate::api::payouts::PayoutDetail;
use crate::repository::payouts as store;

/// Payouts shown per account.
const SHOWN: i64 = 100;

struct Listed {
    href: String,
    id: String,
    account_id: String,
    provider: &'static str,
    status: String,
    amount: String,
    difference: String,
    unmatched: String,
    arrival: String,
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "payouts.html")]
struct PayoutsPage {
    chrome: Chrome,
    payouts: Vec<Listed>,
}

/// Minor units in the payout's currency, or a dash when it has none yet.
fn amount(minor: Option<i64>, currency: Option<&str>) -> String {
    match (minor, currency) {
        (Some(minor), Some(currency)) => money(minor, currency),
        (Some(minor), None) => minor.to_string(),
        _ => "-".into(),
    }
}

pub async fn list(
    State(state): State<ConsoleState>,
    signed: Signed,
) -> Result<impl IntoResponse, Refusal> {
    let mut rows = Vec::new();
    for account in signed.accounts(&state).await? {
        rows.extend(store::recent(state.reads.pool(), &account, SHOWN).await?);
    }
    rows.sort_by_key(|row| std::cmp::Reverse(row.created_at));
    rows.truncate(SHOWN as usize);
    let payouts = rows
        .into_iter()
        .map(|row| {
            let currency = row.currency.map(|currency| currency.as_str());
            Listed {
                href: super::links::payout(&row.account_id, &row.provider_payout_id),
                id: row.provider_payout_id.clone(),
                account_id: row.account_id.clone(),
                provider: row.provider.wire_name(),
                status: label(&row.status),
                amount: amount(row.amount, currency),
                difference: amount(row.difference, currency),
                unmatched: row
                    .unmatched_lines
                    .map_or_else(|| "-".into(), |n| n.to_string()),
                arrival: row
                    .arrival_date
                    .map_or_else(|| "-".into(), |date| date.to_string()),
            }
        })
        .collect();
    Ok(PayoutsPage {
        chrome: signed.chrome(),
        payouts,
    })
}

#[derive(Debug, Deserialize)]
pub struct WhichPayout {
    account: String,
    id: String,
    /// `csv`: the accountant's rows instead of the page.
    format: Option<String>,
}

struct LineShown {
    category: String,
    source: String,
    explained: String,
    invoice: Option<(String, String)>,
    gross: String,
    fee: String,
    net: String,
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "payout.html")]
struct PayoutPage {
    chrome: Chrome,
    detail: PayoutDetail,
    status: String,
    figures: Vec<(&'static str, String)>,
    lines: Vec<LineShown>,
    csv_href: String,
}

pub async fn show(
    State(state): State<ConsoleState>,
    signed: Signed,
    Query(which): Query<WhichPayout>,
) -> Result<Response, Refusal> {
    let not_found = || Refusal::NotFound(format!("no payout {}", which.id));
    if !signed.may_read(&which.account) {
        return Err(not_found());
    }
    let row = store::find(state.reads.pool(), &which.account, &which.id)
        .await?
        .ok_or_else(not_found)?;
    let detail = crate::ops::payouts::detail(state.reads.pool(), row).await?;
    if which.format.as_deref() == Some("csv") {
        let mut csv = Vec::new();
        crate::ops::payouts::write_csv(&mut csv, std::slice::from_ref(&detail))?;
        let attachment = format!(
            "attachment; filename=\"payout-{}.csv\"",
            safe_name(&which.id)
        );
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (header::CONTENT_DISPOSITION, attachment),
            ],
            csv,
        )
            .into_response());
    }
    let payout = &detail.payout;
    let currency = payout.currency.map(|currency| currency.as_str());
    let figures = vec![
        ("Deposit", amount(payout.amount, currency)),
        ("Lines' gross", amount(payout.lines_gross, currency)),
        ("Lines' fees", amount(payout.lines_fees, currency)),
        ("Lines' net", amount(payout.lines_net, currency)),
        ("Difference", amount(payout.difference, currency)),
    ];
    // A line's amounts are exact decimals of minor units (GoCardless's come to a tenth of
    // one): shown in the major unit, as the accountant's CSV has them.
    let decimal = |value: &rust_decimal::Decimal| {
        let major = crate::ops::payouts::major_units(*value, payout.currency);
        format!("{} {major}", currency.unwrap_or(""))
    };
    let lines = detail
        .lines
        .iter()
        .map(|line| LineShown {
            category: line.category.clone(),
            source: line.source_id.clone().unwrap_or_default(),
            explained: line.explained.clone(),
            invoice: line.invoice_id.as_ref().map(|invoice| {
                let href = super::links::invoice(&which.account, invoice);
                (invoice.clone(), href)
            }),
            gross: decimal(&line.gross),
            fee: decimal(&line.fee),
            net: decimal(&line.net),
        })
        .collect();
    Ok(PayoutPage {
        chrome: signed.chrome(),
        status: label(&payout.status),
        csv_href: format!(
            "{}&format=csv",
            super::links::payout(&which.account, &which.id)
        ),
        figures,
        lines,
        detail,
    }
    .into_response())
}

/// A payout id as a file name: its letters, digits, `_` and `-` only.
fn safe_name(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(64)
        .collect()
}
