//! One trace from the webhook to the subscriber (issue 35): the W3C trace context a proxy in front
//! sent with the webhook is continued by the receiver, carried in the queued event's AMQP headers
//! to the worker, stored with the outbox row and published with the reconciliation event; the
//! spans go over OTLP/HTTP (JSON) to a stand-in collector the test starts, in the shape the OTLP
//! specification gives (`POST /v1/traces`, `resourceSpans[].scopeSpans[].spans[]`, hex ids).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use crate::helpers::broker::QueuedMessage;
use crate::helpers::*;

/// The collector's side of OTLP/HTTP: every span it was sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    async fn start() -> (Self, SocketAddr) {
        let collector = Self::default();
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(collector.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (collector, addr)
    }

    fn named(&self, name: &str) -> Vec<Value> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|span| span["name"] == name)
            .cloned()
            .collect()
    }
}

async fn receive(State(collector): State<Collector>, body: String) -> axum::Json<Value> {
    let request: Value = serde_json::from_str(&body).expect("an OTLP JSON export request");
    let mut spans = collector.spans.lock().unwrap();
    for resource in request["resourceSpans"].as_array().into_iter().flatten() {
        assert_eq!(
            resource["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .map(|a| &a["value"]["stringValue"]),
            Some(&json!("settle"))
        );
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            spans.extend(scope["spans"].as_array().into_iter().flatten().cloned());
        }
    }
    axum::Json(json!({}))
}

/// Posts a signed Stripe webhook, with `traceparent` as a proxy in front would add it.
async fn post_traced(app: &TestApp, body: Vec<u8>, traceparent: Option<&str>) {
    let mut request = app.http.post(app.url("/webhooks/stripe")).header(
        "Stripe-Signature",
        stripe_signature(&body, chrono::Utc::now().timestamp()),
    );
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    assert_eq!(request.body(body).send().await.unwrap().status(), 200);
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PROXY_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_webhook_s_trace_reaches_the_subscriber_through_the_queue_the_worker_and_the_relay() {
    let (collector, addr) = Collector::start().await;
    let endpoint = format!("http://{addr}");
    let app = spawn_app_with(AppOptions {
        role: settle::role::Role::Run,
        tweak: Box::new(move |settings| {
            Retries::PATIENT.apply_to(settings);
            settings.telemetry.otlp_endpoint = endpoint;
        }),
        ..AppOptions::default()
    })
    .await;
    let subscriber = app
        .subscribe_as("traced", "invoice.paid", Default::default())
        .await;
    app.create_customer("tr").await;
    app.create_invoice("inv_tr", "tr", None, "GBP", 4200).await;
    app.register_payment("inv_tr", "STRIPE", "pi_tr", 4200)
        .await;
    // The webhook, as a proxy that traces its requests forwards it.
    let body = StripeEvent::new("payment_intent.succeeded", "evt_tr")
        .payment("pi_tr", 4200, "gbp")
        .to_bytes();
    post_traced(&app, body, Some(&format!("00-{TRACE_ID}-{PROXY_SPAN}-01"))).await;
    app.wait_invoice_status("inv_tr", "PAID").await;

    // The subscriber's message continues the trace.
    let messages = app.take_messages(&subscriber, 1).await;
    let traceparent = messages[0]
        .headers
        .iter()
        .find(|(name, _)| name == "traceparent")
        .map(|(_, value)| value.clone())
        .expect("a traceparent header on the reconciliation event");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], TRACE_ID, "the proxy's trace");

    // The spans, exported when the app stops: the receiver's under the proxy's, the worker's
    // under the receiver's, the subscriber's parent the worker's.
    app.stop().await;
    let (webhook, reconcile) = poll_until(
        "the receiver's and the worker's spans at the collector",
        std::time::Duration::from_secs(20),
        || async {
            let webhook = collector.named("webhook").pop()?;
            let reconcile = collector.named("reconcile").pop()?;
            Some((webhook, reconcile))
        },
    )
    .await;
    assert_eq!(webhook["traceId"], TRACE_ID, "{webhook}");
    assert_eq!(webhook["parentSpanId"], PROXY_SPAN, "{webhook}");
    assert_eq!(reconcile["traceId"], TRACE_ID, "{reconcile}");
    assert_eq!(reconcile["parentSpanId"], webhook["spanId"], "{reconcile}");
    assert_eq!(parts[2], reconcile["spanId"], "the subscriber's parent");
}

