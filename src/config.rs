//! Configuration: `config/default.toml`, overlaid by `config/<SETTLE_ENV>.toml`, then the
//! environment (the ecosystem's usual names for common settings, `SETTLE__SECTION__KEY` for the
//! rest). Secrets are `SecretString`s, so a `Debug` of the settings never prints them.
//!
//! Plain data: this module imports nothing of settle's but the provider vocabulary and the keyring
//! its secret keys make (`sealed`), so every part can read its own section without depending on
//! any other part.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Environment variables with conventional names, and the key each one sets.
const CONVENTIONAL_VARS: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("AMQP_URL", "amqp.url"),
    ("SETTLE_HTTP_ADDR", "http.addr"),
    ("SETTLE_ADMIN_ADDR", "http.admin_addr"),
    ("SETTLE_QUEUE_PREFIX", "amqp.prefix"),
    ("SMTP_URL", "smtp.url"),
    ("SETTLE_SECRET_KEYS", "secrets.keys"),
    ("STRIPE_API_KEY", "stripe.api_key"),
    ("STRIPE_API_BASE", "stripe.api_base"),
    ("GOCARDLESS_ACCESS_TOKEN", "gocardless.access_token"),
    ("GOCARDLESS_API_BASE", "gocardless.api_base"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
];

/// Comma-separated list variables (secret rotation), and the key each one sets.
const CONVENTIONAL_LIST_VARS: &[(&str, &str)] = &[
    ("STRIPE_WEBHOOK_SECRETS", "webhooks.stripe_secrets"),
    ("GOCARDLESS_WEBHOOK_SECRETS", "webhooks.gocardless_secrets"),
    ("SETTLE_API_CREDENTIALS", "api.credentials"),
    ("AMQP_URLS", "amqp.urls"),
    ("DATABASE_URLS", "database.urls"),
    ("DATABASE_REPLICA_URLS", "database.replica_urls"),
];

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Name of the environment overlay that was loaded (`local`, `production`, …).
    #[serde(default)]
    pub environment: String,
    pub app: AppSettings,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub worker: WorkerSettings,
    pub webhooks: WebhookSettings,
    pub api: ApiSettings,
    pub account: AccountSettings,
    pub notifications: NotificationSettings,
    pub smtp: SmtpSettings,
    pub telemetry: TelemetrySettings,
    pub retention: RetentionSettings,
    pub secrets: SecretSettings,
    pub stripe: StripeApiSettings,
    pub gocardless: GoCardlessApiSettings,
    pub backfill: BackfillSettings,
    pub payouts: PayoutSettings,
    pub charging: ChargingSettings,
    pub books: BooksSettings,
}

/// The books: the chart of accounts exports map settle's accounts to, and the drift check.
#[derive(Debug, Clone, Deserialize)]
pub struct BooksSettings {
    /// Seconds between the worker's drift checks (each provider's balance against what the
    /// ledger says it holds); 0 turns them off (`settle books drift` still checks).
    pub drift_interval_secs: u64,
    /// The tax rate of every exported line whose account names none (Xero requires one).
    pub tax_rate: String,
    /// Keyed by settle's category (`receivable`, `clearing`, `in_payout`, `bank`, `fees`,
    /// `refunds`, `unexplained`, `reserve`, `opening_balances`), or by a provider and a category
    /// (`stripe_clearing`), which wins.
    #[serde(default)]
    pub accounts: std::collections::HashMap<String, BookAccount>,
}

/// One of settle's accounts in the finance team's chart: its code (Xero), its name (QuickBooks,
/// `Parent:Sub` for a sub-account) and its tax rate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookAccount {
    pub code: Option<String>,
    pub name: Option<String>,
    pub tax_rate: Option<String>,
}

/// Automatic charging: the worker's charger sends the attempts that invoices' settings decide.
#[derive(Debug, Clone, Deserialize)]
pub struct ChargingSettings {
    /// Waits between automatic attempts, in whole days, for accounts without a schedule of their
    /// own (`settle accounts retries`).
    pub retry_days: Vec<u16>,
    /// How often the charger looks for attempts that came due.
    pub poll_ms: u64,
    /// How long a send may take before another charger sends the attempt again (the same
    /// idempotency key: the provider answers the first payment).
    pub send_lease_secs: u64,
}

