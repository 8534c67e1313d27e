//! Stripe's lists: `GET /v1/events` (every event created in a window, newest first; Stripe keeps
//! events for 30 days), `GET /v1/payouts` and `GET /v1/balance_transactions?payout=…` (the lines
//! of a payout). Each
//! is 100 a page, the next page `starting_after` the last item of this one while `has_more`. A
//! connected account's are read with the platform's key and the `Stripe-Account` header, or
//! with the account's own key.

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::provider::IncomingEvent;
use crate::providers::client::{ApiClient, ProviderApiError, Walk, Window, bearer};

const PAGE: &str = "100";
const STRIPE_ACCOUNT: HeaderName = HeaderName::from_static("stripe-account");

#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
    has_more: bool,
}

/// Whose events to list, and how to authenticate.
pub struct Credentials<'a> {
    pub api_key: &'a SecretString,
    /// `Stripe-Account`: a connected account read with the platform's key.
    pub account: Option<&'a str>,
}

pub(super) fn headers(
    client: &ApiClient,
    credentials: &Credentials<'_>,
) -> Result<HeaderMap, ProviderApiError> {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, bearer(credentials.api_key)?);
    if let Some(account) = credentials.account {
        let account = HeaderValue::from_str(account).map_err(|_| client.shape("account id"))?;
        headers.insert(STRIPE_ACCOUNT, account);
    }
    Ok(headers)
}

/// `GET /v1/payment_intents/{id}`: the PaymentIntent as Stripe holds it now.
pub async fn payment_intent(
    client: &ApiClient,
    credentials: &Credentials<'_>,
    id: &str,
) -> Result<serde_json::Value, ProviderApiError> {
    let path = format!("/v1/payment_intents/{id}");
    let body = client
        .get(&path, &[], headers(client, credentials)?)
        .await?;
    serde_json::from_slice(&body).map_err(|e| client.shape(e))
}

#[derive(Deserialize)]
struct Balance {
    available: Vec<Amount>,
    pending: Vec<Amount>,
}

#[derive(Deserialize)]
struct Amount {
    amount: i64,
    currency: String,
}

/// `GET /v1/balance`: what Stripe holds for the account, per currency, in minor units: the
/// available and the pending funds (both net of Stripe's fees), not yet paid out.
pub async fn balance(
    client: &ApiClient,
    credentials: &Credentials<'_>,
) -> Result<Vec<(String, i64)>, ProviderApiError> {
    let body = client
        .get("/v1/balance", &[], headers(client, credentials)?)
        .await?;
    let balance: Balance = serde_json::from_slice(&body).map_err(|e| client.shape(e))?;
    Ok(balance
        .available
        .into_iter()
        .chain(balance.pending)
        .map(|amount| (amount.currency, amount.amount))
        .collect())
}

/// Every event of the window (of `types`, when given), each with its exact JSON.
pub async fn list_events(
    client: &ApiClient,
    credentials: &Credentials<'_>,
    window: Window,
    types: &[String],
) -> Result<Vec<IncomingEvent>, ProviderApiError> {
    let headers = headers(client, credentials)?;
    let mut base = vec![
        ("limit".to_owned(), PAGE.to_owned()),
        (
            "created[gte]".to_owned(),
            window.since.timestamp().to_string(),
        ),
    ];
    if let Some(until) = window.until {
        base.push(("created[lte]".to_owned(), until.timestamp().to_string()));
    }
    base.extend(types.iter().map(|t| ("types[]".to_owned(), t.clone())));

    let mut events = Vec::new();
    pages(client, "/v1/events", &base, &headers, |raw| {
        let event = super::wire::events(raw.get().as_bytes()).map_err(|e| client.shape(e))?;
        events.extend(event);
        Ok(events.last().map(|event| event.id.clone()))
    })
    .await?;
    Ok(events)
}

/// Every payout created since `since`, newest first, as `GET /v1/payouts` lists them.
pub async fn list_payouts(
    client: &ApiClient,
    credentials: &Credentials<'_>,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<serde_json::Value>, ProviderApiError> {
    let headers = headers(client, credentials)?;
    let base = vec![
        ("limit".to_owned(), PAGE.to_owned()),
        ("created[gte]".to_owned(), since.timestamp().to_string()),
    ];
    list_objects(client, "/v1/payouts", &base, &headers).await
}

/// Every balance transaction of the payout `payout`, its `source` expanded (the charge, refund
/// or dispute it moved money for), in Stripe's order. Only an automatic payout's can be listed:
/// Stripe does not know which transactions a manual payout took.
pub async fn payout_lines(
    client: &ApiClient,
    credentials: &Credentials<'_>,
    payout: &str,
) -> Result<Vec<serde_json::Value>, ProviderApiError> {
    let headers = headers(client, credentials)?;
    let base = vec![
        ("limit".to_owned(), PAGE.to_owned()),
        ("payout".to_owned(), payout.to_owned()),
        ("expand[]".to_owned(), "data.source".to_owned()),
    ];
    list_objects(client, "/v1/balance_transactions", &base, &headers).await
}

/// Every object of a list, in its order.
async fn list_objects(
    client: &ApiClient,
    path: &str,
    base: &[(String, String)],
    headers: &HeaderMap,
) -> Result<Vec<serde_json::Value>, ProviderApiError> {
    let mut objects = Vec::new();
    pages(client, path, base, headers, |raw| {
        let object: serde_json::Value =
            serde_json::from_str(raw.get()).map_err(|e| client.shape(e))?;
        let id = object["id"].as_str().map(str::to_owned);
        objects.push(object);
        Ok(id)
    })
    .await?;
    Ok(objects)
}

/// Walks a list's pages: `take` gets each item and returns its id, the cursor of the next page.
async fn pages(
    client: &ApiClient,
    path: &str,
    base: &[(String, String)],
    headers: &HeaderMap,
    mut take: impl FnMut(&RawValue) -> Result<Option<String>, ProviderApiError>,
) -> Result<(), ProviderApiError> {
    let mut starting_after: Option<String> = None;
    let mut walk = Walk::default();
    loop {
        let mut query = base.to_vec();
        if let Some(after) = &starting_after {
            query.push(("starting_after".to_owned(), after.clone()));
        }
        let body = client.get(path, &query, headers.clone()).await?;
        let page: Page<'_> = serde_json::from_slice(&body).map_err(|e| client.shape(e))?;
        let mut last = None;
        for raw in &page.data {
            last = take(raw)?;
        }
        match last {
            Some(id) if page.has_more => {
                walk.follow(client, &id)?;
                starting_after = Some(id);
            }
            _ => return Ok(()),
        }
    }
}
