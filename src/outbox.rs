//! 4. The outbox relay: publishes reconciliation events that the worker's transactions committed
//!    to the `outbox` table, to `<prefix>.reconciliation` with confirms, and marks them published
//!    (takes their ids off `outbox_pending`; the outbox row itself is never rewritten).
//!    A process killed between a commit and the publish loses nothing: the rows wait for the next
//!    relay. A process killed between the publish and the mark publishes again; the event's
//!    stable `id` lets subscribers drop the duplicate.
//!
//!    Each message of a batch is settled on its own: one the broker refuses (a subscriber's full
//!    queue with `reject-publish`) stays unpublished for the next pass while the rest of the batch
//!    is marked, so it never stalls the relay nor sends the others twice. One no subscriber queue
//!    is bound for is published and gone (subscribers bind their own queues, or none yet), and
//!    counted in `settle_outbox_unroutable_total`.
//!
//!    Every worker process runs a relay, and one of them relays at a time: the one holding the
//!    relay's lease (`lease`), so events go out in commit order, an invoice's in the
//!    order they were applied. The others stand by and take the lease when its holder dies or
//!    stops answering for `WorkerSettings::RELAY_LEASE_EXPIRY`. A process that commits outbox rows without the lease
//!    wakes the holder with a `NOTIFY` on `repository::outbox::OUTBOX_CHANNEL`, so its events
//!    wait no poll interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Confirmed, HeaderValue, OutgoingMessage, PublishError};
use crate::envelope::headers;
use crate::lease::{self, Lease};
use crate::names::MessageId;
use crate::repository::outbox;
use crate::telemetry as metric;

/// Rows published per round trip to the broker.
const BATCH: i64 = 1000;
/// How long a wake-up waits for more commits before publishing; bounds the added latency.
const COALESCE: Duration = Duration::from_millis(5);

/// What ended the relay's wait.
enum Wake {
    /// This process committed outbox rows.
    Commit,
    /// Another process did (its `NOTIFY`), or the poll interval passed.
    Elsewhere,
    Shutdown,
}

/// What one pass of the relay did.
#[derive(Debug, Default, Clone, Copy)]
struct Pass {
    locked: usize,
    published: usize,
}

#[derive(Clone)]
pub struct Relay {
    db: PgPool,
    broker: Broker,
    /// How often to look for rows committed by other processes (this process's commits wake it).
    poll: Duration,
    /// Publishes of one row the broker may refuse or leave unconfirmed before it is parked
    /// (`worker.outbox_max_attempts`).
    max_attempts: i32,
    shutdown: CancellationToken,
    wake: Arc<Notify>,
}

