//! Worker benchmark. Runs settle's worker in-process on the real broker and a database of its own,
//! and prints:
//! 1. backlog drain: BENCH_EVENTS (default 100 000) `payment_intent.succeeded` events, one per
//!    invoice, are queued while no worker runs; then the worker starts and the time until every
//!    event is applied gives events/s. The events are published straight to `<prefix>.webhooks`
//!    with the receiver's headers (benches/ingress.rs measures the receiver itself);
//! 2. end-to-end latency at a fixed open-loop rate: BENCH_RATE (default 500) signed Stripe
//!    webhooks a second for BENCH_SECONDS (default 20), posted through the real receiver (a
//!    `serve` app beside the worker), each for its own invoice. Latency runs from the receiver's
//!    `received-at` to (a) `webhook_events.processed_at`, which is `now()` of the worker's
//!    transaction, i.e. its start, and (b) the commit: a trigger on the inbox NOTIFYs, which
//!    PostgreSQL delivers only at commit, and the benchmark stamps each notification on arrival.
//!    Then a ladder of higher rates, BENCH_LADDER (default 1000,1500,2000,2500,3000) for
//!    BENCH_LADDER_SECONDS (default 10) each, up to the first whose p99 to commit passes 100 ms
//!    or that is refused anything: the highest rate that kept to it is printed;
//! 3. the worker's transaction alone: `apply_batch` called straight, with batches of
//!    `worker.batch_size` events, from as many tasks as the worker has batches in flight, on
//!    BENCH_TX_EVENTS (default: a fifth of BENCH_EVENTS) invoices of their own, with no broker
//!    and no relay. Set beside the drain, it shows what the transaction costs and what consuming,
//!    acking and relaying through RabbitMQ add;
//! 4. the machine's own limit in the same run: `pgbench` with a one-transaction reconcile of its own
//!    tables (update an invoice row, insert an event row), with BENCH_PGBENCH_CLIENTS clients
//!    (default 16, where this 2-core machine's tps tops out); then the ratio of the worker's
//!    events/s to pgbench's tps.
//!
//! 5. when `scripts/services.sh start --cluster` runs (SETTLE_TEST_CLUSTER_AMQP_URLS, or
//!    BENCH_CLUSTER_URLS): a backlog of BENCH_CLUSTER_EVENTS (default a fifth of BENCH_EVENTS)
//!    drained on the single node, then the same with the worker and the queues on the
//!    three-node cluster, and the ratio of the two.
//!
//! Each phase also prints the CPU used by settle (this process), PostgreSQL and RabbitMQ, from
//! /proc. Everything is removed at the end: the `bench_<random>` database and the prefix's queues.
//!
//! Run with `make bench`, or `cargo bench --bench worker` with the services up
//! (`./scripts/services.sh start`, then `eval "$(./scripts/services.sh env)"`).
//! Env: BENCH_EVENTS, BENCH_RATE, BENCH_SECONDS, BENCH_LADDER, BENCH_LADDER_SECONDS, BENCH_PREFETCH (default: `worker.prefetch`),
//! BENCH_BATCH_SIZE (default: `worker.batch_size`), BENCH_PGBENCH_CLIENTS,
//! BENCH_TX_EVENTS, BENCH_PRELOAD (rows of history before the drain, default 0), BENCH_DB_CONNECTIONS
//! (default: `database.max_connections`), DATABASE_URL,
//! AMQP_URL.

// A benchmark that cannot set up has failed: unwrap and expect are how it reports it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/cpu.rs"]
mod cpu;
#[path = "support/shared.rs"]
mod shared;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use secrecy::SecretString;
use settle::broker::{Broker, Connections, OutgoingMessage, Topology};
use settle::config::Settings;
use settle::envelope::QueuedEvent;
use settle::provider::Provider;
use settle::reconcile::outcome::Outcome;
use settle::role::Role;
use settle::startup::{Application, worker_policy};
use settle::worker::BatchShape;
use settle::worker::apply::apply_batch;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use cpu::{Cpu, cores};
use shared::{Scratch, env_number, percentile};

