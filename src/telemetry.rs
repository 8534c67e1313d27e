//! Logs (tracing, JSON or pretty) and metrics (Prometheus text at `/metrics`). Every metric's
//! name is a constant here, described once (its HELP text) when the recorder is installed, so
//! the README's list and `/metrics` come from one place.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetrySettings};

pub const WEBHOOK_REQUESTS: &str = "settle_webhook_requests_total";
pub const PUBLISH_CONFIRM_SECONDS: &str = "settle_publish_confirm_seconds";
pub const HTTP_CONNECTIONS_CLOSED: &str = "settle_http_connections_closed_total";
pub const TASK_RESTARTS: &str = "settle_task_restarts_total";
pub const OUTBOX_PARKED: &str = "settle_outbox_parked";
pub const OUTBOX_PARKED_TOTAL: &str = "settle_outbox_parked_total";
pub const OUTBOX_PASS_FAILURES: &str = "settle_outbox_pass_failures_total";
pub const WORKER_MESSAGES: &str = "settle_worker_messages_total";
pub const WORKER_PROCESSING_SECONDS: &str = "settle_worker_processing_seconds";
pub const WORKER_PANICS: &str = "settle_worker_panics_total";
pub const WORKER_BATCH_EVENTS: &str = "settle_worker_batch_events";
pub const WORKER_BATCHES_SPLIT: &str = "settle_worker_batches_split_total";
pub const WORKER_WAITING_FOR_DATABASE: &str = "settle_worker_waiting_for_database";
pub const END_TO_END_SECONDS: &str = "settle_end_to_end_seconds";
pub const DEAD_LETTERS: &str = "settle_dead_letters_total";
pub const DEAD_LETTERS_UNRECORDED: &str = "settle_dead_letters_unrecorded_total";
pub const OUTBOX_PUBLISHED: &str = "settle_outbox_published_total";
pub const OUTBOX_BACKLOG: &str = "settle_outbox_backlog";
pub const OUTBOX_UNROUTABLE: &str = "settle_outbox_unroutable_total";
pub const OUTBOX_NACKED: &str = "settle_outbox_nacked_total";
pub const BROKER_SETTLE_FAILURES: &str = "settle_broker_settle_failures_total";
pub const BROKER_REPUBLISHED: &str = "settle_broker_republished_total";
pub const RETENTION_DELETED: &str = "settle_retention_deleted_total";
pub const UNMATCHED_EVENTS: &str = "settle_unmatched_events";
pub const UNMATCHED_OLDEST_SECONDS: &str = "settle_unmatched_oldest_age_seconds";
pub const UNMATCHED_SETTLED: &str = "settle_unmatched_settled_total";
pub const NOTIFICATIONS: &str = "settle_notifications_total";
pub const NOTIFICATIONS_OLDEST_PENDING_SECONDS: &str =
    "settle_notifications_oldest_pending_seconds";
pub const CONNECTION_SECRETS_LOADED: &str = "settle_connection_secrets_loaded";
pub const BACKFILL_MISSED: &str = "settle_backfill_missed_events_total";
pub const WEBHOOK_GAP_EVENTS: &str = "settle_webhook_gap_events";
pub const PROVIDER_BALANCE_DRIFT: &str = "settle_provider_balance_drift";
pub const PROVIDER_BALANCE_HELD: &str = "settle_provider_balance_held";
pub const PROVIDER_BALANCE_EXPECTED: &str = "settle_provider_balance_expected";
pub const DRIFT_CHECK_FAILURES: &str = "settle_provider_balance_check_failures_total";
pub const BACKFILL_SWEEP_SECONDS: &str = "settle_backfill_sweep_seconds";
pub const BACKFILL_SWEEP_FAILURES: &str = "settle_backfill_sweep_failures_total";
pub const BACKFILL_LAST_SUCCESS: &str = "settle_backfill_last_success_timestamp_seconds";
pub const PAYOUTS_LISTED: &str = "settle_payouts_listed_total";
pub const PAYOUT_LISTING_FAILURES: &str = "settle_payout_listing_failures_total";
pub const CONNECTION_SECRETS_REFRESH_FAILURES: &str =
    "settle_connection_secrets_refresh_failures_total";
