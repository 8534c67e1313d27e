//! `/healthz` (the process is alive), `/readyz` (it can do its main job) and `/metrics`, served by
//! every role. Readiness follows the role (`Role::needs_database_to_be_ready`); the body always
//! reports every dependency, and says why when it is not ready. Both answer from state that
//! background tasks keep (the broker supervisor, `DatabaseCheck`, the migrations), in
//! microseconds, whatever is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// How often the background check pings the database, and how long one ping may take before the
/// database counts as down.
const DATABASE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The database as the background check last saw it. Probes read it and never wait for
/// PostgreSQL: an orchestrator's probe times out in about a second, and a probe that waits for a
/// hung database would take intake out of service exactly when it must stay in.
#[derive(Clone, Default)]
pub struct DatabaseCheck {
    up: Arc<AtomicBool>,
}

impl DatabaseCheck {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Pings `db` every interval until `shutdown`, keeping what it found.
    pub async fn run(self, db: PgPool, shutdown: CancellationToken) {
        loop {
            let ping = tokio::time::timeout(DATABASE_CHECK_TIMEOUT, crate::repository::ping(&db));
            let up = tokio::select! {
                answered = ping => answered.is_ok_and(|result| result.is_ok()),
                () = shutdown.cancelled() => return,
            };
            self.up.store(up, Ordering::Relaxed);
            if !crate::supervise::wait_interval(DATABASE_CHECK_INTERVAL, &shutdown).await {
                return;
            }
        }
    }
}

/// What the probes look at: all of it kept up to date by others, so a probe only reads.
#[derive(Clone)]
pub struct ProbeState {
    pub role: Role,
    pub broker: Broker,
    pub database: DatabaseCheck,
    /// Whether the schema is migrated: a consuming role is not ready before.
    pub schema: tokio::sync::watch::Receiver<bool>,
    /// Cancelled when shutdown begins: readiness turns 503 at once.
    pub shutdown: CancellationToken,
    /// Whether the body names the broker node (host:port): on the admin listener, or on the only
    /// one; never to the internet beside the webhooks.
    pub shows_broker_node: bool,
    /// The background tasks: one that keeps failing is named.
    pub supervisor: crate::supervise::Supervisor,
    /// The replica for reads that may lag, and its lag.
    pub reads: crate::database::Reads,
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
    let database_up = state.database.is_up();
    let draining = state.shutdown.is_cancelled();
    let schema_applied = *state.schema.borrow();
    let role = state.role;
    let failing_tasks = state.supervisor.failing();
    // Why it is not ready, each reason only where the role needs what is missing. A background
    // task that keeps failing (the relay, say) makes a worker unready: reconciling is its job.
    // It leaves intake ready: a load balancer must not stop webhooks for it.
    let unready: Vec<&str> = [
        (draining, "draining"),
        (!broker_up, "broker_down"),
        (broker_blocked && role.takes_webhooks(), "broker_blocked"),
        (
            !database_up && role.needs_database_to_be_ready(),
            "database_down",
        ),
        (
            !schema_applied && role.needs_database_to_be_ready(),
            "migrations_pending",
        ),
        (
            !failing_tasks.is_empty() && !role.takes_webhooks(),
            "task_failing",
        ),
    ]
    .into_iter()
    .filter_map(|(applies, reason)| applies.then_some(reason))
    .collect();
    let ready = unready.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "role": role.as_str(),
        "draining": draining,
        "unready": unready,
        "checks": {
            "broker": match (broker_up, broker_blocked) {
                (false, _) => "down",
                (true, true) => "blocked",
                (true, false) => "up",
            },
            "database": if database_up { "up" } else { "down" },
            "migrations": if schema_applied { "applied" } else { "pending" },
        },
        "failing_tasks": failing_tasks,
    });
    if let Some(replica) = state.reads.replica() {
        // Never a reason to be unready: past the bound, the reads go to the primary.
        body["checks"]["database_replica"] = json!(match (replica.lag, replica.reading) {
            (None, _) => "down",
            (Some(_), false) => "lagging",
            (Some(_), true) => "reading",
        });
        body["database_replica_lag_seconds"] = json!(replica.lag.map(|lag| lag.as_secs_f64()));
    }
    if state.shows_broker_node {
        // The RabbitMQ node this process is connected to (one of `amqp.urls` on a cluster).
        body["broker_node"] = json!(state.broker.node());
    }
    (status, axum::Json(body)).into_response()
}

async fn metrics() -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::telemetry::metrics_handle().render(),
    )
        .into_response()
}
