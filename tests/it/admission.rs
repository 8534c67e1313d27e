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
/// A head with a signature header of the right shape (not a valid signature): its body is read.
const SIGNED_HEADERS: &str = "POST /webhooks/stripe HTTP/1.1\r\nHost: settle\r\nContent-Type: application/json\r\nStripe-Signature: t=1700000000,v1=0000\r\n";

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
        &format!("{SIGNED_HEADERS}Content-Length: 100\r\n\r\n{{\"id\":"),
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

/// A request whose head is complete and whose body is still to come: a busy connection.
async fn busy(app: &TestApp) -> TcpStream {
    trickling(
        app,
        &format!("{SIGNED_HEADERS}Content-Length: 100\r\n\r\n{{\"id\":"),
    )
    .await
}

#[tokio::test]
async fn connections_past_the_limit_get_503_at_once_when_every_one_is_serving_a_request() {
    let app = app_with_limits(|http| {
        http.max_connections = 2;
        http.request_timeout_ms = 60_000;
        http.drain_timeout_ms = 500;
    })
    .await;
    // Two connections each in the middle of a request: neither can give way.
    let _first = busy(&app).await;
    let _second = busy(&app).await;
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

/// The client preface of HTTP/2 (RFC 9113 §3.4) and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Ways a client takes a connection slot and then does nothing a request could come of.
#[derive(Debug, Clone, Copy)]
enum Squatter {
    /// Connects and sends nothing.
    Silent,
    /// Half of the HTTP/2 preface: hyper is still detecting the protocol.
    PartialH2Preface,
    /// A whole HTTP/2 connection (preface and settings) that never opens a stream.
    IdleH2,
    /// An HTTP/1 request head that never ends.
    TricklingHeaders,
}

impl Squatter {
    const ALL: [Self; 4] = [
        Self::Silent,
        Self::PartialH2Preface,
        Self::IdleH2,
        Self::TricklingHeaders,
    ];

    async fn connect(self, app: &TestApp) -> TcpStream {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        match self {
            Self::Silent => {}
            Self::PartialH2Preface => stream.write_all(&H2_PREFACE[..16]).await.unwrap(),
            Self::IdleH2 => {
                stream.write_all(H2_PREFACE).await.unwrap();
                stream.write_all(H2_EMPTY_SETTINGS).await.unwrap();
            }
            Self::TricklingHeaders => stream.write_all(PARTIAL_HEADERS.as_bytes()).await.unwrap(),
        }
        stream
    }
}

#[tokio::test]
async fn connections_that_send_no_request_give_way_to_a_signed_event_at_the_connection_limit() {
    for squatter in Squatter::ALL {
        // The default header deadline: the squatters would hold their slots for 10 s.
        let app = app_with_limits(|http| http.max_connections = 20).await;
        let mut held = Vec::new();
        for _ in 0..20 {
            held.push(squatter.connect(&app).await);
        }
        let started = tokio::time::Instant::now();
        let event = stripe_event("payment_intent.succeeded", &format!("evt_{squatter:?}"));
        let response = app.post_stripe_signed(&event).await;
        assert_eq!(response.status(), 200, "{squatter:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{squatter:?}: answered after {:?}",
            started.elapsed()
        );
        let metrics = app.metrics_text().await;
        let evicted = r#"settle_http_connections_closed_total{reason="evicted"}"#;
        assert!(metrics.contains(evicted), "{squatter:?}: {metrics}");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_connection_that_brings_no_request_head_in_time_is_closed_whatever_its_protocol() {
    let app = app_with_limits(|http| http.header_read_timeout_ms = 500).await;
    for squatter in Squatter::ALL {
        let mut stream = squatter.connect(&app).await;
        let started = tokio::time::Instant::now();
        assert!(
            read_until_closed(&mut stream, Duration::from_secs(10))
                .await
                .is_some(),
            "{squatter:?}: still open after 10 s"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{squatter:?}: closed after {:?}",
            started.elapsed()
        );
    }
    let metrics = app.metrics_text().await;
    let closed = r#"settle_http_connections_closed_total{reason="no_request_head"} 4"#;
    assert!(metrics.contains(closed), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = app_with_limits(|http| http.idle_timeout_ms = 500).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: settle\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0_u8; 12];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    // Kept alive, then idle: closed by the server.
    assert!(
        read_until_closed(&mut stream, Duration::from_secs(10))
            .await
            .is_some(),
        "an idle keep-alive connection is still open"
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
        &format!("{SIGNED_HEADERS}Content-Length: 100\r\n\r\n{{"),
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

/// A webhook head (`signature` line included, if any) announcing a body of `length` bytes.
fn webhook_head(path: &str, signature: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: settle\r\nContent-Type: application/json\r\n{signature}Content-Length: {length}\r\n\r\n"
    )
}

#[tokio::test]
async fn a_webhook_that_cannot_be_signed_is_refused_before_its_body_is_read() {
    let app = spawn_app().await;
    let cases = [
        ("/webhooks/stripe", "", "HTTP/1.1 400", "missing_signature"),
        (
            "/webhooks/stripe",
            "Stripe-Signature: v1=abc\r\n",
            "HTTP/1.1 400",
            "malformed_signature",
        ),
        (
            "/webhooks/gocardless",
            "",
            "HTTP/1.1 498",
            "missing_signature",
        ),
        (
            "/webhooks/gocardless",
            "Webhook-Signature: not-hex\r\n",
            "HTTP/1.1 498",
            "malformed_signature",
        ),
    ];
    for (path, signature, status, code) in cases {
        // A megabyte announced, not a byte of it sent: the answer comes anyway, at once.
        let mut stream = trickling(&app, &webhook_head(path, signature, 1_000_000)).await;
        let answer = read_until_closed_or_answered(&mut stream).await;
        assert!(answer.starts_with(status), "{path} {signature:?}: {answer}");
        assert!(answer.contains(code), "{path} {signature:?}: {answer}");
    }
    // Announced past the limit: 413 without reading.
    let mut stream = trickling(
        &app,
        &webhook_head(
            "/webhooks/stripe",
            "Stripe-Signature: t=1,v1=ab\r\n",
            2 << 20,
        ),
    )
    .await;
    let answer = read_until_closed_or_answered(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    app.stop().await;
}

/// The first answer on `stream` (its head and what came with it), within 5 s.
async fn read_until_closed_or_answered(stream: &mut TcpStream) -> String {
    let mut received = vec![0_u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut received))
        .await
        .expect("an answer within 5 s, without the body")
        .unwrap();
    String::from_utf8_lossy(&received[..read]).into_owned()
}

#[tokio::test]
async fn bodies_being_read_share_a_byte_budget_and_a_request_past_it_gets_503() {
    const LIMIT: usize = 64 * 1024;
    let app = app_with_limits(|http| {
        http.body_limit_bytes = LIMIT;
        http.body_budget_bytes = LIMIT;
    })
    .await;
    // Well-formed signature headers (their signatures wrong): each body is read, and held.
    let signature = "Stripe-Signature: t=1700000000,v1=00\r\n";
    let mut held = trickling(&app, &webhook_head("/webhooks/stripe", signature, LIMIT)).await;
    held.write_all(b"{\"id\":").await.unwrap();
    let refused = poll_until("a body refused for the budget", WAIT, || async {
        let mut next = trickling(&app, &webhook_head("/webhooks/stripe", signature, 1024)).await;
        let answer = read_until_closed_or_answered(&mut next).await;
        answer.starts_with("HTTP/1.1 503").then_some(answer)
    })
    .await;
    assert!(refused.contains("overloaded"), "{refused}");
    assert!(
        refused.to_lowercase().contains("retry-after: 5"),
        "{refused}"
    );
    // The budget comes back when the held body ends: a signed event is queued again.
    drop(held);
    let event = stripe_event("payment_intent.succeeded", "evt_after_budget");
    poll_until("the budget back", WAIT, || async {
        (app.post_stripe_signed(&event).await.status() == 200).then_some(())
    })
    .await;
    app.stop().await;
}
