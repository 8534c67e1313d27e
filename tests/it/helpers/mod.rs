//! `spawn_app()` and typed helpers: the real application, isolated per test.
//!
//! - this file: the app (`TestApp`, `spawn_app`, `spawn_worker`), its HTTP API, the webhook
//!   deliveries and reads the worker tests share, `poll_until`, and the assertions;
//! - `fixtures`: provider events built from the providers' own example objects, and signatures;
//! - `broker`: the RabbitMQ side (a subscriber's queue, taking and counting messages);
//! - `smtp`: a real SMTP server on loopback, for the notification tests;
//! - `browser`: headless Chromium over WebDriver, for the console's tests.

pub mod broker;
pub mod browser;
pub mod cli;
pub mod fixtures;
pub mod localstripe;
pub mod provider_api;
pub mod smtp;

use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use settle::config::Settings;
use settle::role::Role;
use settle::startup::Application;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use cli::{
    CONNECTION_API_KEY, CONNECTION_WEBHOOK_SECRETS, NEW_WEBHOOK_SECRET, account_with_key,
    api_key_of, settle, settle_env, settle_with, settle_with_stdin,
};
pub use fixtures::*;
pub use smtp::SmtpSink;

pub const STRIPE_SECRET: &str = "whsec_test_secret_for_it";
pub const GOCARDLESS_SECRET: &str = "gc_test_secret_for_it";
pub const API_KEY_ID: &str = "billing-test";
pub const API_SECRET: &str = "api-test-secret";

/// A Basic credential of the API.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub secret: String,
}

impl ApiKey {
    /// The credential the test app is configured with: the default account's.
    pub fn configured() -> Self {
        Self {
            id: API_KEY_ID.to_owned(),
            secret: API_SECRET.to_owned(),
        }
    }
}

/// How long the worker helpers wait for the worker to get somewhere.
pub const WAIT: Duration = Duration::from_secs(20);

/// Where the shared services of `scripts/services.sh` listen, unless the environment says otherwise.
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn database_url() -> String {
    env_or(
        "DATABASE_URL",
        "postgres://settle:settle@127.0.0.1:54329/settle",
    )
}

pub fn amqp_url() -> String {
    env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:56720/%2f")
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// The internal API's own address, when the settings give it one.
    pub admin_addr: Option<std::net::SocketAddr>,
    pub prefix: String,
    pub amqp_url: String,
    pub settings: Settings,
    pub http: reqwest::Client,
    database_url: String,
    shutdown: CancellationToken,
    running: Option<JoinHandle<anyhow::Result<()>>>,
}

pub struct AppOptions {
    pub role: Role,
    pub amqp_url: String,
    /// Wait for readiness before returning.
    pub wait_ready: bool,
    /// Use this database instead of a fresh one (and apply no migrations to it).
    pub database_url: Option<String>,
    /// Last changes to the settings before the app is built (shorter retry delays, …).
    pub tweak: Box<dyn FnOnce(&mut Settings) + Send>,
    /// The SMTP server failure mails go to (a test's own sink).
    pub smtp_url: Option<String>,
    /// The queue prefix of another app's deployment, to be its `serve` or `worker` (default: a
    /// new one).
    pub prefix: Option<String>,
    /// The clock automatic charging decides by (default: the system's).
    pub clock: settle::clock::Clock,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            role: Role::Serve,
            amqp_url: amqp_url(),
            wait_ready: true,
            database_url: None,
            tweak: Box::new(|_| {}),
            smtp_url: None,
            prefix: None,
            clock: settle::clock::Clock::system(),
        }
    }
}

/// How a test worker retries a delivery that failed for now (say, its invoice does not exist yet).
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// The retry tiers, shortest first.
    pub delays_ms: [u64; 2],
    /// Deliveries after which the event is dead-lettered.
    pub max_attempts: u32,
}

impl Retries {
    /// Keeps trying for a while (20 attempts, 300 ms and 600 ms tiers): an event that arrives
    /// before its invoice is applied once the invoice exists.
    pub const PATIENT: Self = Self {
        delays_ms: [300, 600],
        max_attempts: 20,
    };
    /// Gives up after three attempts (100 ms and 200 ms tiers): the dead-letter tests get their
    /// dead letter within a second.
    pub const GIVE_UP_SOON: Self = Self {
        delays_ms: [100, 200],
        max_attempts: 3,
    };