pub const CHARGE_SENDS: &str = "settle_charge_sends_total";
pub const BROKER_CONNECTED: &str = "settle_broker_connected";
pub const BROKER_BLOCKED: &str = "settle_broker_blocked";
pub const QUEUE_MESSAGES: &str = "settle_queue_messages";
pub const LEASE_HELD: &str = "settle_lease_held";
pub const DATABASE_REPLICA_LAG_SECONDS: &str = "settle_database_replica_lag_seconds";
pub const DATABASE_READS_ON_REPLICA: &str = "settle_database_reads_on_replica";
pub const PAYOUTS_PARTIALLY_MATCHED: &str = "settle_payouts_partially_matched";
pub const PAYOUTS_PARTIALLY_MATCHED_OLDEST_SECONDS: &str =
    "settle_payouts_partially_matched_oldest_age_seconds";
pub const INVOICES_OVERPAID: &str = "settle_invoices_overpaid";
pub const MONEY_ANNOUNCED: &str = "settle_money_announced_minor_units_total";

/// Every metric with its HELP text.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        WEBHOOK_REQUESTS,
        "Webhook requests by provider and outcome (queued, invalid_signature, invalid_payload, too_large, unreadable_body, overloaded, broker_unavailable, not_configured, unknown_provider, unknown_connection)."
    );
    describe_gauge!(
        OUTBOX_PARKED,
        "Reconciliation events the relay gave up on after its last attempt (a subscriber's queue refused them, or the broker never confirmed them), waiting for `settle outbox retry`."
    );
    describe_gauge!(
        UNMATCHED_EVENTS,
        "Payment events waiting for their payment's registration (unmatched), as of the last retention run."
    );
    describe_gauge!(
        UNMATCHED_OLDEST_SECONDS,
        Unit::Seconds,
        "How long the oldest unmatched event has waited, as of the last retention run (0: none waits)."
    );
    describe_counter!(
        UNMATCHED_SETTLED,
        "Unmatched events that stopped waiting without their payment: expired (retention.unmatched_days) or discarded by an operator, by outcome."
    );
    describe_counter!(
        OUTBOX_PASS_FAILURES,
        "Relay passes that published nothing because of an error (the database, the broker unreachable or not confirming, a row another transaction holds); each is tried again."
    );
    describe_counter!(
        OUTBOX_PARKED_TOTAL,
        "Reconciliation events parked by the relay after their last attempt."
    );
    describe_counter!(
        TASK_RESTARTS,
        "Background tasks (relay, sender, retention, sweeper, payout_lister, drift_check, charger, sampler, secrets_refresher, database_check) started again after a panic or an early end, by task; one that keeps failing is named in /readyz."
    );
    describe_counter!(
        HTTP_CONNECTIONS_CLOSED,
        "HTTP connections settle closed by admission control, by reason: no_request_head (none within http.header_read_timeout_ms), idle (http.idle_timeout_ms), evicted (idle the longest at the connection limit, for a new one), refused (503 at the limit, every connection busy)."
    );
    describe_histogram!(
        PUBLISH_CONFIRM_SECONDS,
        Unit::Seconds,
        "Time a webhook request waited for the broker to confirm its events."
    );
    describe_counter!(
        BACKFILL_MISSED,
        "Events a backfill found in a provider's list that the inbox did not hold (missed webhooks), queued, by provider."
    );
    describe_gauge!(
        WEBHOOK_GAP_EVENTS,
        "Events the last successful sweep of a source found that no webhook delivered, by provider and source."
    );
    describe_gauge!(
        PROVIDER_BALANCE_DRIFT,
        "A provider's balance less what settle's books expect it to hold (collected, not yet paid out), in minor units, by account, provider, source and currency. Above zero: money settle does not know of; below: money settle counts that the provider does not hold (its fees on money not yet paid out among it)."
    );
    describe_gauge!(
        PROVIDER_BALANCE_HELD,
        "What the provider says it holds for an account and has not paid out, in minor units, by account, provider, source and currency."
    );
    describe_gauge!(
        PROVIDER_BALANCE_EXPECTED,
        "What settle's books expect the provider to hold for an account, in minor units, by account, provider, source and currency."
    );
    describe_counter!(
        DRIFT_CHECK_FAILURES,
        "Provider balance checks that could not read a source's balance, by provider."
    );
    describe_histogram!(
        BACKFILL_SWEEP_SECONDS,
        Unit::Seconds,
        "Time one sweep of every source took."
    );
    describe_counter!(
        BACKFILL_SWEEP_FAILURES,
        "Sweeps of a source that failed (its provider's API down or refusing), by provider; retried next interval."
    );
    describe_gauge!(
        BACKFILL_LAST_SUCCESS,
        "When each source's last successful sweep listed up to (Unix seconds), by provider and source."
    );
    describe_counter!(
        PAYOUTS_LISTED,
        "Payouts whose lines the lister listed, by provider and outcome (RECONCILED, PARTIALLY_MATCHED, UNLISTABLE, PASSED)."
    );
    describe_counter!(
        PAYOUT_LISTING_FAILURES,
        "Listings of a payout that failed (its provider's API down or refusing, no key for its account), by provider; tried again next interval."
    );
    describe_counter!(
        CHARGE_SENDS,
        "Sends of automatic charges to a provider, by provider and answer (created, succeeded, declined, needs_authentication, later, refused, no_source)."
    );
    describe_gauge!(
        CONNECTION_SECRETS_LOADED,
        "Connections whose webhook secrets the receiver holds, as of its last refresh."
    );
    describe_counter!(
        CONNECTION_SECRETS_REFRESH_FAILURES,
        "Refreshes of the connections' webhook secrets that failed (the receiver kept the last ones)."
    );
    describe_counter!(
        WORKER_MESSAGES,
        "Deliveries handled by the worker, by result (applied, duplicate, stale, unchanged, recorded, ignored, unmatched, retried, dead_lettered)."
    );
    describe_histogram!(
        WORKER_PROCESSING_SECONDS,
        Unit::Seconds,
        "Time the worker spent on one delivery's batch, transaction included."
    );
    describe_histogram!(
        WORKER_BATCH_EVENTS,
        "Events the worker applied in one transaction (a batch)."
    );
    describe_counter!(
        WORKER_BATCHES_SPLIT,
        "Batches whose transaction failed as a whole and were applied again one event per transaction."
    );
    describe_counter!(
        WORKER_PANICS,
        "Deliveries whose handler panicked (caught; the delivery went down the retry path)."
    );
    describe_histogram!(
        END_TO_END_SECONDS,
        Unit::Seconds,
        "From the webhook's arrival to the commit of its effects, for applied events."
    );
    describe_counter!(
        DEAD_LETTERS,
        "Events dead-lettered by the worker, by reason."
    );
    describe_counter!(
        DEAD_LETTERS_UNRECORDED,
        "Dead letters whose row the database refused, by how: degraded (refused for good; recorded degraded, reason unrecordable), held (the database away; held and tried again, backing off)."
    );
    describe_counter!(
        OUTBOX_PUBLISHED,
        "Reconciliation events published by the outbox relay, by type (`payment.disputed`: a dispute opened)."
    );
    describe_counter!(
        MONEY_ANNOUNCED,
        "Money in the reconciliation events the relay published, in minor units, by movement (collected: payment.succeeded; refunded: payment.refunded; disputed: payment.disputed) and currency."
    );
    describe_gauge!(
        BROKER_CONNECTED,
        "Whether this process has a live connection to a RabbitMQ node (1) or not (0), as of the last sample."
    );
    describe_gauge!(
        BROKER_BLOCKED,
        "Whether RabbitMQ blocks this process's publishing connection (1: a memory or disk alarm; webhooks are answered 503), as of the last sample."
    );
    describe_gauge!(
        QUEUE_MESSAGES,
        "Messages ready in each of settle's queues (the work queue, its retry tiers, the dead letters), by queue, as of the last sample."
    );
    describe_gauge!(
        LEASE_HELD,
        "Whether this process holds a lease (1) or not (0), by lease (relay, backfill_sweep, payout_listing, drift_check): one process in the deployment should hold each."
    );
    describe_gauge!(
        DATABASE_REPLICA_LAG_SECONDS,
        "How far the replica of DATABASE_REPLICA_URLS is behind the primary, asked every second; absent until it first answers."
    );
    describe_gauge!(
        DATABASE_READS_ON_REPLICA,
        "Whether the reads that may lag (the API's lists, the console, exports) go to the replica (1) or to the primary (0: no replica answers, or it lags past database.replica_max_lag_ms)."
    );
    describe_gauge!(
        PAYOUTS_PARTIALLY_MATCHED,
        "Payouts whose lines settle could not all match to its ledger (PARTIALLY_MATCHED), as of the last sample."
    );
    describe_gauge!(
        PAYOUTS_PARTIALLY_MATCHED_OLDEST_SECONDS,
        Unit::Seconds,
        "How long the oldest PARTIALLY_MATCHED payout has been so (0: none), as of the last sample."
    );
    describe_gauge!(
        INVOICES_OVERPAID,
        "Invoices paid more than they owe, as of the last sample."
    );
    describe_gauge!(
        WORKER_WAITING_FOR_DATABASE,
        "Deliveries held, unacknowledged and with no attempt spent, until the database answers again."
    );
    describe_counter!(
        OUTBOX_UNROUTABLE,
        "Reconciliation events no subscriber queue was bound for (published, and gone)."
    );
    describe_counter!(
        OUTBOX_NACKED,
        "Reconciliation events the broker refused (a full subscriber queue); the relay publishes them again."
    );
    describe_counter!(
        BROKER_SETTLE_FAILURES,
        "Acks and nacks that did not go through, by how; the broker redelivers those messages."
    );
    describe_counter!(
        BROKER_REPUBLISHED,
        "Publishes made again within their confirm deadline after a lost connection or a nack (a node lost, a leader elected)."
    );
    describe_counter!(
        RETENTION_DELETED,
        "Rows deleted by retention once past their window, by table."
    );
    describe_gauge!(
        OUTBOX_BACKLOG,
        "Reconciliation events committed and not yet published."
    );
    describe_counter!(
        NOTIFICATIONS,
        "Failure mails by outcome (sent, retry, failed)."
    );
    describe_gauge!(
        NOTIFICATIONS_OLDEST_PENDING_SECONDS,
        Unit::Seconds,
        "Age of the oldest failure mail waiting to be sent (0 when none waits)."
    );
}