const SECRET: &str = "whsec_bench_secret";
const CUSTOMERS: u64 = 1000;
/// Every invoice is 10.00 GBP and every event pays it in full.
const AMOUNT: i64 = 1000;
/// Events per confirmed batch, and batches in flight, when queueing the backlog.
const PUBLISH_BATCH: u64 = 250;
const PUBLISH_BATCHES_IN_FLIGHT: usize = 8;
/// A phase gives up when nothing has moved for this long (an event stuck in a retry tier, say).
const STALL: Duration = Duration::from_secs(60);
const PGBENCH_SECONDS: u64 = 10;
/// The end-to-end latency target: p99 from received to committed.
const E2E_P99_TARGET_MS: f64 = 100.0;
const NOTIFY_CHANNEL: &str = "bench_committed";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scratch = Scratch::create(|settings| {
        settings.database.max_connections = env_number(
            "BENCH_DB_CONNECTIONS",
            settings.database.max_connections.into(),
        ) as u32;
        settings.worker.prefetch =
            env_number("BENCH_PREFETCH", settings.worker.prefetch.into()) as u16;
        settings.worker.batch_size =
            env_number("BENCH_BATCH_SIZE", settings.worker.batch_size.into()) as u16;
        settings.webhooks.stripe_secrets = vec![SecretString::from(SECRET)];
    })
    .await?;
    let bench = Bench {
        db: settle::database::pool(&scratch.settings).await?,
        settings: scratch.settings.clone(),
        amqp_url: scratch.amqp_url.clone(),
        database_url: scratch.database_url.clone(),
    };
    let result = bench.run().await;

    // Clean up whatever happened.
    bench.db.close().await;
    result.and(scratch.remove().await)
}

struct Bench {
    settings: Settings,
    db: PgPool,
    amqp_url: String,
    database_url: String,
}