    /// The worker retries like this, and relays the outbox every 100 ms.
    pub fn apply_to(self, settings: &mut Settings) {
        settings.worker.retry_delays_ms = self.delays_ms.to_vec();
        settings.worker.max_attempts = self.max_attempts;
        settings.worker.outbox_poll_ms = 100;
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

/// The receiver and the worker in one app (`Role::Run`), retrying as `retries` says, with the
/// outbox relayed every 100 ms.
pub async fn spawn_worker(retries: Retries) -> TestApp {
    spawn_app_with(AppOptions {
        role: Role::Run,
        tweak: Box::new(move |settings| retries.apply_to(settings)),
        ..AppOptions::default()
    })
    .await
}

/// The whole app (`run`), mailing through `sink`, with short polls so mail and events go out
/// quickly.
pub async fn spawn_app_with_mail(sink: &SmtpSink) -> TestApp {
    spawn_app_with(AppOptions {
        role: Role::Run,
        smtp_url: Some(sink.url()),
        tweak: Box::new(|settings| {
            settings.notifications.poll_ms = 100;
            settings.notifications.max_backoff_secs = 1;
            settings.worker.outbox_poll_ms = 100;
        }),
        ..AppOptions::default()
    })
    .await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = options
        .prefix
        .unwrap_or_else(|| format!("test-{}", &id[..12]));
    // A database given by the test (an unreachable one, say) gets no migrations.
    let migrate = options.database_url.is_none();
    let database_url = match options.database_url {
        Some(url) => url,
        None => {
            let database = format!("test_{}", &id[..16]);
            create_database(&database).await;
            database_url_for(&database)
        }
    };

    let mut settings = Settings::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        "local",
        Vec::new(),
    )
    .expect("test settings load");
    settings.http.addr = "127.0.0.1:0".parse().unwrap();
    settings.amqp.prefix = prefix.clone();
    settings.amqp.url = SecretString::from(options.amqp_url.as_str());
    settings.amqp.reconnect_delay_ms = 200;
    settings.amqp.confirm_timeout_ms = 2000;
    settings.database.migrate_on_start = migrate;
    settings.database.url = SecretString::from(database_url.as_str());
    settings.database.max_connections = 4;
    settings.webhooks.stripe_secrets = vec![SecretString::from(STRIPE_SECRET)];
    settings.webhooks.gocardless_secrets = vec![SecretString::from(GOCARDLESS_SECRET)];
    settings.api.credentials = vec![format!("{API_KEY_ID}:{API_SECRET}").try_into().unwrap()];
    settings.telemetry.log_filter = "warn".into();
    if let Some(url) = &options.smtp_url {
        settings.smtp.url = SecretString::from(url.as_str());
    }
    settings.notifications.business_email = "billing-team@business.example".into();
    // The test deployment is the GoCardless organisation of the fixture's events (a partner
    // app's shape: each names its organisation in `links.organisation`).
    settings.account.gocardless_organisation_id = "OR00001JZWPCMA".into();
    (options.tweak)(&mut settings);
    settle::telemetry::init_logging(&settings.telemetry);

    let shutdown = CancellationToken::new();
    let app = Application::build(settings.clone(), options.role, shutdown.clone())
        .await
        .expect("application builds")
        .with_clock(options.clock);
    let addr = app.local_addr().expect("a bound listener has an address");
    let admin_addr = app.admin_addr().expect("a bound listener has an address");
    let running = tokio::spawn(app.run());
    let test_app = TestApp {
        addr,
        admin_addr,
        prefix,
        amqp_url: options.amqp_url,
        settings,
        http: reqwest::Client::new(),
        database_url,
        shutdown,
        running: Some(running),
    };
    if options.wait_ready {
        test_app.wait_until_ready(true).await;
        // Migrations run in the background, also for roles that are ready without them.
        if test_app.settings.database.migrate_on_start {
            test_app.wait_until_migrated().await;
        }
        // A worker subscribes once it has seen the database answer: a test that takes the
        // database away right after starting one must not beat its consumers to it.
        if options.role.consumes() {
            let queues = [test_app.queue("reconcile"), test_app.queue("dead")];
            poll_until("the worker's consumers", WAIT, || async {
                (test_app.consumer_count(&queues).await >= 2).then_some(())
            })
            .await;
        }
    }
    test_app
}

pub fn database_url_for(database: &str) -> String {
    let base = database_url();
    let (server, _) = base
        .rsplit_once('/')
        .expect("DATABASE_URL has a database name");
    format!("{server}/{database}")
}

pub async fn create_database(name: &str) {
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&database_url())
        .await
        .expect("the test PostgreSQL is running (scripts/services.sh start)");
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut connection)
        .await
        .expect("create the test database");
}

