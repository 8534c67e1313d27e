//! The HTTP server under both edges (webhooks and API), with admission control: however a client
//! takes connection slots (silent sockets, half an HTTP/2 preface, trickled headers, idle
//! keep-alive or HTTP/2 connections), a signed event still gets its answer.
//!
//! - a connection must bring its first complete request head within `header_read_timeout` of
//!   being accepted, whatever the protocol: the deadline covers hyper's protocol detection (which
//!   has no timer of its own), HTTP/1 and HTTP/2 (h2c) alike;
//! - a connection serving no request is idle: it is closed after `idle_timeout` (keep-alive
//!   HTTP/1, an HTTP/2 connection with no open stream), and HTTP/2 peers are pinged so a dead one
//!   is found;
//! - at most `max_connections` are open. At the limit, the connection idle the longest (a request
//!   head not yet complete counts as idle) is closed to make room; only when every connection is
//!   serving a request is the new one answered 503 and closed;
//! - requests: at most `max_requests_in_flight` at once, past which 503 with `Retry-After` (load
//!   shedding: a provider retries); each within `request_timeout`, its body included, else 408;
//! - shutdown: stop accepting, let in-flight requests finish, for at most `drain_timeout`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::timeout::TimeoutLayer;

use crate::config::HttpSettings;

/// Concurrent HTTP/2 streams per connection: one client cannot take every in-flight slot over a
/// single connection.
const H2_MAX_CONCURRENT_STREAMS: u32 = 32;
/// The largest request head, HTTP/1 (hyper's read buffer) and HTTP/2 (the header list) alike. A
/// webhook's head is a few hundred bytes; hyper's 400 KB default would let each of thousands of
/// connections hold that much before any signature is seen.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// HTTP/2 flow-control windows: what a peer may send before settle reads it. hyper's default of
/// 1 MiB per connection would be buffered for every unauthenticated connection; 64 KiB is the
/// protocol's own default.
const H2_WINDOW_BYTES: u32 = 64 * 1024;
/// How often an HTTP/2 peer is pinged, and how long its answer may take before the connection
/// is closed.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection told to close (idle past its deadline, or shutting down) may take to
/// finish cleanly before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a connection admitted in place of an evicted idle one waits for that one's slot.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// The limits of `HttpSettings`, as durations.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_requests_in_flight: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
}

impl From<&HttpSettings> for Limits {
    fn from(http: &HttpSettings) -> Self {
        Self {
            max_connections: http.max_connections.max(1),
            max_requests_in_flight: http.max_requests_in_flight.max(1),
            header_read_timeout: Duration::from_millis(http.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(http.idle_timeout_ms),
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
                super::error::unavailable("overloaded", "too many requests in flight; retry")
            }))
            .load_shed()
            .concurrency_limit(limits.max_requests_in_flight)
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                limits.request_timeout,
            )),
    )
}

/// One open connection as admission control sees it. Written by the connection's requests
/// (`Busy`), read by its own watchdog and by an accept that looks for one to evict.
struct Tracked {
    /// Requests being served: the service was called (a complete head arrived) and its response
    /// is not finished.
    in_flight: AtomicUsize,
    /// Whether a complete request head has arrived yet: before, the first-head deadline applies.
    served: AtomicBool,
    /// When the connection last became idle (its accept, or its last response), in milliseconds
    /// since the server's `epoch`.
    idle_since_ms: AtomicU64,
    /// Cancelled to close the connection at once, to make room for a new one.
    evicted: CancellationToken,
    /// Told when a request ends, so the watchdog starts the idle clock from then.
    request_ended: tokio::sync::Notify,
}

/// Marks a connection busy for as long as one of its requests is served.
struct Busy {
    connection: Arc<Tracked>,
    epoch: Instant,
}

