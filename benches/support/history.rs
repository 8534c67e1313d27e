//! What the benchmarks share: their settings from the environment, a database of their own
//! (created, then dropped whatever happened), and the history of paid invoices they preload
//! (`BENCH_PRELOAD`) as the worker leaves it.

use std::time::Duration;

use sqlx::PgPool;

pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
