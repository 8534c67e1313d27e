//! The scenarios: each a deployment shape, a load, and the faults made while the load runs.
//! `quick` shortens every outage (CI-sized) without changing what it does. 18 to 21 run on the
//! three-node cluster with two `serve` and two `worker` processes (`make cluster-test`); 24 to 27
//! on the Patroni cluster of PostgreSQL members behind HAProxy (`make pg-cluster-test`).

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::sleep;

use crate::check::{Expected, Row, check};
use crate::deployment::{Database, Deployment, Shape, broker, cluster, database, pg_cluster};
use crate::load::{Api, Plan, Provider, Sender, Sending, Webhook, random, stripe_signature};

pub const NAMES: [&str; 27] = [
    "1 broker restart under load",
    "2 broker kill -9",
    "3 broker down 5 min",
    "4 broker SIGSTOP 30 s",
    "5 memory alarm",
    "6 worker SIGKILL mid-batch",
    "7 worker hung (SIGSTOP)",
    "8 PostgreSQL down 2 min",
    "9 PostgreSQL row locked",
    "10 duplicates x10 concurrent",
    "11 reordering",
    "12 poison messages",
    "13 oversized/malformed/slowloris/251",
    "14 bad/stale/replayed signatures",
    "15 relay SIGKILL after commit",
    "16 dlq replay SIGKILLed",
    "17 all interleaved 10 min",
    "18 cluster leader kill -9",
    "19 cluster serve's node kill -9",
    "20 cluster rolling restart",
    "21 cluster leader SIGSTOP 30 s",
    "22 connection flood",
    "23 hostile tenant",
    "24 primary kill -9 under load",
    "25 switchover under load",
    "26 replica lost",
    "27 primary partitioned (paused)",
];

pub struct Run<'a> {
    pub bin: &'a Path,
    pub quick: bool,
}

/// One fault, made on a running deployment while the load goes on; the outages heal themselves
/// after their duration.
#[derive(Debug, Clone)]
enum Fault {
    BrokerRestart,
    BrokerKilled,
    BrokerDown(Duration),
    BrokerFrozen(Duration),
    MemoryAlarm(Duration),
    /// `kill -9` of a worker, restarted after the pause.
    WorkerKilled(usize, Duration),
    WorkerFrozen(usize, Duration),
    DatabaseDown(Duration),
    InvoicesLocked(Vec<String>, Duration),
    Poison(String),
    BadSignatures,
    /// Oversized and malformed requests while `connections` slowloris clients trickle bytes.
    BadRequests {
        connections: usize,
        trickle_secs: u64,
    },
    /// `kill -9` of the cluster node leading the work queue; it comes back after the pause.
    LeaderKilled(Duration),
    /// `kill -9` of the cluster node the first `serve` is connected to.
    ServeNodeKilled(Duration),
    /// Each node's RabbitMQ restarted in turn, the next once the last is back and a pause on.
    RollingRestart(Duration),
    /// SIGSTOP of the node leading the work queue, SIGCONT after the duration.
    LeaderFrozen(Duration),
    /// `connections` clients that hold connections without sending a request (silent, half an
    /// HTTP/2 preface, trickled headers, idle HTTP/2), each opening another as soon as settle
    /// closes one, for the duration.
    ConnectionFlood {
        connections: usize,
        lasting: Duration,
    },
    /// `kill -9` of the PostgreSQL cluster's primary member (Patroni and PostgreSQL, as a host
    /// that dies); it comes back, as a replica, after the pause.
    PrimaryKilled(Duration),
    /// A planned switchover to the synchronous standby (`patronictl switchover`).
    Switchover,
    /// `kill -9` of the synchronous standby's member, back after the pause.
    ReplicaKilled(Duration),
    /// SIGSTOP of the primary member's Patroni and PostgreSQL, as a network partition would cut
    /// it off; SIGCONT after the duration, when Patroni demotes it.
    PrimaryPaused(Duration),
}