/// Latency buckets in seconds, from sub-millisecond confirms to multi-second stalls.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Receipt to commit in seconds: as the latency buckets, then the minutes a backlog makes (the
/// alert on old messages reads past a minute).
const END_TO_END_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Events per batch, by powers of two up to well past the largest sensible `worker.batch_size`.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Installs the process's logging and tracing: `tracing`'s log lines (JSON or pretty, on stderr)
/// and OpenTelemetry spans, exported over OTLP when `telemetry.otlp_endpoint` is set. Spans get
/// trace ids either way: W3C trace context travels with every event (`crate::trace`). Once per
/// process; later calls (tests start several apps in one process) change nothing.
pub fn init_logging(settings: &TelemetrySettings) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // lapin warns with the whole message (body included) for every message the broker returns
    // as unroutable; settle reports those itself (a 503, or `settle_outbox_unroutable_total`).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},lapin::returned_messages=error",
            settings.log_filter
        ))
    });
    // Logs go to stderr: stdout is a command's output (`--output json` must parse as JSON).
    // The log filter is the logs' own: spans are made whatever it says (`SPANS`), so a trace
    // crosses every hop even where logs are quiet.
    let logs = log_layer(settings.log_format, std::io::stderr).with_filter(filter);
    let registry = tracing_subscriber::registry().with(logs);
    let installed = match tracer_provider(settings) {
        Ok(provider) => {
            use opentelemetry::trace::TracerProvider as _;
            // Spans are on every request and batch: no per-poll timings, thread or source
            // attributes (they cost intake a third of its rate in `make bench`).
            let spans = tracing_opentelemetry::layer()
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_location(false)
                .with_tracer(provider.tracer("settle"))
                .with_filter(
                    tracing_subscriber::filter::Targets::new().with_target("settle", SPANS),
                );
            let installed = registry.with(spans).try_init().is_ok();
            if installed {
                let _ = TRACER_PROVIDER.set(provider);
            }
            installed
        }
        Err(error) => {
            let installed = registry.try_init().is_ok();
            tracing::error!(%error, "spans are not exported: the OTLP exporter could not be built");
            installed
        }
    };
    if installed && !settings.otlp_endpoint.is_empty() {
        tracing::info!(endpoint = %settings.otlp_endpoint, "exporting spans over OTLP");
    }
}

