//! Ingress load generator. Starts settle (`serve`) in-process on the real broker, posts unique,
//! correctly signed Stripe events, and prints:
//! - the max accepted rate (closed loop, `CONCURRENCY` requests in flight) with ack latency
//!   percentiles;
//! - ack latency at a fixed open-loop rate of a quarter of that max (latency measured from each
//!   request's scheduled start, so a stall is not hidden by the generator waiting);
//! - in the same run, the bare confirmed-publish rate of the same broker with the same message
//!   size and in-flight window, and the ratio of the two;
//! - an independent load: `wrk` (Debian's package, installed by `scripts/services.sh`) replaying
//!   BENCH_WRK_EVENTS (default 2000) events signed beforehand by `openssl dgst -hmac`, not by
//!   settle's code, against `settle serve` run as a process of its own: accepted/s and latency at
//!   the same window, beside the bare rate; then BENCH_WRK_CONNECTIONS (default 2000) connections
//!   posting at once, and the peak RSS of that process (VmHWM);
//! - the memory held before authentication: a fresh `settle serve` process, its RSS once ready
//!   and its peak (VmHWM) while 1,000 clients at once each send a well-formed but wrong Stripe
//!   signature and a 1 MiB body, 64 KiB every 250 ms (target ≤ 128 MiB), with how many got 400
//!   (read whole, signature refused), 503 (past `http.body_budget_bytes`), 413 or nothing; the
//!   bench raises its own open-files limit for them (`prlimit`, util-linux), skipping the phase
//!   if the hard limit is too low;
//! - when `scripts/services.sh start --cluster` runs (SETTLE_TEST_CLUSTER_AMQP_URLS, or
//!   BENCH_CLUSTER_URLS): the max rate again with `serve` on the three-node cluster, beside the
//!   bare confirmed-publish rate to the node it connected to, the queue replicated on all three.
//!
//! Run with `make bench` (or `cargo bench --bench ingress` with the services up).
//! Env: BENCH_SECONDS (default 10) per phase, BENCH_CONCURRENCY (default 64).

// A benchmark that cannot set up has failed: unwrap and expect are how it reports it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/cpu.rs"]
mod cpu;

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

