//! Ingress load generator. Starts settle (`serve`) in-process on the real broker, posts unique,
//! correctly signed Stripe events, and prints:
//! - the max accepted rate (closed loop, `CONCURRENCY` requests in flight) with ack latency
//!   percentiles;
//! - ack latency at a fixed open-loop rate of a quarter of that max (latency measured from each
//!   request's scheduled start, so a stall is not hidden by the generator waiting);
//! - in the same run, the bare confirmed-publish rate of the same broker with the same message
//!   size and in-flight window, and the ratio of the two.
//!
//! Run with `make bench` (or `cargo bench --bench ingress` with the services up).
//! Env: BENCH_SECONDS (default 10) per phase, BENCH_CONCURRENCY (default 64).

// A benchmark that cannot set up has failed: unwrap and expect are how it reports it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use secrecy::SecretString;
use settle::config::Settings;
use settle::role::Role;
use settle::startup::Application;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_bench_secret";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_number("BENCH_SECONDS", 10);
    let concurrency = env_number("BENCH_CONCURRENCY", 64) as usize;
    let amqp_url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:56720/%2f".into());
    let prefix = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);

    let mut settings = Settings::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        "local",
        std::env::vars().filter(|(k, _)| k == "DATABASE_URL"),
    )?;
    settings.http.addr = "127.0.0.1:0".parse()?;
    settings.amqp.prefix = prefix.clone();
    settings.amqp.url = SecretString::from(amqp_url.as_str());
    settings.database.migrate_on_start = false;
    settings.webhooks.stripe_secrets = vec![SecretString::from(SECRET)];
    settings.telemetry.log_filter = "error".into();
    settle::telemetry::init_logging(&settings.telemetry);

    let shutdown = CancellationToken::new();
    let app = Application::build(settings, Role::Serve, shutdown.clone()).await?;
    let url = format!("http://{}/webhooks/stripe", app.local_addr()?);
    let broker = app.broker().clone();
    let running = tokio::spawn(app.run());
    while !broker.is_connected() {
        tokio::time::sleep(Duration::from_millis(50)).await; // poll until the app is connected
    }
    let queue = broker.topology().reconcile_queue.clone();
    let exchange = broker.topology().webhooks_exchange.clone();

    let (before, after) = template();
    // The bare publisher sends bodies of exactly the size the receiver gets.
    let template = format!("{before}evt_bench_{:012}{after}", 0).into_bytes();
    println!(
        "settle ingress benchmark: {seconds}s per phase, {concurrency} requests in flight, {} byte events, {} cores",
        template.len(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let counter = Arc::new(AtomicU64::new(0));

    // Warm-up: connections, JIT-free but caches and the broker's queue process.
    closed_loop(&client, &url, &counter, concurrency, Duration::from_secs(1)).await;
    purge(&amqp_url, &queue).await?;

    let max = closed_loop(
        &client,
        &url,
        &counter,
        concurrency,
        Duration::from_secs(seconds),
    )
    .await;
    let max_rate = max.accepted as f64 / max.elapsed.as_secs_f64();
    println!(
        "max rate (closed loop): accepted/s {:>9.0}  refused {}  ack latency p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms",
        max_rate,
        max.refused,
        percentile(&max.latencies, 50.0),
        percentile(&max.latencies, 99.0),
        percentile(&max.latencies, 99.9),
    );
    purge(&amqp_url, &queue).await?;

    let quarter = std::env::var("BENCH_FIXED_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or((max_rate / 4.0).max(1.0));
    let fixed = open_loop(
        &client,
        &url,
        &counter,
        quarter,
        Duration::from_secs(seconds),
    )
    .await;
    println!(
        "fixed rate {:>6.0}/s (open loop): accepted {}  refused {}  ack latency p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms",
        quarter,
        fixed.accepted,
        fixed.refused,
        percentile(&fixed.latencies, 50.0),
        percentile(&fixed.latencies, 99.0),
        percentile(&fixed.latencies, 99.9),
    );
    purge(&amqp_url, &queue).await?;

    let bare_rate = bare_publish_rate(
        &amqp_url,
        &exchange,
        &template,
        concurrency,
        Duration::from_secs(seconds),
    )
    .await?;
    println!(
        "bare confirmed publish (same broker, same size, window {concurrency}): {bare_rate:>9.0} msg/s"
    );
    purge(&amqp_url, &queue).await?;
    let bare_latency = bare_publish_latency(
        &amqp_url,
        &exchange,
        &template,
        quarter,
        Duration::from_secs(seconds),
    )
    .await?;
    println!(
        "bare confirmed publish at {:>6.0}/s (open loop, the broker's own floor): confirm latency p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms",
        quarter,
        percentile(&bare_latency, 50.0),
        percentile(&bare_latency, 99.0),
        percentile(&bare_latency, 99.9),
    );
    println!(
        "ratio accepted/s ÷ bare publish rate: {:.2} (target ≥ 0.60); ack p99 at a quarter of max: {:.2} ms (target ≤ 10 ms)",
        max_rate / bare_rate,
        percentile(&fixed.latencies, 99.0)
    );
    purge(&amqp_url, &queue).await?;

    shutdown.cancel();
    running.await??;
    delete_topology(&amqp_url, broker.topology()).await?;
    Ok(())
}

fn event_body(id: &str) -> Vec<u8> {
    let fixtures: serde_json::Value =
        serde_json::from_str(include_str!("../tests/fixtures/stripe-objects.json")).unwrap();
    let mut event = fixtures["event"].clone();
    event["id"] = id.into();
    event["type"] = "payment_intent.succeeded".into();
    event["data"]["object"] = fixtures["payment_intent"].clone();
    serde_json::to_vec(&event).unwrap()
}

struct Outcome {
    accepted: u64,
    refused: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

/// The event with a placeholder id, built once: the generator must not spend the CPU it shares
/// with the server on parsing fixtures.
fn template() -> &'static (String, String) {
    static TEMPLATE: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let body = String::from_utf8(event_body("evt_PLACEHOLDER")).unwrap();
        let (before, after) = body.split_once("evt_PLACEHOLDER").unwrap();
        (before.to_owned(), after.to_owned())
    })
}

