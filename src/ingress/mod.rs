//! 1. The HTTP edge for providers: verify the signature on the raw body, split the body into
//!    events, publish one persistent message per event, and answer 2xx only once the broker has
//!    confirmed every one of them. No request touches the database (the state holds no pool; the
//!    connections' secrets are reloaded in the background by `secrets`), so a database outage
//!    never stops webhook intake.
//!
//! Two kinds of endpoint: the platform's (`/webhooks/{provider}`, verified with the configured
//! secrets: a Stripe Connect endpoint, a GoCardless partner app, or a single account's own) and a
//! connection's (`/webhooks/{provider}/{connection id}`, verified with that connection's secrets,
//! held in memory by `secrets`). Neither looks inside an event to see whose it is: a connection's
//! endpoint only stamps the connection on each message, and the worker routes
//! (`reconcile::routing`).

pub mod secrets;
pub mod traffic;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::broker::{Broker, PublishError};
use crate::config::WebhookSettings;
use crate::envelope::{EnvelopeError, QueuedEvent};
use crate::http::{error_body, unavailable};
use crate::provider::{Provider, WireError};
use crate::providers::rules::{Acknowledgement, SignatureError};
use crate::providers::{Rules, rules};
use secrecy::SecretString;

use self::secrets::SecretsCache;

/// What the webhook edge needs: the broker to publish to and the secrets to verify with. No
/// database: intake keeps going while PostgreSQL is down.
#[derive(Clone)]
pub struct IngressState {
    pub broker: Broker,
    pub webhooks: Arc<WebhookSettings>,
    /// The per-connection endpoints' secrets, refreshed in the background.
    pub connections: SecretsCache,
    pub body_limit: usize,
    /// Body bytes held by every request being read, one permit a byte (`http.body_budget_bytes`):
    /// bodies are read before their signature can be checked, so this bounds what
    /// unauthenticated clients can make settle hold.
    pub body_budget: Arc<Semaphore>,
    /// Seals each queued event (`envelope::headers::SEAL`), so the worker applies only what a
    /// settle process queued.
    pub keyring: Arc<crate::sealed::Keyring>,
    /// What each known endpoint received in the last hour (the console shows it).
    pub traffic: Arc<traffic::Traffic>,
}

/// Webhook routes. They authenticate by signature, not by API credentials.
pub fn router(state: IngressState) -> Router {
    Router::new()
        .route("/webhooks/{provider}", post(receive))
        .route(
            "/webhooks/{provider}/{connection}",
            post(receive_for_connection),
        )
        .with_state(state)
}

/// The endpoint a request came to: the platform's, or one connection's.
enum Endpoint<'a> {
    Platform,
    Connection {
        id: &'a str,
        secrets: Arc<[SecretString]>,
    },
}

/// Why a correctly signed body could not be turned into events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// Everything a webhook request can end in other than success: the status, the error code and
/// the metric label of each come from here.
#[derive(Debug, thiserror::Error)]
enum IngressError {
    #[error("no such webhook provider")]
    UnknownProvider,
    /// Not one whose secrets the receiver holds: never added, removed, or added so recently that
    /// the next refresh (`webhooks.connection_secrets_refresh_secs`) has not loaded it yet. The
    /// provider retries, so an event sent in that window is not lost.
    #[error("no connection with that id takes this provider's webhooks")]
    UnknownConnection,
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body could not be read")]
    UnreadableBody,
    /// The bodies being read already hold `http.body_budget_bytes`.
    #[error("too many webhook bodies in flight; retry")]
    Overloaded,
    #[error(transparent)]
    Signature(SignatureError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("the events could not be queued; retry later")]
    BrokerUnavailable(#[source] PublishError),
}

impl IngressError {
    /// The `outcome` label of `settle_webhook_requests_total`.
    fn outcome(&self) -> &'static str {
        match self {
            Self::UnknownProvider => "unknown_provider",
            Self::UnknownConnection => "unknown_connection",
            Self::TooLarge(_) => "too_large",
            Self::UnreadableBody => "unreadable_body",
            Self::Overloaded => "overloaded",
            Self::Signature(SignatureError::NotConfigured) => "not_configured",
            Self::Signature(_) => "invalid_signature",
            Self::Payload(_) => "invalid_payload",
            Self::BrokerUnavailable(_) => "broker_unavailable",
        }
    }

