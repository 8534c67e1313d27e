//! Console benchmark: every page of the operator console against a database holding
//! BENCH_PRELOAD (default 1 000 000) paid invoices' history, their events in the inbox (as the
//! worker writes them, the ids they are found by included), beside 1 000 dead letters, 1 000
//! unmatched events, 1 000 payouts of 20 lines and 1 000 audit rows. settle runs in-process
//! (`serve`) on the real broker; a signed-in operator's session requests each page
//! BENCH_REQUESTS times (default 30) after a few unmeasured ones, and the benchmark prints its
//! median, p95 and slowest time to the last byte on loopback (the server's time: nothing else
//! is between them), beside the time `psql` takes for the page's heaviest query on the same
//! database, and the 100 ms limit.
//!
//! Run with `make bench`, or `cargo bench --bench console` with the services up
//! (`./scripts/services.sh start`, then `eval "$(./scripts/services.sh env)"`).
//! Env: BENCH_PRELOAD, BENCH_REQUESTS, DATABASE_URL, AMQP_URL.

// A benchmark that cannot set up has failed: unwrap and expect are how it reports it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/shared.rs"]
mod shared;

use std::time::{Duration, Instant};

use settle::config::Settings;
use settle::role::Role;
use settle::startup::Application;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use shared::{Scratch, env_number, percentile};

const CUSTOMERS: u64 = 1000;
const AMOUNT: i64 = 1000;
const OPERATOR: &str = "bench";
const SECRET: &str = "a benchmark's own password";
const LIMIT_MS: f64 = 100.0;
const WARM_UP: usize = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scratch = Scratch::create(|settings| {
        // Only the console: no sweeper or lister runs beside it.
        settings.backfill.interval_secs = 0;
        settings.payouts.list_interval_secs = 0;
    })
    .await?;
    let db = settle::database::pool(&scratch.settings).await?;
    let result = run(&scratch.settings, &db, &scratch.database_url).await;
    db.close().await;
    result.and(scratch.remove().await)
}

async fn run(settings: &Settings, db: &PgPool, database_url: &str) -> anyhow::Result<()> {
    let preload = env_number("BENCH_PRELOAD", 1_000_000);
    let requests = env_number("BENCH_REQUESTS", 30) as usize;
    let account = settings.account.id.as_str();
    settle::startup::migrate(db).await?;
    settle::repository::ensure_account(db, account).await?;
    let started = Instant::now();
    seed(db, account, preload).await?;
    println!(
        "preloaded {preload} paid invoices' history, 1000 dead letters, 1000 unmatched events, 1000 payouts of 20 lines, 1000 audit rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let shutdown = CancellationToken::new();
    let app = Application::build(settings.clone(), Role::Serve, shutdown.clone()).await?;
    let base = format!("http://{}", app.local_addr()?);
    let running = tokio::spawn(app.run());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    wait_ready(&http, &base).await?;
    let cookie = sign_in(&http, &base).await?;

    let last = preload.saturating_sub(1);
    let letter: i64 = sqlx::query_scalar("SELECT min(id) FROM dead_letters")
        .fetch_one(db)
        .await?;
    let pages = pages(account, last, letter);
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>9}  limit {LIMIT_MS} ms",
        "page", "p50 ms", "p95 ms", "max ms", "psql ms"
    );
    let mut over = Vec::new();
    for page in &pages {
        let mut times = Vec::with_capacity(requests);
        for n in 0..WARM_UP + requests {
            let started = Instant::now();
            let response = http
                .get(format!("{base}{}", page.path))
                .header("cookie", &cookie)
                .send()
                .await?;
            let status = response.status();
            let body = response.bytes().await?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            anyhow::ensure!(
                status.is_success(),
                "{} answered {status}: {}",
                page.path,
                String::from_utf8_lossy(&body)
            );
            if n >= WARM_UP {
                times.push(elapsed);
            }
        }
        times.sort_by(f64::total_cmp);
        let psql = psql_ms(database_url, &page.query).await?;
        let (p50, p95, max) = (
            percentile(&times, 50.0),
            percentile(&times, 95.0),
            times.last().copied().unwrap_or_default(),
        );
        println!(
            "{:<34} {p50:>8.1} {p95:>8.1} {max:>8.1} {psql:>9.1}",
            page.name
        );
        if p95 > LIMIT_MS {
            over.push(page.name);
        }
    }
    if over.is_empty() {
        println!("every page's p95 ≤ {LIMIT_MS} ms with {preload} events in the inbox");
    } else {
        println!("over {LIMIT_MS} ms at p95: {}", over.join(", "));
    }
    shutdown.cancel();
    running.await??;
    Ok(())
}

/// A page, and the heaviest query it runs (literal values in place of its parameters).
struct Page {
    name: &'static str,
    path: String,
    query: String,
}

