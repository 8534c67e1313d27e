//! Admission control on the HTTP edge: slow or hostile clients are cut off or shed, and never
//! stop a signed event from getting its answer.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// An app whose limits are `tweak`ed (the defaults are minutes and thousands).
async fn app_with_limits(
    tweak: impl FnOnce(&mut settle::config::HttpSettings) + Send + 'static,
) -> TestApp {
    spawn_app_with(AppOptions {
        tweak: Box::new(move |settings| tweak(&mut settings.http)),
        ..AppOptions::default()
    })
    .await
}

/// A connection that has sent `prefix` of a request and then goes quiet.
async fn trickling(app: &TestApp, prefix: &str) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(prefix.as_bytes()).await.unwrap();
    stream
}

/// What the server sends on `stream` before closing it, within `deadline` (None: still open).
async fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(deadline, stream.read_to_end(&mut received)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&received).into_owned())
}

const PARTIAL_HEADERS: &str =
    "POST /webhooks/stripe HTTP/1.1\r\nHost: settle\r\nContent-Type: application/json\r\n";

#[tokio::test]
async fn slow_clients_are_cut_off_and_a_signed_event_still_gets_its_answer() {
    let app = app_with_limits(|http| http.header_read_timeout_ms = 500).await;
    // Two hundred connections trickling their headers, never finishing them.
    let mut slow = Vec::new();
    for _ in 0..200 {
        slow.push(trickling(&app, PARTIAL_HEADERS).await);
    }
    let event = stripe_event("payment_intent.succeeded", "evt_beside_slowloris");
    assert_eq!(app.post_stripe_signed(&event).await.status(), 200);
    // Each is closed by the server once its headers are late.
    for stream in &mut slow {
        assert!(
            read_until_closed(stream, Duration::from_secs(10))
                .await
                .is_some(),
            "a connection whose headers never came is still open"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn requests_past_the_in_flight_limit_are_shed_with_503_and_retry_after_and_a_slow_body_gets_408()
 {
    let app = app_with_limits(|http| {
        http.max_requests_in_flight = 1;
        http.request_timeout_ms = 1500;
    })
    .await;
    // One request in flight: its headers are in, its body trickles.
    let mut held = trickling(
        &app,
        &format!("{PARTIAL_HEADERS}Content-Length: 100\r\n\r\n{{\"id\":"),
    )
    .await;
    let event = stripe_event("payment_intent.succeeded", "evt_shed");
    let shed = poll_until("a request shed", Duration::from_secs(10), || async {
        let response = app.post_stripe_signed(&event).await;
        (response.status() == 503).then_some(response)
    })
    .await;
    assert_eq!(shed.headers()["retry-after"], "5");
    let body: serde_json::Value = shed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    // The slow one runs out of time: 408, and the slot is free again.
    let answer = read_until_closed(&mut held, Duration::from_secs(10))
        .await
        .expect("the slow request is answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(app.post_stripe_signed(&event).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn connections_past_the_limit_get_503_at_once() {
    let app = app_with_limits(|http| http.max_connections = 2).await;
    // Two connections taken (the app's own client may hold one more: wait for a refusal).
    let _first = trickling(&app, PARTIAL_HEADERS).await;
    let _second = trickling(&app, PARTIAL_HEADERS).await;
    let refused = poll_until("a connection refused", Duration::from_secs(10), || async {
        let mut third = TcpStream::connect(app.addr).await.ok()?;
        third.write_all(PARTIAL_HEADERS.as_bytes()).await.ok()?;
        let answer = read_until_closed(&mut third, Duration::from_secs(2)).await?;
        answer.starts_with("HTTP/1.1 503").then_some(answer)
    })
    .await;
    assert!(
        refused.to_lowercase().contains("retry-after: 5"),
        "{refused}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_graceful_drain_is_bounded() {
    let mut app = app_with_limits(|http| {
        http.drain_timeout_ms = 500;
        http.request_timeout_ms = 60_000;
    })
    .await;
    // A request whose body never comes would hold the drain for a minute.
    let _held = trickling(
        &app,
        &format!("{PARTIAL_HEADERS}Content-Length: 100\r\n\r\n{{"),
    )
    .await;
    let started = tokio::time::Instant::now();
    app.shutdown_only().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the drain took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_api_and_metrics_can_listen_apart_from_the_public_webhooks() {
    let app = app_with_limits(|http| http.admin_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let admin = app.admin_addr.expect("an admin listener");
    let get = |addr: std::net::SocketAddr, path: &str| {
        app.http
            .get(format!("http://{addr}{path}"))
            .basic_auth(API_KEY_ID, Some(API_SECRET))
            .send()
    };
    // The public address: webhooks and probes only.
    let event = stripe_event("payment_intent.succeeded", "evt_public");
    assert_eq!(app.post_stripe_signed(&event).await.status(), 200);
    for path in ["/invoices", "/metrics", "/openapi.json"] {
        assert_eq!(get(app.addr, path).await.unwrap().status(), 404, "{path}");
    }
    assert_eq!(get(app.addr, "/readyz").await.unwrap().status(), 200);
    // The internal one: the API, its document, metrics and probes; no webhooks.
    for path in ["/invoices", "/metrics", "/openapi.json", "/readyz"] {
        assert_eq!(get(admin, path).await.unwrap().status(), 200, "{path}");
    }
    let webhook = app
        .http
        .post(format!("http://{admin}/webhooks/stripe"))
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 404);
    app.stop().await;
}
