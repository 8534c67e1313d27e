//! The composition root: builds a process (serve, worker or run) from its settings, giving each
//! part the state it needs and no more, and runs it until shutdown. Nothing imports this module
//! but the command line (and the tests, which build the same `Application` in-process on port 0).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;

use crate::api::ApiState;
use crate::broker::{Broker, Connections, Topology};
use crate::clock::Clock;
use crate::config::Settings;
use crate::http::probes::{self, ProbeState};
use crate::ingress::IngressState;
use crate::notify::sender::Sender;
use crate::outbox::Relay;
use crate::role::Role;
use crate::worker::Worker;
use crate::worker::apply::Policy;

/// The oldest PostgreSQL settle runs on (`server_version_num`): 14, for `idle_session_timeout`.
const MIN_POSTGRES_VERSION: i32 = 140_000;
pub struct Application {
    listener: TcpListener,
    /// `http.admin_addr`'s: the internal API and `/metrics`.
    admin_listener: Option<TcpListener>,
    settings: Settings,
    role: Role,
    broker: Broker,
    /// Lazy pool: connections are opened on demand, so the process starts (and keeps taking
    /// webhooks) while the database is down.
    db: PgPool,
    /// The reads that may lag: on a replica when `database.replica_urls` names one.
    reads: crate::database::Reads,
    /// Cancelled when shutdown begins: readiness turns 503 and loops stop taking work.
    shutdown: CancellationToken,
    /// The per-connection endpoints' secrets, for roles that take webhooks.
    connection_secrets: crate::ingress::secrets::SecretsCache,
    /// Runs the background tasks, and knows which keep failing (`/readyz` says).
    supervisor: crate::supervise::Supervisor,
    /// `SETTLE_SECRET_KEYS`: seals provider secrets, and the events this process queues.
    keyring: crate::sealed::Keyring,
    /// The time automatic charging decides by.
    clock: Clock,
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// Applies the migrations and the configured account, retrying with backoff while PostgreSQL is
/// unreachable (or the database not created yet), then says so on `applied`. Several processes
/// may do this at once: sqlx takes an advisory lock around the migrations.
async fn migrate_until_applied(
    db: PgPool,
    account_id: String,
    applied: tokio::sync::watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    const FIRST_RETRY: Duration = Duration::from_millis(500);
    const MAX_RETRY: Duration = Duration::from_secs(30);
    let mut retry_in = FIRST_RETRY;
    loop {
        let attempt = async {
            migrate(&db).await?;
            crate::repository::ensure_account(&db, &account_id)
                .await
                .context("registering the configured account")
        };
        match attempt.await {
            Ok(()) => {
                tracing::info!("database migrations applied");
                applied.send_replace(true);
                return;
            }
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                retry_in_ms = retry_in.as_millis() as u64,
                "database migrations not applied yet; intake goes on, the worker waits"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(retry_in) => {}
            () = shutdown.cancelled() => return,
        }
        retry_in = (retry_in * 2).min(MAX_RETRY);
    }
}

/// Applies pending migrations (embedded in the binary), on a connection of its own without the
/// pool's statement and lock limits (a migration may rewrite a large table).
pub async fn migrate(db: &PgPool) -> anyhow::Result<()> {
    // The pool's own options, then the limits lifted (the last setting of a parameter wins).
    let options = (*db.connect_options())
        .clone()
        .options([("statement_timeout", "0"), ("lock_timeout", "0")]);
    let unlimited = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|connection, _| Box::pin(crate::database::refuse_standby(connection)))
        .acquire_timeout(crate::database::ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .context("connecting to migrate")?;
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&unlimited)
        .await
        .context("reading PostgreSQL's version")?;
    if version < MIN_POSTGRES_VERSION {
        unlimited.close().await;
        anyhow::bail!(
            "settle needs PostgreSQL 14 or newer (this server is {version}): the leases of the outbox relay, the sweeper and the payout lister end a stalled holder's session with idle_session_timeout, which older servers lack"
        );
    }
    let applied = sqlx::migrate!("./migrations")
        .run(&unlimited)
        .await
        .context("applying database migrations");
    unlimited.close().await;
    applied
}

/// The worker's policy, from the settings (`Policy::from_settings`).
pub fn worker_policy(settings: &Settings) -> Policy {
    Policy::from_settings(settings)
}

