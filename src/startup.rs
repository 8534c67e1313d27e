//! Builds a process from its settings: database pool, broker supervisor, HTTP listener and, for
//! the worker roles, the consumers. Tests build the same `Application` in-process on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;

use crate::broker::{Broker, Topology};
use crate::config::Settings;

/// How long a request may wait for a pooled database connection before failing with 503.
const DATABASE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// A pooled connection idle for longer than this is pinged before it is handed out. sqlx pings
/// every connection by default: a round trip per transaction, a sixth of the worker's.
const DATABASE_PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// What a process does: `serve` takes HTTP traffic, `worker` reconciles, `run` does both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Serve,
    Worker,
    Run,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serve => "serve",
            Self::Worker => "worker",
            Self::Run => "run",
        }
    }

    fn takes_webhooks(self) -> bool {
        matches!(self, Self::Serve | Self::Run)
    }

    fn consumes(self) -> bool {
        matches!(self, Self::Worker | Self::Run)
    }
}

/// What every request handler and background task shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub role: Role,
    pub broker: Broker,
    /// Lazy pool: connections are opened on demand, so the process starts (and keeps taking
    /// webhooks) while the database is down.
    pub db: PgPool,
    /// Cancelled when shutdown begins: readiness turns 503 and loops stop taking work.
    pub shutdown: CancellationToken,
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

/// A lazy pool for `settings`; nothing connects until the first query.
pub fn database_pool(settings: &Settings) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = settings
        .database
        .url
        .expose_secret()
        .parse()
        .context("DATABASE_URL (database.url) is not a valid PostgreSQL URL")?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.database.max_connections)
        .acquire_timeout(DATABASE_ACQUIRE_TIMEOUT)
        // A connection in steady use has just proved itself; one that sat idle may have been cut
        // (a database restart, a proxy's timeout) and is checked, and replaced if dead.
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                // false: the pool closes this connection and hands out another, or a new one.
                Ok(meta.idle_for < DATABASE_PING_WHEN_IDLE_FOR
                    || sqlx::Connection::ping(connection).await.is_ok())
            })
        })
        .connect_lazy_with(options))
}

/// Applies pending migrations (embedded in the binary).
pub async fn migrate(db: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations")
        .run(db)
        .await
        .context("applying database migrations")
}

impl Application {
    pub async fn build(
        settings: Settings,
        role: Role,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        // Install the metrics recorder before anything records: until then the facade drops values.
        crate::telemetry::metrics_handle();
        let db = database_pool(&settings)?;
        if settings.database.migrate_on_start {
            migrate(&db).await?;
            crate::repository::ensure_account(&db, &settings.account.id).await?;
        }
        let topology = Topology::new(
            &settings.amqp.prefix,
            &settings.worker.retry_delays_ms,
            settings.amqp.delivery_limit,
        );
        let broker = Broker::start(settings.amqp.clone(), topology);
        let listener = TcpListener::bind(settings.http.addr)
            .await
            .with_context(|| format!("binding {}", settings.http.addr))?;
        Ok(Self {
            listener,
            state: AppState {
                settings: Arc::new(settings),
                role,
                broker,
                db,
                shutdown,
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Runs until the shutdown token is cancelled, then drains: the HTTP server stops accepting and
    /// lets in-flight requests finish (each still awaiting its confirms), consumers finish the
    /// deliveries they hold, and only then is the broker connection closed.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self { listener, state } = self;
        let tasks = TaskTracker::new();
        if state.role.consumes() {
            tasks.spawn(crate::worker::run(state.clone()));
        }
        tracing::info!(
            role = state.role.as_str(),
            addr = %listener.local_addr()?,
            prefix = %state.settings.amqp.prefix,
            "settle started"
        );
        let shutdown = state.shutdown.clone();
        axum::serve(listener, router(state.clone()))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("HTTP server")?;
        tasks.close();
        tasks.wait().await;
        state.broker.close().await;
        state.db.close().await;
        tracing::info!("settle stopped");
        Ok(())
    }
}

fn router(state: AppState) -> Router {
    let mut router = crate::ingress::health::router();
    if state.role.takes_webhooks() {
        router = router
            .merge(crate::ingress::router())
            .merge(crate::api::router());
    }
    router.layer(TraceLayer::new_for_http()).with_state(state)
}