fn pages(account: &str, last: u64, letter: i64) -> Vec<Page> {
    // The operator is one of every account: no account filter, as the console sends it.
    let search = |term: &str| {
        format!(
            "WITH found AS MATERIALIZED (
                 SELECT provider, event_id FROM webhook_events WHERE object_ids && ARRAY['{term}']
                 UNION
                 SELECT provider, event_id FROM webhook_events
                 WHERE provider = ANY(ARRAY['STRIPE','GOCARDLESS']) AND event_id = '{term}')
             SELECT w.provider, w.event_id FROM webhook_events w
             JOIN found f ON f.provider = w.provider AND f.event_id = w.event_id
             ORDER BY w.received_at DESC, w.provider DESC, w.event_id DESC LIMIT 51"
        )
    };
    let listing = |filter: &str| {
        format!(
            "SELECT w.provider, w.event_id FROM webhook_events w WHERE true {filter}
             ORDER BY w.received_at DESC, w.provider DESC, w.event_id DESC LIMIT 51"
        )
    };
    let middle = last / 2;
    vec![
        Page {
            name: "overview",
            path: "/console".into(),
            query: "SELECT outcome, count(*) FROM webhook_events
                    WHERE received_at >= now() - interval '1 hour'
                    GROUP BY outcome"
                .into(),
        },
        Page {
            name: "events, newest",
            path: "/console/events".into(),
            query: listing(""),
        },
        Page {
            name: "events, outcome unmatched",
            path: "/console/events?outcome=unmatched".into(),
            query: listing("AND w.outcome = 'unmatched'"),
        },
        Page {
            name: "events, a type none has",
            path: "/console/events?type=charge.refunded".into(),
            query: listing("AND w.event_type = 'charge.refunded'"),
        },
        Page {
            name: "events, an outcome none has",
            path: "/console/events?outcome=ignored".into(),
            query: listing("AND w.outcome = 'ignored'"),
        },
        Page {
            name: "events, type and outcome",
            path: "/console/events?type=payment_intent.succeeded&outcome=applied".into(),
            query: listing(
                "AND w.event_type = 'payment_intent.succeeded' AND w.outcome = 'applied'",
            ),
        },
        Page {
            name: "events, by PaymentIntent",
            path: format!("/console/events?q=pi_pre_{middle}"),
            query: search(&format!("pi_pre_{middle}")),
        },
        Page {
            name: "events, by event id",
            path: format!("/console/events?q=evt_pre_{middle}"),
            query: search(&format!("evt_pre_{middle}")),
        },
        Page {
            name: "events, by invoice id",
            path: format!("/console/events?q=inv_pre_{middle}"),
            query: search(&format!("inv_pre_{middle}")),
        },
        Page {
            name: "event",
            path: format!("/console/event?provider=stripe&id=evt_pre_{middle}"),
            query: format!(
                "SELECT payload::text FROM webhook_events
                 WHERE provider = 'STRIPE' AND event_id = 'evt_pre_{middle}'"
            ),
        },
        Page {
            name: "invoice",
            path: format!("/console/invoice?account={account}&id=inv_pre_{middle}"),
            query: format!(
                "SELECT * FROM money_movements
                 WHERE account_id = '{account}' AND invoice_id = 'inv_pre_{middle}'"
            ),
        },
        Page {
            name: "customer",
            path: format!("/console/customer?account={account}&id=cust_bench_7"),
            query: format!(
                "SELECT * FROM invoices WHERE account_id = '{account}'
                 AND customer_id = 'cust_bench_7' ORDER BY id LIMIT 200"
            ),
        },
        Page {
            name: "dead letters",
            path: "/console/dead-letters".into(),
            query: "SELECT reason, count(*) FROM dead_letters GROUP BY reason".into(),
        },
        Page {
            name: "dead letter",
            path: format!("/console/dead-letters/{letter}"),
            query: format!("SELECT * FROM dead_letters WHERE id = {letter}"),
        },
        Page {
            name: "unmatched",
            path: "/console/unmatched".into(),
            query: "SELECT event_id FROM webhook_events
                    WHERE unmatched_provider_payment_id IS NOT NULL
                    ORDER BY received_at DESC LIMIT 200"
                .into(),
        },
        Page {
            name: "payouts",
            path: "/console/payouts".into(),
            query: format!(
                "SELECT * FROM payouts WHERE account_id = '{account}'
                 ORDER BY created_at DESC LIMIT 100"
            ),
        },
        Page {
            name: "payout",
            path: format!("/console/payout?account={account}&id=po_bench_500"),
            query: format!(
                "SELECT * FROM payout_lines WHERE account_id = '{account}'
                 AND provider = 'STRIPE' AND provider_payout_id = 'po_bench_500'"
            ),
        },
        Page {
            name: "accounts",
            path: "/console/accounts".into(),
            query: "SELECT * FROM provider_connections ORDER BY account_id, created_at, id".into(),
        },
        Page {
            name: "audit log",
            path: "/console/audit".into(),
            query: "SELECT * FROM audit_log ORDER BY id DESC LIMIT 101".into(),
        },
    ]
}