impl Fault {
    /// How long the fault lasts, for those that last.
    fn duration(&self) -> Option<Duration> {
        match self {
            Self::BrokerDown(d)
            | Self::BrokerFrozen(d)
            | Self::MemoryAlarm(d)
            | Self::WorkerKilled(_, d)
            | Self::WorkerFrozen(_, d)
            | Self::DatabaseDown(d)
            | Self::InvoicesLocked(_, d)
            | Self::LeaderFrozen(d)
            | Self::PrimaryKilled(d)
            | Self::ReplicaKilled(d)
            | Self::PrimaryPaused(d) => Some(*d),
            Self::ConnectionFlood { lasting, .. } => Some(*lasting),
            _ => None,
        }
    }

    async fn make(self, d: &mut Deployment, expected: &mut Expected) -> anyhow::Result<()> {
        match self {
            Self::BrokerRestart => {
                broker::stop_app().await?;
                broker::start_app().await?;
            }
            Self::BrokerKilled => {
                broker::kill().await?;
                sleep(Duration::from_secs(3)).await;
                broker::start_node().await?;
            }
            Self::BrokerDown(down) => {
                broker::stop_app().await?;
                sleep(down).await;
                broker::start_app().await?;
            }
            Self::BrokerFrozen(frozen) => {
                broker::freeze().await?;
                sleep(frozen).await;
                broker::thaw().await?;
            }
            Self::MemoryAlarm(alarm) => {
                broker::raise_memory_alarm().await?;
                sleep(alarm).await;
                broker::clear_memory_alarm().await?;
            }
            Self::WorkerKilled(worker, down) => {
                d.workers[worker].kill().await?;
                sleep(down).await;
                d.restart_worker(worker).await?;
            }
            Self::WorkerFrozen(worker, hung) => {
                d.workers[worker].freeze().await?;
                sleep(hung).await;
                d.workers[worker].thaw().await?;
            }
            Self::DatabaseDown(down) => {
                database::stop().await?;
                sleep(down).await;
                database::start().await?;
            }
            Self::InvoicesLocked(invoices, held) => lock_invoices(d, &invoices, held).await?,
            Self::Poison(tag) => expected.dead_letters += poison(d, &tag).await?,
            Self::BadSignatures => expected.refused.extend(bad_signatures(d).await?),
            Self::BadRequests {
                connections,
                trickle_secs,
            } => {
                let slowloris = tokio::spawn(slowloris(d.url(""), connections, trickle_secs));
                expected.refused.extend(bad_requests(d).await?);
                slowloris.await??;
            }
            Self::LeaderKilled(down) => {
                let leader = cluster::leader(&work_queue(d)).await?;
                cluster::kill(leader).await?;
                sleep(down).await;
                cluster::start().await?;
            }
            Self::ServeNodeKilled(down) => {
                let node = cluster::node_at(&d.broker_node_of_serve(0).await?)?;
                cluster::kill(node).await?;
                sleep(down).await;
                cluster::start().await?;
            }
            Self::RollingRestart(between) => {
                for node in cluster::NODES {
                    cluster::restart_app(node).await?;
                    sleep(between).await;
                }
            }
            Self::LeaderFrozen(frozen) => {
                let leader = cluster::leader(&work_queue(d)).await?;
                cluster::freeze(leader).await?;
                sleep(frozen).await;
                cluster::thaw(leader).await?;
            }
            Self::ConnectionFlood {
                connections,
                lasting,
            } => connection_flood(d.url(""), connections, lasting).await?,
            Self::PrimaryKilled(down) => {
                primary_fault(d, expected, "kill", "restart", down).await?
            }
            Self::Switchover => {
                let primary = pg_cluster::primary().await?;
                pg_fault(d, expected, &["switchover"], Some(primary), None).await?;
            }
            Self::ReplicaKilled(down) => {
                let standby = pg_cluster::sync_standby().await?;
                let heal = ["restart", standby];
                pg_fault(d, expected, &["kill", standby], None, Some((down, heal))).await?;
            }
            Self::PrimaryPaused(paused) => {
                primary_fault(d, expected, "pause", "resume", paused).await?;
            }
        }
        Ok(())
    }
}

