//! After a scenario: wait for settle to drain, then read the database, the subscriber's queue and
//! the SMTP sink, and count what was lost, applied twice, or not as it should be.

use std::collections::BTreeSet;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use sqlx::PgPool;
use tokio::time::Instant;

use crate::deployment::Deployment;
use crate::load::{Expect, Plan, Sent};

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub sent: usize,
    pub acked: usize,
    pub applied: usize,
    pub lost: usize,
    pub double_applied: usize,
    /// Rows or announcements of one account that another account's events changed or made.
    pub crossed: usize,
    pub unexpected: usize,
    pub mails_expected: usize,
    pub mails_got: usize,
    pub drained_in: Duration,
    /// What `unexpected` or `lost` counted, for the log.
    pub notes: Vec<String>,
    /// The faults' recovery times (`Expected::timings`).
    pub timings: Vec<String>,
}

impl Row {
    pub fn header() -> String {
        format!(
            "{:<34} {:>6} {:>11} {:>8} {:>5} {:>15} {:>8} {:>11} {:>20} {:>11}",
            "scenario",
            "sent",
            "acked(2xx)",
            "applied",
            "lost",
            "double-applied",
            "crossed",
            "unexpected",
            "mails(expected/got)",
            "drained-in"
        )
    }

    pub fn line(&self) -> String {
        format!(
            "{:<34} {:>6} {:>11} {:>8} {:>5} {:>15} {:>8} {:>11} {:>20} {:>10.1}s",
            self.scenario,
            self.sent,
            self.acked,
            self.applied,
            self.lost,
            self.double_applied,
            self.crossed,
            self.unexpected,
            format!("{}/{}", self.mails_expected, self.mails_got),
            self.drained_in.as_secs_f64()
        )
    }

    pub fn passed(&self) -> bool {
        self.lost == 0 && self.double_applied == 0 && self.crossed == 0 && self.unexpected == 0
    }
}

/// A subscriber's queue on the reconciliation exchange, bound as the deployment starts (before any
/// load), so every reconciliation event settle publishes can be counted.
pub struct Subscriber {
    queue: String,
}

impl Subscriber {
    pub async fn bind(connection: &lapin::Connection, prefix: &str) -> anyhow::Result<Self> {
        let queue = format!("{prefix}.chaos-subscriber");
        // Durable and quorum, as a subscriber that must not lose events declares it.
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        bind_subscriber_queue(connection, prefix, &queue, arguments).await?;
        Ok(Self { queue })
    }

    /// The distinct message ids in the queue (taking them).
    pub async fn take(&self, deployment: &Deployment) -> anyhow::Result<BTreeSet<String>> {
        let connection = deployment.amqp().await?;
        let channel = connection.create_channel().await?;
        let mut ids = BTreeSet::new();
        while let Some(message) = channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions::default())
            .await?
        {
            if let Some(id) = settle::broker::message::message_id(&message.delivery.properties) {
                ids.insert(id);
            }
            message.delivery.ack(BasicAckOptions::default()).await?;
        }
        let _ = connection.close(200, "taken".into()).await;
        Ok(ids)
    }
}

/// Declares the durable `queue` with `arguments` and binds it to every reconciliation event of
/// the deployment `prefix`, then closes `connection`. The exchange is declared as settle
/// declares it (durable topic), so the queue is bound before settle starts and misses nothing.
pub async fn bind_subscriber_queue(
    connection: &lapin::Connection,
    prefix: &str,
    queue: &str,
    arguments: FieldTable,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    let exchange = format!("{prefix}.reconciliation");
    channel
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..lapin::options::ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let _ = connection.close(200, "bound".into()).await;
    Ok(())
}

/// What else a scenario expects beyond its plan.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Dead letters it causes on purpose (poison messages).
    pub dead_letters: usize,
    /// Event ids of requests that must have been refused: none may reach the inbox.
    pub refused: Vec<String>,
    /// A subscriber's queue refuses everything: the relay parks what it refused, and a parked
    /// row counts as published once the other subscribers got it.
    pub parking: bool,
    /// Payouts as their own account's events leave them: (account, payout id, status).
    pub payouts: Vec<(String, String, &'static str)>,
    /// How long the faults took to heal, as measured while they were made (printed under the
    /// scenario's line).
    pub timings: Vec<String>,
}

