//! Graceful shutdown: what was accepted is finished and queued, and SIGTERM exits 0.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A signed Stripe webhook held in flight on its own connection: the head is sent with
/// `Expect: 100-continue` and the server has answered `100 Continue`, which it does only once the
/// handler reads the body. The body is sent by `finish`.
struct HeldRequest {
    stream: TcpStream,
    body: Vec<u8>,
}

impl HeldRequest {
    async fn start(app: &TestApp, body: Vec<u8>) -> Self {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        let head = format!(
            "POST /webhooks/stripe HTTP/1.1\r\nHost: {}\r\nStripe-Signature: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            app.addr,
            stripe_signature(&body, chrono::Utc::now().timestamp()),
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let interim = read_response_head(&mut stream).await;
        assert!(
            interim.starts_with("HTTP/1.1 100 "),
            "the handler reads the body: {interim:?}"
        );
        Self { stream, body }
    }

    /// Sends the body; returns the response's status.
    async fn finish(mut self) -> u16 {
        self.stream.write_all(&self.body).await.unwrap();
        let head = read_response_head(&mut self.stream).await;
        head.split(' ')
            .nth(1)
            .and_then(|status| status.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {head:?}"))
    }
}

/// Reads one response head (up to the blank line).
async fn read_response_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    tokio::time::timeout(WAIT, async {
        while !head.ends_with(b"\r\n\r\n") {
            let byte = stream.read_u8().await.expect("a response head");
            head.push(byte);
        }
    })
    .await
    .expect("a response head in time");
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn requests_in_flight_at_shutdown_finish_with_their_messages_queued() {
    let mut app = spawn_app().await;
    let queue = app.queue("reconcile");
    let bodies: Vec<Vec<u8>> = (0..40)
        .map(|i| stripe_event("payment_intent.succeeded", &format!("evt_drain_{i}")))
        .collect();
    let requests: Vec<_> = bodies
        .iter()
        .map(|body| {
            let request = app
                .http
                .post(app.url("/webhooks/stripe"))
                .header(
                    "Stripe-Signature",
                    stripe_signature(body, chrono::Utc::now().timestamp()),
                )
                .body(body.clone())
                .send();
            tokio::spawn(request)
        })
        .collect();
    // Some held in flight for certain: the server is reading their bodies when shutdown begins.
    let mut held = Vec::new();
    for i in 0..3 {
        let body = stripe_event("payment_intent.succeeded", &format!("evt_held_{i}"));
        held.push(HeldRequest::start(&app, body).await);
    }

    app.begin_shutdown();
    let addr = app.addr;
    poll_until(
        "the server to stop accepting connections",
        WAIT,
        || async move { TcpStream::connect(addr).await.is_err().then_some(()) },
    )
    .await;
    let mut accepted = 0;
    for request in held {
        // Sent while the server drains: it must still be answered, with its message queued.
        assert_eq!(
            request.finish().await,
            200,
            "a request in flight at shutdown"
        );
        accepted += 1;
    }
    for request in requests {
        match request.await.unwrap() {
            Ok(response) => {
                // A request the server took must complete normally: 200 with its message queued.
                assert_eq!(response.status(), 200);
                accepted += 1;
            }
            // Refused before it was accepted: the provider would retry it.
            Err(error) => assert!(error.is_connect() || error.is_request(), "{error}"),
        }
    }
    assert!(accepted > 0, "requests were in flight at shutdown");
    app.shutdown_only().await;
    let messages = app.take_messages(&queue, accepted).await;
    assert_eq!(
        messages.len(),
        accepted,
        "every 2xx has its message, and only those"
    );
    app.delete_topology().await;
}

#[tokio::test]
async fn sigterm_makes_the_binary_exit_zero() {
    let app = spawn_app().await; // only for its isolated database and prefix
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_settle"))
        .arg("serve")
        .env(
            "SETTLE_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("SETTLE_ENV", "local")
        .env("SETTLE_HTTP_ADDR", "127.0.0.1:0")
        .env("SETTLE_QUEUE_PREFIX", &app.prefix)
        .env("AMQP_URL", amqp_url())
        .env("DATABASE_URL", app.database_url())
        .env("SETTLE__TELEMETRY__LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the settle binary starts");
    let pid = child.id().expect("running") as i32;
    // Wait until it has bound and connected: the log line (on stderr) says so.
    let logs = child.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(logs));
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("connected to the broker") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        started,
        Ok(true),
        "the child reported its broker connection"
    );
    nix_kill(pid);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    app.stop().await;
}

fn nix_kill(pid: i32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