impl Relay {
    pub fn new(
        db: PgPool,
        broker: Broker,
        worker: &crate::config::WorkerSettings,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            db,
            broker,
            poll: Duration::from_millis(worker.outbox_poll_ms),
            max_attempts: worker.outbox_max_attempts,
            shutdown,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Notify it after a commit that wrote outbox rows, to publish them without waiting for the poll.
    pub fn notifier(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub async fn run(self) {
        let poll = self.poll;
        let mut lease = Lease::new(
            lease::OUTBOX_RELAY,
            Some(crate::config::WorkerSettings::RELAY_LEASE_EXPIRY),
        );
        let mut listener: Option<PgListener> = None;
        let mut last_backlog_report: Option<Instant> = None;
        let mut woken_by = Wake::Elsewhere;
        loop {
            lease.hold(&self.db).await;
            if let Some(session) = lease.session() {
                match self.publish_pending(session).await {
                    // A full batch of which some went through: there may be more, go again at once.
                    Ok(Pass { locked, published }) if locked as i64 == BATCH && published > 0 => {
                        continue;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        metrics::counter!(metric::OUTBOX_PASS_FAILURES).increment(1);
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "outbox relay failed; will retry"
                        );
                    }
                }
                // Under load the relay passes many times a second; counting the backlog once per
                // poll interval is enough for a gauge and keeps a query off every pass.
                if last_backlog_report.is_none_or(|at| at.elapsed() >= poll) {
                    self.report_backlog().await;
                    last_backlog_report = Some(Instant::now());
                }
                if listener.is_none() {
                    listener = self.listen().await;
                }
            } else {
                // Another process relays; its listener is what ours would be.
                listener = None;
                if matches!(woken_by, Wake::Commit) {
                    self.wake_the_holder().await;
                }
            }
            woken_by = self.wait(&mut listener).await;
            if matches!(woken_by, Wake::Shutdown) {
                // One last pass so events committed during shutdown are not left waiting.
                if let Some(session) = lease.session() {
                    let _ = self.publish_pending(session).await;
                }
                lease.release().await;
                return;
            }
        }
    }

    /// Until this process commits outbox rows, another one does (a `NOTIFY`, when `listener` is
    /// there), the poll interval passes, or shutdown.
    async fn wait(&self, listener: &mut Option<PgListener>) -> Wake {
        let elsewhere = async {
            match listener {
                Some(listening) => {
                    if listening.recv().await.is_err() {
                        *listener = None;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let woken = tokio::select! {
            _ = self.shutdown.cancelled() => return Wake::Shutdown,
            _ = self.wake.notified() => Wake::Commit,
            _ = elsewhere => Wake::Elsewhere,
            _ = tokio::time::sleep(self.poll) => return Wake::Elsewhere,
        };
        // A pass costs a transaction and a confirm round trip whether it carries one row or a
        // hundred: let the other deliveries in flight commit theirs first.
        tokio::time::sleep(COALESCE).await;
        woken
    }

    /// The lease holder's ear for other processes' commits; `None` if the database is away
    /// (the poll interval then bounds their wait).
    async fn listen(&self) -> Option<PgListener> {
        // A session of its own, as the lease's: a listener keeps its connection for good, and
        // one taken from the pool would be one fewer for the batches.
        let own = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*self.db.connect_options()).clone());
        let mut listener = PgListener::connect_with(&own).await.ok()?;
        listener.listen(outbox::OUTBOX_CHANNEL).await.ok()?;
        Some(listener)
    }

    async fn wake_the_holder(&self) {
        if let Err(error) = outbox::notify_relay(&self.db).await {
            tracing::debug!(%error, "could not wake the relaying process; it polls");
        }
    }

    /// Publishes one batch of unpublished rows, then, in the same transaction, marks those the
    /// broker took published and counts a refusal against the others. The transaction runs on the
    /// lease's own session (`Lease::session`): the lease fences it.
    async fn publish_pending(&self, session: &mut PgConnection) -> anyhow::Result<Pass> {
        let mut tx = session.begin().await?;
        let rows = outbox::lock_unpublished(&mut tx, BATCH).await?;
        if rows.is_empty() {
            return Ok(Pass::default());
        }
        let exchange = &self.broker.topology().reconciliation_exchange;
        let locked_ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        let messages: Vec<OutgoingMessage> = rows
            .into_iter()
            .map(|row| OutgoingMessage {
                exchange: exchange.clone(),
                headers: [
                    (
                        headers::EVENT_TYPE.to_owned(),
                        HeaderValue::text(row.routing_key.as_str()),
                    ),
                    (
                        headers::ACCOUNT_ID.to_owned(),
                        HeaderValue::text(row.account_id),
                    ),
                ]
                .into_iter()
                // The work that wrote the event: a subscriber continues its trace.
                .chain(
                    row.traceparent
                        .map(|trace| (headers::TRACEPARENT.to_owned(), HeaderValue::text(trace))),
                )
                .collect(),
                routing_key: row.routing_key,
                // Bounded again: a row written before ids were bounded at `Message::new` would
                // otherwise stop the relay at every pass.
                message_id: MessageId::new(row.message_id),
                body: row.payload.into_bytes(),
            })
            .collect();
        let confirmed = match self.broker.publish_each(&messages).await {
            Ok(confirmed) => confirmed,
            // The broker took the batch and did not confirm it (a subscriber's quorum queue
            // without its quorum holds every confirm): each row was sent, and counts an attempt,
            // so the rows behind them go out next pass instead of waiting behind them for ever.
            Err(error @ PublishError::ConfirmTimeout(_)) => {
                let parked = outbox::count_refused(
                    &mut tx,
                    &locked_ids,
                    "not confirmed by the broker",
                    self.max_attempts,
                )
                .await?;
                tx.commit().await?;
                count_parked(parked);
                return Err(error.into());
            }
            // Nothing reached a broker (none connected, publishers blocked): no attempt spent.
            Err(error) => return Err(error.into()),
        };
        let mut published = Vec::with_capacity(locked_ids.len());
        let mut published_messages = Vec::with_capacity(locked_ids.len());
        let mut refused = Vec::new();
        for ((id, message), confirmed) in locked_ids.iter().zip(&messages).zip(&confirmed) {
            match confirmed {
                Confirmed::Routed => {
                    published.push(*id);
                    published_messages.push(message);
                }
                Confirmed::Unroutable => {
                    metrics::counter!(metric::OUTBOX_UNROUTABLE).increment(1);
                    tracing::debug!(message_id = %message.message_id, "no subscriber queue is bound for this reconciliation event");
                    published.push(*id);
                    published_messages.push(message);
                }
                Confirmed::Nacked => {
                    metrics::counter!(metric::OUTBOX_NACKED).increment(1);
                    tracing::warn!(message_id = %message.message_id, "the broker refused a reconciliation event (a subscriber's queue is full?); it will be published again after a backoff");
                    refused.push(*id);
                }
            }
        }
        outbox::mark_published(&mut tx, &published).await?;
        let parked = if refused.is_empty() {
            0
        } else {
            let reason = "refused by the broker (a subscriber's queue rejects publishes)";
            outbox::count_refused(&mut tx, &refused, reason, self.max_attempts).await?
        };
        tx.commit().await?;
        count_parked(parked);
        published_messages.into_iter().for_each(count_published);
        Ok(Pass {
            locked: locked_ids.len(),
            published: published.len(),
        })
    }

    async fn report_backlog(&self) {
        if let Ok((waiting, parked)) = outbox::backlog(&self.db).await {
            metrics::gauge!(metric::OUTBOX_BACKLOG).set(waiting as f64);
            metrics::gauge!(metric::OUTBOX_PARKED).set(parked as f64);
        }
    }
}

fn count_parked(parked: u64) {
    if parked > 0 {
        metrics::counter!(metric::OUTBOX_PARKED_TOTAL).increment(parked);
        tracing::error!(
            parked,
            "reconciliation events parked after their last attempt: `settle outbox parked` lists them, `settle outbox retry` sends them again"
        );
    }
}

/// Counts a published reconciliation event by type, and the money it announces by movement and
/// currency (for the dashboard: collected, refunded and disputed per currency).
fn count_published(message: &OutgoingMessage) {
    metrics::counter!(metric::OUTBOX_PUBLISHED, "type" => message.routing_key.clone()).increment(1);
    let movement = match message.routing_key.as_str() {
        "payment.succeeded" => "collected",
        "payment.refunded" => "refunded",
        "payment.disputed" => "disputed",
        _ => return,
    };
    #[derive(serde::Deserialize)]
    struct Announced {
        data: Amount,
    }
    #[derive(serde::Deserialize)]
    struct Amount {
        amount: i64,
        currency: String,
    }
    if let Ok(Announced { data }) = serde_json::from_slice::<Announced>(&message.body)
        && let Ok(amount) = u64::try_from(data.amount)
    {
        metrics::counter!(metric::MONEY_ANNOUNCED, "movement" => movement, "currency" => data.currency)
            .increment(amount);
    }
}
