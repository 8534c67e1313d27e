//! GoCardless's lists: `GET /events` (every event created in a window), `GET /payouts` (and one
//! payout, `GET /payouts/{id}`) and `GET /payout_items` (the items of a payout), up to 500 a
//! page, the next page `after` the cursor `meta.cursors.after` until it is null. Requests carry the `GoCardless-Version` they were
//! written against and the organisation's access token.

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;
use serde::Deserialize;

use crate::provider::IncomingEvent;
use crate::providers::client::{ApiClient, ProviderApiError, Walk, Window, bearer};

const PAGE: &str = "500";
const VERSION_HEADER: HeaderName = HeaderName::from_static("gocardless-version");
/// The API version these shapes are documented for.
const VERSION: HeaderValue = HeaderValue::from_static("2015-07-06");

#[derive(Deserialize)]
struct Page {
    meta: Meta,
}

#[derive(Deserialize)]
struct Meta {
    cursors: Cursors,
}

#[derive(Deserialize)]
struct Cursors {
    after: Option<String>,
}

pub(super) fn headers(access_token: &SecretString) -> Result<HeaderMap, ProviderApiError> {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, bearer(access_token)?);
    headers.insert(VERSION_HEADER, VERSION);
    Ok(headers)
}

/// Every event of the window, each with its exact JSON.
pub async fn list_events(
    client: &ApiClient,
    access_token: &SecretString,
    window: Window,
) -> Result<Vec<IncomingEvent>, ProviderApiError> {
    let headers = headers(access_token)?;
    let time =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut base = vec![
        ("limit".to_owned(), PAGE.to_owned()),
        ("created_at[gte]".to_owned(), time(window.since)),
    ];
    if let Some(until) = window.until {
        base.push(("created_at[lte]".to_owned(), time(until)));
    }

    let mut events = Vec::new();
    pages(client, "/events", &base, &headers, |body| {
        // A page has the shape of a webhook batch (`{"events": […]}`) plus `meta`: the
        // receiver's own splitter keeps each event's exact JSON.
        let listed = super::wire::events(body).map_err(|e| client.shape(e))?;
        let count = listed.len();
        events.extend(listed);
        Ok(count)
    })
    .await?;
    Ok(events)
}

/// What GoCardless answered for a payout's items.
#[derive(Debug)]
pub enum PayoutItems {
    Listed(Vec<serde_json::Value>),
    /// 410 Gone: GoCardless lists the items of payouts of the last 6 months only.
    Gone(String),
}

#[derive(Deserialize)]
struct ItemsPage {
    payout_items: Vec<serde_json::Value>,
}

/// Every item of the payout `payout`, in GoCardless's order.
pub async fn payout_items(
    client: &ApiClient,
    access_token: &SecretString,
    payout: &str,
) -> Result<PayoutItems, ProviderApiError> {
    let headers = headers(access_token)?;
    let base = vec![
        ("limit".to_owned(), PAGE.to_owned()),
        ("payout".to_owned(), payout.to_owned()),
    ];
    let mut items = Vec::new();
    let listed = pages(client, "/payout_items", &base, &headers, |body| {
        let page: ItemsPage = serde_json::from_slice(body).map_err(|e| client.shape(e))?;
        let count = page.payout_items.len();
        items.extend(page.payout_items);
        Ok(count)
    })
    .await;
    match listed {
        Ok(()) => Ok(PayoutItems::Listed(items)),
        Err(ProviderApiError::Status { status, body, .. }) if status == StatusCode::GONE => {
            Ok(PayoutItems::Gone(body))
        }
        Err(error) => Err(error),
    }
}

#[derive(Deserialize)]
struct OnePayout {
    payouts: serde_json::Value,
}

#[derive(Deserialize)]
struct PayoutsPage {
    payouts: Vec<serde_json::Value>,
}

/// `GET /payouts/{id}`: the payout, with the amount, currency and arrival date its event lacks.
pub async fn payout(
    client: &ApiClient,
    access_token: &SecretString,
    id: &str,
) -> Result<serde_json::Value, ProviderApiError> {
    let body = client
        .get(&format!("/payouts/{id}"), &[], headers(access_token)?)
        .await?;
    let one: OnePayout = serde_json::from_slice(&body).map_err(|e| client.shape(e))?;
    Ok(one.payouts)
}

