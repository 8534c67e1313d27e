//! What the benchmarks share: their settings from the environment, a database and a queue prefix
//! of their own (created, then removed whatever happened), the history of paid invoices they
//! preload (`BENCH_PRELOAD`) as the worker leaves it, and percentiles.

use std::time::Duration;

use sqlx::PgPool;

/// A benchmark's own database (`bench_<random>`, with production's `synchronous_commit = on`) and
/// queue prefix, and the settings that name them (`config/local.toml` otherwise, logging errors
/// only). `remove` drops both, whatever the benchmark did.
pub struct Scratch {
    pub settings: settle::config::Settings,
    pub server_url: String,
    pub amqp_url: String,
    pub database: String,
    pub database_url: String,
}

impl Scratch {
    /// Creates the database; `adjust` changes the settings first (logging starts with them).
    pub async fn create(
        adjust: impl FnOnce(&mut settle::config::Settings),
    ) -> anyhow::Result<Self> {
        use secrecy::SecretString;
        let server_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://settle:settle@127.0.0.1:54329/settle".into());
        let amqp_url = std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:56720/%2f".into());
        let id = uuid::Uuid::new_v4().simple().to_string();
        let database = format!("bench_{}", &id[..16]);
        let (server, _) = server_url
            .rsplit_once('/')
            .ok_or_else(|| anyhow::anyhow!("DATABASE_URL ends with a database name"))?;
        let database_url = format!("{server}/{database}");
        let mut settings = settle::config::Settings::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
            "local",
            Vec::new(),
        )?;
        settings.http.addr = "127.0.0.1:0".parse()?;
        settings.amqp.prefix = format!("bench-{}", &id[..8]);
        settings.amqp.url = SecretString::from(amqp_url.as_str());
        settings.database.url = SecretString::from(database_url.as_str());
        settings.database.migrate_on_start = false;
        settings.telemetry.log_filter = "error".into();
        adjust(&mut settings);
        settle::telemetry::init_logging(&settings.telemetry);

