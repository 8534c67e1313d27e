//! The connection pool, and which PostgreSQL server it connects to.
//!
//! settle writes to the primary only. In front of a Patroni cluster that is one address (HAProxy
//! on Patroni's `/primary` check: `DATABASE_URL`), or settle is given every member
//! (`DATABASE_URLS`) and finds the primary itself: `follow_primary` asks the member it uses
//! every second, and when that one is gone or has become a standby, asks the others and moves
//! the pool to the one that is the primary now. Connections opened before the move are closed
//! when next handed out or given back, so none stays on a demoted member.
//!
//! Either way a new connection that reaches a standby is refused at once (`after_connect`): its
//! caller sees an outage (`repository::is_outage`), which the worker rides out holding its
//! deliveries, and never a write refused as read-only mid-transaction.
//!
//! Reads that may be a moment behind (the API's lists, the console's pages, the exports) may go
//! to a streaming replica instead (`Reads`, `DATABASE_REPLICA_URLS`), while its lag, asked every
//! second, is within `database.replica_max_lag_ms`; past it, or while the replica does not
//! answer, they go to the primary. Everything that decides about money reads the primary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgConnection, PgPool};

use crate::config::{DatabaseSettings, Settings};

/// How long a request may wait for a pooled database connection before failing with 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// A pooled connection idle for longer than this is pinged before it is handed out. sqlx pings
/// every connection by default: a round trip per transaction, a sixth of the worker's.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);
/// How often `follow_primary` asks the member in use whether it is still the primary.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long one member may take to answer: a paused or cut-off member answers nothing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A lazy pool for `settings`; nothing connects until the first query. With several
/// `database.urls`, the pool starts on the member that answers as the primary (asked at once,
/// for two seconds at most, so an outage never holds a process's start for longer), and a task
/// follows the primary among them for as long as the pool is open.
pub async fn pool(settings: &Settings) -> anyhow::Result<PgPool> {
    let members = with_session_limits(&settings.database, settings.database.addresses())?;
    let first = if members.len() > 1 {
        primary_among(&members).await.unwrap_or(0)
    } else {
        0
    };
    let moved = Arc::new(Moved::new());
    let (seen_by_acquire, seen_by_release) = (moved.clone(), moved.clone());
    let pool = PgPoolOptions::new()
        .max_connections(settings.database.max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(|connection, _| Box::pin(refuse_standby(connection)))
        // A connection in steady use has just proved itself; one that sat idle may have been cut
        // (a database restart, a proxy's timeout) and is checked, and replaced if dead. One
        // opened before the pool moved to another member is closed (false).
        .test_before_acquire(false)
        .before_acquire(move |connection, meta| {
            let current = !seen_by_acquire.since(meta.age);
            Box::pin(async move {
                Ok(current
                    && (meta.idle_for < PING_WHEN_IDLE_FOR
                        || sqlx::Connection::ping(connection).await.is_ok()))
            })
        })
        .after_release(move |_, meta| {
            let current = !seen_by_release.since(meta.age);
            Box::pin(async move { Ok(current) })
        })
        .connect_lazy_with(members[first].clone());
    if members.len() > 1 {
        tokio::spawn(follow_primary(pool.clone(), members, first, moved));
    }
    Ok(pool)
}

/// The member that answers as the primary, every member asked at once.
async fn primary_among(members: &[PgConnectOptions]) -> Option<usize> {
    let answers = futures_util::future::join_all(
        members
            .iter()
            .map(|member| async { probe(member, &mut None).await }),
    )
    .await;
    answers.iter().position(|answer| *answer == Member::Primary)
}

/// Each server's connect options, with the session limits every pooled connection runs with.
fn with_session_limits(
    database: &DatabaseSettings,
    addresses: &[secrecy::SecretString],
) -> anyhow::Result<Vec<PgConnectOptions>> {
    addresses
        .iter()
        .enumerate()
        .map(|(index, url)| {
            // Checked at load (`Settings::validate`); the message names the position only.
            let options: PgConnectOptions = url.expose_secret().parse().with_context(|| {
                format!("database URL number {} of {}", index + 1, addresses.len())
            })?;
            // Session defaults, sent at connect: no statement, lock wait or idle transaction of
            // settle's can hold a connection, or an invoice's lock, without limit.
            Ok(options.options([
                ("lock_timeout", format!("{}ms", database.lock_timeout_ms)),
                (
                    "statement_timeout",
                    format!("{}ms", database.statement_timeout_ms),
                ),
                (
                    "idle_in_transaction_session_timeout",
                    format!("{}ms", database.idle_in_transaction_timeout_ms),
                ),
            ]))
        })
        .collect()
}

/// A connection to a standby is no use to settle: it writes. Refused as a connection error, the
/// kind an outage gives, so callers wait and try again (by then, on the primary). The pool
/// checks each connection it opens; a lease checks its own session.
pub async fn refuse_standby(connection: &mut PgConnection) -> sqlx::Result<()> {
    let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut *connection)
        .await?;
    if standby {
        return Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "the server is a standby (pg_is_in_recovery): settle connects to the primary only",
        )));
    }
    Ok(())
}