/// The worker's payout lister.
#[derive(Debug, Clone, Deserialize)]
pub struct PayoutSettings {
    /// Seconds between the lister's rounds; 0 turns it off (`settle payouts fetch` still lists).
    pub list_interval_secs: u64,
}

/// The worker's sweeper: backfill from each source's cursor, every interval.
#[derive(Debug, Clone, Deserialize)]
pub struct BackfillSettings {
    /// Seconds between sweeps, the first one interval after start; 0 turns the sweeper off.
    pub interval_secs: u64,
    /// How far back before the cursor a sweep lists again: GoCardless creates events
    /// asynchronously, so an event may appear in the list after a later one was listed.
    pub overlap_secs: u64,
    /// How far behind now a sweep stops: a webhook for an event that recent may still be on its
    /// way, and would otherwise be counted as missed.
    pub lag_secs: u64,
    /// The window of a source's first sweep, in hours (Stripe retries webhooks for 72).
    pub first_window_hours: u64,
}

/// Stripe's API, for backfill: the default connection's key, and where the API is (a stand-in
/// in tests).
#[derive(Debug, Clone, Deserialize)]
pub struct StripeApiSettings {
    /// `sk_…` or a restricted key that can read events; empty: none.
    pub api_key: SecretString,
    pub api_base: String,
}

/// GoCardless's API, for backfill: the default connection's access token, and where the API is.
#[derive(Debug, Clone, Deserialize)]
pub struct GoCardlessApiSettings {
    pub access_token: SecretString,
    pub api_base: String,
}

/// The keys provider secrets are sealed with in the database (`sealed`).
#[derive(Debug, Clone, Deserialize)]
pub struct SecretSettings {
    /// `<key id>:<base64 of 32 bytes>`, comma-separated; the first seals, all open.
    pub keys: SecretString,
}

impl Settings {
    /// The keyring of `secrets.keys` (checked at load).
    pub fn keyring(&self) -> Result<crate::sealed::Keyring, crate::sealed::SealError> {
        crate::sealed::Keyring::parse(&self.secrets.keys)
    }
}

/// How long rows are kept once their work is done (`retention`).
#[derive(Debug, Clone, Deserialize)]
pub struct RetentionSettings {
    /// Inbox rows: the payload and the dedupe key of each event. At least
    /// `MIN_INBOX_DAYS`, the providers' retry horizon.
    pub inbox_days: u32,
    pub outbox_published_days: u32,
    pub notifications_days: u32,
    pub dead_letters_replayed_days: u32,
    /// Unmatched events no registration claimed in this many days expire: recorded `expired`
    /// and no longer applied by a registration of their payment. At least `MIN_INBOX_DAYS`: an
    /// expired event's provider retries must still find it.
    pub unmatched_days: u32,
    /// Seconds between runs; 0 turns retention off.
    pub interval_secs: u64,
    /// Rows per statement, so a run never holds many locks or a long transaction.
    pub batch_size: u32,
}

impl RetentionSettings {
    /// Stripe retries a webhook for 3 days, GoCardless up to 8 times over a few days, and both
    /// resend from their dashboards: an inbox kept shorter would let a late retry apply twice.
    pub const MIN_INBOX_DAYS: u32 = 7;
}