use cpu::Cpu;

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
    let serve_settings = settings.clone();
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

    let cpu = Cpu::now();
    let started = Instant::now();
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
    println!(
        "  CPU (the generator runs in the settle process), {}",
        Cpu::now().since(&cpu, started.elapsed(), "children")
    );
    purge(&amqp_url, &queue).await?;

    let quarter = std::env::var("BENCH_FIXED_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or((max_rate / 4.0).max(1.0));
    let (cpu, started) = (Cpu::now(), Instant::now());
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
    println!(
        "  CPU (the generator runs in the settle process), {}",
        Cpu::now().since(&cpu, started.elapsed(), "children")
    );
    purge(&amqp_url, &queue).await?;

    let (cpu, started) = (Cpu::now(), Instant::now());
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
    println!(
        "  CPU (the probe is the settle process), {}",
        Cpu::now().since(&cpu, started.elapsed(), "children")
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

    independent_load(&serve_settings, &amqp_url, seconds, concurrency, bare_rate).await?;
    unauthenticated_slow_bodies(&serve_settings, &amqp_url).await?;
    match cluster::cluster_urls() {
        Some(urls) => {
            cluster_intake(
                &serve_settings,
                &urls,
                &client,
                &counter,
                &template,
                seconds,
                concurrency,
            )
            .await
        }
        None => {
            println!("cluster: not running (scripts/services.sh start --cluster), phase skipped");
            Ok(())
        }
    }
}

/// The closed loop through `serve` on the cluster, and the bare confirmed publish to the node
/// it connected to, in the same in-flight window.
async fn cluster_intake(
    settings: &Settings,
    urls: &[String],
    client: &reqwest::Client,
    counter: &Arc<AtomicU64>,
    template: &[u8],
    seconds: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let mut settings = settings.clone();
    settings.amqp.prefix = format!("{}-cluster", settings.amqp.prefix);
    settings.amqp.urls = urls
        .iter()
        .map(|u| SecretString::from(u.as_str()))
        .collect();
    let shutdown = CancellationToken::new();
    let app = Application::build(settings, Role::Serve, shutdown.clone()).await?;
    let url = format!("http://{}/webhooks/stripe", app.local_addr()?);
    let broker = app.broker().clone();
    let running = tokio::spawn(app.run());
    let node = loop {
        if let Some(node) = broker.node() {
            break node;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll until the app is connected
    };
    let node_url = urls
        .iter()
        .find(|u| {
            u.parse::<lapin::uri::AMQPUri>()
                .is_ok_and(|uri| format!("{}:{}", uri.authority.host, uri.authority.port) == node)
        })
        .ok_or_else(|| anyhow::anyhow!("serve connected to {node}, not one of the cluster's URLs"))?
        .clone();
    let queue = broker.topology().reconcile_queue.clone();
    let exchange = broker.topology().webhooks_exchange.clone();

    closed_loop(client, &url, counter, concurrency, Duration::from_secs(1)).await;
    purge(&node_url, &queue).await?;
    let (cpu, started) = (Cpu::now(), Instant::now());
    let max = closed_loop(
        client,
        &url,
        counter,
        concurrency,
        Duration::from_secs(seconds),
    )
    .await;
    let max_cpu = Cpu::now().since(&cpu, started.elapsed(), "children");
    let max_rate = max.accepted as f64 / max.elapsed.as_secs_f64();
    println!(
        "cluster ({} nodes, serve connected to {node}, the work queue replicated on each): max rate accepted/s {:>9.0}  refused {}  ack latency p50 {:>7.2} ms  p99 {:>7.2} ms",
        urls.len(),
        max_rate,
        max.refused,
        percentile(&max.latencies, 50.0),
        percentile(&max.latencies, 99.0),
    );
    println!("  CPU (the generator runs in the settle process), {max_cpu}");
    purge(&node_url, &queue).await?;
    let bare_rate = bare_publish_rate(
        &node_url,
        &exchange,
        template,
        concurrency,
        Duration::from_secs(seconds),
    )
    .await?;
    println!(
        "cluster bare confirmed publish (to {node}, same size, window {concurrency}): {bare_rate:>9.0} msg/s; ratio accepted/s ÷ bare: {:.2}",
        max_rate / bare_rate
    );
    purge(&node_url, &queue).await?;
    shutdown.cancel();
    running.await??;
    delete_topology(&node_url, broker.topology()).await
}

/// The wrk phases: `settle serve` as a child process, pre-signed events, wrk as the client.
async fn independent_load(
    settings: &Settings,
    amqp_url: &str,
    seconds: u64,
    concurrency: usize,
    bare_rate: f64,
) -> anyhow::Result<()> {
    let events = env_number("BENCH_WRK_EVENTS", 2000);
    let connections = env_number("BENCH_WRK_CONNECTIONS", 2000);
    let serve_prefix = format!("{}-wrk", settings.amqp.prefix);
    let dir = std::env::temp_dir().join(&serve_prefix);
    std::fs::create_dir_all(&dir)?;
    let signed = dir.join("events.tsv");
    let started = Instant::now();
    sign_with_openssl(events, &signed)?;
    println!(
        "wrk load: {events} events signed by openssl in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let serve = ServeProcess::spawn(amqp_url, &serve_prefix)?;
    let result = async {
        let url = serve.url();
        let first = std::fs::read_to_string(&signed)?;
        let (signature, body) = first
            .lines()
            .next()
            .and_then(|line| line.split_once('\t'))
            .ok_or_else(|| anyhow::anyhow!("no signed event"))?;
        serve.wait_accepts(signature, body).await?;
        let (cpu, started) = (Cpu::tracking(Some(serve.pid())), Instant::now());
        let windowed = wrk(&url, &signed, concurrency as u64, seconds)?;
        let windowed_cpu = Cpu::tracking(Some(serve.pid())).since(&cpu, started.elapsed(), "wrk");
        println!(
            "wrk ({concurrency} connections, {seconds}s, pre-signed events): accepted/s {:>9.0}  non-2xx {}  latency p50 {} p99 {}",
            windowed.rate, windowed.failed, windowed.p50, windowed.p99
        );
        println!(
            "ratio wrk accepted/s ÷ bare publish rate: {:.2} (target ≥ 0.60)",
            windowed.rate / bare_rate
        );
        println!("  CPU, {windowed_cpu}");
        let (cpu, started) = (Cpu::tracking(Some(serve.pid())), Instant::now());
        let crowd = wrk(&url, &signed, connections, seconds)?;
        let crowd_cpu = Cpu::tracking(Some(serve.pid())).since(&cpu, started.elapsed(), "wrk");
        let peak = rss_kib(serve.pid(), "VmHWM")?;
        println!(
            "wrk ({connections} connections, {seconds}s): accepted/s {:>9.0}  non-2xx {}  latency p50 {} p99 {}; settle serve peak RSS {:.1} MiB (target ≤ 64 MiB)",
            crowd.rate,
            crowd.failed,
            crowd.p50,
            crowd.p99,
            peak as f64 / 1024.0
        );
        println!("  CPU, {crowd_cpu}");
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    serve.stop(settings, amqp_url).await?;
    result
}

/// `settle serve` as a process of its own, as an operator runs it: the local configuration, its
/// own ports and queue prefix, the bench's Stripe secret.
struct ServeProcess {
    child: std::process::Child,
    port: u16,
    prefix: String,
}

impl ServeProcess {
    fn spawn(amqp_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let admin_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_settle"))
            .arg("serve")
            // A benchmark's secrets are published in this file: only `local` accepts them.
            .env("SETTLE_ENV", "local")
            .env(
                "SETTLE_CONFIG_DIR",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
            )
            .env("SETTLE_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("SETTLE_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
            .env("SETTLE_QUEUE_PREFIX", prefix)
            .env("AMQP_URL", amqp_url)
            .env("STRIPE_WEBHOOK_SECRETS", SECRET)
            .env("SETTLE__DATABASE__MIGRATE_ON_START", "false")
            .env("SETTLE__TELEMETRY__LOG_FILTER", "error")
            .stdout(std::process::Stdio::null())
            // The 503s while it connects to the broker are expected; nothing else is logged.
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(Self {
            child,
            port,
            prefix: prefix.to_owned(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits, 30 s at most, until it queues the signed event: listening, and connected to the
    /// broker.
    async fn wait_accepts(&self, signature: &str, body: &str) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answered = client
                .post(format!("{}/webhooks/stripe", self.url()))
                .header("Stripe-Signature", signature)
                .header("Content-Type", "application/json")
                .body(body.to_owned())
                .send()
                .await;
            if answered.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "settle serve not ready in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await; // poll until ready
        }
    }

    /// Stops it as an orchestrator would (SIGTERM), waits for it, and deletes the exchanges and
    /// queues it declared.
    async fn stop(mut self, settings: &Settings, amqp_url: &str) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let _ = self.child.wait();
        let mut served = settings.clone();
        served.amqp.prefix = self.prefix;
        delete_topology(amqp_url, &settle::broker::Topology::from_settings(&served)).await
    }
}

/// The slow-body phase: clients that never authenticate, each sending a body of the largest
/// accepted size slowly, at once.
const SLOW_CLIENTS: usize = 1000;
const SLOW_BODY_BYTES: usize = 1024 * 1024;
const SLOW_CHUNK_BYTES: usize = 64 * 1024;
const SLOW_CHUNK_EVERY: Duration = Duration::from_millis(250);
/// A client with no answer by then (its body takes ~4 s; settle's request deadline is 30 s)
/// counts as a connection error: the attack is over within this.
const SLOW_CLIENT_DEADLINE: Duration = Duration::from_secs(45);
/// settle serve's memory under the attack must stay below this.
const SLOW_TARGET_MIB: f64 = 128.0;

/// The memory held before authentication: a fresh `settle serve` (VmHWM is a high-water mark over
/// the process's life, so this one does nothing else), its resident set once ready, then its peak
/// while SLOW_CLIENTS connections each send a well-formed but wrong Stripe signature and a 1 MiB
/// body, 64 KiB every 250 ms. The signature header passes the shape check, so the bodies are read:
/// settle's byte budget (`http.body_budget_bytes`) is what bounds them, and the answers say how
/// each request ended (400 read whole and refused, 503 past the budget).
async fn unauthenticated_slow_bodies(settings: &Settings, amqp_url: &str) -> anyhow::Result<()> {
    let label = format!(
        "unauthenticated slow bodies ({SLOW_CLIENTS} clients × {} MiB, {} KiB every {} ms)",
        SLOW_BODY_BYTES / (1024 * 1024),
        SLOW_CHUNK_BYTES / 1024,
        SLOW_CHUNK_EVERY.as_millis()
    );
    // One descriptor per client here and in settle serve (which inherits the limit), and room
    // for the rest of each.
    let needed = SLOW_CLIENTS as u64 + 256;
    let limit = raise_open_files(needed)?;
    if limit < needed {
        println!(
            "{label}: open files limited to {limit} (hard limit), {needed} needed; phase skipped"
        );
        return Ok(());
    }

    let serve = ServeProcess::spawn(amqp_url, &format!("{}-slow", settings.amqp.prefix))?;
    let result = async {
        let body = String::from_utf8(event_body("evt_slow_ready"))?;
        let signature = settle::providers::stripe::sign(
            &SecretString::from(SECRET),
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        );
        serve.wait_accepts(&signature, &body).await?;
        let idle = rss_kib(serve.pid(), "VmRSS")?;

        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", serve.port).parse()?;
        let head: Arc<str> = format!(
            "POST /webhooks/stripe HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nStripe-Signature: t={},v1={}\r\nContent-Length: {SLOW_BODY_BYTES}\r\n\r\n",
            chrono::Utc::now().timestamp(),
            "0".repeat(64)
        )
        .into();
        // Whitespace: what the bytes are does not matter, the signature never matches.
        let chunk: Arc<[u8]> = vec![b' '; SLOW_CHUNK_BYTES].into();
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..SLOW_CLIENTS {
            clients.spawn(slow_body(addr, head.clone(), chunk.clone()));
        }
        let (mut bad_request, mut overloaded, mut too_large, mut other, mut failed) =
            (0, 0, 0, 0, 0);
        while let Some(answer) = clients.join_next().await {
            match answer? {
                Some(400) => bad_request += 1,
                Some(503) => overloaded += 1,
                Some(413) => too_large += 1,
                Some(_) => other += 1,
                None => failed += 1,
            }
        }
        let peak = rss_kib(serve.pid(), "VmHWM")?;
        println!(
            "{label}: settle serve RSS idle {:.1} MiB, peak {:.1} MiB (target ≤ {SLOW_TARGET_MIB:.0} MiB); answers 400 ×{bad_request}, 503 ×{overloaded}, 413 ×{too_large}, other ×{other}, connection errors ×{failed}",
            idle as f64 / 1024.0,
            peak as f64 / 1024.0,
        );
        anyhow::Ok(())
    }
    .await;
    serve.stop(settings, amqp_url).await?;
    result
}

/// One slow client: the request head, then the body a chunk at a time, and the status settle
/// answered with; `None` when the connection failed or no answer came within the deadline. A
/// reset counts as failed: settle refusing a body it has not read closes with bytes unread, and
/// the kernel's RST can overtake its 503 (the answer is then lost to the client).
async fn slow_body(addr: std::net::SocketAddr, head: Arc<str>, chunk: Arc<[u8]>) -> Option<u16> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (reader, mut writer) = stream.into_split();
        writer.write_all(head.as_bytes()).await?;
        let send = async {
            let mut every = tokio::time::interval(SLOW_CHUNK_EVERY);
            for _ in 0..SLOW_BODY_BYTES / SLOW_CHUNK_BYTES {
                every.tick().await;
                writer.write_all(&chunk).await?;
            }
            std::io::Result::Ok(())
        };
        // Read while sending: settle may answer (503, 413) before the body is through.
        let mut status_line = String::new();
        let mut reader = tokio::io::BufReader::new(reader);
        let answer = reader.read_line(&mut status_line);
        tokio::pin!(answer);
        let answered_first = tokio::select! {
            read = &mut answer => read.map(|_| true)?,
            // Sent whole, or cut off because settle answered and closed: either way its answer
            // (already in the socket's buffer when cut off) says how the request ended.
            _ = send => false,
        };
        if !answered_first {
            answer.await?;
        }
        // `HTTP/1.1 400 Bad Request`
        status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status line: {status_line:?}")))
    };
    tokio::time::timeout(SLOW_CLIENT_DEADLINE, exchange)
        .await
        .ok()
        .and_then(Result::ok)
}

/// Raises this process's soft limit on open files to `needed`, as far as the hard limit allows,
/// and returns the limit it ends with. util-linux's `prlimit` does it: the crate forbids unsafe
/// code, and no safe `setrlimit` is among its dependencies. Children started afterwards (settle
/// serve) inherit the limit.
fn raise_open_files(needed: u64) -> anyhow::Result<u64> {
    let (soft, hard) = open_files_limits()?;
    if soft >= needed {
        return Ok(soft);
    }
    let raised = needed.min(hard);
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={raised}:"),
        ])
        .status()
        .map_err(|error| anyhow::anyhow!("running prlimit: {error}"))?;
    anyhow::ensure!(status.success(), "prlimit --nofile={raised}: failed");
    Ok(open_files_limits()?.0)
}

/// This process's soft and hard limits on open files, from /proc (`unlimited` as u64::MAX).
fn open_files_limits() -> anyhow::Result<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let value = |text: &str| match text {
        "unlimited" => Some(u64::MAX),
        number => number.parse().ok(),
    };
    limits
        .lines()
        .find_map(|line| {
            let mut fields = line.strip_prefix("Max open files")?.split_whitespace();
            Some((value(fields.next()?)?, value(fields.next()?)?))
        })
        .ok_or_else(|| anyhow::anyhow!("no open files limit in /proc/self/limits"))
}

/// Writes `events` Stripe events, one per line: the `Stripe-Signature` header `openssl` computed
/// (HMAC-SHA256 of `timestamp.body` with the endpoint secret), a tab, the body.
fn sign_with_openssl(events: u64, path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let timestamp = chrono::Utc::now().timestamp();
    for n in 0..events {
        let body = String::from_utf8(event_body(&format!("evt_wrk_{n:012}")))?;
        let mut openssl = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-hmac", SECRET])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        openssl
            .stdin
            .take()
            .expect("piped")
            .write_all(format!("{timestamp}.{body}").as_bytes())?;
        let output = openssl.wait_with_output()?;
        anyhow::ensure!(output.status.success(), "openssl dgst failed");
        // `SHA2-256(stdin)= <hex>`
        let printed = String::from_utf8(output.stdout)?;
        let signature = printed
            .rsplit(' ')
            .next()
            .map(str::trim)
            .filter(|hex| hex.len() == 64)
            .ok_or_else(|| anyhow::anyhow!("unexpected openssl output: {printed}"))?;
        writeln!(out, "t={timestamp},v1={signature}\t{body}")?;
    }
    out.flush()?;
    Ok(())
}

/// What wrk printed.
struct WrkRun {
    rate: f64,
    failed: u64,
    p50: String,
    p99: String,
}

fn wrk(url: &str, signed: &Path, connections: u64, seconds: u64) -> anyhow::Result<WrkRun> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/wrk/post_signed.lua");
    // 2000 connections need more descriptors than a shell's usual 1024: raise the soft limit to
    // the hard one (settle serve, started from this process, has the same).
    let command = format!(
        "ulimit -n \"$(ulimit -Hn)\" && exec wrk -t2 -c{connections} -d{seconds}s --timeout 10s --latency -s '{}' '{url}' -- '{}'",
        script.display(),
        signed.display()
    );
    let output = std::process::Command::new("sh")
        .args(["-c", &command])
        .output()
        .map_err(|error| anyhow::anyhow!("running wrk: {error}"))?;
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "wrk failed: {printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |prefix: &str| {
        printed
            .lines()
            .find_map(|line| line.trim_start().strip_prefix(prefix))
            .map(|rest| rest.trim().to_owned())
    };
    let requests: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no Requests/sec in wrk's output: {printed}"))?;
    let failed: u64 = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let errors: u64 = field("Socket errors:")
        .map(|v| {
            v.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let total: f64 = printed
        .lines()
        .find(|line| line.contains("requests in"))
        .and_then(|line| line.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let elapsed = total / requests.max(1.0);
    Ok(WrkRun {
        // Accepted: every request that got a 2xx.
        rate: (total - (failed + errors) as f64).max(0.0) / elapsed.max(f64::EPSILON),
        failed: failed + errors,
        p50: field("50%").unwrap_or_default(),
        p99: field("99%").unwrap_or_default(),
    })
}

/// A resident-set figure of a process from /proc, in KiB: `VmRSS` (now) or `VmHWM` (its peak).
fn rss_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} for process {pid}"))
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
    let signature = settle::providers::stripe::sign(
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
    let channel = connection.create_channel().await?;
    topology.delete(&channel).await?;
    // The channel first: closing a connection under an open channel logs a lapin error.
    let _ = channel.close(200, "done".into()).await;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}