/// When the pool last moved to another member, for its hooks to close what was opened before
/// (they know a connection by its age only).
struct Moved {
    epoch: Instant,
    /// Milliseconds from `epoch` to the last move; 0: never moved.
    at_ms: AtomicU64,
}

impl Moved {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            at_ms: AtomicU64::new(0),
        }
    }

    fn mark(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// Whether a connection of this `age` was opened before the last move.
    fn since(&self, age: Duration) -> bool {
        let at_ms = self.at_ms.load(Ordering::Relaxed);
        let moved_ago = self
            .epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(at_ms));
        at_ms != 0 && age > moved_ago
    }
}

/// What a member says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Primary,
    Standby,
    /// Refused, timed out, or broken mid-answer.
    Unreachable,
}

/// Keeps `pool` on the primary among `members` until the pool is closed.
async fn follow_primary(
    pool: PgPool,
    members: Vec<PgConnectOptions>,
    mut current: usize,
    moved: Arc<Moved>,
) {
    // The probe's own session on the member in use, kept between probes.
    let mut session: Option<PgConnection> = None;
    while !pool.is_closed() {
        if probe(&members[current], &mut session).await == Member::Primary {
            tokio::time::sleep(PROBE_EVERY).await;
            continue;
        }
        session = None;
        let others = (1..members.len()).map(|step| (current + step) % members.len());
        for candidate in others {
            let mut fresh = None;
            if probe(&members[candidate], &mut fresh).await == Member::Primary {
                tracing::warn!(
                    from = current + 1,
                    to = candidate + 1,
                    "the database member in use is no longer the primary; moving to member {} of DATABASE_URLS",
                    candidate + 1
                );
                pool.set_connect_options(members[candidate].clone());
                moved.mark();
                current = candidate;
                session = fresh;
                break;
            }
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Asks a member whether it is the primary, on `session` (opened if `None`, dropped when it
/// fails), within `PROBE_TIMEOUT`.
async fn probe(member: &PgConnectOptions, session: &mut Option<PgConnection>) -> Member {
    let asked = tokio::time::timeout(PROBE_TIMEOUT, async {
        if session.is_none() {
            *session = Some(member.connect().await?);
        }
        let Some(connection) = session.as_mut() else {
            return Err(sqlx::Error::PoolClosed);
        };
        sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()")
            .fetch_one(connection)
            .await
    })
    .await;
    match asked {
        Ok(Ok(false)) => Member::Primary,
        Ok(Ok(true)) => Member::Standby,
        _ => {
            // Dropped, not closed: a paused member would hold a graceful close forever.
            *session = None;
            Member::Unreachable
        }
    }
}

/// How often the replica is asked how far behind it is.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// Connections of a process's replica pool: lists and pages, a few at a time.
const REPLICA_CONNECTIONS: u32 = 8;
/// `Replica::lag_ms` before the replica has answered, or after it stopped answering.
const LAG_UNKNOWN: u64 = u64::MAX;

/// The replica's lag: 0 on a member that is not in recovery (promoted meanwhile: current by
/// definition) or that has replayed all it received while streaming; else the time since the
/// primary committed the last transaction it replayed (an upper bound, and growing while it is
/// cut off). Seeing `pg_stat_wal_receiver`'s status takes `pg_read_all_stats` (`pg_monitor`);
/// without it a replica of an idle primary reads as lagging, and reads stay on the primary.
const LAG_QUERY: &str = "
SELECT CASE
         WHEN NOT pg_is_in_recovery() THEN 0
         WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn()
              AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN 0
         ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())
       END::float8";

/// Where the reads that may be a moment behind go: the replica while its lag is within the
/// bound, else the primary.
#[derive(Clone)]
pub struct Reads {
    primary: PgPool,
    replica: Option<Replica>,
}

#[derive(Clone)]
struct Replica {
    pool: PgPool,
    /// The last lag measured, in milliseconds; `LAG_UNKNOWN` until it answers or once it stops.
    lag_ms: Arc<AtomicU64>,
    max_lag: Duration,
}

/// The replica as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaState {
    /// `None`: it has not answered lately.
    pub lag: Option<Duration>,
    /// Whether the reads go to it now.
    pub reading: bool,
}

impl Reads {
    /// Every read on the primary.
    pub fn primary_only(primary: PgPool) -> Self {
        Self {
            primary,
            replica: None,
        }
    }

    /// `database.replica_urls` beside `primary`, each tried in turn until one answers; its lag
    /// is asked at once (for two seconds at most: a one-shot command reads where it should from
    /// its first query), then every second for as long as its pool is open.
    pub async fn from_settings(settings: &Settings, primary: PgPool) -> anyhow::Result<Self> {
        let database = &settings.database;
        if database.replica_urls.is_empty() {
            return Ok(Self::primary_only(primary));
        }
        let members = with_session_limits(database, &database.replica_urls)?;
        let pool = PgPoolOptions::new()
            .max_connections(REPLICA_CONNECTIONS.min(database.max_connections))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(members[0].clone());
        let replica = Replica {
            pool,
            lag_ms: Arc::new(AtomicU64::new(LAG_UNKNOWN)),
            max_lag: Duration::from_millis(database.replica_max_lag_ms),
        };
        replica.ask_lag().await;
        tokio::spawn(replica.clone().measure(members));
        Ok(Self {
            primary,
            replica: Some(replica),
        })
    }

    /// The primary, for what must read the latest.
    pub fn primary(&self) -> &PgPool {
        &self.primary
    }

    /// The pool for a read that may be a moment behind.
    pub fn pool(&self) -> &PgPool {
        match &self.replica {
            Some(replica) if replica.current() => &replica.pool,
            _ => &self.primary,
        }
    }

    /// The replica's state; `None` without one.
    pub fn replica(&self) -> Option<ReplicaState> {
        self.replica.as_ref().map(|replica| ReplicaState {
            lag: replica.lag(),
            reading: replica.current(),
        })
    }
}

impl Replica {
    fn lag(&self) -> Option<Duration> {
        match self.lag_ms.load(Ordering::Relaxed) {
            LAG_UNKNOWN => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Whether its lag is known and within the bound.
    fn current(&self) -> bool {
        self.lag().is_some_and(|lag| lag <= self.max_lag)
    }

    /// Asks the replica its lag every second until its pool is closed; one that does not
    /// answer has its lag unknown, and the pool moves to the next of `members`.
    async fn measure(self, members: Vec<PgConnectOptions>) {
        let mut current = 0;
        while !self.pool.is_closed() {
            tokio::time::sleep(LAG_EVERY).await;
            if self.ask_lag().await.is_none() && members.len() > 1 {
                current = (current + 1) % members.len();
                self.pool.set_connect_options(members[current].clone());
            }
        }
    }

    /// Asks the replica its lag and keeps the answer (unknown: none within `PROBE_TIMEOUT`).
    async fn ask_lag(&self) -> Option<Duration> {
        let asked = tokio::time::timeout(
            PROBE_TIMEOUT,
            sqlx::query_scalar::<_, Option<f64>>(LAG_QUERY).fetch_one(&self.pool),
        )
        .await;
        let lag = match asked {
            // No transaction replayed yet: as unknown as no answer.
            Ok(Ok(Some(secs))) => Duration::try_from_secs_f64(secs.max(0.0)).ok(),
            _ => None,
        };
        let ms = lag.map_or(LAG_UNKNOWN, |lag| {
            u64::try_from(lag.as_millis()).unwrap_or(LAG_UNKNOWN - 1)
        });
        self.lag_ms.store(ms, Ordering::Relaxed);
        if let Some(lag) = lag {
            metrics::gauge!(crate::telemetry::DATABASE_REPLICA_LAG_SECONDS).set(lag.as_secs_f64());
        }
        metrics::gauge!(crate::telemetry::DATABASE_READS_ON_REPLICA)
            .set(f64::from(u8::from(self.current())));
        lag
    }
}