/// Rows and announcements of one account that another account's event changed or made: a
/// movement or a payout recorded for an account other than its event's, an announcement naming
/// an invoice or a payout its account does not hold, or under another account than its row's.
const CROSSED: &str = "
SELECT (SELECT count(*) FROM money_movements m
          JOIN webhook_events w ON w.provider = m.provider AND w.event_id = m.event_id
         WHERE w.account_id <> m.account_id)
     + (SELECT count(*) FROM payouts p
          JOIN webhook_events w ON w.provider = p.provider AND w.event_id = p.event_id
         WHERE w.account_id <> p.account_id)
     + (SELECT count(*) FROM outbox o
         WHERE o.payload->'data'->>'invoiceId' IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.account_id = o.account_id
                              AND i.id = o.payload->'data'->>'invoiceId'))
     + (SELECT count(*) FROM outbox o
         WHERE o.payload->'data'->>'providerPayoutId' IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM payouts p WHERE p.account_id = o.account_id
                              AND p.provider_payout_id = o.payload->'data'->>'providerPayoutId'))
     + (SELECT count(*) FROM outbox o WHERE o.payload->>'accountId' <> o.account_id)";

struct Snapshot {
    inbox: BTreeSet<String>,
    wrong_invoices: Vec<String>,
    wrong_payouts: Vec<String>,
    unpublished: i64,
    pending_mails: i64,
}

async fn snapshot(db: &PgPool, plan: &Plan, expected: &Expected) -> sqlx::Result<Snapshot> {
    let inbox: Vec<String> = sqlx::query_scalar("SELECT event_id FROM webhook_events")
        .fetch_all(db)
        .await?;
    let invoices: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT id, status, amount_paid::bigint FROM invoices")
            .fetch_all(db)
            .await?;
    let found: std::collections::BTreeMap<_, _> = invoices
        .into_iter()
        .map(|(id, status, paid)| (id, (status, paid)))
        .collect();
    let wrong_invoices = plan
        .invoices
        .iter()
        .filter(|invoice| {
            let expected = match invoice.expect {
                Expect::Paid => ("PAID", invoice.amount),
                Expect::Failed => ("PAYMENT_FAILED", 0),
            };
            found
                .get(&invoice.id)
                .is_none_or(|(status, paid)| (status.as_str(), *paid) != expected)
        })
        .map(|invoice| invoice.id.clone())
        .collect();
    let payouts: BTreeSet<(String, String, String)> =
        sqlx::query_as("SELECT account_id, provider_payout_id, status FROM payouts")
            .fetch_all(db)
            .await?
            .into_iter()
            .collect();
    let wrong_payouts = expected
        .payouts
        .iter()
        .filter(|(account, id, status)| {
            !payouts.contains(&(account.clone(), id.clone(), (*status).to_owned()))
        })
        .map(|(account, id, _)| format!("{account}/{id}"))
        .collect();
    let unpublished = sqlx::query_scalar(if expected.parking {
        "SELECT count(*) FROM outbox_pending WHERE parked_reason IS NULL"
    } else {
        "SELECT count(*) FROM outbox_pending"
    })
    .fetch_one(db)
    .await?;
    let pending_mails =
        sqlx::query_scalar("SELECT count(*) FROM notifications WHERE status = 'PENDING'")
            .fetch_one(db)
            .await?;
    Ok(Snapshot {
        inbox: inbox.into_iter().collect(),
        wrong_invoices,
        wrong_payouts,
        unpublished,
        pending_mails,
    })
}