/// `pg-ctl FAULT` on the primary, and `pg-ctl HEAL` on that member after `lasting`.
async fn primary_fault(
    d: &Deployment,
    expected: &mut Expected,
    fault: &str,
    heal: &str,
    lasting: Duration,
) -> anyhow::Result<()> {
    let primary = pg_cluster::primary().await?;
    let heal = Some((lasting, [heal, primary]));
    pg_fault(d, expected, &[fault, primary], Some(primary), heal).await
}

/// `pg-ctl FAULT` on the PostgreSQL cluster, timed until settle commits again (and another
/// member than `primary` leads, when the fault is on the primary); then, after the pause,
/// `pg-ctl HEAL`, and a wait until every member runs again.
async fn pg_fault(
    d: &Deployment,
    expected: &mut Expected,
    fault: &[&str],
    primary: Option<&str>,
    heal: Option<(Duration, [&str; 2])>,
) -> anyhow::Result<()> {
    let failover = Failover::begin(d).await?;
    pg_cluster::ctl(fault).await?;
    expected.timings.push(failover.recovered(d, primary).await?);
    if let Some((pause, heal)) = heal {
        sleep(pause).await;
        pg_cluster::ctl(&heal).await?;
    }
    pg_cluster::wait_whole().await
}

/// A fault on the PostgreSQL cluster, timed from its start: how long until another member
/// leads, until the cluster acknowledges a commit again, and until settle has committed since.
struct Failover {
    began: tokio::time::Instant,
    /// The database's clock as the fault began.
    at: chrono::DateTime<chrono::Utc>,
}

/// How long each probe of the checker may wait: a commit held for a synchronous standby, or a
/// connection to a paused member, waits for nothing longer.
const PROBE: Duration = Duration::from_secs(1);

impl Failover {
    async fn begin(d: &Deployment) -> anyhow::Result<Self> {
        let db = d.checker()?;
        let at = sqlx::query_scalar("SELECT now()").fetch_one(&db).await?;
        db.close().await;
        Ok(Self {
            began: tokio::time::Instant::now(),
            at,
        })
    }

