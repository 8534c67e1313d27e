//! 1. The HTTP edge for providers: verify the signature on the raw body, split the body into
//!    events, publish one persistent message per event, and answer 2xx only once the broker has
//!    confirmed every one of them. Nothing here touches the database, so a database outage never
//!    stops webhook intake.

pub mod gocardless;
pub mod health;
pub mod signature;
pub mod stripe;

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue as HttpHeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use crate::broker::{HeaderValue, OutgoingMessage, PublishError, headers};
use crate::startup::AppState;

/// Seconds a provider is asked to wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "5";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Stripe,
    GoCardless,
}

impl Provider {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "stripe" => Some(Self::Stripe),
            "gocardless" => Some(Self::GoCardless),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::GoCardless => "gocardless",
        }
    }

    /// What the provider expects on success: GoCardless documents 204 for a processed batch.
    fn success(self, queued: usize) -> Response {
        match self {
            Self::Stripe => {
                (StatusCode::OK, axum::Json(json!({ "queued": queued }))).into_response()
            }
            Self::GoCardless => StatusCode::NO_CONTENT.into_response(),
        }
    }

    /// GoCardless's documented convention for a bad signature is 498; Stripe's SDKs use 400.
    fn invalid_signature_status(self) -> StatusCode {
        match self {
            Self::Stripe => StatusCode::BAD_REQUEST,
            Self::GoCardless => StatusCode::from_u16(498).expect("498 is a valid status code"),
        }
    }

    fn verify(
        self,
        state: &AppState,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let webhooks = &state.settings.webhooks;
        match self {
            Self::Stripe => stripe::verify(
                header_text(headers, stripe::SIGNATURE_HEADER)?,
                body,
                &webhooks.stripe_secrets,
                webhooks.stripe_tolerance_secs,
                chrono::Utc::now().timestamp(),
            ),
            Self::GoCardless => gocardless::verify(
                header_text(headers, gocardless::SIGNATURE_HEADER)?,
                body,
                &webhooks.gocardless_secrets,
            ),
        }
    }

    fn events(self, body: &[u8]) -> Result<Vec<IncomingEvent>, PayloadError> {
        match self {
            Self::Stripe => stripe::events(body),
            Self::GoCardless => gocardless::events(body),
        }
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, SignatureError> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| SignatureError::MalformedHeader("header is not visible ASCII"))
        })
        .transpose()
}

/// One provider event, as it will be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingEvent {
    pub id: String,
    pub event_type: String,
    /// The event's exact JSON as the provider sent it.
    pub body: Vec<u8>,
}

/// Why a signature was refused. The categories are safe to show the caller: none reveals secret
/// material or how close a forgery came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing")]
    MissingHeader,
    #[error("the signature header is malformed: {0}")]
    MalformedHeader(&'static str),
    #[error("no signature matches a configured secret")]
    Mismatch,
    #[error("the signature timestamp is outside the tolerance")]
    OutsideTolerance,
    #[error("no webhook secret is configured for this provider")]
    NotConfigured,
}

impl SignatureError {
    fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_signature",
            Self::MalformedHeader(_) => "malformed_signature",
            Self::Mismatch => "signature_mismatch",
            Self::OutsideTolerance => "timestamp_outside_tolerance",
            Self::NotConfigured => "not_configured",
        }
    }
}

/// Why a correctly signed body could not be turned into events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the event has no `{0}`")]
    MissingField(&'static str),
    #[error("the event id or type is too long: {0}")]
    TooLong(String),
}

/// Webhook routes. They authenticate by signature, not by API credentials.
pub fn router() -> Router<AppState> {
    Router::new().route("/webhooks/{provider}", post(receive))
}

async fn receive(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(provider) = Provider::parse(&provider) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_provider",
            "no such webhook provider",
        );
    };
    let (outcome, response) = handle(&state, provider, &headers, body).await;
    metrics::counter!(
        "settle_webhook_requests_total",
        "provider" => provider.as_str(),
        "outcome" => outcome,
    )
    .increment(1);
    response
}

/// The webhook pipeline; returns the metrics outcome label with the response.
async fn handle(
    state: &AppState,
    provider: Provider,
    headers: &HeaderMap,
    body: Body,
) -> (&'static str, Response) {
    let limit = state.settings.http.body_limit_bytes;
    // Read the raw bytes ourselves: the signature is over them, and parsing comes after.
    let Ok(body) = axum::body::to_bytes(body, limit).await else {
        let message = format!("the body is larger than {limit} bytes");
        return (
            "too_large",
            error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &message),
        );
    };
    if let Err(reason) = provider.verify(state, headers, &body) {
        if reason == SignatureError::NotConfigured {
            tracing::error!(
                provider = provider.as_str(),
                "webhook refused: no secret configured"
            );
            return (
                "not_configured",
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    reason.code(),
                    &reason.to_string(),
                ),
            );
        }
        tracing::info!(provider = provider.as_str(), reason = %reason, "webhook signature refused");
        return (
            "invalid_signature",
            error(
                provider.invalid_signature_status(),
                reason.code(),
                &reason.to_string(),
            ),
        );
    }
    let events = match provider.events(&body) {
        Ok(events) => events,
        Err(reason) => {
            tracing::info!(provider = provider.as_str(), reason = %reason, "signed webhook with a bad payload");
            return (
                "invalid_payload",
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid_payload",
                    &reason.to_string(),
                ),
            );
        }
    };
    let received_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let messages: Vec<OutgoingMessage> = events
        .into_iter()
        .map(|event| event_message(state, provider, event, &received_at))
        .collect();

    let started = Instant::now();
    let result = state.broker.publish_all(&messages).await;
    metrics::histogram!("settle_publish_confirm_seconds", "provider" => provider.as_str())
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            for message in &messages {
                tracing::debug!(message_id = %message.message_id, routing_key = %message.routing_key, "webhook event queued");
            }
            ("queued", provider.success(messages.len()))
        }
        Err(PublishError::NameTooLong(name)) => {
            let reason = PayloadError::TooLong(name);
            (
                "invalid_payload",
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid_payload",
                    &reason.to_string(),
                ),
            )
        }
        Err(failure) => {
            tracing::warn!(provider = provider.as_str(), error = %failure, events = messages.len(), "webhook not queued; provider will retry");
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                "the events could not be queued; retry later",
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HttpHeaderValue::from_static(RETRY_AFTER_SECS),
            );
            ("broker_unavailable", response)
        }
    }
}

fn event_message(
    state: &AppState,
    provider: Provider,
    event: IncomingEvent,
    received_at: &str,
) -> OutgoingMessage {
    OutgoingMessage {
        exchange: state.broker.topology().webhooks_exchange.clone(),
        routing_key: format!("{}.{}", provider.as_str(), event.event_type),
        message_id: format!("{}:{}", provider.as_str(), event.id),
        headers: vec![
            (
                headers::PROVIDER.into(),
                HeaderValue::Text(provider.as_str().to_owned()),
            ),
            (headers::EVENT_ID.into(), HeaderValue::Text(event.id)),
            (
                headers::EVENT_TYPE.into(),
                HeaderValue::Text(event.event_type),
            ),
            (
                headers::RECEIVED_AT.into(),
                HeaderValue::Text(received_at.to_owned()),
            ),
        ],
        body: event.body,
    }
}

/// The error body shared by every route: `{"error":{"code":…,"message":…}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}