impl Busy {
    fn begin(connection: Arc<Tracked>, epoch: Instant) -> Self {
        connection.served.store(true, Ordering::Relaxed);
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        Self { connection, epoch }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Idle from now, should this have been its last request in flight.
        let now = millis_since(self.epoch);
        self.connection.idle_since_ms.store(now, Ordering::Release);
        self.connection.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.connection.request_ended.notify_one();
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Every open connection, by a number of its own.
#[derive(Default)]
struct Registry {
    connections: Mutex<HashMap<u64, Arc<Tracked>>>,
}

impl Registry {
    fn insert(&self, id: u64, connection: Arc<Tracked>) {
        self.lock().insert(id, connection);
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the connection that has been idle the longest (not serving a request, not already
    /// evicted); false when every connection is busy.
    fn evict_longest_idle(&self) -> bool {
        let connections = self.lock();
        let longest_idle = connections
            .values()
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0 && !c.evicted.is_cancelled())
            .min_by_key(|c| c.idle_since_ms.load(Ordering::Acquire));
        match longest_idle {
            Some(connection) => {
                connection.evicted.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Tracked>>> {
        // The map stays consistent whatever panicked while holding it: each call is one insert,
        // remove or read.
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What every connection task shares.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    limits: Limits,
    slots: Arc<Semaphore>,
    registry: Registry,
    epoch: Instant,
    shutdown: CancellationToken,
}

/// Serves `router` on `listener` until `shutdown`, then drains (bounded).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        builder: builder(),
        router,
        limits,
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        registry: Registry::default(),
        epoch: Instant::now(),
        shutdown: shutdown.clone(),
    });
    let connections = TaskTracker::new();
    let mut next_id = 0_u64;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: keep serving the connections we have.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await; // backoff
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        next_id += 1;
        connections.spawn(admit(shared.clone(), next_id, stream));
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.drain_timeout, connections.wait())
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

/// hyper's settings for both protocols; the deadlines hyper does not cover are the watchdog's.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .initial_connection_window_size(H2_WINDOW_BYTES)
        .initial_stream_window_size(H2_WINDOW_BYTES)
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// Gives the accepted `stream` a slot (making room by closing the longest-idle connection when
/// there is none), or answers 503 when every connection is busy.
async fn admit(shared: Arc<Shared>, id: u64, stream: TcpStream) {
    let slot = match shared.slots.clone().try_acquire_owned() {
        Ok(slot) => Some(slot),
        Err(_) if shared.registry.evict_longest_idle() => {
            let freed = tokio::time::timeout(EVICTION_WAIT, shared.slots.clone().acquire_owned());
            freed.await.ok().and_then(Result::ok)
        }
        Err(_) => None,
    };
    match slot {
        Some(slot) => serve_connection(&shared, id, stream, slot).await,
        None => {
            count_closed("refused");
            refuse(stream).await;
        }
    }
}

/// Serves one connection under its watchdog: closed when idle past its deadline or evicted;
/// told to finish at shutdown.
async fn serve_connection(
    shared: &Shared,
    id: u64,
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
) {
    let tracked = Arc::new(Tracked {
        in_flight: AtomicUsize::new(0),
        served: AtomicBool::new(false),
        idle_since_ms: AtomicU64::new(millis_since(shared.epoch)),
        evicted: CancellationToken::new(),
        request_ended: tokio::sync::Notify::new(),
    });
    shared.registry.insert(id, tracked.clone());
    let (router, epoch) = (shared.router.clone(), shared.epoch);
    let requests = tracked.clone();
    let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
        let busy = Busy::begin(requests.clone(), epoch);
        let response = router.clone().oneshot(request);
        async move {
            let response = response.await;
            drop(busy);
            response
        }
    });
    let connection = shared
        .builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(connection);
    // Once told to close: the moment after which it is dropped, finished or not.
    let mut closing_by: Option<Instant> = None;
    loop {
        let wake_at = closing_by.unwrap_or_else(|| idle_deadline(shared, &tracked));
        tokio::select! {
            _ = connection.as_mut() => break,
            () = tracked.evicted.cancelled() => {
                count_closed("evicted");
                break;
            }
            // Its deadline moved: look again.
            () = tracked.request_ended.notified(), if closing_by.is_none() => {}
            () = shared.shutdown.cancelled(), if closing_by.is_none() => {
                // Finish the requests in flight, take no more; the drain deadline bounds it. An
                // idle connection has nothing to finish: it gets the short grace.
                connection.as_mut().graceful_shutdown();
                let idle = tracked.in_flight.load(Ordering::Acquire) == 0;
                let grace = if idle { CLOSE_GRACE } else { shared.limits.drain_timeout };
                closing_by = Some(Instant::now() + grace);
            }
            () = tokio::time::sleep_until(wake_at) => {
                if closing_by.is_some() {
                    break;
                }
                if let Some(reason) = past_idle_deadline(shared, &tracked) {
                    count_closed(reason);
                    connection.as_mut().graceful_shutdown();
                    closing_by = Some(Instant::now() + CLOSE_GRACE);
                }
            }
        }
    }
    shared.registry.remove(id);
}

/// Why the connection is to be closed now (`no_request_head` or `idle`), if it is idle past its
/// deadline.
fn past_idle_deadline(shared: &Shared, tracked: &Tracked) -> Option<&'static str> {
    let idle = tracked.in_flight.load(Ordering::Acquire) == 0;
    if !idle || Instant::now() < idle_deadline(shared, tracked) {
        return None;
    }
    if tracked.served.load(Ordering::Relaxed) {
        Some("idle")
    } else {
        Some("no_request_head")
    }
}

/// When the connection, if it stays idle, is to be closed: its first request head is due
/// `header_read_timeout` after the accept, each later one `idle_timeout` after the last response.
/// While it serves a request, only a look again later.
fn idle_deadline(shared: &Shared, tracked: &Tracked) -> Instant {
    let limits = &shared.limits;
    if tracked.in_flight.load(Ordering::Acquire) > 0 {
        return Instant::now() + limits.idle_timeout.min(limits.header_read_timeout);
    }
    let idle_since =
        shared.epoch + Duration::from_millis(tracked.idle_since_ms.load(Ordering::Acquire));
    let allowed = if tracked.served.load(Ordering::Relaxed) {
        limits.idle_timeout
    } else {
        limits.header_read_timeout
    };
    idle_since + allowed
}

fn count_closed(reason: &'static str) {
    metrics::counter!(crate::telemetry::HTTP_CONNECTIONS_CLOSED, "reason" => reason).increment(1);
}

/// Answers a connection past the limit with a 503 and closes it, without reading its request.
async fn refuse(mut stream: TcpStream) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        super::error::RETRY_AFTER_SECS
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(response.as_bytes()),
    )
    .await;
}
