//! The HTTP server under both edges (webhooks and API), with admission control: a slow or hostile
//! client can hold at most one connection slot for at most the header timeout, and never stops a
//! signed event from getting its answer.
//!
//! - connections: at most `max_connections` open; one more is answered 503 and closed at once;
//! - headers: must arrive within `header_read_timeout` (hyper's, which needs the timer axum's own
//!   `serve` does not give it);
//! - requests: at most `max_requests_in_flight` at once, past which 503 with `Retry-After`
//!   (load shedding: a provider retries); each within `request_timeout`, its body included, else
//!   408;
//! - shutdown: stop accepting, let in-flight connections finish, for at most `drain_timeout`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;

use crate::config::HttpSettings;

/// The limits of `HttpSettings`, as durations.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_requests_in_flight: usize,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
}

impl From<&HttpSettings> for Limits {
    fn from(http: &HttpSettings) -> Self {
        Self {
            max_connections: http.max_connections.max(1),
            max_requests_in_flight: http.max_requests_in_flight.max(1),
            header_read_timeout: Duration::from_millis(http.header_read_timeout_ms),
            request_timeout: Duration::from_millis(http.request_timeout_ms),
            drain_timeout: Duration::from_millis(http.drain_timeout_ms),
        }
    }
}

/// The request limits around `router`: load shedding past the in-flight limit, the deadline.
pub fn with_request_limits(router: Router, limits: Limits) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                crate::http::unavailable("overloaded", "too many requests in flight; retry")
            }))
            .load_shed()
            .concurrency_limit(limits.max_requests_in_flight)
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                limits.request_timeout,
            )),
    )
}

/// Serves `router` on `listener` until `shutdown`, then drains (bounded).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: keep serving the connections we have.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_timeout_ms = limits.drain_timeout.as_millis() as u64,
            "connections still open after the drain deadline; closing them"
        );
    }
    Ok(())
}

/// Answers a connection past the limit with a 503 and closes it, without reading its request.
async fn refuse(mut stream: tokio::net::TcpStream) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        crate::http::RETRY_AFTER_SECS
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(response.as_bytes()),
    )
    .await;
}