#[derive(Debug, Clone, Deserialize)]
pub struct NotificationSettings {
    /// Where the business's copy of each failed-payment mail goes; empty sends none.
    pub business_email: String,
    /// The mails' From.
    pub from: String,
    /// The business's name as customers know it.
    pub business_name: String,
    pub poll_ms: u64,
    pub max_backoff_secs: u64,
    pub permanent_failure_attempts: i32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SmtpSettings {
    /// `smtp://host:port` (plain), `smtp://host:587?tls=required` (STARTTLS), `smtps://host:465`
    /// (TLS); credentials as `smtp://user:pass@host`. May hold a password, so it is a secret.
    pub url: SecretString,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AppSettings {
    pub require_secrets: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// Where the internal API and `/metrics` listen, away from the public webhook address.
    /// `None`: on `addr` with the webhooks.
    #[serde(default)]
    pub admin_addr: Option<SocketAddr>,
    pub body_limit_bytes: usize,
    /// Open connections at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Requests in progress at once; one more is answered 503 with Retry-After (load shedding).
    pub max_requests_in_flight: usize,
    /// Longest a new connection may take to bring its first complete request head, protocol
    /// detection included (silent sockets, slowloris).
    pub header_read_timeout_ms: u64,
    /// Longest a connection may stay open serving no request (keep-alive HTTP/1, HTTP/2 with no
    /// open stream).
    pub idle_timeout_ms: u64,
    /// Webhook body bytes held in memory at once, over every request being read: past it, a
    /// request is answered 503 with Retry-After rather than read.
    pub body_budget_bytes: usize,
    /// Longest a request may take, its body included: then 408.
    pub request_timeout_ms: u64,
    /// Longest the graceful drain waits for in-flight connections at shutdown.
    pub drain_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// The server, or one address in front of a cluster's primary (HAProxy on Patroni's
    /// `/primary` check); `urls` replaces it.
    pub url: SecretString,
    /// Each member of a cluster, one URL each: settle connects to the one that is the primary,
    /// and follows a failover (`database::follow_primary`).
    #[serde(default)]
    pub urls: Vec<SecretString>,
    /// Streaming replicas for reads that may be a moment behind (the API's lists, the console,
    /// exports), one URL each or one address in front of them; none: every read on the primary.
    #[serde(default)]
    pub replica_urls: Vec<SecretString>,
    /// Past this lag (or while it is unknown), those reads go to the primary.
    pub replica_max_lag_ms: u64,
    pub max_connections: u32,
    pub migrate_on_start: bool,
    /// Longest wait for a row lock (an invoice's) before the statement fails and is retried.
    pub lock_timeout_ms: u64,
    /// Longest any statement may run.
    pub statement_timeout_ms: u64,
    /// A session idle inside a transaction longer than this is ended by PostgreSQL, releasing
    /// its locks.
    pub idle_in_transaction_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AmqpSettings {
    /// The broker when it is one node; `urls` replaces it for a cluster.
    pub url: SecretString,
    /// The nodes of a cluster, one URL each. Each process connects to one node, chosen at
    /// random, and moves on to the next when it loses it.
    #[serde(default)]
    pub urls: Vec<SecretString>,
    /// Replicas of each quorum queue at its declaration (`x-quorum-initial-group-size`), at most
    /// the nodes in the cluster; `None`: RabbitMQ's default, every node. RabbitMQ refuses a
    /// declaration whose value differs from the existing queue's, so it is set before the queues
    /// exist.
    #[serde(default)]
    pub quorum_initial_group_size: Option<u32>,
    pub prefix: String,
    pub confirm_timeout_ms: u64,
    /// How long a publish waits for a broker connection when no node is connected (an outage, or
    /// a failover under way) before it fails: long enough for a failover to the next node.
    pub connect_wait_ms: u64,
    pub publisher_channels: usize,
    pub delivery_limit: u32,
    pub reconnect_delay_ms: u64,
}

impl WorkerSettings {
    /// How long a relay that stopped answering keeps its lease (`idle_session_timeout` on the
    /// lease's session) before another process relays. The holder's session is idle at most
    /// `outbox_poll_ms` between two passes, so the poll must stay well below this.
    pub const RELAY_LEASE_EXPIRY: Duration = Duration::from_secs(10);
}

/// `urls` when given, else `url` alone: a cluster's list, or the one address.
fn one_or_many<'a>(url: &'a SecretString, urls: &'a [SecretString]) -> &'a [SecretString] {
    if urls.is_empty() {
        std::slice::from_ref(url)
    } else {
        urls
    }
}

impl DatabaseSettings {
    /// The URL of every server to connect to: `urls`, or `url` alone.
    pub fn addresses(&self) -> &[SecretString] {
        one_or_many(&self.url, &self.urls)
    }
}

impl AmqpSettings {
    /// The URL of every node to connect to: `urls`, or `url` alone.
    pub fn addresses(&self) -> &[SecretString] {
        one_or_many(&self.url, &self.urls)
    }

    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_millis(self.confirm_timeout_ms)
    }

    pub fn connect_wait(&self) -> Duration {
        Duration::from_millis(self.connect_wait_ms)
    }

    pub fn reconnect_delay(&self) -> Duration {
        Duration::from_millis(self.reconnect_delay_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    pub prefetch: u16,
    /// Deliveries applied in one transaction at most.
    pub batch_size: u16,
    /// How long a batch waits for more deliveries after its first.
    pub batch_wait_ms: u64,
    pub retry_delays_ms: Vec<u64>,
    /// Attempts (the first delivery included) before a transient failure is dead-lettered.
    pub max_attempts: u32,
    pub gocardless_collected_at: crate::provider::GoCardlessCollectedAt,
    /// How often the outbox relay looks for rows committed by other processes.
    pub outbox_poll_ms: u64,
    /// Publishes of one reconciliation event the broker may refuse or leave unconfirmed before
    /// the relay parks it (`settle outbox parked`).
    pub outbox_max_attempts: i32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    pub stripe_secrets: Vec<SecretString>,
    pub stripe_tolerance_secs: u64,
    pub gocardless_secrets: Vec<SecretString>,
    /// How often the receiver reloads the per-connection endpoints' secrets from the database.
    pub connection_secrets_refresh_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiSettings {
    /// Basic-auth credentials of the internal callers, each `key id:secret`.
    pub credentials: Vec<ApiCredential>,
}

/// One `key id:secret` pair. The secret is never printed.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct ApiCredential {
    key_id: String,
    secret: SecretString,
}

impl ApiCredential {
    pub fn parts(&self) -> (&str, &SecretString) {
        (&self.key_id, &self.secret)
    }
}

impl TryFrom<String> for ApiCredential {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        match text.split_once(':') {
            Some((key_id, secret)) if !key_id.is_empty() && !secret.is_empty() => Ok(Self {
                key_id: key_id.to_owned(),
                secret: SecretString::from(secret),
            }),
            // The value may hold a secret: the message must not repeat it.
            _ => Err("an API credential must be `key id:secret`, both non-empty".to_owned()),
        }
    }
}

/// The account every row belongs to (the billing system's `sequenceAccountId`), and the payment
/// settings that apply when no customer, billing schedule or invoice sets them.
#[derive(Debug, Clone, Deserialize)]
pub struct AccountSettings {
    pub id: String,
    /// The default account's own Stripe account (`acct_…`), when the platform's events name it
    /// (an organisation's `context`): events naming it are the default account's. Empty: none.
    pub stripe_account_id: String,
    /// The default account's own GoCardless organisation (`OR…`), which a partner app's events
    /// name in `links.organisation`. Empty: none.
    pub gocardless_organisation_id: String,
    pub default_payment_provider: crate::provider::PaymentProvider,
    pub default_auto_charge: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    pub log_filter: String,
    /// How often the sampled gauges (broker, queues, money waiting) are refreshed.
    pub sample_interval_secs: u64,
    /// Where spans go over OTLP/HTTP (JSON), as `http://collector:4318` (`/v1/traces` is added);
    /// empty: nowhere (trace ids still propagate and reach the logs).
    pub otlp_endpoint: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

impl Settings {
    /// Loads the settings of the process: `SETTLE_CONFIG_DIR` (default `./config`), `SETTLE_ENV`
    /// (default `production`: a deployment that forgets to say gets the safe one, and refuses to
    /// start without its secrets) and the process environment.
    pub fn from_process_env() -> anyhow::Result<Self> {
        let dir = std::env::var_os("SETTLE_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("config"));
        let environment =
            std::env::var("SETTLE_ENV").unwrap_or_else(|_| PRODUCTION_ENVIRONMENT.to_owned());
        Self::load(&dir, &environment, std::env::vars())
    }

    /// Loads `<dir>/default.toml`, `<dir>/<environment>.toml` (optional) and then `vars`, and
    /// checks the result. Taking the variables as an argument keeps this testable.
    pub fn load(
        dir: &Path,
        environment: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        // The books' account codes are text, leading zeros and all (Xero's `090`): their
        // variables are read as written, never parsed as numbers.
        let (books, others): (Vec<_>, Vec<_>) = vars
            .iter()
            .cloned()
            .partition(|(name, _)| name.starts_with("SETTLE__BOOKS__"));
        let mut builder = config::Config::builder()
            .add_source(config::File::from(dir.join("default.toml")))
            .add_source(config::File::from(dir.join(format!("{environment}.toml"))).required(false))
            .add_source(
                config::Environment::with_prefix("SETTLE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("worker.retry_delays_ms")
                    .with_list_parse_key("webhooks.stripe_secrets")
                    .with_list_parse_key("webhooks.gocardless_secrets")
                    .with_list_parse_key("api.credentials")
                    .with_list_parse_key("amqp.urls")
                    .with_list_parse_key("database.urls")
                    .with_list_parse_key("database.replica_urls")
                    .source(Some(others.into_iter().collect())),
            )
            .add_source(
                config::Environment::with_prefix("SETTLE")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(books.into_iter().collect())),
            )
            .set_override("environment", environment)?;
        for (name, key) in CONVENTIONAL_VARS {
            if let Some((_, value)) = vars.iter().find(|(var, _)| var == name) {
                builder = builder.set_override(*key, value.as_str())?;
            }
        }
        for (name, key) in CONVENTIONAL_LIST_VARS {
            if let Some((_, value)) = vars.iter().find(|(var, _)| var == name) {
                let items: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect();
                builder = builder.set_override(*key, items)?;
            }
        }
        let settings: Settings = builder
            .build()
            .with_context(|| format!("reading configuration from {}", dir.display()))?
            .try_deserialize()
            .context("invalid configuration")?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.app.require_secrets {
            self.require_production_settings()?;
        }
        if self.environment != LOCAL_ENVIRONMENT {
            self.refuse_development_secrets()?;
            // The provider APIs are called with a bearer key: never in clear text.
            for (base, setting) in [
                (&self.stripe.api_base, "STRIPE_API_BASE (stripe.api_base)"),
                (
                    &self.gocardless.api_base,
                    "GOCARDLESS_API_BASE (gocardless.api_base)",
                ),
            ] {
                if !base.starts_with("https://") {
                    bail!(
                        "{setting} must be an https:// URL outside SETTLE_ENV=local (it is `{base}`)"
                    );
                }
            }
        }
        if self.http.body_limit_bytes == 0 {
            bail!("http.body_limit_bytes must be greater than 0");
        }
        if self.http.body_budget_bytes < self.http.body_limit_bytes {
            bail!(
                "http.body_budget_bytes ({}) must be at least http.body_limit_bytes ({}): a body of the largest accepted size could never be read",
                self.http.body_budget_bytes,
                self.http.body_limit_bytes
            );
        }
        if self.amqp.prefix.is_empty() {
            bail!("amqp.prefix (SETTLE_QUEUE_PREFIX) must not be empty");
        }
        for (index, address) in self.amqp.addresses().iter().enumerate() {
            // The message names the position, never the URL: it holds a password.
            if address
                .expose_secret()
                .parse::<lapin::uri::AMQPUri>()
                .is_err()
            {
                bail!(
                    "AMQP URL number {} of {} (AMQP_URLS / AMQP_URL, amqp.urls / amqp.url) is not an amqp:// or amqps:// URL",
                    index + 1,
                    self.amqp.addresses().len()
                );
            }
        }
        let databases: Vec<&SecretString> = (self.database.addresses().iter())
            .chain(&self.database.replica_urls)
            .collect();
        for (index, address) in databases.iter().enumerate() {
            // As for AMQP: the position, never the URL. An empty `url` is a missing setting,
            // which production refuses on its own.
            let url = address.expose_secret();
            if !url.is_empty() && url.parse::<sqlx::postgres::PgConnectOptions>().is_err() {
                bail!(
                    "database URL number {} of {} (DATABASE_URL / DATABASE_URLS, then DATABASE_REPLICA_URLS; database.url / database.urls, then database.replica_urls) is not a valid PostgreSQL URL",
                    index + 1,
                    databases.len()
                );
            }
        }
        if self.amqp.quorum_initial_group_size == Some(0) {
            bail!("amqp.quorum_initial_group_size must be at least 1");
        }
        if self.amqp.publisher_channels == 0 {
            bail!("amqp.publisher_channels must be at least 1");
        }
        if let Some(zero) = self.charging.retry_days.iter().position(|days| *days == 0) {
            bail!(
                "charging.retry_days: wait {} is 0 days: each wait is at least a day",
                zero + 1
            );
        }
        if self.charging.retry_days.len() > MAX_RETRY_WAITS {
            bail!(
                "charging.retry_days has {} waits: at most {MAX_RETRY_WAITS}",
                self.charging.retry_days.len()
            );
        }
        if self.charging.poll_ms == 0 || self.charging.send_lease_secs == 0 {
            bail!("charging.poll_ms and charging.send_lease_secs must be at least 1");
        }
        if self.worker.prefetch == 0 {
            bail!("worker.prefetch must be at least 1");
        }
        if self.worker.batch_size == 0 {
            bail!("worker.batch_size must be at least 1");
        }
        if self.worker.retry_delays_ms.is_empty() || self.worker.retry_delays_ms.contains(&0) {
            bail!("worker.retry_delays_ms must list at least one delay, each above 0");
        }
        let lease_ms = WorkerSettings::RELAY_LEASE_EXPIRY.as_millis();
        if u128::from(self.worker.outbox_poll_ms) * 2 > lease_ms {
            bail!(
                "worker.outbox_poll_ms is {}, above {}: the relay's lease ends after {} ms of silence, and a poll that long would lose it between passes",
                self.worker.outbox_poll_ms,
                lease_ms / 2,
                lease_ms
            );
        }
        if self.worker.outbox_poll_ms == 0 {
            bail!("worker.outbox_poll_ms must be at least 1");
        }
        if self.worker.outbox_max_attempts < 1 {
            bail!("worker.outbox_max_attempts must be at least 1");
        }
        if self.worker.max_attempts == 0 {
            bail!("worker.max_attempts must be at least 1");
        }
        if self.retention.unmatched_days < RetentionSettings::MIN_INBOX_DAYS {
            bail!(
                "retention.unmatched_days is {}, below {}: an expired event must outlive the providers' retries, which come for days",
                self.retention.unmatched_days,
                RetentionSettings::MIN_INBOX_DAYS
            );
        }
        if self.retention.inbox_days < RetentionSettings::MIN_INBOX_DAYS {
            bail!(
                "retention.inbox_days is {}, below {}: the inbox dedupes the providers' retries, which come for days",
                self.retention.inbox_days,
                RetentionSettings::MIN_INBOX_DAYS
            );
        }
        self.keyring()?;
        if self.retention.batch_size == 0 {
            bail!("retention.batch_size must be at least 1");
        }
        if lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(
            self.smtp.url.expose_secret(),
        )
        .is_err()
        {
            bail!("SMTP_URL (smtp.url) is not an smtp:// or smtps:// URL");
        }
        if self
            .notifications
            .from
            .parse::<lettre::message::Mailbox>()
            .is_err()
        {
            bail!("notifications.from is not a mailbox like `Billing <billing@example.com>`");
        }
        if self.account.id.is_empty() {
            bail!("account.id must not be empty");
        }
        Ok(())
    }
}

impl Settings {
    /// Every setting a production process cannot do without, checked together so that one start
    /// names all that is missing. `database.url` and `amqp.url` have no default outside
    /// `local.toml`: a forgotten variable must not connect to a developer's services.
    fn require_production_settings(&self) -> anyhow::Result<()> {
        let webhooks = &self.webhooks;
        let present = |secrets: &[SecretString]| {
            !secrets.is_empty() && secrets.iter().all(|s| !s.expose_secret().is_empty())
        };
        let missing: Vec<&str> = [
            (
                present(&webhooks.stripe_secrets),
                "STRIPE_WEBHOOK_SECRETS (webhooks.stripe_secrets)",
            ),
            (
                present(&webhooks.gocardless_secrets),
                "GOCARDLESS_WEBHOOK_SECRETS (webhooks.gocardless_secrets)",
            ),
            (
                !self.api.credentials.is_empty(),
                "SETTLE_API_CREDENTIALS (api.credentials)",
            ),
            (
                !self.secrets.keys.expose_secret().trim().is_empty(),
                "SETTLE_SECRET_KEYS (secrets.keys)",
            ),
            (
                self.database
                    .addresses()
                    .iter()
                    .any(|url| !url.expose_secret().is_empty()),
                "DATABASE_URL or DATABASE_URLS (database.url, database.urls)",
            ),
            (
                self.amqp
                    .addresses()
                    .iter()
                    .any(|url| !url.expose_secret().is_empty()),
                "AMQP_URL or AMQP_URLS (amqp.url, amqp.urls)",
            ),
        ]
        .into_iter()
        .filter_map(|(given, setting)| (!given).then_some(setting))
        .collect();
        if !missing.is_empty() {
            bail!(
                "settle refuses to start in the `{}` environment without: {} (SETTLE_ENV=local runs on the development settings instead)",
                self.environment,
                missing.join(", ")
            );
        }
        Ok(())
    }

    /// Outside `local`, no secret this repository publishes, and none too weak to stand a guess.
    /// The message names the setting, never the value.
    fn refuse_development_secrets(&self) -> anyhow::Result<()> {
        let webhook_secrets = [
            (
                &self.webhooks.stripe_secrets,
                "STRIPE_WEBHOOK_SECRETS (webhooks.stripe_secrets)",
            ),
            (
                &self.webhooks.gocardless_secrets,
                "GOCARDLESS_WEBHOOK_SECRETS (webhooks.gocardless_secrets)",
            ),
        ];
        for (secrets, setting) in webhook_secrets {
            for (index, secret) in secrets.iter().enumerate() {
                check_secret(
                    secret.expose_secret(),
                    MIN_WEBHOOK_SECRET_CHARS,
                    setting,
                    index,
                )?;
            }
        }
        for (index, credential) in self.api.credentials.iter().enumerate() {
            let (_, secret) = credential.parts();
            check_secret(
                secret.expose_secret(),
                MIN_API_SECRET_CHARS,
                "SETTLE_API_CREDENTIALS (api.credentials)",
                index,
            )?;
        }
        let keys = self.secrets.keys.expose_secret().split(',');
        for (index, entry) in keys.map(str::trim).filter(|e| !e.is_empty()).enumerate() {
            let key = entry.split_once(':').map_or(entry, |(_, key)| key);
            if PUBLISHED_SEALING_KEYS.contains(&key) {
                bail!(
                    "SETTLE_SECRET_KEYS (secrets.keys) key number {} is the development key this repository publishes; outside SETTLE_ENV=local make one: echo \"k1:$(head -c32 /dev/urandom | base64)\"",
                    index + 1
                );
            }
        }
        Ok(())
    }
}

/// The environment whose overlay holds the development settings (`make run`, the tests).
pub const LOCAL_ENVIRONMENT: &str = "local";
/// The environment a process runs in when `SETTLE_ENV` does not say.
pub const PRODUCTION_ENVIRONMENT: &str = "production";

/// Secrets that appear in this repository (`config/local.toml`, the tests, the benchmarks, the
/// README and the design's test vectors): anyone can sign with them, so outside `local` they are
/// refused whatever their length.
const PUBLISHED_SECRETS: &[&str] = &[
    "whsec_local_development_secret",
    "gocardless_local_development_secret",
    "local-api-secret",
    "whsec_test_secret",
    "gc_secret",
    "whsec_test_secret_for_it",
    "gc_test_secret_for_it",
    "api-test-secret",
    "whsec_chaos_suite",
    "whsec_bench_secret",
    "whsec_fuzzing_only_not_a_real_secret",
];

/// The sealing keys this repository publishes (base64, as written in a key list).
const PUBLISHED_SEALING_KEYS: &[&str] = &[
    // config/local.toml's `local` key: "local-development-key-not-secret".
    "bG9jYWwtZGV2ZWxvcG1lbnQta2V5LW5vdC1zZWNyZXQ=",
    // The tests' keys.
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    "HxYdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=",
];

/// The shortest webhook secret accepted outside `local`. The providers generate theirs (Stripe's
/// `whsec_` and 32 characters); a shorter one was typed by a person.
/// The most waits a retry schedule has (the `accounts.charge_retry_days` check agrees).
pub const MAX_RETRY_WAITS: usize = 10;
const MIN_WEBHOOK_SECRET_CHARS: usize = 24;
/// The shortest API credential secret accepted outside `local`: 24 characters of
/// `openssl rand -base64 18` carry 144 bits, out of reach of an online guess.
const MIN_API_SECRET_CHARS: usize = 24;
/// A secret of fewer distinct characters than this (`aaaa…`, `123123…`) is refused however long.
const MIN_DISTINCT_CHARS: usize = 8;

fn check_secret(secret: &str, min_chars: usize, setting: &str, index: usize) -> anyhow::Result<()> {
    let which = index + 1;
    if PUBLISHED_SECRETS.contains(&secret) {
        bail!(
            "{setting} secret number {which} is a development secret this repository publishes: anyone can sign with it"
        );
    }
    let chars = secret.chars().count();
    let distinct = secret
        .chars()
        .collect::<std::collections::HashSet<_>>()
        .len();
    if chars < min_chars || distinct < MIN_DISTINCT_CHARS {
        bail!(
            "{setting} secret number {which} is too weak: at least {min_chars} characters, {MIN_DISTINCT_CHARS} of them different (e.g. openssl rand -base64 32)"
        );
    }
    Ok(())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