#[tokio::test]
async fn without_an_incoming_trace_each_webhook_starts_one_and_a_forged_header_is_ignored() {
    let app = spawn_worker(Retries::PATIENT).await;
    let subscriber = app
        .subscribe_as("traced", "invoice.paid", Default::default())
        .await;
    app.create_customer("tr").await;
    for (invoice, intent, incoming) in [
        ("inv_a", "pi_a", None),
        ("inv_b", "pi_b", Some("00-not-a-trace-01")),
    ] {
        app.create_invoice(invoice, "tr", None, "GBP", 1000).await;
        app.register_payment(invoice, "STRIPE", intent, 1000).await;
        let body = StripeEvent::new("payment_intent.succeeded", &format!("evt_{intent}"))
            .payment(intent, 1000, "gbp")
            .to_bytes();
        post_traced(&app, body, incoming).await;
        app.wait_invoice_status(invoice, "PAID").await;
    }
    let messages = app.take_messages(&subscriber, 2).await;
    let traces: Vec<String> = messages.iter().map(trace_of).collect();
    assert_eq!(traces.len(), 2);
    assert_ne!(traces[0], traces[1], "a trace of its own each");
    assert!(traces.iter().all(|t| t.len() == 32 && t != &"0".repeat(32)));
    app.stop().await;
}

/// The trace id of a reconciliation event's `traceparent` header.
fn trace_of(message: &QueuedMessage) -> String {
    let traceparent = message
        .headers
        .iter()
        .find(|(name, _)| name == "traceparent")
        .map(|(_, value)| value.clone())
        .expect("a traceparent header");
    traceparent.split('-').nth(1).unwrap().to_owned()
}

#[tokio::test]
async fn a_replayed_dead_letter_keeps_its_webhook_s_trace_and_a_backfill_run_starts_one() {
    use crate::helpers::provider_api::{ProviderApi, STRIPE_KEY};
    let app = spawn_worker(Retries::GIVE_UP_SOON).await;
    let subscriber = app
        .subscribe_as("traced", "invoice.paid", Default::default())
        .await;
    app.create_customer("tr").await;
    // A payment for an invoice not registered yet: dead-lettered, then replayed once it is.
    let body = StripeEvent::new("payment_intent.succeeded", "evt_orphan")
        .payment("pi_orphan", 800, "gbp")
        .invoice_id("inv_late")
        .to_bytes();
    post_traced(&app, body, Some(&format!("00-{TRACE_ID}-{PROXY_SPAN}-01"))).await;
    let db = app.db();
    let id: i64 = poll_until(
        "the dead letter",
        std::time::Duration::from_secs(20),
        || async {
            sqlx::query_scalar("SELECT id FROM dead_letters WHERE event_id = 'evt_orphan'")
                .fetch_optional(&db)
                .await
                .unwrap()
        },
    )
    .await;
    app.create_invoice("inv_late", "tr", None, "GBP", 800).await;
    let (code, _, err) = settle(&app, &["dlq", "replay", &id.to_string()]).await;
    assert_eq!(code, 0, "{err}");
    app.wait_invoice_status("inv_late", "PAID").await;
    let replayed = app.take_messages(&subscriber, 1).await;
    assert_eq!(
        trace_of(&replayed[0]),
        TRACE_ID,
        "the webhook's trace, replayed"
    );

    // An event no webhook delivered, queued by `settle backfill`: a trace of the run's own.
    let api = ProviderApi::start().await;
    app.create_invoice("inv_missed", "tr", None, "GBP", 900)
        .await;
    api.add_stripe(
        None,
        StripeEvent::new("payment_intent.succeeded", "evt_missed")
            .created(chrono::Utc::now().timestamp() - 60)
            .payment("pi_missed", 900, "gbp")
            .invoice_id("inv_missed")
            .into_json(),
    );
    let base = api.url();
    let env = [
        ("STRIPE_API_KEY", STRIPE_KEY),
        ("STRIPE_API_BASE", base.as_str()),
    ];
    let (code, _, err) = settle_with(&app, &["backfill", "stripe", "--since", "1h"], &env).await;
    assert_eq!(code, 0, "{err}");
    app.wait_invoice_status("inv_missed", "PAID").await;
    let backfilled = app.take_messages(&subscriber, 1).await;
    let trace = trace_of(&backfilled[0]);
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, TRACE_ID);
    assert_ne!(trace, "0".repeat(32));
    app.stop().await;
}