async fn post_one(client: &reqwest::Client, url: &str, id: u64) -> bool {
    let (before, after) = template();
    let body = format!("{before}evt_bench_{id:012}{after}").into_bytes();
    let signature = settle::ingress::stripe::sign(
        &SecretString::from(SECRET),
        chrono::Utc::now().timestamp(),
        &body,
    );
    matches!(
        client.post(url).header("Stripe-Signature", signature).body(body).send().await,
        Ok(response) if response.status().is_success()
    )
}

async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    counter: &Arc<AtomicU64>,
    concurrency: usize,
    duration: Duration,
) -> Outcome {
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, counter) = (client.clone(), url.to_owned(), counter.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut refused = 0;
                while started.elapsed() < duration {
                    let id = counter.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    if post_one(&client, &url, id).await {
                        latencies.push(sent.elapsed());
                    } else {
                        refused += 1;
                    }
                }
                (latencies, refused)
            })
        })
        .collect();
    let mut outcome = Outcome {
        accepted: 0,
        refused: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for worker in workers {
        let (latencies, refused) = worker.await.unwrap();
        outcome.accepted += latencies.len() as u64;
        outcome.refused += refused;
        outcome.latencies.extend(latencies);
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies.sort();
    outcome
}

async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    counter: &Arc<AtomicU64>,
    rate: f64,
    duration: Duration,
) -> Outcome {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * duration.as_secs_f64()) as u64;
    // Bounds the generator's own memory if the server stalls; far above the expected in-flight.
    let in_flight = Arc::new(Semaphore::new(10_000));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        let (client, url, counter) = (client.clone(), url.to_owned(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let ok = post_one(&client, &url, counter.fetch_add(1, Ordering::Relaxed)).await;
            (ok, scheduled.elapsed())
        }));
    }
    let mut outcome = Outcome {
        accepted: 0,
        refused: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (ok, latency) = task.await.unwrap();
        if ok {
            outcome.accepted += 1;
            outcome.latencies.push(latency);
        } else {
            outcome.refused += 1;
        }
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies.sort();
    outcome
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank].as_secs_f64() * 1000.0
}

/// Publishes `body` to the webhooks exchange with confirms, keeping `window` unconfirmed at once:
/// the broker-side ceiling the receiver is compared with.
async fn bare_publish_rate(
    amqp_url: &str,
    exchange: &str,
    body: &[u8],
    window: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut pending = std::collections::VecDeque::with_capacity(window);
    let mut confirmed = 0u64;
    let started = Instant::now();
    while started.elapsed() < duration {
        if pending.len() == window {
            let confirm: lapin::PublisherConfirm = pending.pop_front().unwrap();
            confirm.await?;
            confirmed += 1;
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(format!("bench:{confirmed}").into());
        let confirm = channel
            .basic_publish(
                exchange.into(),
                "stripe.payment_intent.succeeded".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await?;
        pending.push_back(confirm);
    }
    for confirm in pending {
        confirm.await?;
        confirmed += 1;
    }
    let rate = confirmed as f64 / started.elapsed().as_secs_f64();
    let _ = connection.close(200, "done".into()).await;
    Ok(rate)
}

/// Publishes at a fixed open-loop `rate` on one confirm-mode channel and returns each message's
/// confirm latency, measured from its scheduled send time: what the broker and its disk cost
/// before settle adds anything.
async fn bare_publish_latency(
    amqp_url: &str,
    exchange: &str,
    body: &[u8],
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * duration.as_secs_f64()) as u64;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let (channel, exchange, body) = (channel.clone(), exchange.to_owned(), body.to_vec());
        tasks.push(tokio::spawn(async move {
            let confirm = channel
                .basic_publish(
                    exchange.as_str().into(),
                    "stripe.payment_intent.succeeded".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            confirm.await?;
            Ok::<_, lapin::Error>(scheduled.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await??);
    }
    latencies.sort();
    let _ = connection.close(200, "done".into()).await;
    Ok(latencies)
}

async fn purge(amqp_url: &str, queue: &str) -> anyhow::Result<()> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

async fn delete_topology(
    amqp_url: &str,
    topology: &settle::broker::Topology,
) -> anyhow::Result<()> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    topology.delete(&connection.create_channel().await?).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}