/// The history, and what the other pages list.
async fn seed(db: &PgPool, account: &str, preload: u64) -> anyhow::Result<()> {
    shared::customers(db, account, CUSTOMERS).await?;
    let template = shared::event_template(AMOUNT);
    let payload = template
        .replace("@EVENT@", "evt_preload")
        .replace("@PAYMENT_INTENT@", "pi_preload")
        .replace("@INVOICE@", "inv_preload");
    shared::preload(db, account, preload, CUSTOMERS, AMOUNT, &payload).await?;
    sqlx::query(
        "INSERT INTO dead_letters (dead_letter_key, message_id, provider, event_id, event_type,
             routing_key, body, reason, last_error, attempts)
         SELECT 'key_' || n, 'stripe:evt_dead_' || n, 'stripe', 'evt_dead_' || n,
                'payment_intent.succeeded', 'stripe.payment_intent.succeeded', $1::bytea,
                (ARRAY['invoice_not_found', 'unknown_account', 'unparseable'])[1 + n % 3],
                'invoice `inv_dead_' || n || '` is not registered', 5
         FROM generate_series(1, 1000) AS n",
    )
    .bind(payload.as_bytes())
    .execute(db)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_events (provider, event_id, account_id, event_type, payload,
             received_at, outcome, unmatched_provider_payment_id, unmatched_occurred_at,
             object_ids)
         SELECT 'STRIPE', 'evt_lost_' || n, $1, 'payment_intent.succeeded', $2::json,
                now() - make_interval(secs => n), 'unmatched', 'pi_lost_' || n, now(),
                ARRAY['evt_lost_' || n, 'pi_lost_' || n]
         FROM generate_series(1, 1000) AS n",
    )
    .bind(account)
    .bind(&payload)
    .execute(db)
    .await?;
    let of_the_account = [
        "INSERT INTO payouts (provider, provider_payout_id, account_id, amount, currency,
             status, lines_gross, lines_fees, lines_net, difference, unmatched_lines, event_id)
         SELECT 'STRIPE', 'po_bench_' || n, $1, 19000, 'GBP', 'PARTIALLY_MATCHED', 20000, 1000,
                19000, 0, 1, 'evt_po_' || n
         FROM generate_series(1, 1000) AS n",
        "INSERT INTO payout_lines (account_id, provider, provider_payout_id, position, category,
             source_id, explained, payment_id, invoice_id, gross, fee, net)
         SELECT $1, 'STRIPE', 'po_bench_' || p, l, 'charge', 'ch_pre_' || (p * 20 + l),
                CASE WHEN l = 0 THEN 'UNMATCHED' ELSE 'MATCHED' END,
                'pay_pre_' || (p * 20 + l), 'inv_pre_' || (p * 20 + l), 1000, 50, 950
         FROM generate_series(1, 1000) AS p, generate_series(0, 19) AS l",
        "INSERT INTO audit_log (operator, action, target, account_id, reason, outcome)
         SELECT 'bench', 'dead_letter.replay', 'dead letter ' || n, $1, 'a benchmark',
                'replayed'
         FROM generate_series(1, 1000) AS n",
    ];
    for statement in of_the_account {
        sqlx::query(statement).bind(account).execute(db).await?;
    }
    let hash = settle::ops::operators::hash_secret(SECRET)?;
    settle::repository::operators::create(db, OPERATOR, "operator", None, &hash).await?;
    sqlx::query("VACUUM ANALYZE").execute(db).await?;
    Ok(())
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|response| response.status().is_success()) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "settle was not ready in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await; // poll interval
    }
}

/// Signs in as the operator, as the sign-in form does; the session cookie.
async fn sign_in(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let response = http
        .post(format!("{base}/console/login"))
        .header("origin", base)
        .form(&[("name", OPERATOR), ("secret", SECRET), ("next", "/console")])
        .send()
        .await?;
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("no session cookie: {}", response.status()))?;
    Ok(cookie.to_owned())
}

/// The time `psql` reports (`\timing`) for `query` on the benchmark's database: the best of
/// three, as the pages' own are measured warm.
async fn psql_ms(database_url: &str, query: &str) -> anyhow::Result<f64> {
    let output = tokio::process::Command::new("psql")
        .args([
            database_url,
            "-X",
            "-q",
            "-o",
            "/dev/null",
            "-c",
            "\\timing on",
        ])
        .args(["-c", query, "-c", query, "-c", query])
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&output.stderr).lines())
        .filter_map(|line| line.strip_prefix("Time: "))
        .filter_map(|time| time.split(' ').next()?.parse::<f64>().ok())
        .min_by(f64::total_cmp)
        .ok_or_else(|| anyhow::anyhow!("no `Time:` line from psql"))
}
