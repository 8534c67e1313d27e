//! `/healthz` (the process is alive), `/readyz` (it can do its main job) and `/metrics`, served by
//! every role. Readiness follows the role (`Role::needs_database_to_be_ready`); the body always
//! reports every dependency.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::role::Role;

/// A readiness probe must answer quickly even when the database hangs.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the probes look at.
#[derive(Clone)]
pub struct ProbeState {
    pub role: Role,
    pub broker: Broker,
    pub db: PgPool,
    /// Whether the schema is migrated: a consuming role is not ready before.
    pub schema: tokio::sync::watch::Receiver<bool>,
    /// Cancelled when shutdown begins: readiness turns 503 at once.
    pub shutdown: CancellationToken,
}

/// `/healthz` and `/readyz`, served on every listener.
pub fn router(state: ProbeState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// `/metrics`, served with the internal API.
pub fn metrics_router() -> Router {
    Router::new().route("/metrics", get(metrics))
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<ProbeState>) -> Response {
    let broker_up = state.broker.is_connected();
    // A memory or disk alarm: intake would answer 503, so a load balancer should look elsewhere;
    // consuming goes on (its connection is not blocked), so a worker stays ready.
    let broker_blocked = broker_up && state.broker.is_blocked();
    let database_up =
        tokio::time::timeout(DATABASE_CHECK_TIMEOUT, crate::repository::ping(&state.db))
            .await
            .is_ok_and(|result| result.is_ok());
    let draining = state.shutdown.is_cancelled();
    let schema_applied = *state.schema.borrow();
    let database_ready = database_up && schema_applied;
    let ready = !draining
        && broker_up
        && !(broker_blocked && state.role.takes_webhooks())
        && (database_ready || !state.role.needs_database_to_be_ready());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "role": state.role.as_str(),
        "draining": draining,
        // The RabbitMQ node this process is connected to (one of `amqp.urls` on a cluster).
        "broker_node": state.broker.node(),
        "checks": {
            "broker": match (broker_up, broker_blocked) {
                (false, _) => "down",
                (true, true) => "blocked",
                (true, false) => "up",
            },
            "database": if database_up { "up" } else { "down" },
            "migrations": if schema_applied { "applied" } else { "pending" },
        },
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics() -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::telemetry::metrics_handle().render(),
    )
        .into_response()
}