/// A fresh database with the schema as it was before the migration `version`: for a test that
/// writes rows in an old shape and then migrates them (`migrate_all`). Its URL and a pool.
pub async fn database_before_migration(version: i64) -> (String, sqlx::PgPool) {
    let database = format!("test_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    create_database(&database).await;
    let url = database_url_for(&database);
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let mut before = sqlx::migrate!("./migrations");
    let earlier: Vec<_> = before
        .iter()
        .filter(|m| m.version < version)
        .cloned()
        .collect();
    before.migrations = std::borrow::Cow::Owned(earlier);
    before.run(&db).await.unwrap();
    (url, db)
}

/// The whole app (`run`) on a database the test prepared (and migrated) itself.
pub async fn spawn_run_on(database_url: String) -> TestApp {
    spawn_app_with(AppOptions {
        role: Role::Run,
        database_url: Some(database_url),
        ..AppOptions::default()
    })
    .await
}

/// Applies every migration still pending.
pub async fn migrate_all(db: &sqlx::PgPool) {
    sqlx::migrate!("./migrations").run(db).await.unwrap();
}

/// An outage of the app's database: renamed away, its sessions ended, until `end`.
pub struct DatabaseOutage {
    admin: sqlx::PgConnection,
    database: String,
    away: String,
}

fn rename_database(from: &str, to: &str) -> String {
    format!(r#"ALTER DATABASE "{from}" RENAME TO "{to}""#)
}

impl DatabaseOutage {
    pub async fn begin(app: &TestApp) -> Self {
        let database = app.database_url().rsplit('/').next().unwrap().to_owned();
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&database_url())
            .await
            .unwrap();
        let away = format!("{database}_away");
        // Sessions reconnect at once: end them and rename until the rename wins. Only the
        // clients' sessions are ours to end: an autovacuum worker on the new database is not
        // (the rename waits for it to finish instead).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND backend_type = 'client backend'",
            )
            .bind(&database)
            .execute(&mut admin)
            .await
            .unwrap();
            match sqlx::raw_sql(&rename_database(&database, &away))
                .execute(&mut admin)
                .await
            {
                Ok(_) => break,
                Err(error) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "the database could not be renamed away: {error}"
                ),
            }
        }
        Self {
            admin,
            database,
            away,
        }
    }

    pub async fn end(mut self) {
        sqlx::raw_sql(&rename_database(&self.away, &self.database))
            .execute(&mut self.admin)
            .await
            .unwrap();
    }
}

/// Waits until a server a test started (`what`) listens on 127.0.0.1:`port`.
pub async fn wait_listening(what: &str, port: u16) {
    poll_until(
        &format!("{what} to listen on {port}"),
        Duration::from_secs(20),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
}

/// Polls `check` until it returns `Some`, failing the test after `deadline`.
pub async fn poll_until<T, F, Fut>(what: &str, deadline: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll_for(deadline, check)
        .await
        .unwrap_or_else(|| panic!("timed out after {deadline:?} waiting for {what}"))
}

/// `poll_until` without the panic: `None` once `deadline` has passed, for a test that must undo
/// something (a paused replica) before it asserts.
pub async fn poll_for<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if started.elapsed() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
    }
}