/// Every payout created since `since`.
pub async fn list_payouts(
    client: &ApiClient,
    access_token: &SecretString,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<serde_json::Value>, ProviderApiError> {
    let headers = headers(access_token)?;
    let base = vec![
        ("limit".to_owned(), PAGE.to_owned()),
        (
            "created_at[gte]".to_owned(),
            since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
    ];
    let mut payouts = Vec::new();
    pages(client, "/payouts", &base, &headers, |body| {
        let page: PayoutsPage = serde_json::from_slice(body).map_err(|e| client.shape(e))?;
        let count = page.payouts.len();
        payouts.extend(page.payouts);
        Ok(count)
    })
    .await?;
    Ok(payouts)
}

#[derive(Deserialize)]
struct CreditorsPage {
    creditors: Vec<Creditor>,
}

#[derive(Deserialize)]
struct Creditor {
    id: String,
}

#[derive(Deserialize)]
struct BalancesPage {
    balances: Vec<Balance>,
}

/// One of a creditor's balances, as `GET /balances` documents it.
#[derive(Deserialize)]
struct Balance {
    amount: i64,
    balance_type: String,
    currency: String,
}

/// What GoCardless holds for the organisation, per currency, in minor units: each creditor's
/// `confirmed_funds` (confirmed, less fees and unclaimed debits, not yet in a payout) and
/// `pending_payouts` (in a payout not yet paid). Payments submitted but not confirmed
/// (`pending_payments_submitted`) are not collected yet, for GoCardless or for settle. `GET
/// /balances` is limited to 60 requests a minute: one per creditor per check.
pub async fn balances(
    client: &ApiClient,
    access_token: &SecretString,
) -> Result<Vec<(String, i64)>, ProviderApiError> {
    let headers = headers(access_token)?;
    let mut creditors = Vec::new();
    let base = vec![("limit".to_owned(), PAGE.to_owned())];
    pages(client, "/creditors", &base, &headers, |body| {
        let page: CreditorsPage = serde_json::from_slice(body).map_err(|e| client.shape(e))?;
        let count = page.creditors.len();
        creditors.extend(page.creditors);
        Ok(count)
    })
    .await?;
    let mut held = Vec::new();
    for creditor in creditors {
        let base = vec![
            ("limit".to_owned(), PAGE.to_owned()),
            ("creditor".to_owned(), creditor.id),
        ];
        pages(client, "/balances", &base, &headers, |body| {
            let page: BalancesPage = serde_json::from_slice(body).map_err(|e| client.shape(e))?;
            let count = page.balances.len();
            held.extend(
                page.balances
                    .into_iter()
                    .filter(|b| {
                        matches!(
                            b.balance_type.as_str(),
                            "confirmed_funds" | "pending_payouts"
                        )
                    })
                    .map(|b| (b.currency, b.amount)),
            );
            Ok(count)
        })
        .await?;
    }
    Ok(held)
}

/// Walks a list's pages: `take` gets each page's body and returns how many items it held; an
/// empty page or a null `after` cursor ends the list.
async fn pages(
    client: &ApiClient,
    path: &str,
    base: &[(String, String)],
    headers: &HeaderMap,
    mut take: impl FnMut(&[u8]) -> Result<usize, ProviderApiError>,
) -> Result<(), ProviderApiError> {
    let mut after: Option<String> = None;
    let mut walk = Walk::default();
    loop {
        let mut query = base.to_vec();
        if let Some(cursor) = &after {
            query.push(("after".to_owned(), cursor.clone()));
        }
        let body = client.get(path, &query, headers.clone()).await?;
        let page: Page = serde_json::from_slice(&body).map_err(|e| client.shape(e))?;
        let count = take(&body)?;
        match page.meta.cursors.after {
            Some(cursor) if count > 0 => {
                walk.follow(client, &cursor)?;
                after = Some(cursor);
            }
            _ => return Ok(()),
        }
    }
}
