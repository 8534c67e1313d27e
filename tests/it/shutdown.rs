use std::process::Stdio;
use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn requests_in_flight_at_shutdown_finish_with_their_messages_queued() {
    let app = spawn_app().await;
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
    let queue = app.queue("reconcile");
    // Shut down while the requests are in flight.
    let mut app = app;
    let stopping = tokio::spawn(async move {
        app.shutdown_only().await;
        app
    });
    let mut accepted = 0;
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
    let app = stopping.await.unwrap();
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
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the settle binary starts");
    let pid = child.id().expect("running") as i32;
    // Wait until it has bound and connected: the log line says so.
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
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