use tracing_subscriber::Layer;

/// The level of settle's spans (a webhook's request, a batch's transaction, a backfill run).
const SPANS: tracing::Level = tracing::Level::INFO;

/// Log lines in `format`, to `writer`. In JSON, each line carries its spans' fields: the
/// `trace_id` of the work it belongs to among them.
pub fn log_layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    }
}

/// The process's tracer provider, kept to flush its spans at the end.
static TRACER_PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// Spans for every unit of work, exported in batches to `otlp_endpoint` when one is set.
fn tracer_provider(
    settings: &TelemetrySettings,
) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("settle")
        .build();
    let builder = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_resource(resource);
    let endpoint = settings.otlp_endpoint.trim_end_matches('/');
    if endpoint.is_empty() {
        return Ok(builder.build());
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// Sends the spans still buffered (at a process's end).
pub fn flush_spans() {
    if let Some(provider) = TRACER_PROVIDER.get()
        && let Err(error) = provider.force_flush()
    {
        tracing::warn!(%error, "could not export the last spans");
    }
}

/// The process-wide Prometheus recorder, installed on first use. Metrics are global to a process
/// by nature (the `metrics` facade has one recorder), so every app in a process shares it.
#[expect(
    clippy::expect_used,
    reason = "a constant bucket list, installed once per process at start"
)]
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            // A full name's buckets win over a suffix's.
            .set_buckets_for_metric(Matcher::Full(END_TO_END_SECONDS.into()), END_TO_END_BUCKETS)
            .expect("bucket list is not empty")
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("bucket list is not empty")
            .set_buckets_for_metric(Matcher::Full(WORKER_BATCH_EVENTS.into()), BATCH_BUCKETS)
            .expect("bucket list is not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        describe_metrics();
        handle
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_log_line_carries_the_trace_id_of_the_work_it_belongs_to() {
        let lines = Lines::default();
        let writer = lines.clone();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(log_layer(LogFormat::Json, move || writer.clone()))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("webhook", trace_id = tracing::field::Empty);
            crate::trace::continue_in(
                &span,
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            );
            let _in_request = span.enter();
            let inner = tracing::info_span!("publish");
            let _in_publish = inner.enter();
            tracing::warn!("webhook not queued; provider will retry");
        });
        let written = lines.0.lock().unwrap().clone();
        let line: serde_json::Value =
            serde_json::from_slice(written.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(line["message"], "webhook not queued; provider will retry");
        assert_eq!(
            line["spans"][0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{line}"
        );
    }
}