impl Bench {
    async fn run(&self) -> anyhow::Result<()> {
        let events = env_number("BENCH_EVENTS", 100_000);
        let rate = env_number("BENCH_RATE", 500);
        let seconds = env_number("BENCH_SECONDS", 20);
        let tx_events = env_number("BENCH_TX_EVENTS", events / 5).max(1);
        let ladder: Vec<u64> = std::env::var("BENCH_LADDER")
            .unwrap_or_else(|_| "1000,1500,2000,2500,3000".into())
            .split(',')
            .filter_map(|rate| rate.trim().parse().ok())
            .collect();
        let ladder_seconds = env_number("BENCH_LADDER_SECONDS", 10);
        let e2e_events = rate * seconds + ladder.iter().sum::<u64>() * ladder_seconds;
        let batches = settle::worker::BatchShape::from(&self.settings.worker);
        println!(
            "settle worker benchmark: {events} backlog events, then {rate}/s for {seconds}s; prefetch {}, batches of up to {} ({} in flight, waiting {} ms for more), {} database connections, {} cores",
            batches.prefetch,
            batches.size,
            batches.in_flight(),
            batches.wait.as_millis(),
            self.settings.database.max_connections,
            cores()
        );

        settle::startup::migrate(&self.db).await?;
        settle::repository::ensure_account(&self.db, &self.settings.account.id).await?;
        let started = Instant::now();
        let cluster_nodes = cluster::cluster_urls();
        let cluster_events = match &cluster_nodes {
            Some(_) => env_number("BENCH_CLUSTER_EVENTS", events / 5).max(1),
            None => 0,
        };
        self.seed(events, e2e_events, tx_events, cluster_events)
            .await?;
        let preload = env_number("BENCH_PRELOAD", 0);
        if preload > 0 {
            let started = Instant::now();
            self.preload(preload).await?;
            println!(
                "preloaded {preload} paid invoices' history (invoice, payment, ledger row, inbox row with the event's JSON, published outbox row) in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        println!(
            "seeded {CUSTOMERS} customers and {} invoices of {AMOUNT} minor units GBP in {:.1} s",
            events + e2e_events + tx_events + 2 * cluster_events,
            started.elapsed().as_secs_f64()
        );

        let (worker, drain_rate) = self.queue_backlog_then_drain("drain", events).await?;
        let latencies = self
            .fixed_rates(rate, seconds, &ladder, ladder_seconds)
            .await;
        worker.stop().await?;
        let (commit_p99_ms, highest) = latencies?;
        let transaction_rate = self.transaction_alone(tx_events, batches).await?;

        let tps = self
            .pgbench(env_number("BENCH_PGBENCH_CLIENTS", 16), events)
            .await?;
        println!(
            "ratio worker events/s ÷ pgbench tps: {:.2} (target ≥ 0.40; the transaction alone: {:.2}); e2e p99 (received → committed) at {rate}/s: {:.1} ms (target ≤ 100 ms); highest fixed rate with p99 ≤ 100 ms: {}",
            drain_rate / tps,
            transaction_rate / tps,
            commit_p99_ms,
            highest.map_or("none of the rates tried".to_owned(), |rate| format!(
                "{rate}/s"
            )),
        );
        match cluster_nodes {
            Some(urls) => self.drain_on_cluster(&urls, cluster_events).await,
            None => {
                println!(
                    "cluster: not running (scripts/services.sh start --cluster), phase skipped"
                );
                Ok(())
            }
        }
    }

    /// Phase 5: a backlog of `events` drained on the single node, then the same on the
    /// three-node cluster (the work queue replicated on every node), on the database as the
    /// phases before left it, so the two compare like with like.
    async fn drain_on_cluster(&self, urls: &[String], events: u64) -> anyhow::Result<()> {
        println!("single node: {events} backlog events");
        let (worker, single_node_rate) = self.queue_backlog_then_drain("single", events).await?;
        worker.stop().await?;
        let mut settings = self.settings.clone();
        settings.amqp.prefix = format!("{}-cluster", settings.amqp.prefix);
        settings.amqp.urls = urls
            .iter()
            .map(|u| SecretString::from(u.as_str()))
            .collect();
        let cluster = Bench {
            settings,
            db: self.db.clone(),
            amqp_url: urls[0].clone(),
            database_url: self.database_url.clone(),
        };
        println!("cluster: {} nodes, {events} backlog events", urls.len());
        let drained = cluster.queue_backlog_then_drain("cluster", events).await;
        let result = match drained {
            Ok((worker, rate)) => {
                worker.stop().await?;
                println!(
                    "ratio cluster drain ÷ single-node drain of the same backlog: {:.2}",
                    rate / single_node_rate
                );
                Ok(())
            }
            Err(error) => Err(error),
        };
        shared::delete_topology(&cluster.settings, &cluster.amqp_url).await?;
        result
    }

    /// Customers, then one open invoice per event: `inv_drain_…` for the backlog, `inv_e2e_…`
    /// for the fixed-rate phase and `inv_tx_…` for the transaction alone. Plain SQL in bulk: the
    /// same rows `POST /invoices` writes.
    async fn seed(
        &self,
        drain_invoices: u64,
        e2e_invoices: u64,
        tx_invoices: u64,
        cluster_invoices: u64,
    ) -> anyhow::Result<()> {
        let account = &self.settings.account.id;
        shared::customers(&self.db, account, CUSTOMERS).await?;
        for (kind, count) in [
            ("drain", drain_invoices),
            ("e2e", e2e_invoices),
            ("tx", tx_invoices),
            ("single", cluster_invoices),
            ("cluster", cluster_invoices),
        ] {
            sqlx::query(&format!(
                "INSERT INTO invoices (id, account_id, customer_id, number, currency, amount_due,
                                       due_date)
                 SELECT 'inv_{kind}_' || n, $1, 'cust_bench_' || (n % $2), 'INV-{kind}-' || n,
                        'GBP', $3, DATE '2026-12-31'
                 FROM generate_series(0, $4 - 1) AS n"
            ))
            .bind(account)
            .bind(CUSTOMERS as i64)
            .bind(AMOUNT)
            .bind(count as i64)
            .execute(&self.db)
            .await?;
        }
        sqlx::query("VACUUM ANALYZE customers, invoices")
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// `BENCH_PRELOAD`: the history of `count` paid invoices (`shared::preload`).
    async fn preload(&self, count: u64) -> anyhow::Result<()> {
        let (_, payload) = event_body(&event_template(), "preload", 0);
        let payload = String::from_utf8(payload)?;
        shared::preload(
            &self.db,
            &self.settings.account.id,
            count,
            CUSTOMERS,
            AMOUNT,
            &payload,
        )
        .await
    }

    /// Phase 1. Returns the worker, still running for phase 2, and the events/s.
    /// Queues `events` for the `phase`'s invoices (`inv_<phase>_<n>`) with no worker running,
    /// then starts one and times it until every event is applied.
    async fn queue_backlog_then_drain(
        &self,
        phase: &str,
        events: u64,
    ) -> anyhow::Result<(Running, f64)> {
        let broker = Broker::start(
            self.settings.amqp.clone(),
            self.topology(),
            Connections::PublishOnly,
        );
        broker
            .connected()
            .await
            .ok_or_else(|| anyhow::anyhow!("the broker closed before connecting"))?;
        let template = event_template();
        let topology = broker.topology().clone();
        // Sealed as the receiver seals them, with the worker's own keyring.
        let keyring = self.settings.keyring()?;
        let started = Instant::now();
        // The backlog's inbox rows are those received from here on (a preloaded history is
        // older): counted through the BRIN index on received_at, whatever the history's size.
        let queued_from = chrono::Utc::now();
        futures_util::stream::iter((0..events).step_by(PUBLISH_BATCH as usize))
            .map(|first| {
                let received_at = chrono::Utc::now();
                let messages: Vec<OutgoingMessage> = (first..(first + PUBLISH_BATCH).min(events))
                    .map(|n| {
                        queued_event(&template, phase, n, received_at)
                            .to_webhook_message(&topology, &keyring)
                    })
                    .collect();
                let broker = broker.clone();
                async move { broker.publish_all(&messages).await }
            })
            .buffer_unordered(PUBLISH_BATCHES_IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        let publishing = started.elapsed();
        broker.close().await;
        let queue = self.topology().reconcile_queue;
        let monitor = Connection::connect(&self.amqp_url, ConnectionProperties::default()).await?;
        let channel = monitor.create_channel().await?;
        println!(
            "queued {events} events in {:.1} s ({:.0}/s, confirmed publishes straight to the exchange); {} ready in {queue}",
            publishing.as_secs_f64(),
            events as f64 / publishing.as_secs_f64(),
            ready_messages(&channel, &queue).await?
        );

        let cpu_before = Cpu::now();
        let started = Instant::now();
        let worker = Running::start(self.settings.clone(), Role::Worker).await?;
        // The queue depth is cheap to poll; counting a 100k-row inbox a few times a second is not
        // (it would take CPU from the worker). So: the broker until the queue is empty, then the
        // exact count until the last deliveries held by the worker are committed.
        let mut last_ready = u32::MAX;
        let mut last_progress = Instant::now();
        let mut last_report = (Instant::now(), events);
        loop {
            let ready = ready_messages(&channel, &queue).await?;
            if ready == 0 {
                break;
            }
            if ready != last_ready {
                (last_ready, last_progress) = (ready, Instant::now());
            }
            anyhow::ensure!(
                last_progress.elapsed() < STALL,
                "drain stalled with {ready} events still queued"
            );
            if last_report.0.elapsed() >= Duration::from_secs(10) {
                println!(
                    "  … {ready} still queued, {:.0} events/s over the last {:.0} s",
                    (last_report.1 - u64::from(ready)) as f64
                        / last_report.0.elapsed().as_secs_f64(),
                    last_report.0.elapsed().as_secs_f64()
                );
                last_report = (Instant::now(), ready.into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await; // poll interval
        }
        let _ = channel.close(200, "done".into()).await;
        let _ = monitor.close(200, "done".into()).await;
        let mut applied = 0;
        let mut last_progress = Instant::now();
        while applied < events as i64 {
            let count: i64 =
                sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE received_at >= $1")
                    .bind(queued_from)
                    .fetch_one(&self.db)
                    .await?;
            if count != applied {
                (applied, last_progress) = (count, Instant::now());
            } else {
                anyhow::ensure!(
                    last_progress.elapsed() < STALL,
                    "drain stalled at {applied} of {events} events in the inbox"
                );
                tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
            }
        }
        let drained = started.elapsed();
        let cpu = Cpu::now().since(&cpu_before, drained, "load");
        let drain_rate = events as f64 / drained.as_secs_f64();

        let relay_started = Instant::now();
        self.wait_for_outbox().await?;
        let relayed = relay_started.elapsed();
        let (applied, paid): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM webhook_events
                     WHERE outcome = 'applied' AND received_at >= $1),
                    (SELECT count(*) FROM invoices WHERE id LIKE 'inv\\_' || $2 || '\\_%' AND status = 'PAID')",
        )
        .bind(queued_from)
        .bind(phase)
        .fetch_one(&self.db)
        .await?;
        println!(
            "backlog drain: {drain_rate:>7.0} events/s  ({events} events in {:.2} s from the worker's start; {applied} applied, {paid} invoices PAID; outbox relayed {:.2} s later)",
            drained.as_secs_f64(),
            relayed.as_secs_f64()
        );
        println!("  CPU during the drain, {cpu}");
        // The worker runs in this process: its peak resident set, with the benchmark's own data
        // (the queued events' templates, the latency samples), bounds the worker's from above.
        let status = std::fs::read_to_string("/proc/self/status")?;
        let peak_kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN);
        println!(
            "  peak RSS of this process (the worker and the benchmark) by the drain's end: {:.1} MiB (target for the worker ≤ 128 MiB)",
            peak_kib / 1024.0
        );
        Ok((worker, drain_rate))
    }

    /// Phase 2: `rate` for `seconds`, then the ladder's rates for `ladder_seconds` each, up to
    /// the first whose p99 to commit passes the target or that is refused anything. Returns the
    /// first phase's p99 to commit, in ms, and the highest rate that kept to the target.
    async fn fixed_rates(
        &self,
        rate: u64,
        seconds: u64,
        ladder: &[u64],
        ladder_seconds: u64,
    ) -> anyhow::Result<(f64, Option<u64>)> {
        let mut first_event = 0;
        let mut phase = |rate: u64, seconds: u64| {
            let first = first_event;
            first_event += rate * seconds;
            self.fixed_rate(rate, seconds, first)
        };
        let first = phase(rate, seconds).await?;
        let mut highest = (first.p99_ms <= E2E_P99_TARGET_MS && first.refused == 0).then_some(rate);
        for &rate in ladder {
            let step = phase(rate, ladder_seconds).await?;
            if step.p99_ms > E2E_P99_TARGET_MS || step.refused > 0 {
                break;
            }
            highest = highest.max(Some(rate));
        }
        Ok((first.p99_ms, highest))
    }

    /// One open-loop phase through a `serve` app while phase 1's worker runs, its events numbered
    /// from `first_event`.
    async fn fixed_rate(
        &self,
        rate: u64,
        seconds: u64,
        first_event: u64,
    ) -> anyhow::Result<FixedRate> {
        // Fires on every inbox insert; PostgreSQL delivers the notification only once the
        // transaction commits (and never if it rolls back).
        sqlx::raw_sql(&format!(
            "CREATE OR REPLACE FUNCTION bench_notify_commit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 -- The event id makes each payload unique: PostgreSQL folds identical
                 -- notifications of one transaction into one.
                 PERFORM pg_notify('{NOTIFY_CHANNEL}',
                                   (extract(epoch FROM NEW.received_at) * 1000000)::bigint::text
                                   || ' ' || NEW.event_id);
                 RETURN NULL;
             END $$;
             CREATE OR REPLACE TRIGGER bench_notify_commit AFTER INSERT ON webhook_events
                 FOR EACH ROW EXECUTE FUNCTION bench_notify_commit();"
        ))
        .execute(&self.db)
        .await?;
        let mut listener = sqlx::postgres::PgListener::connect(&self.database_url).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        let committed = Arc::new(AtomicU64::new(0));
        let stop_listening = CancellationToken::new();
        let listening: JoinHandle<anyhow::Result<Vec<f64>>> = tokio::spawn({
            let (committed, stop) = (committed.clone(), stop_listening.clone());
            async move {
                let mut latencies_ms = Vec::new();
                loop {
                    let notification = tokio::select! {
                        _ = stop.cancelled() => return Ok(latencies_ms),
                        notification = listener.recv() => notification?,
                    };
                    let now = chrono::Utc::now().timestamp_micros();
                    let (received, _event) = notification
                        .payload()
                        .split_once(' ')
                        .ok_or_else(|| anyhow::anyhow!("a notification without an event id"))?;
                    let received: i64 = received.parse()?;
                    latencies_ms.push((now - received) as f64 / 1000.0);
                    committed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });

        let serve = Running::start(self.settings.clone(), Role::Serve).await?;
        let url = format!("http://{}/webhooks/stripe", serve.addr);
        let cpu_before = Cpu::now();
        let started = Instant::now();
        let started_at = chrono::Utc::now();
        let posted = open_loop(&url, rate, seconds, first_event).await;
        let mut last = (0, Instant::now());
        loop {
            let done = committed.load(Ordering::Relaxed);
            if done >= posted.accepted {
                break;
            }
            if done != last.0 {
                last = (done, Instant::now());
            } else if last.1.elapsed() > STALL {
                println!("  gave up waiting: {done} of {} committed", posted.accepted);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
        }
        let cpu = Cpu::now().since(&cpu_before, started.elapsed(), "load");
        serve.stop().await?;
        stop_listening.cancel();
        let mut to_commit = listening.await??;
        to_commit.sort_by(f64::total_cmp);
        let mut to_start: Vec<f64> = sqlx::query_scalar(
            "SELECT (extract(epoch FROM processed_at - received_at) * 1000)::float8
             FROM webhook_events WHERE event_id LIKE 'evt\\_e2e\\_%' AND received_at >= $1",
        )
        .bind(started_at)
        .fetch_all(&self.db)
        .await?;
        to_start.sort_by(f64::total_cmp);

        println!(
            "fixed rate {rate}/s for {seconds}s (open loop, through the receiver): accepted {}  refused {}  ack p99 {:.1} ms",
            posted.accepted,
            posted.refused,
            percentile(&posted.ack_ms, 99.0)
        );
        for (what, latencies) in [
            ("received → transaction start (processed_at)", &to_start),
            ("received → committed (NOTIFY at commit)    ", &to_commit),
        ] {
            println!(
                "  e2e {what}: p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  ({} events)",
                percentile(latencies, 50.0),
                percentile(latencies, 99.0),
                latencies.last().copied().unwrap_or(f64::NAN),
                latencies.len()
            );
        }
        println!("  CPU during the fixed rate, {cpu}");
        Ok(FixedRate {
            p99_ms: percentile(&to_commit, 99.0),
            refused: posted.refused,
        })
    }

    /// Phase 3: PostgreSQL's own rate for a comparable one-transaction reconcile, same database.
    /// Phase 3: the worker's transaction (`apply_batch`) in batches shaped like the worker's,
    /// from as many tasks as it has batches in flight, no broker. Returns events/s.
    async fn transaction_alone(&self, events: u64, batches: BatchShape) -> anyhow::Result<f64> {
        let template = event_template();
        let received_at = chrono::Utc::now();
        let policy = worker_policy(&self.settings);
        let size = u64::from(batches.size);
        let run = |numbers: std::ops::Range<u64>| {
            let chunks = (numbers.start..numbers.end)
                .step_by(batches.size.into())
                .map(move |first| first..(first + size).min(numbers.end));
            futures_util::stream::iter(chunks)
                .map(|chunk| {
                    let events: Vec<_> = chunk
                        .map(|n| queued_event(&template, "tx", n, received_at))
                        .collect();
                    let policy = &policy;
                    async move {
                        apply_batch(&self.db, policy, &events)
                            .await?
                            .into_iter()
                            .collect::<Result<Vec<Outcome>, _>>()
                    }
                })
                .buffer_unordered(batches.in_flight().into())
                .try_collect::<Vec<Vec<Outcome>>>()
        };
        // Untimed warm-up: opens the pool's connections, and lets the backends of the phases
        // before end first (an exiting backend's CPU would land in the reading below).
        let warm_up = (size * u64::from(batches.in_flight())).min(events / 2);
        run(0..warm_up).await?;
        let events = events - warm_up;
        let cpu_before = Cpu::now();
        let started = Instant::now();
        let outcomes = run(warm_up..warm_up + events).await?;
        let elapsed = started.elapsed();
        let cpu = Cpu::now().since(&cpu_before, elapsed, "load");
        let applied = outcomes
            .iter()
            .flatten()
            .filter(|o| **o == Outcome::Applied)
            .count();
        let rate = events as f64 / elapsed.as_secs_f64();
        println!(
            "worker transaction alone ({} tasks calling apply_batch() with up to {} events, no broker, no relay): {rate:>7.0} events/s  ({events} events in {:.2} s; {applied} applied)",
            batches.in_flight(),
            batches.size,
            elapsed.as_secs_f64()
        );
        println!("  CPU during the transactions, {cpu}");
        Ok(rate)
    }

    async fn pgbench(&self, clients: u64, invoices: u64) -> anyhow::Result<f64> {
        sqlx::raw_sql(&format!(
            "CREATE TABLE bench_invoices (
                 id          integer PRIMARY KEY,
                 amount_due  bigint NOT NULL,
                 amount_paid bigint NOT NULL DEFAULT 0,
                 updated_at  timestamptz NOT NULL DEFAULT now());
             INSERT INTO bench_invoices (id, amount_due) SELECT n, {AMOUNT} FROM generate_series(1, {invoices}) AS n;
             CREATE TABLE bench_events (
                 id           bigserial PRIMARY KEY,
                 invoice_id   integer NOT NULL,
                 event_id     text NOT NULL,
                 received_at  timestamptz NOT NULL,
                 processed_at timestamptz NOT NULL DEFAULT now());"
        ))
        .execute(&self.db)
        .await?;
        // On its own: several statements in one query run in one transaction, VACUUM cannot.
        sqlx::query("VACUUM ANALYZE bench_invoices")
            .execute(&self.db)
            .await?;
        let script =
            std::env::temp_dir().join(format!("settle-worker-bench-{}.sql", std::process::id()));
        std::fs::write(
            &script,
            format!(
                "\\set id random(1, {invoices})
BEGIN;
UPDATE bench_invoices SET amount_paid = amount_paid + 1, updated_at = now() WHERE id = :id;
INSERT INTO bench_events (invoice_id, event_id, received_at) VALUES (:id, 'evt_' || :id, now());
COMMIT;
"
            ),
        )?;
        let url = reqwest::Url::parse(&self.database_url)?;
        let cpu_before = Cpu::now();
        let started = Instant::now();
        let mut command = std::process::Command::new(pgbench_binary());
        command
            .args(["-n", "-M", "prepared", "-j", "2"])
            .args([
                "-c",
                &clients.to_string(),
                "-T",
                &PGBENCH_SECONDS.to_string(),
            ])
            .arg("-f")
            .arg(&script)
            .env("PGHOST", url.host_str().unwrap_or("127.0.0.1"))
            .env("PGPORT", url.port().unwrap_or(5432).to_string())
            .env("PGUSER", url.username())
            .env("PGPASSWORD", url.password().unwrap_or_default())
            .env("PGDATABASE", url.path().trim_start_matches('/'));
        let output = tokio::task::spawn_blocking(move || command.output()).await?;
        let cpu = Cpu::now().since(&cpu_before, started.elapsed(), "pgbench");
        let _ = std::fs::remove_file(&script);
        let output = output?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "pgbench failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = |prefix: &str| stdout.lines().find(|l| l.starts_with(prefix)).unwrap_or("");
        let tps: f64 = line("tps = ")
            .trim_start_matches("tps = ")
            .split_whitespace()
            .next()
            .and_then(|tps| tps.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no `tps = …` line in pgbench's output:\n{stdout}"))?;
        println!(
            "pgbench (update invoice + insert event, one transaction; -c {clients} -j 2 -T {PGBENCH_SECONDS}): tps {tps:>7.0}  {}",
            line("latency average")
        );
        println!("  CPU during pgbench, {cpu}");
        Ok(tps)
    }

    async fn wait_for_outbox(&self) -> anyhow::Result<()> {
        let mut last = (-1, Instant::now());
        loop {
            let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
                .fetch_one(&self.db)
                .await?;
            if unpublished == 0 {
                return Ok(());
            }
            if unpublished != last.0 {
                last = (unpublished, Instant::now());
            }
            anyhow::ensure!(
                last.1.elapsed() < STALL,
                "the outbox relay stalled with {unpublished} rows unpublished"
            );
            tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
        }
    }

    fn topology(&self) -> Topology {
        Topology::from_settings(&self.settings)
    }
}

/// An in-process settle app of one role, on port 0.
struct Running {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(settings: Settings, role: Role) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let app = Application::build(settings, role, shutdown.clone()).await?;
        let addr = app.local_addr()?;
        let broker = app.broker().clone();
        let task = tokio::spawn(app.run());
        broker
            .connected()
            .await
            .ok_or_else(|| anyhow::anyhow!("the app's broker closed before connecting"))?;
        Ok(Self {
            addr,
            shutdown,
            task,
        })
    }

    /// Graceful shutdown, as on SIGTERM.
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }
}

/// The event every phase sends (`shared::event_template`), paying AMOUNT.
fn event_template() -> String {
    shared::event_template(AMOUNT)
}

/// Event `n` of a phase (`drain` or `e2e`): `evt_<phase>_<n>` pays `inv_<phase>_<n>` through
/// `pi_<phase>_<n>`.
fn event_body(template: &str, phase: &str, n: u64) -> (String, Vec<u8>) {
    let event_id = format!("evt_{phase}_{n}");
    let body = template
        .replace("@EVENT@", &event_id)
        .replace("@PAYMENT_INTENT@", &format!("pi_{phase}_{n}"))
        .replace("@INVOICE@", &format!("inv_{phase}_{n}"));
    (event_id, body.into_bytes())
}

/// Event `n` as the receiver would queue it (the same envelope, so the same routing key, message
/// id and headers).
fn queued_event(
    template: &str,
    phase: &str,
    n: u64,
    received_at: chrono::DateTime<chrono::Utc>,
) -> QueuedEvent {
    let (event_id, body) = event_body(template, phase, n);
    QueuedEvent::new(
        Provider::Stripe,
        event_id,
        "payment_intent.succeeded".into(),
        received_at,
        body,
    )
    .expect("bench event ids fit AMQP")
}

/// One fixed-rate phase's outcome.
struct FixedRate {
    p99_ms: f64,
    refused: u64,
}

struct Posted {
    accepted: u64,
    refused: u64,
    ack_ms: Vec<f64>,
}

/// Posts `rate` signed events a second for `seconds`, each at its scheduled time whatever the
/// earlier ones are doing (open loop). Ack latency is measured from the scheduled time.
async fn open_loop(url: &str, rate: u64, seconds: u64, first_event: u64) -> Posted {
    let client = reqwest::Client::new();
    let template = Arc::new(event_template());
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity((rate * seconds) as usize);
    for n in 0..rate * seconds {
        let scheduled = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, url, template) = (client.clone(), url.to_owned(), template.clone());
        tasks.push(tokio::spawn(async move {
            let (_, body) = event_body(&template, "e2e", first_event + n);
            let signature = settle::providers::stripe::sign(
                &SecretString::from(SECRET),
                chrono::Utc::now().timestamp(),
                &body,
            );
            let response = client
                .post(&url)
                .header("Stripe-Signature", signature)
                .body(body)
                .send()
                .await;
            let ok = matches!(response, Ok(response) if response.status().is_success());
            (ok, scheduled.elapsed())
        }));
    }
    let mut posted = Posted {
        accepted: 0,
        refused: 0,
        ack_ms: Vec::new(),
    };
    for task in tasks {
        match task.await {
            Ok((true, latency)) => {
                posted.accepted += 1;
                posted.ack_ms.push(latency.as_secs_f64() * 1000.0);
            }
            _ => posted.refused += 1,
        }
    }
    posted.ack_ms.sort_by(f64::total_cmp);
    posted
}

/// Messages ready (not yet delivered) in `queue`; a passive declare consumes nothing.
async fn ready_messages(channel: &lapin::Channel, queue: &str) -> anyhow::Result<u32> {
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(declared.message_count())
}

/// One statement on its own connection (CREATE/DROP DATABASE cannot run in a pool's transaction).
fn pgbench_binary() -> &'static str {
    const DEBIAN: &str = "/usr/lib/postgresql/15/bin/pgbench";
    if Path::new(DEBIAN).exists() {
        DEBIAN
    } else {
        "pgbench"
    }
}
