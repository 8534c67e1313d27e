//! The HTTP client every read of a provider's API goes through (each provider's `api` module
//! has its requests). Reads only,
//! so every request may be retried: a 429 or a 5xx is retried with backoff, honouring
//! `Retry-After`, and a connection error or timeout likewise; anything else is an answer. The
//! base URL is configuration (`stripe.api_base`, `gocardless.api_base`), so a sandbox or a
//! test's stand-in takes the real API's place.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of one request before its failure is the caller's.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The longest `Retry-After` honoured: a provider asking for more is as good as down.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The largest answer read: a page of 100 events is a few hundred KB; more is not the documented
/// API, and reading it would let an answer take the process's memory.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Pages one list walk reads at most: 100 a page, a million items, far past any window settle
/// lists; a list that does not end by then is a provider (or a stand-in) looping.
const MAX_PAGES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ProviderApiError {
    #[error("{provider} API unreachable after {attempts} attempts: {source}")]
    Unreachable {
        provider: &'static str,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("{provider} API answered {status}: {body}")]
    Status {
        provider: &'static str,
        status: StatusCode,
        /// The start of the answer's body (the provider's error message).
        body: String,
    },
    #[error("{provider} API answered something that is not its documented shape: {detail}")]
    Shape {
        provider: &'static str,
        detail: String,
    },
    /// A list that does not end: a cursor given twice, or more pages than `MAX_PAGES`.
    #[error("{provider} API list does not end: {detail}")]
    Endless {
        provider: &'static str,
        detail: String,
    },
}

/// Where a list walk is: the cursors it followed, so a provider that hands one back twice (or
/// lists for ever) ends the walk with an error instead of looping.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    cursors: std::collections::HashSet<String>,
}

impl Walk {
    /// Records that the walk goes on from `cursor`; an error if it went from there before, or
    /// has read `MAX_PAGES` pages.
    pub(crate) fn follow(
        &mut self,
        client: &ApiClient,
        cursor: &str,
    ) -> Result<(), ProviderApiError> {
        let endless = |detail: String| ProviderApiError::Endless {
            provider: client.provider,
            detail,
        };
        if self.cursors.len() + 1 >= MAX_PAGES {
            return Err(endless(format!("more than {MAX_PAGES} pages")));
        }
        if !self.cursors.insert(cursor.to_owned()) {
            let shown: String = cursor.chars().take(64).collect();
            return Err(endless(format!("the cursor `{shown}` came back")));
        }
        Ok(())
    }
}

/// A client of one provider's API.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    provider: &'static str,
    base: String,
}

impl ApiClient {
    pub fn new(provider: &'static str, base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("settle/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            provider,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// `GET <base><path>?<query>` with `headers`, retried as the module says; the body of the
    /// first 2xx answer.
    pub async fn get(
        &self,
        path: &str,
        query: &[(String, String)],
        headers: HeaderMap,
    ) -> Result<Vec<u8>, ProviderApiError> {
        let url = format!("{}{path}", self.base);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let sent = self
                .http
                .get(&url)
                .query(query)
                .headers(headers.clone())
                .send()
                .await;
            let wait = match sent {
                Ok(response) if response.status().is_success() => {
                    return self.read_bounded(response, attempt).await;
                }
                Ok(response) if retryable(response.status()) && attempt < ATTEMPTS => {
                    let asked = retry_after(response.headers());
                    tracing::warn!(provider = self.provider, status = %response.status(), attempt, "provider API refused for now; retrying");
                    asked.unwrap_or(backoff)
                }
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    return Err(ProviderApiError::Status {
                        provider: self.provider,
                        status,
                        body: body.chars().take(500).collect(),
                    });
                }
                Err(error) if attempt < ATTEMPTS => {
                    tracing::warn!(provider = self.provider, %error, attempt, "provider API unreachable; retrying");
                    backoff
                }
                Err(source) => {
                    return Err(ProviderApiError::Unreachable {
                        provider: self.provider,
                        attempts: attempt,
                        source,
                    });
                }
            };
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    /// `POST <base><path>` once, with `headers` and the body `body` sets: its status, asked wait
    /// and body, whatever the status. Not retried here: a payment's create call is retried by the
    /// charger, with its idempotency key and a backoff it stores (`charger`).
    pub async fn post_once(
        &self,
        path: &str,
        headers: HeaderMap,
        body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Posted, ProviderApiError> {
        let url = format!("{}{path}", self.base);
        let request = body(self.http.post(&url).headers(headers));
        let response = request
            .send()
            .await
            .map_err(|source| ProviderApiError::Unreachable {
                provider: self.provider,
                attempts: 1,
                source,
            })?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = self.read_bounded(response, 1).await?;
        Ok(Posted {
            status,
            retry_after,
            body,
        })
    }

    /// The answer's body, read up to `MAX_RESPONSE_BYTES`.
    async fn read_bounded(
        &self,
        mut response: reqwest::Response,
        attempt: u32,
    ) -> Result<Vec<u8>, ProviderApiError> {
        let mut body = Vec::new();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|source| ProviderApiError::Unreachable {
                    provider: self.provider,
                    attempts: attempt,
                    source,
                })?;
            let Some(chunk) = chunk else {
                return Ok(body);
            };
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(self.shape(format!("an answer larger than {MAX_RESPONSE_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
    }

    pub(crate) fn shape(&self, detail: impl ToString) -> ProviderApiError {
        ProviderApiError::Shape {
            provider: self.provider,
            detail: detail.to_string(),
        }
    }
}

/// A create call's answer.
#[derive(Debug)]
pub struct Posted {
    pub status: StatusCode,
    /// `Retry-After`, capped.
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Posted {
    /// A 429 or a 5xx: the provider did not act on the request, or cannot say; send it again.
    pub fn is_retryable(&self) -> bool {
        retryable(self.status)
    }

    /// The start of the body, for an error message.
    pub fn excerpt(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(500)
            .collect()
    }
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `Retry-After` in seconds (the form both providers send), capped.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// A bearer token header, marked sensitive so it is never logged.
pub(crate) fn bearer(
    token: &secrecy::SecretString,
) -> Result<reqwest::header::HeaderValue, ProviderApiError> {
    use secrecy::ExposeSecret;
    let mut value =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| ProviderApiError::Shape {
                provider: "settle",
                detail: "the API key holds characters a header cannot".into(),
            })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The window of a listing: events created from `since` to `until` (now when `None`).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub since: chrono::DateTime<chrono::Utc>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_walk_ends_with_an_error_when_a_cursor_comes_back() {
        let client = ApiClient::new("stripe", "https://api.stripe.example").unwrap();
        let mut walk = Walk::default();
        walk.follow(&client, "evt_1").unwrap();
        walk.follow(&client, "evt_2").unwrap();
        let error = walk.follow(&client, "evt_1").unwrap_err();
        assert!(
            error.to_string().contains("the cursor `evt_1` came back"),
            "{error}"
        );
        let mut endless = Walk::default();
        let ended =
            (0..MAX_PAGES).find_map(|page| endless.follow(&client, &page.to_string()).err());
        assert!(ended.is_some_and(|error| error.to_string().contains("more than 10000 pages")));
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(reqwest::header::RETRY_AFTER, "3600".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(retryable(StatusCode::BAD_GATEWAY));
        assert!(!retryable(StatusCode::UNAUTHORIZED));
    }
}