    /// Waits, for two minutes at most, until a member other than `former` leads (when the fault
    /// was on the primary), a commit of the checker's own is acknowledged (with synchronous
    /// replication, by a standby too), and an event a worker began after the fault is there.
    async fn recovered(self, d: &Deployment, former: Option<&str>) -> anyhow::Result<String> {
        let deadline = self.began + Duration::from_secs(120);
        let (mut promoted, mut acknowledged) = (None, None);
        let db = d.checker()?;
        let timed = |result: Result<sqlx::Result<i64>, _>| result.ok().and_then(Result::ok);
        loop {
            if promoted.is_none() {
                let led = match former {
                    Some(former) => pg_cluster::promoted_other_than(former).await,
                    None => true,
                };
                promoted = led.then(|| self.began.elapsed());
            }
            if promoted.is_some() && acknowledged.is_none() {
                // A transaction with an id writes a commit record, which waits for the standby.
                let commit = async {
                    let mut tx = db.begin().await?;
                    sqlx::query("SELECT txid_current()")
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await
                };
                if let Ok(Ok(())) = tokio::time::timeout(PROBE, commit).await {
                    acknowledged = Some(self.began.elapsed());
                }
            }
            if acknowledged.is_some() {
                let settled = timed(
                    tokio::time::timeout(
                        PROBE,
                        sqlx::query_scalar(
                            "SELECT count(*) FROM webhook_events WHERE processed_at > $1",
                        )
                        .bind(self.at)
                        .fetch_one(&db),
                    )
                    .await,
                );
                if settled.unwrap_or(0) > 0 {
                    db.close().await;
                    return Ok(self.timings(former, promoted, acknowledged));
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "settle was not committing again 2 min after the fault"
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    fn timings(
        &self,
        former: Option<&str>,
        promoted: Option<Duration>,
        acknowledged: Option<Duration>,
    ) -> String {
        let secs = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64();
        let led = match former {
            Some(_) => format!("another primary after {:.1} s; ", secs(promoted)),
            None => String::new(),
        };
        format!(
            "{led}commits acknowledged again after {:.1} s; settle committing again after {:.1} s",
            secs(acknowledged),
            self.began.elapsed().as_secs_f64()
        )
    }
}

fn work_queue(deployment: &Deployment) -> String {
    format!("{}.reconcile", deployment.prefix)
}

impl Run<'_> {
    /// `full` seconds normally, `quick` in CI.
    fn pick(&self, full: u64, quick: u64) -> Duration {
        Duration::from_secs(if self.quick { quick } else { full })
    }

    pub async fn scenario(&self, number: usize) -> anyhow::Result<Row> {
        let name = NAMES[number - 1];
        let tag = format!("s{number}");
        let (one, two) = (Shape::workers(1), Shape::workers(2));
        let invoices = if self.quick { 60 } else { 200 };
        let plan = || Plan::new(&tag, invoices, 1);
        let sending = Sending {
            rate: if self.quick { 40.0 } else { 25.0 },
            ..Sending::default()
        };
        // Faults start a few seconds into the load.
        let after = |secs: u64| self.pick(secs, secs.min(2));
        let single = |fault: Fault| vec![(after(5), fault)];
        // Most scenarios: one worker, the standard load, one fault five seconds in.
        let alone = |fault: Fault| (one.clone(), plan(), sending, single(fault));
        let (shape, plan, sending, faults) = match number {
            1 => alone(Fault::BrokerRestart),
            2 => alone(Fault::BrokerKilled),
            3 => alone(Fault::BrokerDown(self.pick(300, 20))),
            4 => alone(Fault::BrokerFrozen(self.pick(30, 10))),
            5 => alone(Fault::MemoryAlarm(self.pick(20, 8))),
            6 => {
                let down = Duration::from_secs(2);
                let faults = vec![
                    (after(4), Fault::WorkerKilled(0, down)),
                    (after(4), Fault::WorkerKilled(1, down)),
                ];
                (two.clone(), plan(), sending, faults)
            }
            7 => {
                let fault = Fault::WorkerFrozen(0, self.pick(30, 10));
                (two.clone(), plan(), sending, single(fault))
            }
            8 => alone(Fault::DatabaseDown(self.pick(120, 15))),
            9 => {
                let locked = (0..10).map(|i| format!("inv_{tag}_{i}")).collect();
                let fault = Fault::InvoicesLocked(locked, self.pick(15, 8));
                (one.clone(), plan(), sending, single(fault))
            }
            10 => {
                let storm = Sending {
                    rate: 10.0,
                    copies: 10,
                    ..sending
                };
                let plan = Plan::new(&tag, invoices / 2, 1);
                (one.clone(), plan, storm, Vec::new())
            }
            11 => {
                let mut plan = plan();
                // Later events first: `paid_out` before `confirmed`, each Stripe fan-out backwards.
                plan.webhooks.sort_by(|a, b| b.event_ids.cmp(&a.event_ids));
                let reordered = Sending {
                    duplicates: 0.3,
                    ..sending
                };
                (two.clone(), plan, reordered, Vec::new())
            }
            12 => alone(Fault::Poison(tag.clone())),
            13 => {
                let (connections, trickle_secs) = if self.quick { (300, 8) } else { (3000, 20) };
                // GoCardless events 250 to a webhook, the most GoCardless sends (a batch of 251,
                // one over, is among the bad requests).
                let plan = Plan::new(&tag, if self.quick { 120 } else { 520 }, 250);
                let fault = Fault::BadRequests {
                    connections,
                    trickle_secs,
                };
                (one.clone(), plan, sending, vec![(after(2), fault)])
            }
            14 => alone(Fault::BadSignatures),
            15 => {
                // Killed again and again under load: some kills land between a commit and the
                // relay's publish of what it wrote.
                let faults = (0..6)
                    .map(|kill| {
                        (
                            Duration::from_millis(1500),
                            Fault::WorkerKilled(kill % 2, Duration::ZERO),
                        )
                    })
                    .collect();
                (two.clone(), plan(), sending, faults)
            }
            16 => return self.dlq_replay_killed(name, &tag, invoices).await,
            17 => return self.interleaved(name, &tag).await,
            18..=21 => {
                let fault = match number {
                    18 => Fault::LeaderKilled(self.pick(10, 3)),
                    19 => Fault::ServeNodeKilled(self.pick(10, 3)),
                    20 => Fault::RollingRestart(self.pick(10, 3)),
                    _ => Fault::LeaderFrozen(self.pick(30, 10)),
                };
                (Shape::cluster(), plan(), sending, single(fault))
            }
            22 => {
                // The connection limit held by the flood from the start: every provider request
                // needs a slot some squatter holds.
                let connections = if self.quick { 200 } else { 1000 };
                let shape = Shape {
                    env: vec![("SETTLE__HTTP__MAX_CONNECTIONS", connections.to_string())],
                    ..Shape::workers(1)
                };
                let fault = Fault::ConnectionFlood {
                    connections,
                    lasting: self.pick(60, 15),
                };
                (shape, plan(), sending, vec![(Duration::ZERO, fault)])
            }
            23 => return self.hostile_tenant(name, &tag).await,
            24..=27 => {
                let fault = match number {
                    24 => Fault::PrimaryKilled(self.pick(20, 5)),
                    25 => Fault::Switchover,
                    26 => Fault::ReplicaKilled(self.pick(20, 5)),
                    _ => Fault::PrimaryPaused(self.pick(30, 15)),
                };
                let database = match std::env::var("SETTLE_CHAOS_DATABASE").as_deref() {
                    Ok("members") => Database::Members,
                    _ => Database::Proxied,
                };
                (Shape::pg_cluster(database), plan(), sending, single(fault))
            }
            _ => anyhow::bail!("no scenario {number}"),
        };
        self.standard(name, &shape, plan, sending, faults).await
    }

    /// Start, register, load while the `faults` are made one after another (each after its
    /// pause), then check.
    async fn standard(
        &self,
        name: &str,
        shape: &Shape,
        plan: Plan,
        sending: Sending,
        faults: Vec<(Duration, Fault)>,
    ) -> anyhow::Result<Row> {
        let mut deployment = Deployment::start(&slug(name), shape, self.bin).await?;
        Api::new(&deployment).register(&plan).await?;
        let sender = std::sync::Arc::new(Sender::new(&deployment));
        let load = tokio::spawn(sender.send(plan.webhooks.clone(), sending));
        let mut expected = Expected::default();
        for (pause, fault) in faults {
            sleep(pause).await;
            fault.make(&mut deployment, &mut expected).await?;
        }
        let sent = load.await?;
        let healed = tokio::time::Instant::now();
        self.finish(name, deployment, &plan, &sent, &expected, healed)
            .await
    }

    pub(crate) async fn finish(
        &self,
        name: &str,
        deployment: Deployment,
        plan: &Plan,
        sent: &crate::load::Sent,
        expected: &Expected,
        healed: tokio::time::Instant,
    ) -> anyhow::Result<Row> {
        deployment.wait_ready().await?;
        let deadline = Duration::from_secs(240);
        let mut row = check(&deployment, plan, sent, expected, healed, deadline).await?;
        row.scenario = name.to_owned();
        if !row.passed() {
            row.notes
                .push(format!("logs: {}", deployment.dir.display()));
        }
        deployment.stop(row.passed()).await?;
        Ok(row)
    }

    /// Payments for invoices not registered yet, with one attempt allowed: every event is
    /// dead-lettered at once. The invoices are then registered and `settle dlq replay --all`
    /// is killed mid-run, then run again.
    async fn dlq_replay_killed(
        &self,
        name: &str,
        tag: &str,
        invoices: usize,
    ) -> anyhow::Result<Row> {
        let shape = Shape {
            env: vec![("SETTLE__WORKER__MAX_ATTEMPTS", "1".to_owned())],
            ..Shape::workers(1)
        };
        let deployment = Deployment::start(&slug(name), &shape, self.bin).await?;
        let plan = Plan::new(tag, invoices, 1);
        let sending = Sending {
            rate: 60.0,
            // Each delivery of an unknown invoice's event is a dead letter of its own.
            duplicates: 0.0,
            ..Sending::default()
        };
        let sent = std::sync::Arc::new(Sender::new(&deployment))
            .send(plan.webhooks.clone(), sending)
            .await;
        // Every event names an invoice nobody registered (a GoCardless one through the
        // fixture's `resource_metadata`): each is dead-lettered.
        let events = plan.event_ids().len();
        let db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy(&deployment.database_url)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let letters: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
                .fetch_one(&db)
                .await?;
            if usize::try_from(letters)? >= events || tokio::time::Instant::now() > deadline {
                break;
            }
            sleep(Duration::from_millis(300)).await;
        }
        Api::new(&deployment).register(&plan).await?;
        let mut replay = deployment.settle_command(&["dlq", "replay", "--all"])?;
        sleep(Duration::from_millis(400)).await;
        replay.kill().await?;
        let status = deployment
            .settle_command(&["dlq", "replay", "--all"])?
            .wait()
            .await?;
        anyhow::ensure!(
            status.success() || status.code() == Some(3),
            "dlq replay: {status}"
        );
        let healed = tokio::time::Instant::now();
        let expected = Expected {
            dead_letters: events,
            ..Expected::default()
        };
        self.finish(name, deployment, &plan, &sent, &expected, healed)
            .await
    }

    /// Every kind of fault, one after another at random, under a steady load for ten minutes.
    async fn interleaved(&self, name: &str, tag: &str) -> anyhow::Result<Row> {
        let duration = self.pick(600, 60);
        let rate = 8.0;
        // About 2.2 webhooks per invoice: enough invoices to keep the load going throughout.
        let invoices = (duration.as_secs_f64() * rate / 2.2) as usize;
        let short = Duration::from_secs(8);
        let pause = self.pick(15, 3);
        let mut faults = Vec::new();
        let mut planned = Duration::ZERO;
        while planned + Duration::from_secs(20) < duration {
            let round = faults.len();
            let locked = (0..5)
                .map(|_| format!("inv_{tag}_{}", random(invoices)))
                .collect();
            let kinds = [
                Fault::BrokerRestart,
                Fault::BrokerKilled,
                Fault::BrokerFrozen(short),
                Fault::MemoryAlarm(short),
                Fault::WorkerKilled(random(2), Duration::ZERO),
                Fault::WorkerFrozen(random(2), short),
                Fault::DatabaseDown(Duration::from_secs(10)),
                Fault::InvoicesLocked(locked, Duration::from_secs(7)),
                Fault::Poison(format!("{tag}r{round}")),
                Fault::BadSignatures,
            ];
            // The outages last their duration; the rest take a few seconds.
            let lasts = kinds
                .iter()
                .map(|f| f.duration().unwrap_or(Duration::from_secs(4)));
            let pick = random(kinds.len());
            planned += pause + lasts.clone().nth(pick).unwrap_or_default();
            faults.push((pause, kinds[pick].clone()));
        }
        let plan = Plan::new(tag, invoices, 1);
        let sending = Sending {
            rate,
            ..Sending::default()
        };
        self.standard(name, &Shape::workers(2), plan, sending, faults)
            .await
    }
}

pub fn slug(name: &str) -> String {
    name.split_whitespace().next().unwrap_or("x").to_owned()
}

/// Holds `invoices`' rows locked, as a stuck session would, for `held`.
async fn lock_invoices(
    deployment: &Deployment,
    invoices: &[String],
    held: Duration,
) -> anyhow::Result<()> {
    let mut session =
        <sqlx::PgConnection as sqlx::Connection>::connect(&deployment.database_url).await?;
    let mut tx = sqlx::Connection::begin(&mut session).await?;
    sqlx::query("SELECT id FROM invoices WHERE id = ANY($1) FOR UPDATE")
        .bind(invoices)
        .fetch_all(&mut *tx)
        .await?;
    sleep(held).await;
    tx.rollback().await?;
    Ok(())
}

/// Messages on the work queue that no receiver would ever queue: an unparseable body with the
/// receiver's headers, a message with no headers at all, and a deeply nested body. Each must be
/// dead-lettered alone, the healthy ones beside them untouched. Returns how many.
async fn poison(deployment: &Deployment, tag: &str) -> anyhow::Result<usize> {
    use lapin::BasicProperties;
    use lapin::options::BasicPublishOptions;
    use lapin::types::{AMQPValue, FieldTable};
    let connection = deployment.amqp().await?;
    let channel = connection.create_channel().await?;
    // Confirms, so each publish below returns once the broker has the message: without them a
    // publish returns once queued in the client, and closing the connection right after could
    // cut the last (200 KB) message short.
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    let queue = format!("{}.reconcile", deployment.prefix);
    let headers = |id: &str| {
        let mut table = FieldTable::default();
        for (name, value) in [
            ("provider", "stripe"),
            ("event-id", id),
            ("event-type", "payment_intent.succeeded"),
        ] {
            table.insert(name.into(), AMQPValue::LongString(value.into()));
        }
        table
    };
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let messages: Vec<(Vec<u8>, Option<FieldTable>)> = vec![
        (
            b"{\"id\": \"evt_poison\", not json".to_vec(),
            Some(headers(&format!("evt_{tag}_garbage"))),
        ),
        (b"{}".to_vec(), None),
        (
            nested.into_bytes(),
            Some(headers(&format!("evt_{tag}_nested"))),
        ),
    ];
    let count = messages.len();
    for (n, (body, headers)) in messages.into_iter().enumerate() {
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(format!("stripe:poison-{tag}-{n}").into());
        if let Some(headers) = headers {
            properties = properties.with_headers(headers);
        }
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?
            .await?
            .is_ack()
            .then_some(())
            .ok_or_else(|| anyhow::anyhow!("the broker refused poison message {n}"))?;
    }
    let _ = connection.close(200, "poisoned".into()).await;
    Ok(count)
}

/// Requests the receiver must refuse: a body over the limit (413), malformed JSON (400) and a
/// GoCardless batch of 251 events, one over GoCardless's maximum (400).
/// Returns the event ids they carried.
async fn bad_requests(deployment: &Deployment) -> anyhow::Result<Vec<String>> {
    let sender = Sender::new(deployment);
    let padding = "x".repeat(1_100_000);
    let oversized = Webhook {
        provider: Provider::Stripe,
        body: serde_json::to_vec(&serde_json::json!({
            "id": "evt_oversized", "type": "payment_intent.succeeded", "padding": padding,
        }))?,
        event_ids: vec!["evt_oversized".into()],
        connection: None,
    };
    let malformed = Webhook {
        provider: Provider::Stripe,
        body: b"{\"id\": \"evt_malformed\", \"type\": ".to_vec(),
        event_ids: vec!["evt_malformed".into()],
        connection: None,
    };
    let over_batch: Vec<String> = (0..=settle::providers::gocardless::MAX_BATCH)
        .map(|n| format!("EVOVERBATCH{n}"))
        .collect();
    let too_many = Webhook {
        provider: Provider::GoCardless,
        body: crate::fixtures::gocardless_batch(
            over_batch
                .iter()
                .map(|id| crate::fixtures::GoCardlessEvent::payment(id, "confirmed", "PMNOBODY")),
        ),
        event_ids: over_batch.clone(),
        connection: None,
    };
    for (webhook, expected) in [(&oversized, 413), (&malformed, 400), (&too_many, 400)] {
        let status = sender.post(webhook).await;
        // settle answers 413 from the Content-Length, without reading the body, and closes: a
        // client still sending it may see the connection closed before it reads the answer (0).
        let refused = status == expected || (expected == 413 && status == 0);
        anyhow::ensure!(refused, "{:?}: {status}, not {expected}", webhook.event_ids);
    }
    let mut refused = vec!["evt_oversized".to_owned(), "evt_malformed".to_owned()];
    refused.extend(over_batch);
    Ok(refused)
}

/// `connections` clients that send a request line and then a header byte every second: each
/// holds a connection until the header read timeout cuts it off.
async fn slowloris(base: String, connections: usize, seconds: u64) -> anyhow::Result<()> {
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let addr = addr.clone();
        tasks.spawn(async move {
            let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
                return;
            };
            if stream
                .write_all(b"POST /webhooks/stripe HTTP/1.1\r\nHost: settle\r\n")
                .await
                .is_err()
            {
                return;
            }
            for _ in 0..seconds {
                sleep(Duration::from_secs(1)).await;
                if stream.write_all(b"X").await.is_err() {
                    return;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// What each flood client sends after connecting, and then nothing more: silent, half of the
/// HTTP/2 preface, an HTTP/1 head that never ends, a whole HTTP/2 preface and SETTINGS (an idle
/// h2c connection).
const SQUATTERS: [&[u8]; 4] = [
    b"",
    b"PRI * HTTP/2.0\r\n",
    b"POST /webhooks/stripe HTTP/1.1\r\nHost: settle\r\nContent-Type: application/json\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
];

/// `connections` clients, a quarter of each kind in `SQUATTERS`, each holding a connection until
/// settle closes it and then opening the next, until `lasting` is over.
async fn connection_flood(
    base: String,
    connections: usize,
    lasting: Duration,
) -> anyhow::Result<()> {
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let until = tokio::time::Instant::now() + lasting;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..connections {
        let addr = addr.clone();
        tasks.spawn(async move {
            let opening = SQUATTERS[client % SQUATTERS.len()];
            while tokio::time::Instant::now() < until {
                if let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await
                    && stream.write_all(opening).await.is_ok()
                {
                    // Held until settle closes it (or answers 503 and closes), or the end.
                    let mut sink = Vec::new();
                    let closed = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink);
                    let _ = tokio::time::timeout_at(until, closed).await;
                }
                // A short backoff before the next connection, so a refusing settle is not spun on.
                sleep(Duration::from_millis(100)).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Signed wrongly: another secret (Stripe 400, GoCardless 498), a timestamp an hour old, and a
/// valid signature of one body sent with another (a replay). Returns their event ids.
async fn bad_signatures(deployment: &Deployment) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let event = |suffix: &str| {
        crate::fixtures::StripeEvent::new("payment_intent.succeeded", &format!("evt_{suffix}_{id}"))
            .created(chrono::Utc::now().timestamp())
            .to_bytes()
    };
    let now = chrono::Utc::now().timestamp();
    let (wrong, stale, replayed, original) = (
        event("wrongsecret"),
        event("stale"),
        event("replayed"),
        event("original"),
    );
    let stripe = [
        (
            wrong.clone(),
            settle::providers::stripe::sign(&"whsec_not_ours".to_owned().into(), now, &wrong),
        ),
        (stale.clone(), stripe_signature(&stale, now - 3600)),
        (replayed.clone(), stripe_signature(&original, now)),
    ];
    for (body, signature) in stripe {
        let status = http
            .post(deployment.url("/webhooks/stripe"))
            .header("Stripe-Signature", signature)
            .body(body)
            .send()
            .await?
            .status();
        anyhow::ensure!(status == 400, "a bad Stripe signature got {status}");
    }
    let gocardless =
        crate::fixtures::gocardless_batch([crate::fixtures::GoCardlessEvent::payment(
            &format!("EVBADSIG{id}"),
            "confirmed",
            "PMNOBODY",
        )]);
    let status = http
        .post(deployment.url("/webhooks/gocardless"))
        .header(
            "Webhook-Signature",
            settle::providers::gocardless::sign(&"not-ours".to_owned().into(), &gocardless),
        )
        .body(gocardless)
        .send()
        .await?
        .status();
    anyhow::ensure!(status == 498, "a bad GoCardless signature got {status}");
    Ok(["wrongsecret", "stale", "replayed"]
        .iter()
        .map(|s| format!("evt_{s}_{id}"))
        .chain([format!("EVBADSIG{id}")])
        .collect())
}