/// Waits (up to `deadline`) for settle to apply everything acked, publish its outbox and send
/// its mails, then counts. `drained-in` runs from `healed`, when the load and the last fault
/// were over.
pub async fn check(
    deployment: &Deployment,
    plan: &Plan,
    sent: &Sent,
    expected: &Expected,
    healed: Instant,
    deadline: Duration,
) -> anyhow::Result<Row> {
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy(&deployment.database_url)?;
    let started = Instant::now();
    let mails_expected = plan.mails();
    let snapshot = loop {
        match snapshot(&db, plan, expected).await {
            Ok(snapshot) => {
                let settled = sent.acked.is_subset(&snapshot.inbox)
                    && snapshot.wrong_invoices.is_empty()
                    && snapshot.wrong_payouts.is_empty()
                    && snapshot.unpublished == 0
                    && snapshot.pending_mails == 0
                    && deployment.mails() >= mails_expected;
                if settled || started.elapsed() > deadline {
                    break snapshot;
                }
            }
            Err(error) if started.elapsed() > deadline => return Err(error.into()),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // From the moment the load and the last fault were over to everything applied.
    let drained_in = healed.elapsed();
    let sent_ids = plan.event_ids();
    let mut notes = Vec::new();

    let lost_events: Vec<&String> = sent.acked.difference(&snapshot.inbox).collect();
    let published: Vec<String> = sqlx::query_scalar("SELECT message_id FROM outbox")
        .fetch_all(&db)
        .await?;
    let received = deployment.subscriber.take(deployment).await?;
    let lost_reconciliation: Vec<&String> = published
        .iter()
        .filter(|id| !received.contains(*id))
        .collect();
    if !lost_events.is_empty() {
        notes.push(format!("acked, never applied: {lost_events:?}"));
    }
    if !lost_reconciliation.is_empty() {
        notes.push(format!(
            "reconciliation events never delivered: {lost_reconciliation:?}"
        ));
    }

    let repeated_movements: i64 =
        sqlx::query_scalar("SELECT count(*) FROM money_movements WHERE seq > 1")
            .fetch_one(&db)
            .await?;
    let overpaid: i64 =
        sqlx::query_scalar("SELECT count(*) FROM invoices WHERE amount_paid > amount_due")
            .fetch_one(&db)
            .await?;
    let repeated_notifications: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT payment_id, recipient_kind FROM notifications
             GROUP BY 1, 2 HAVING count(*) > 1) repeated",
    )
    .fetch_one(&db)
    .await?;
    let double_applied = usize::try_from(repeated_movements + overpaid + repeated_notifications)?;
    if double_applied > 0 {
        notes.push(format!(
            "movements counted twice {repeated_movements}, overpaid invoices {overpaid}, mails written twice {repeated_notifications}"
        ));
    }

    let crossed: i64 = sqlx::query_scalar(CROSSED).fetch_one(&db).await?;
    if crossed > 0 {
        notes.push(format!(
            "rows or announcements crossing accounts: {crossed}"
        ));
    }

    let dead_letters: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&db)
        .await?;
    let extra_dead = usize::try_from(dead_letters)?.saturating_sub(expected.dead_letters);
    let missing_dead = expected
        .dead_letters
        .saturating_sub(usize::try_from(dead_letters)?);
    let refused_but_queued = expected
        .refused
        .iter()
        .filter(|id| snapshot.inbox.contains(*id))
        .count();
    let mails_got = deployment.mails();
    let missing_mails = mails_expected.saturating_sub(mails_got);
    // Invoices wrong because an event was lost are counted as lost, not again here.
    let wrong = snapshot.wrong_invoices.len() + snapshot.wrong_payouts.len();
    let unexpected = wrong
        + extra_dead
        + missing_dead
        + refused_but_queued
        + usize::try_from(snapshot.unpublished + snapshot.pending_mails)?
        + missing_mails;
    for (count, what) in [
        (wrong, "invoices or payouts not as expected"),
        (extra_dead, "unexpected dead letters"),
        (missing_dead, "expected dead letters missing"),
        (
            refused_but_queued,
            "refused requests that reached the inbox",
        ),
        (
            usize::try_from(snapshot.unpublished)?,
            "outbox rows never published",
        ),
        (
            usize::try_from(snapshot.pending_mails)?,
            "mails still pending",
        ),
        (missing_mails, "mails never received"),
    ] {
        if count > 0 {
            notes.push(format!("{what}: {count}"));
        }
    }
    if wrong > 0 {
        let wrong: Vec<&String> = snapshot
            .wrong_invoices
            .iter()
            .chain(&snapshot.wrong_payouts)
            .take(5)
            .collect();
        notes.push(format!("e.g. {wrong:?}"));
    }
    // The longest any event waited from intake to its commit: what a fault held back.
    let longest: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(processed_at - received_at))::float8 FROM webhook_events",
    )
    .fetch_one(&db)
    .await?;
    let mut timings = expected.timings.clone();
    timings.push(format!(
        "the longest an event waited from intake to its commit: {:.1} s",
        longest.unwrap_or_default()
    ));
    Ok(Row {
        scenario: deployment.name.clone(),
        sent: sent_ids.len(),
        acked: sent.acked.intersection(&sent_ids).count(),
        applied: sent_ids.intersection(&snapshot.inbox).count(),
        lost: lost_events.len() + lost_reconciliation.len(),
        double_applied,
        crossed: usize::try_from(crossed)?,
        unexpected,
        mails_expected,
        mails_got,
        drained_in,
        notes,
        timings,
    })
}