/// The app's HTTP side: webhooks and the API.
impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn queue(&self, suffix: &str) -> String {
        format!("{}.{}", self.prefix, suffix)
    }

    pub async fn post_stripe(&self, body: &[u8], signature: Option<String>) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url("/webhooks/stripe"))
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        request.send().await.expect("request sent")
    }

    pub async fn post_stripe_signed(&self, body: &[u8]) -> reqwest::Response {
        let signature = stripe_signature(body, chrono::Utc::now().timestamp());
        self.post_stripe(body, Some(signature)).await
    }

    pub async fn post_gocardless(&self, body: &[u8], signature: &str) -> reqwest::Response {
        self.http
            .post(self.url("/webhooks/gocardless"))
            .header("Webhook-Signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .expect("request sent")
    }

    /// An authenticated API request with a JSON body, with the configured credential (the default
    /// account's); returns status and parsed body (`Null` when the body is empty).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.api_as(&ApiKey::configured(), method, path, body).await
    }

    /// As `api`, with `key`'s credential.
    pub async fn api_as(
        &self,
        key: &ApiKey,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.url(path))
            .basic_auth(&key.id, Some(&key.secret));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {text:?}"))
        };
        (status, body)
    }

    pub async fn api_get(&self, path: &str) -> (u16, Value) {
        self.api(reqwest::Method::GET, path, None).await
    }

    pub async fn api_post(&self, path: &str, body: Value) -> (u16, Value) {
        self.api(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn api_put(&self, path: &str, body: Value) -> (u16, Value) {
        self.api(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Registers a customer (with a Stripe and a GoCardless customer id) and returns its id.
    pub async fn create_customer(&self, id: &str) -> String {
        let (status, body) = self
            .api_post(
                "/customers",
                json!({
                    "id": id,
                    "legalName": format!("{id} Ltd"),
                    "email": format!("{id}@example.com"),
                    "billingEmails": [format!("billing+{id}@example.com")],
                    "externalIds": [
                        {"key": "Stripe", "value": format!("cus_{id}")},
                        {"key": "GoCardless", "value": format!("CU{}", id.to_uppercase())},
                    ],
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        id.to_owned()
    }

    /// Registers an invoice for `customer_id` and returns its id.
    pub async fn create_invoice(
        &self,
        id: &str,
        customer_id: &str,
        schedule_id: Option<&str>,
        currency: &str,
        amount_due: i64,
    ) -> String {
        let (status, body) = self
            .api_post(
                "/invoices",
                json!({
                    "id": id,
                    "customerId": customer_id,
                    "billingScheduleId": schedule_id,
                    "number": format!("INV-{id}"),
                    "currency": currency,
                    "amountDue": amount_due,
                    "dueDate": "2026-12-31",
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        id.to_owned()
    }

    /// Registers a payment in GBP on an invoice, as the billing service does before collecting,
    /// and returns it as the API answered (after the events that waited for it, if any).
    pub async fn register_payment(
        &self,
        invoice_id: &str,
        provider: &str,
        provider_payment_id: &str,
        amount: i64,
    ) -> Value {
        let (status, body) = self
            .api_post(
                &format!("/invoices/{invoice_id}/payments"),
                json!({"provider": provider, "providerPaymentId": provider_payment_id, "amount": amount, "currency": "GBP"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// The customer's payment methods as (reference, status, on file), sorted.
    pub async fn methods_of(&self, customer: &str) -> Vec<(String, String, bool)> {
        let (status, body) = self
            .api_get(&format!("/customers/{customer}/payment-methods"))
            .await;
        assert_eq!(status, 200, "{body}");
        let mut methods: Vec<(String, String, bool)> = body
            .as_array()
            .expect("a list")
            .iter()
            .map(|m| {
                (
                    m["referenceId"].as_str().unwrap().to_owned(),
                    m["status"].as_str().unwrap().to_owned(),
                    m["onFile"].as_bool().unwrap(),
                )
            })
            .collect();
        methods.sort();
        methods
    }

    /// The invoice as the API shows it.
    pub async fn invoice(&self, id: &str) -> Value {
        let (status, body) = self.api_get(&format!("/invoices/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// GET `url` (on any of the app's listeners) without credentials: its JSON body.
    pub async fn get_json(&self, url: &str) -> Value {
        let response = self.http.get(url).send().await.unwrap();
        response.json().await.unwrap()
    }

    pub async fn readyz(&self) -> (u16, Value) {
        let response = self.http.get(self.url("/readyz")).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// One metric's value (`name` with its labels, as printed), 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    /// Waits until the process has applied the migrations (`/readyz` says so).
    pub async fn wait_until_migrated(&self) {
        poll_until("migrations", Duration::from_secs(30), || async {
            let (_, body) = self.readyz().await;
            (body["checks"]["migrations"] == "applied").then_some(())
        })
        .await;
    }

    pub async fn wait_until_ready(&self, ready: bool) {
        poll_until("readiness", Duration::from_secs(30), || async {
            let (status, _) = self.readyz().await;
            ((status == 200) == ready).then_some(())
        })
        .await;
    }
}

/// Webhook deliveries, and what the worker made of them.
impl TestApp {
    /// Posts a signed Stripe event and asserts that it was queued (200).
    pub async fn deliver_stripe(&self, body: &[u8]) {
        let response = self.post_stripe_signed(body).await;
        let status = response.status();
        assert_eq!(status, 200, "{}", response.text().await.unwrap_or_default());
    }

    /// Posts every signed Stripe event at once and asserts that each was queued (200).
    pub async fn deliver_stripe_concurrently(&self, bodies: &[Vec<u8>]) {
        let posts: Vec<_> = bodies
            .iter()
            .map(|body| self.post_stripe_signed(body))
            .collect();
        for response in futures_util::future::join_all(posts).await {
            assert_eq!(response.status(), 200);
        }
    }

    /// Posts one signed GoCardless batch of `events` and asserts that it was queued (204).
    pub async fn deliver_gocardless(&self, events: impl IntoIterator<Item = GoCardlessEvent>) {
        let body = gocardless_batch(events);
        let response = self
            .post_gocardless(&body, &gocardless_signature(&body))
            .await;
        assert_eq!(response.status(), 204);
    }

    /// Delivers a batch of one GoCardless payment event: `action` on `payment_id`, created `at`.
    pub async fn gocardless_payment(
        &self,
        event_id: &str,
        action: &str,
        payment_id: &str,
        at: &str,
    ) {
        self.deliver_gocardless([
            GoCardlessEvent::payment(event_id, action, payment_id).created_at(at)
        ])
        .await;
    }

    /// A GoCardless payment confirmed (`EV_C`, 2 November: the invoice turns `PAID`), then failed
    /// late (`EV_F`, 5 November, with the fixture's cause `insufficient_funds` and
    /// `will_attempt_retry: true`). Returns the invoice once it is `PAYMENT_FAILED`.
    pub async fn gocardless_confirmed_then_failed(
        &self,
        invoice_id: &str,
        payment_id: &str,
    ) -> Value {
        self.gocardless_payment("EV_C", "confirmed", payment_id, "2026-11-02T12:00:00.000Z")
            .await;
        self.wait_invoice_status(invoice_id, "PAID").await;
        self.gocardless_payment("EV_F", "failed", payment_id, "2026-11-05T12:00:00.000Z")
            .await;
        self.wait_invoice_status(invoice_id, "PAYMENT_FAILED").await
    }

    /// Waits until the invoice has `status`, and returns it.
    pub async fn wait_invoice_status(&self, id: &str, status: &str) -> Value {
        poll_until(&format!("invoice {id} to be {status}"), WAIT, || async {
            let invoice = self.invoice(id).await;
            (invoice["status"] == status).then_some(invoice)
        })
        .await
    }

    /// Waits until the worker has recorded the event in its inbox, and returns the outcome.
    pub async fn wait_processed(&self, provider: &str, event_id: &str) -> String {
        let db = self.db();
        poll_until(
            &format!("event {event_id} to be processed"),
            WAIT,
            || async {
                sqlx::query_scalar::<_, String>(
                    "SELECT outcome FROM webhook_events WHERE provider = $1 AND event_id = $2",
                )
                .bind(provider)
                .bind(event_id)
                .fetch_optional(&db)
                .await
                .unwrap()
            },
        )
        .await
    }
}

/// The app's lifecycle and its database.
impl TestApp {
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// A pool on this test's database, for assertions on what the app stored.
    pub fn db(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(&self.database_url)
            .expect("a valid database URL")
    }

    /// Graceful shutdown, as on SIGTERM; then removes this test's topology from the broker.
    pub async fn stop(mut self) {
        self.shutdown_only().await;
        self.delete_topology().await;
    }

    /// Starts a graceful shutdown, as SIGTERM does, without waiting for it (`shutdown_only` waits).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Graceful shutdown, as on SIGTERM, asserting that the app exits cleanly.
    pub async fn shutdown_only(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.await.expect("app task").expect("app exits cleanly");
        }
    }
}

/// The invoice's payment `provider_payment_id`, as the API shows it.
pub fn payment<'a>(invoice: &'a Value, provider_payment_id: &str) -> &'a Value {
    invoice["payments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["providerPaymentId"] == provider_payment_id)
        .unwrap_or_else(|| panic!("no payment {provider_payment_id} in {invoice}"))
}

/// The status of the invoice's payment `provider_payment_id`.
pub fn payment_status(invoice: &Value, provider_payment_id: &str) -> String {
    payment(invoice, provider_payment_id)["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Asserts an API error answer: its status and `error.code`.
pub fn assert_api_error(status: u16, body: &Value, expected: u16, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "an error message: {body}"
    );
}

/// Asserts a 400 `validation_failed` whose message names `field` first (`amountDue: …`).
pub fn assert_validation_error(status: u16, body: &Value, field: &str) {
    assert_api_error(status, body, 400, "validation_failed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("{field}: ")),
        "expected a message naming `{field}`, got {message:?}"
    );
}
