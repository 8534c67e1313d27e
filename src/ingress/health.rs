//! `/healthz` (the process is alive), `/readyz` (it can do its main job) and `/metrics`.
//!
//! Readiness depends on the role. `serve` exists to take webhooks, which needs only the broker: a
//! database outage must not make it unready, or a load balancer would stop webhook intake exactly
//! when it should keep going. A worker needs both. The body always reports every dependency.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::startup::{AppState, Role};

/// A readiness probe must answer quickly even when the database hangs.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let broker_up = state.broker.is_connected();
    let database_up = tokio::time::timeout(
        DATABASE_CHECK_TIMEOUT,
        sqlx::query("SELECT 1").execute(&state.db),
    )
    .await
    .is_ok_and(|result| result.is_ok());
    let draining = state.shutdown.is_cancelled();
    let ready = !draining && broker_up && (database_up || !state.role.needs_database_to_be_ready());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "role": state.role.as_str(),
        "draining": draining,
        "checks": {
            "broker": if broker_up { "up" } else { "down" },
            "database": if database_up { "up" } else { "down" },
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

impl Role {
    fn needs_database_to_be_ready(self) -> bool {
        !matches!(self, Role::Serve)
    }
}