        execute(&server_url, &format!(r#"CREATE DATABASE "{database}""#)).await?;
        // Production's durability: every commit waits for its WAL to be flushed. The test box's
        // server runs with `synchronous_commit = off` (scripts/services.sh) to keep the suite
        // fast; this database, and so every session on it, does not.
        execute(
            &server_url,
            &format!(r#"ALTER DATABASE "{database}" SET synchronous_commit = on"#),
        )
        .await?;
        println!("synchronous_commit = on for the benchmark's database (production's setting)");
        Ok(Self {
            settings,
            server_url,
            amqp_url,
            database,
            database_url,
        })
    }

    /// Drops the database and deletes the prefix's queues and exchanges.
    pub async fn remove(&self) -> anyhow::Result<()> {
        let dropped = drop_database(&self.server_url, &self.database).await;
        let deleted = delete_topology(&self.settings, &self.amqp_url).await;
        dropped.and(deleted)
    }
}

pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p`th percentile (0 to 100) of `sorted`, NaN when there is none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

/// Deletes the queues and exchanges of the benchmark's prefix (and their messages).
pub async fn delete_topology(
    settings: &settle::config::Settings,
    amqp_url: &str,
) -> anyhow::Result<()> {
    use lapin::{Connection, ConnectionProperties};
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    settle::broker::Topology::from_settings(settings)
        .delete(&channel)
        .await?;
    let _ = channel.close(200, "done".into()).await;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

pub async fn execute(url: &str, statement: &str) -> anyhow::Result<()> {
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
    sqlx::raw_sql(statement).execute(&mut connection).await?;
    sqlx::Connection::close(connection).await?;
    Ok(())
}

/// Drops the benchmark's database. A plain DROP first: it asks autovacuum workers (busy on the
/// freshly written tables) to leave, which `WITH (FORCE)` refuses to do for a role that is not a
/// superuser; then FORCE for sessions still connected. A few tries.
pub async fn drop_database(server_url: &str, database: &str) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        let force = if attempt % 2 == 1 {
            " WITH (FORCE)"
        } else {
            ""
        };
        let dropped = execute(
            server_url,
            &format!(r#"DROP DATABASE IF EXISTS "{database}"{force}"#),
        )
        .await;
        attempt += 1;
        if dropped.is_ok() || attempt == 6 {
            return dropped;
        }
        tokio::time::sleep(Duration::from_secs(1)).await; // let the other sessions go
    }
}

/// A `payment_intent.succeeded` event from Stripe's published example objects, paying `amount`
/// GBP, with placeholders for its id (`@EVENT@`), its PaymentIntent's id (`@PAYMENT_INTENT@`)
/// and `metadata.invoice_id` (`@INVOICE@`).
pub fn event_template(amount: i64) -> String {
    let fixtures: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/fixtures/stripe-objects.json")).unwrap();
    let mut event = fixtures["event"].clone();
    event["id"] = "@EVENT@".into();
    event["type"] = "payment_intent.succeeded".into();
    event["created"] = chrono::Utc::now().timestamp().into();
    let mut object = fixtures["payment_intent"].clone();
    object["id"] = "@PAYMENT_INTENT@".into();
    object["amount"] = amount.into();
    object["amount_received"] = amount.into();
    object["currency"] = "gbp".into();
    object["metadata"] = serde_json::json!({ "invoice_id": "@INVOICE@" });
    event["data"]["object"] = object;
    serde_json::to_string(&event).unwrap()
}

/// `count` customers `cust_bench_<n>` of `account`, each with a Stripe customer id, in bulk.
pub async fn customers(db: &PgPool, account: &str, count: u64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO customers (id, account_id, legal_name, email, billing_emails, external_ids,
                                stripe_customer_id)
         SELECT 'cust_bench_' || n, $1, 'Bench customer ' || n, 'ap' || n || '@bench.example',
                ARRAY['billing' || n || '@bench.example'],
                jsonb_build_array(jsonb_build_object('key', 'Stripe', 'value', 'cus_bench' || n)),
                'cus_bench' || n
         FROM generate_series(0, $2 - 1) AS n",
    )
    .bind(account)
    .bind(count as i64)
    .execute(db)
    .await?;
    Ok(())
}

/// The history of `count` paid invoices `inv_pre_<n>` of `amount` GBP, in bulk, as the worker
/// leaves it: an invoice (of one of `customers` customers `cust_bench_<n>`), its payment
/// `pi_pre_<n>`, its ledger row, its inbox row holding `payload` (the event's full JSON) and the
/// ids it is found by, its published outbox row. So what runs after it meets tables and indexes
/// that have grown.
pub async fn preload(
    db: &PgPool,
    account: &str,
    count: u64,
    customers: u64,
    amount: i64,
    payload: &str,
) -> anyhow::Result<()> {
    // In slices, so no one statement holds a huge transaction.
    const SLICE: u64 = 100_000;
    for first in (0..count).step_by(SLICE as usize) {
        let last = (first + SLICE).min(count) - 1;
        let statements = [
            "INSERT INTO invoices (id, account_id, customer_id, number, currency, amount_due,
                                   amount_paid, status, due_date)
             SELECT 'inv_pre_' || n, $1, 'cust_bench_' || (n % $4), 'INV-pre-' || n, 'GBP',
                    $5, $5, 'PAID', DATE '2026-12-31'
             FROM generate_series($2::bigint, $3::bigint) AS n",
            "INSERT INTO payments (id, account_id, invoice_id, provider, provider_payment_id,
                                   amount, currency, status, collected, last_event_at)
             SELECT 'pay_pre_' || n, $1, 'inv_pre_' || n, 'STRIPE', 'pi_pre_' || n, $5, 'GBP',
                    'SUCCEEDED', true, now()
             FROM generate_series($2::bigint, $3::bigint) AS n",
            "INSERT INTO money_movements (account_id, invoice_id, payment_id, provider,
                 provider_object_id, kind, amount, currency, amount_source, occurred_at, event_id)
             SELECT $1, 'inv_pre_' || n, 'pay_pre_' || n, 'STRIPE', 'pi_pre_' || n,
                    'COLLECTED', $5, 'GBP', 'event', now(), 'evt_pre_' || n
             FROM generate_series($2::bigint, $3::bigint) AS n",
            // Published: not on the relay's work list (`outbox_pending`).
            "INSERT INTO outbox (account_id, message_id, routing_key, payload)
             SELECT $1, 'stripe:evt_pre_' || n || ':payment.succeeded', 'payment.succeeded',
                    '{}'
             FROM generate_series($2::bigint, $3::bigint) AS n",
        ];
        for statement in statements {
            sqlx::query(statement)
                .bind(account)
                .bind(first as i64)
                .bind(last as i64)
                .bind(customers as i64)
                .bind(amount)
                .execute(db)
                .await?;
        }
        // Received a second apart, oldest first, ending now: the order real traffic leaves.
        sqlx::query(
            "INSERT INTO webhook_events (provider, event_id, account_id, event_type, payload,
                                         received_at, outcome, object_ids)
             SELECT 'STRIPE', 'evt_pre_' || n, $1, 'payment_intent.succeeded', $5::json,
                    now() - make_interval(secs => $4 - n), 'applied',
                    ARRAY['evt_pre_' || n, 'pi_pre_' || n, 'ch_pre_' || n]
             FROM generate_series($2::bigint, $3::bigint) AS n",
        )
        .bind(account)
        .bind(first as i64)
        .bind(last as i64)
        .bind(count as f64)
        .bind(payload)
        .execute(db)
        .await?;
    }
    sqlx::query("VACUUM ANALYZE").execute(db).await?;
    Ok(())
}