    fn response(&self, provider: Option<Provider>) -> Response {
        let message = self.to_string();
        match self {
            Self::UnknownProvider => {
                error_body(StatusCode::NOT_FOUND, "unknown_provider", &message)
            }
            Self::UnknownConnection => {
                error_body(StatusCode::NOT_FOUND, "unknown_connection", &message)
            }
            Self::TooLarge(_) => {
                error_body(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &message)
            }
            Self::UnreadableBody => {
                error_body(StatusCode::BAD_REQUEST, "unreadable_body", &message)
            }
            Self::Overloaded => unavailable("overloaded", &message),
            // Our misconfiguration, not the provider's fault: a 500 makes it retry later.
            Self::Signature(reason @ SignatureError::NotConfigured) => {
                error_body(StatusCode::INTERNAL_SERVER_ERROR, reason.code(), &message)
            }
            Self::Signature(reason) => {
                error_body(invalid_signature_status(provider), reason.code(), &message)
            }
            Self::Payload(_) => error_body(StatusCode::BAD_REQUEST, "invalid_payload", &message),
            Self::BrokerUnavailable(_) => unavailable("broker_unavailable", &message),
        }
    }
}

/// A refused signature's status: each provider's convention (GoCardless documents 498).
fn invalid_signature_status(provider: Option<Provider>) -> StatusCode {
    provider
        .and_then(|provider| StatusCode::from_u16(rules(provider).invalid_signature_status()).ok())
        .unwrap_or(StatusCode::BAD_REQUEST)
}

