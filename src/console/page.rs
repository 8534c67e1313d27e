//! What every page shares: the header (`Chrome`), the answers that are not a page of their own
//! (`Refusal`: sign in first, not allowed, not found, a bad request, a fault), the stylesheet,
//! and how figures read (money with its currency's exponent, times in UTC).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};

/// The header of every page: who is signed in, and the form token its sign-out button sends.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub operator: String,
    pub role: &'static str,
    pub scope: Option<String>,
    pub csrf: String,
}

/// Why a request gets no page of its own.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not signed in: to the sign-in page, then back to this path.
    #[error("sign in first")]
    SignIn(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the console could not answer: {0:#}")]
    Internal(anyhow::Error),
}

impl From<sqlx::Error> for Refusal {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.into())
    }
}

impl From<anyhow::Error> for Refusal {
    fn from(error: anyhow::Error) -> Self {
        Self::Internal(error)
    }
}

#[derive(askama::Template)]
#[template(path = "refusal.html")]
struct RefusalPage<'a> {
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            Self::SignIn(next) => {
                let query = form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", next)
                    .finish();
                return Redirect::to(&format!("/console/login?{query}")).into_response();
            }
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "Not allowed"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "Cannot do that"),
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "console request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong")
            }
        };
        // A fault's cause is logged, not shown.
        let message = match &self {
            Self::Internal(_) => {
                "The console could not answer; the cause is in settle's log.".into()
            }
            other => other.to_string(),
        };
        let page = RefusalPage {
            title,
            message: &message,
        };
        match askama::Template::render(&page) {
            Ok(html) => (status, axum::response::Html(html)).into_response(),
            Err(_) => (status, message).into_response(),
        }
    }
}

/// The stylesheet, embedded in the binary.
pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("assets/console.css"),
    )
}

/// "GBP 12.34", "GBP -0.50": minor units with the currency's exponent (a payout's difference
/// may be negative); the raw figure when the currency is not one settle knows (it never stores
/// such a one) or the amount is past the bound of an amount.
pub fn money(amount: i64, currency: &str) -> String {
    use crate::reconcile::money::{Currency, MinorUnits, format_amount};
    let magnitude = amount.checked_abs().map(MinorUnits::new);
    match (magnitude, Currency::parse(currency)) {
        (Some(Ok(magnitude)), Ok(currency)) => {
            let shown = format_amount(magnitude, currency);
            match shown.split_once(' ') {
                Some((code, figure)) if amount < 0 => format!("{code} -{figure}"),
                _ => shown,
            }
        }
        _ => format!("{currency} {amount} (minor units)"),
    }
}

/// A time as operators read it in every page: UTC, to the second.
pub fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A time or a dash.
pub fn maybe_time(at: &Option<DateTime<Utc>>) -> String {
    at.as_ref().map_or_else(|| "-".to_owned(), time)
}

/// A value as its JSON names it (`SUCCEEDED`, `INVOICE`): the words the API and the docs use.
pub fn label<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::money;

    #[test]
    fn money_reads_in_the_currency_s_unit_either_side_of_zero() {
        assert_eq!(money(12_345, "GBP"), "GBP 123.45");
        assert_eq!(money(-50, "GBP"), "GBP -0.50");
        assert_eq!(money(500, "JPY"), "JPY 500");
        assert_eq!(money(1_234, "KWD"), "KWD 1.234");
        assert_eq!(
            money(i64::MIN, "GBP"),
            format!("GBP {} (minor units)", i64::MIN)
        );
        assert_eq!(money(5, "XYZ"), "XYZ 5 (minor units)");
    }
}
