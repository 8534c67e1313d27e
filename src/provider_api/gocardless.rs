//! GoCardless's `GET /events`: every event created in a window, up to 500 a page, the next page
//! `after` the cursor `meta.cursors.after` until it is null. Requests carry the
//! `GoCardless-Version` they were written against and the organisation's access token.

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;
use serde::Deserialize;

use super::{ApiClient, ProviderApiError, Window, bearer};
use crate::ingress::IncomingEvent;

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

/// Every event of the window, each with its exact JSON.
pub async fn list_events(
    client: &ApiClient,
    access_token: &SecretString,
    window: Window,
) -> Result<Vec<IncomingEvent>, ProviderApiError> {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, bearer(access_token)?);
    headers.insert(VERSION_HEADER, VERSION);
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
    let mut after: Option<String> = None;
    loop {
        let mut query = base.clone();
        if let Some(cursor) = &after {
            query.push(("after".to_owned(), cursor.clone()));
        }
        let body = client.get("/events", &query, headers.clone()).await?;
        // A page has the shape of a webhook batch (`{"events": […]}`) plus `meta`: the
        // receiver's own splitter keeps each event's exact JSON.
        let page: Page = serde_json::from_slice(&body).map_err(|e| client.shape(e))?;
        let listed = crate::ingress::gocardless::events(&body).map_err(|e| client.shape(e))?;
        let empty = listed.is_empty();
        events.extend(listed);
        match page.meta.cursors.after {
            Some(cursor) if !empty => after = Some(cursor),
            _ => return Ok(events),
        }
    }
}