/// What the provider expects on success.
fn success(provider: Provider, queued: usize) -> Response {
    match rules(provider).acknowledgement() {
        Acknowledgement::Counted => {
            (StatusCode::OK, axum::Json(json!({ "queued": queued }))).into_response()
        }
        Acknowledgement::NoContent => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn receive(
    State(state): State<IngressState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(provider) = Provider::from_wire_name(&provider) else {
        return IngressError::UnknownProvider.response(None);
    };
    respond(&state, provider, Endpoint::Platform, &headers, body).await
}

async fn receive_for_connection(
    State(state): State<IngressState>,
    Path((provider, connection)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(provider) = Provider::from_wire_name(&provider) else {
        return IngressError::UnknownProvider.response(None);
    };
    let endpoint = match state.connections.get(&connection) {
        Some(cached) if cached.provider == provider => Endpoint::Connection {
            id: &connection,
            secrets: cached.secrets,
        },
        _ => {
            let error = IngressError::UnknownConnection;
            if refusal_may_be_logged() {
                // Debug formatting: the id is the caller's, and may hold anything.
                tracing::info!(%provider, connection = ?connection, reason = %error, "webhook refused");
            }
            count_request(provider, error.outcome());
            return error.response(Some(provider));
        }
    };
    respond(&state, provider, endpoint, &headers, body).await
}

/// Handles one request to an endpoint: the response, logged and counted.
async fn respond(
    state: &IngressState,
    provider: Provider,
    endpoint: Endpoint<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let connection = match &endpoint {
        Endpoint::Connection { id, .. } => Some(*id),
        Endpoint::Platform => None,
    };
    // The request's span starts the events' trace, or continues the one a proxy in front began.
    let span = tracing::info_span!("webhook", %provider, trace_id = tracing::field::Empty);
    crate::trace::continue_in(
        &span,
        headers
            .get(crate::trace::TRACEPARENT)
            .and_then(|value| value.to_str().ok()),
    );
    let handled = handle(state, provider, endpoint, headers, body)
        .instrument(span.clone())
        .await;
    let _in_request = span.enter();
    let (outcome, response) = match handled {
        Ok(queued) => ("queued", success(provider, queued)),
        Err(error) => {
            match &error {
                IngressError::Signature(SignatureError::NotConfigured) => {
                    tracing::error!(%provider, "webhook refused: no secret configured")
                }
                IngressError::BrokerUnavailable(failure) => {
                    tracing::warn!(%provider, error = %failure, "webhook not queued; provider will retry")
                }
                other if refusal_may_be_logged() => {
                    tracing::info!(%provider, reason = %other, "webhook refused")
                }
                _ => {}
            }
            (error.outcome(), error.response(Some(provider)))
        }
    };
    count_request(provider, outcome);
    state.traffic.record(
        provider,
        connection,
        outcome == "queued",
        chrono::Utc::now(),
    );
    response
}

/// Refusals are counted every time (`settle_webhook_requests_total`) but logged at most
/// `REFUSALS_LOGGED_PER_SECOND` times a second: anyone on the internet can cause one, and a flood
/// must not fill the log's disk.
fn refusal_may_be_logged() -> bool {
    use governor::{Quota, RateLimiter};
    use std::num::NonZeroU32;
    use std::sync::LazyLock;
    const REFUSALS_LOGGED_PER_SECOND: NonZeroU32 = NonZeroU32::new(10).unwrap();
    static LIMITER: LazyLock<governor::DefaultDirectRateLimiter> =
        LazyLock::new(|| RateLimiter::direct(Quota::per_second(REFUSALS_LOGGED_PER_SECOND)));
    LIMITER.check().is_ok()
}

fn count_request(provider: Provider, outcome: &'static str) {
    metrics::counter!(
        crate::telemetry::WEBHOOK_REQUESTS,
        "provider" => provider.wire_name(),
        "outcome" => outcome,
    )
    .increment(1);
}

/// The webhook pipeline: read, verify, split, publish; the number of events queued.
async fn handle(
    state: &IngressState,
    provider: Provider,
    endpoint: Endpoint<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Result<usize, IngressError> {
    let rules = rules(provider);
    let (secrets, connection) = match &endpoint {
        Endpoint::Platform => (rules.platform_secrets(&state.webhooks), None),
        Endpoint::Connection { id, secrets } => (&secrets[..], Some(*id)),
    };
    // Before a byte of the body: a request that could not be signed, or one larger than the
    // limit says, costs no memory.
    check_signature_header(rules, secrets, headers).map_err(IngressError::Signature)?;
    let (body, _held) = read_body(state, headers, body).await?;
    let header = header_text(headers, rules.signature_header()).map_err(IngressError::Signature)?;
    let now = chrono::Utc::now().timestamp();
    rules
        .verify(header, &body, secrets, &state.webhooks, now)
        .map_err(IngressError::Signature)?;
    let incoming = rules.events(&body).map_err(PayloadError::from)?;
    let received_at = chrono::Utc::now();
    let topology = state.broker.topology();
    let messages = incoming
        .into_iter()
        .map(|event| {
            QueuedEvent::new(
                provider,
                event.id,
                event.event_type,
                received_at,
                event.body,
            )
            .map(|queued| {
                queued
                    .via_connection(connection)
                    .in_trace_of(&tracing::Span::current())
                    .to_webhook_message(topology, &state.keyring)
            })
            .map_err(PayloadError::from)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let started = Instant::now();
    let result = state.broker.publish_all(&messages).await;
    metrics::histogram!(crate::telemetry::PUBLISH_CONFIRM_SECONDS, "provider" => provider.wire_name())
        .record(started.elapsed().as_secs_f64());
    result.map_err(IngressError::BrokerUnavailable)?;
    for message in &messages {
        tracing::debug!(message_id = %message.message_id, routing_key = %message.routing_key, "webhook event queued");
    }
    Ok(messages.len())
}

/// Reads the raw body (the signature is over its exact bytes) under the size limit, holding its
/// bytes against the shared budget until the returned permit is dropped: a declared length is
/// reserved whole before reading, a chunked body as its buffer grows.
async fn read_body(
    state: &IngressState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Vec<u8>, OwnedSemaphorePermit), IngressError> {
    let limit = state.body_limit;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(IngressError::TooLarge(limit));
    }
    let reserve = |held: &mut OwnedSemaphorePermit, bytes: usize| {
        let bytes = u32::try_from(bytes).map_err(|_| IngressError::TooLarge(limit))?;
        let more = state.body_budget.clone().try_acquire_many_owned(bytes);
        held.merge(more.map_err(|_| IngressError::Overloaded)?);
        Ok::<(), IngressError>(())
    };
    let mut held = state
        .body_budget
        .clone()
        .try_acquire_many_owned(0)
        .map_err(|_| IngressError::Overloaded)?;
    let mut buffer = Vec::new();
    if let Some(length) = declared {
        reserve(&mut held, length)?;
        buffer.reserve_exact(length);
    }
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| IngressError::UnreadableBody)?.into_data() else {
            continue; // trailers
        };
        let needed = buffer.len() + data.len();
        if needed > limit {
            return Err(IngressError::TooLarge(limit));
        }
        if needed > buffer.capacity() {
            let grown = needed.max(buffer.capacity() * 2).min(limit);
            let more = grown - held.num_permits();
            reserve(&mut held, more)?;
            buffer.reserve_exact(grown - buffer.len());
        }
        buffer.extend_from_slice(&data);
    }
    Ok((buffer, held))
}

/// The checks that need no body: secrets to verify with, and a signature header of the right
/// shape.
fn check_signature_header(
    rules: &dyn Rules,
    secrets: &[SecretString],
    headers: &HeaderMap,
) -> Result<(), SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    let header =
        header_text(headers, rules.signature_header())?.ok_or(SignatureError::MissingHeader)?;
    rules.check_signature_header(header)
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
