//! `spawn_app()` and typed helpers: the real application, isolated per test.

use std::path::Path;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::AMQPValue;
use lapin::{Connection, ConnectionProperties};
use secrecy::SecretString;
use settle::config::Settings;
use settle::startup::{Application, Role};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const STRIPE_SECRET: &str = "whsec_test_secret_for_it";
pub const GOCARDLESS_SECRET: &str = "gc_test_secret_for_it";
pub const API_KEY_ID: &str = "billing-test";
pub const API_SECRET: &str = "api-test-secret";

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
    pub tweak: fn(&mut Settings),
    /// The SMTP server failure mails go to (a test's own sink).
    pub smtp_url: Option<String>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            role: Role::Serve,
            amqp_url: amqp_url(),
            wait_ready: true,
            database_url: None,
            tweak: |_| {},
            smtp_url: None,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("test-{}", &id[..12]);
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
    (options.tweak)(&mut settings);
    settle::telemetry::init_logging(&settings.telemetry);

    let shutdown = CancellationToken::new();
    let app = Application::build(settings.clone(), options.role, shutdown.clone())
        .await
        .expect("application builds");
    let addr = app.local_addr();
    let running = tokio::spawn(app.run());
    let test_app = TestApp {
        addr,
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
    }
    test_app
}

fn database_url_for(database: &str) -> String {
    let base = database_url();
    let (server, _) = base
        .rsplit_once('/')
        .expect("DATABASE_URL has a database name");
    format!("{server}/{database}")
}

async fn create_database(name: &str) {
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&database_url())
        .await
        .expect("the test PostgreSQL is running (scripts/services.sh start)");
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut connection)
        .await
        .expect("create the test database");
}

/// Polls `check` until it returns `Some`, failing the test after `deadline`.
pub async fn poll_until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
    }
}

/// A message as the broker holds it.
#[derive(Debug)]
pub struct QueuedMessage {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub delivery_mode: Option<u8>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl QueuedMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

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

    /// An authenticated API request with a JSON body; returns status and parsed body (`Null` when
    /// the body is empty).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .request(method, self.url(path))
            .basic_auth(API_KEY_ID, Some(API_SECRET));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {text:?}"))
        };
        (status, body)
    }

    pub async fn api_get(&self, path: &str) -> (u16, serde_json::Value) {
        self.api(reqwest::Method::GET, path, None).await
    }

    pub async fn api_post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.api(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn api_put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.api(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Registers a customer (with a Stripe and a GoCardless customer id) and returns its id.
    pub async fn create_customer(&self, id: &str) -> String {
        let (status, body) = self
            .api_post(
                "/customers",
                serde_json::json!({
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
                serde_json::json!({
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

    pub async fn readyz(&self) -> (u16, serde_json::Value) {
        let response = self.http.get(self.url("/readyz")).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    pub async fn wait_until_ready(&self, ready: bool) {
        poll_until("readiness", Duration::from_secs(30), || async {
            let (status, _) = self.readyz().await;
            ((status == 200) == ready).then_some(())
        })
        .await;
    }

    /// Takes every message currently in `queue` (acking them), waiting until at least `at_least`
    /// have arrived.
    pub async fn take_messages(&self, queue: &str, at_least: usize) -> Vec<QueuedMessage> {
        let connection = Connection::connect(&self.amqp_url, ConnectionProperties::default())
            .await
            .expect("test AMQP connection");
        let channel = connection.create_channel().await.unwrap();
        let mut messages = Vec::new();
        let started = tokio::time::Instant::now();
        loop {
            match channel
                .basic_get(queue.into(), BasicGetOptions::default())
                .await
                .expect("basic.get")
            {
                Some(message) => {
                    let delivery = &message.delivery;
                    messages.push(QueuedMessage {
                        routing_key: delivery.routing_key.as_str().to_owned(),
                        message_id: delivery
                            .properties
                            .message_id()
                            .as_ref()
                            .map(|id| id.as_str().to_owned()),
                        delivery_mode: *delivery.properties.delivery_mode(),
                        headers: delivery
                            .properties
                            .headers()
                            .as_ref()
                            .map(|table| {
                                table
                                    .inner()
                                    .iter()
                                    .map(|(k, v)| (k.as_str().to_owned(), text(v)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        body: delivery.data.clone(),
                    });
                    delivery.ack(BasicAckOptions::default()).await.unwrap();
                }
                None if messages.len() >= at_least => break,
                None => {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "only {} of {at_least} messages arrived in {queue}",
                        messages.len()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
                }
            }
        }
        let _ = connection.close(200, "done".into()).await;
        messages
    }

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

    /// Messages ready in `queues` (passive declares: nothing is consumed).
    pub async fn queued_count(&self, queues: &[String]) -> u32 {
        let connection = Connection::connect(&self.amqp_url, ConnectionProperties::default())
            .await
            .expect("test AMQP connection");
        let channel = connection.create_channel().await.unwrap();
        let mut count = 0;
        for queue in queues {
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .expect("the queue exists");
            count += declared.message_count();
        }
        let _ = connection.close(200, "done".into()).await;
        count
    }

    /// Graceful shutdown, as on SIGTERM; then removes this test's topology from the broker.
    pub async fn stop(mut self) {
        self.shutdown_only().await;
        self.delete_topology().await;
    }

    /// Graceful shutdown, as on SIGTERM, asserting that the app exits cleanly.
    pub async fn shutdown_only(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.await.expect("app task").expect("app exits cleanly");
        }
    }

    pub async fn delete_topology(&self) {
        let Ok(connection) =
            Connection::connect(&self.amqp_url, ConnectionProperties::default()).await
        else {
            return;
        };
        let topology = settle::broker::Topology::new(
            &self.prefix,
            &self.settings.worker.retry_delays_ms,
            self.settings.amqp.delivery_limit,
        );
        let channel = connection.create_channel().await.unwrap();
        let _ = topology.delete(&channel).await;
        let _ = connection.close(200, "done".into()).await;
    }
}

fn text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

pub fn stripe_signature(body: &[u8], timestamp: i64) -> String {
    settle::ingress::stripe::sign(&SecretString::from(STRIPE_SECRET), timestamp, body)
}

pub fn gocardless_signature(body: &[u8]) -> String {
    settle::ingress::gocardless::sign(&SecretString::from(GOCARDLESS_SECRET), body)
}

/// A Stripe event built from Stripe's own published example objects (tests/fixtures), with the
/// fields that matter set: real-shaped, with every field Stripe sends.
pub fn stripe_event(event_type: &str, object_kind: &str, id: &str) -> Vec<u8> {
    let fixtures: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/stripe-objects.json")).unwrap();
    let mut event = fixtures["event"].clone();
    event["id"] = id.into();
    event["type"] = event_type.into();
    event["created"] = chrono::Utc::now().timestamp().into();
    event["data"]["object"] = fixtures[object_kind].clone();
    serde_json::to_vec(&event).unwrap()
}

/// Asserts an API error answer: its status and `error.code`.
pub fn assert_api_error(status: u16, body: &serde_json::Value, expected: u16, code: &str) {
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
pub fn assert_validation_error(status: u16, body: &serde_json::Value, field: &str) {
    assert_api_error(status, body, 400, "validation_failed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("{field}: ")),
        "expected a message naming `{field}`, got {message:?}"
    );
}