impl Application {
    pub async fn build(
        settings: Settings,
        role: Role,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        // Install the metrics recorder before anything records: until then the facade drops values.
        crate::telemetry::metrics_handle();
        // The pool connects lazily and migrations run in `run`, in the background: a database
        // outage never stops a process from starting, so intake never waits for PostgreSQL.
        let db = crate::database::pool(&settings).await?;
        let connections = if role.consumes() {
            Connections::PublishAndConsume
        } else {
            Connections::PublishOnly
        };
        let broker = Broker::start(
            settings.amqp.clone(),
            Topology::from_settings(&settings),
            connections,
        );
        let settings_keyring = settings.keyring()?;
        let listener = bind(settings.http.addr).await?;
        let admin_listener = match settings.http.admin_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let reads = crate::database::Reads::from_settings(&settings, db.clone()).await?;
        Ok(Self {
            listener,
            admin_listener,
            settings,
            role,
            broker,
            reads,
            db,
            shutdown,
            connection_secrets: Default::default(),
            supervisor: Default::default(),
            keyring: settings_keyring,
            clock: Clock::system(),
        })
    }

    /// Decide automatic charging by `clock` instead of the system's (a test moves it forward).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The worker's policy, deciding by this process's clock.
    fn policy(&self) -> Policy {
        let mut policy = worker_policy(&self.settings);
        policy.charging.clock = self.clock.clone();
        policy
    }

    /// The process's broker (benchmarks publish through it).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener.local_addr().context("the listener's address")
    }

    /// The internal API's own address, when `http.admin_addr` gives it one.
    pub fn admin_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        self.admin_listener
            .as_ref()
            .map(|listener| {
                listener
                    .local_addr()
                    .context("the admin listener's address")
            })
            .transpose()
    }

    /// Runs until the shutdown token is cancelled, then drains: the HTTP server stops accepting and
    /// lets in-flight requests finish (each still awaiting its confirms), consumers finish the
    /// deliveries they hold, and only then is the broker connection closed.
    pub async fn run(self) -> anyhow::Result<()> {
        let tasks = TaskTracker::new();
        // Without migrations on start, the schema is someone else's job (`settle migrate`).
        let (schema_sender, schema) =
            tokio::sync::watch::channel(!self.settings.database.migrate_on_start);
        if self.settings.database.migrate_on_start {
            tasks.spawn(migrate_until_applied(
                self.db.clone(),
                self.settings.account.id.clone(),
                schema_sender,
                self.shutdown.clone(),
            ));
        }
        if self.role.consumes() {
            self.spawn_worker(&tasks, schema.clone());
        }
        if self.role.takes_webhooks() {
            self.spawn_secrets_refresher(&tasks, schema.clone())?;
        }
        if !self.role.consumes() {
            // The worker's processes sample the broker with the money (`spawn_worker`).
            let sampler = self.sampler(None);
            self.supervisor
                .spawn(&tasks, "sampler", self.shutdown.clone(), move || {
                    sampler.clone().run()
                });
        }
        tracing::info!(
            role = self.role.as_str(),
            addr = %self.listener.local_addr()?,
            prefix = %self.settings.amqp.prefix,
            "settle started"
        );
        let limits = crate::http::server::Limits::from(&self.settings.http);
        let database = crate::http::probes::DatabaseCheck::default();
        let (check, db, shutdown) = (database.clone(), self.db.clone(), self.shutdown.clone());
        self.supervisor
            .spawn(&tasks, "database_check", self.shutdown.clone(), move || {
                check.clone().run(db.clone(), shutdown.clone())
            });
        let (public, admin) = self.routers(schema, database);
        let limited = |router| crate::http::server::with_request_limits(router, limits);
        let serve = |listener, router| {
            crate::http::server::serve(listener, limited(router), limits, self.shutdown.clone())
        };
        match (self.admin_listener, admin) {
            (Some(listener), Some(admin)) => {
                tokio::try_join!(serve(self.listener, public), serve(listener, admin))
                    .context("HTTP server")?;
            }
            _ => serve(self.listener, public).await.context("HTTP server")?,
        }
        tasks.close();
        tasks.wait().await;
        self.broker.close().await;
        self.db.close().await;
        // The spans still buffered go out (an HTTP call to the collector: off the runtime).
        let _ = tokio::task::spawn_blocking(crate::telemetry::flush_spans).await;
        tracing::info!("settle stopped");
        Ok(())
    }

    /// The consumers, the outbox relay and the notification sender, once the schema is migrated:
    /// until then they wait (deliveries stay queued), and nothing is spent on a missing table.
    fn spawn_worker(&self, tasks: &TaskTracker, schema: tokio::sync::watch::Receiver<bool>) {
        let settings = &self.settings;
        let sender = match Sender::new(
            self.db.clone(),
            &settings.smtp,
            settings.notifications.clone(),
            self.shutdown.clone(),
        ) {
            Ok(sender) => Some(sender),
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "notification sender not started"
                );
                None
            }
        };
        let relay = Relay::new(
            self.db.clone(),
            self.broker.clone(),
            &settings.worker,
            self.shutdown.clone(),
        );
        let wake_relay = relay.notifier();
        // A periodic task whose interval is 0 is off: not started at all, since the supervisor
        // takes a task that returns for one that failed.
        let retention = (settings.retention.interval_secs > 0).then(|| {
            crate::retention::Retention::new(
                self.db.clone(),
                settings.retention.clone(),
                self.shutdown.clone(),
            )
        });
        let (sweeper, lister, drift, charger) = match settings.keyring() {
            Ok(keyring) => (
                (settings.backfill.interval_secs > 0).then(|| crate::backfill::sweeper::Sweeper {
                    db: self.db.clone(),
                    broker: self.broker.clone(),
                    settings: settings.clone(),
                    keyring: keyring.clone(),
                    shutdown: self.shutdown.clone(),
                }),
                (settings.payouts.list_interval_secs > 0).then(|| crate::payouts::lister::Lister {
                    db: self.db.clone(),
                    settings: settings.clone(),
                    keyring: keyring.clone(),
                    shutdown: self.shutdown.clone(),
                }),
                (settings.books.drift_interval_secs > 0).then(|| {
                    crate::payouts::drift::DriftChecker {
                        db: self.db.clone(),
                        settings: settings.clone(),
                        keyring: keyring.clone(),
                        shutdown: self.shutdown.clone(),
                    }
                }),
                Some(crate::charger::Charger {
                    db: self.db.clone(),
                    settings: settings.clone(),
                    keyring,
                    rules: self.policy().charging,
                    shutdown: self.shutdown.clone(),
                }),
            ),
            Err(error) => {
                tracing::error!(%error, "backfill sweeper, payout lister, drift check and charger not started");
                (None, None, None, None)
            }
        };
        let batches = crate::worker::BatchShape::from(&settings.worker);
        let needed = crate::worker::connections_needed(batches);
        if settings.database.max_connections < needed {
            // Not fatal: a delivery that waits past the acquire timeout is held like one in a
            // database outage, with no attempt spent. But it is throughput lost for nothing.
            tracing::warn!(
                max_connections = settings.database.max_connections,
                needed,
                "database.max_connections is below the worker's batches in flight (worker.prefetch / worker.batch_size) + 4 (dead letters) + 3 (relay, sender, readiness): deliveries will wait for connections"
            );
        }
        let worker = Worker {
            db: self.db.clone(),
            broker: self.broker.clone(),
            policy: Arc::new(self.policy()),
            batches,
            max_attempts: settings.worker.max_attempts,
            keyring: Arc::new(self.keyring.clone()),
            shutdown: self.shutdown.clone(),
        };
        let sampler = self.sampler(Some(self.db.clone()));
        let shutdown = self.shutdown.clone();
        let started = tasks.clone();
        let supervisor = self.supervisor.clone();
        once_migrated(tasks, schema, self.shutdown.clone(), move || {
            // Each task is started afresh from its own copy at every restart.
            let (on, stop) = (&started, &shutdown);
            if let Some(sender) = sender {
                supervisor.spawn(on, "sender", stop.clone(), move || sender.clone().run());
            }
            supervisor.spawn(on, "relay", stop.clone(), move || relay.clone().run());
            if let Some(retention) = retention {
                supervisor.spawn(on, "retention", stop.clone(), move || {
                    retention.clone().run()
                });
            }
            if let Some(sweeper) = sweeper {
                supervisor.spawn(on, "sweeper", stop.clone(), move || sweeper.clone().run());
            }
            if let Some(lister) = lister {
                supervisor.spawn(on, "payout_lister", stop.clone(), move || {
                    lister.clone().run()
                });
            }
            if let Some(drift) = drift {
                supervisor.spawn(on, "drift_check", stop.clone(), move || drift.clone().run());
            }
            if let Some(charger) = charger {
                supervisor.spawn(on, "charger", stop.clone(), move || charger.clone().run());
            }
            supervisor.spawn(on, "sampler", stop.clone(), move || sampler.clone().run());
            started.spawn(worker.run(wake_relay));
        });
    }

    /// The gauges' sampler of this process: the broker's figures, and the money's from `db`.
    fn sampler(&self, db: Option<sqlx::PgPool>) -> crate::sampler::Sampler {
        crate::sampler::Sampler {
            broker: self.broker.clone(),
            db,
            interval: Duration::from_secs(self.settings.telemetry.sample_interval_secs.max(1)),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Keeps the per-connection endpoints' secrets loaded, once the schema is migrated (until
    /// then only the platform endpoints verify).
    fn spawn_secrets_refresher(
        &self,
        tasks: &TaskTracker,
        schema: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let refresher = crate::ingress::secrets::Refresher {
            db: self.db.clone(),
            keyring: self.settings.keyring()?,
            cache: self.connection_secrets.clone(),
            interval: Duration::from_secs(
                self.settings
                    .webhooks
                    .connection_secrets_refresh_secs
                    .max(1),
            ),
            shutdown: self.shutdown.clone(),
        };
        let shutdown = self.shutdown.clone();
        let started = tasks.clone();
        let supervisor = self.supervisor.clone();
        once_migrated(tasks, schema, self.shutdown.clone(), move || {
            supervisor.spawn(&started, "secrets_refresher", shutdown, move || {
                refresher.clone().run()
            });
        });
        Ok(())
    }

    /// Whether the listener that serves the API and the console (the admin one, else the
    /// public one) is on a loopback address: a browser on this machine, over plain HTTP, where a
    /// `Secure` cookie would not be sent back.
    fn internal_listener_is_loopback(&self) -> bool {
        self.admin_listener
            .as_ref()
            .unwrap_or(&self.listener)
            .local_addr()
            .is_ok_and(|addr| addr.ip().is_loopback())
    }

    /// The public router (probes for every role; webhooks where the role takes HTTP traffic) and,
    /// with `http.admin_addr`, the internal one (probes, `/metrics`, the API); without it the
    /// public router serves everything.
    fn routers(
        &self,
        schema: tokio::sync::watch::Receiver<bool>,
        database: crate::http::probes::DatabaseCheck,
    ) -> (Router, Option<Router>) {
        let probe_state = ProbeState {
            role: self.role,
            broker: self.broker.clone(),
            database,
            schema: schema.clone(),
            shutdown: self.shutdown.clone(),
            shows_broker_node: true,
            supervisor: self.supervisor.clone(),
            reads: self.reads.clone(),
        };
        let probes = probes::router(probe_state.clone());
        // With an admin listener, the public one faces the internet: its probes name no host.
        let public_probes = probes::router(ProbeState {
            shows_broker_node: self.admin_listener.is_none(),
            ..probe_state
        });
        let mut public = public_probes;
        let mut internal = probes::metrics_router();
        if self.role.takes_webhooks() {
            let settings = &self.settings;
            let traffic = Arc::new(crate::ingress::traffic::Traffic::default());
            public = public.merge(crate::ingress::router(IngressState {
                broker: self.broker.clone(),
                webhooks: Arc::new(settings.webhooks.clone()),
                connections: self.connection_secrets.clone(),
                body_limit: settings.http.body_limit_bytes,
                body_budget: Arc::new(tokio::sync::Semaphore::new(settings.http.body_budget_bytes)),
                keyring: Arc::new(self.keyring.clone()),
                traffic: traffic.clone(),
            }));
            let api = ApiState {
                db: self.db.clone(),
                reads: self.reads.clone(),
                credentials: settings.api.credentials.iter().map(Into::into).collect(),
                account_id: settings.account.id.as_str().into(),
                defaults: Policy::from_settings(settings).defaults,
                // The worker's, built the same way: registering a payment applies the events
                // that waited for it.
                policy: Arc::new(self.policy()),
                body_limit: settings.http.body_limit_bytes,
                schema,
            };
            let console = crate::console::router(crate::console::ConsoleState {
                db: self.db.clone(),
                reads: self.reads.clone(),
                api: api.clone(),
                broker: self.broker.clone(),
                keyring: Arc::new(self.keyring.clone()),
                supervisor: self.supervisor.clone(),
                secure_cookie: !self.internal_listener_is_loopback(),
                sign_in_limits: Arc::default(),
                traffic,
                books: Arc::new(crate::ops::books::mapping(&self.settings.books)),
            });
            internal = internal.merge(crate::api::router(api)).merge(console);
        }
        let trace = |router: Router| router.layer(TraceLayer::new_for_http());
        match self.admin_listener {
            Some(_) => (trace(public), Some(trace(probes.merge(internal)))),
            None => (trace(public.merge(internal)), None),
        }
    }
}
/// Runs `start` once the schema is migrated, unless the process shuts down first: the tasks
/// that read tables wait for it.
fn once_migrated(
    tasks: &TaskTracker,
    mut schema: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
    start: impl FnOnce() + Send + 'static,
) {
    tasks.spawn(async move {
        tokio::select! {
            applied = schema.wait_for(|applied| *applied) => if applied.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        start();
    });
}
