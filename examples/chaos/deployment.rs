//! One scenario's settle: its own database and queue prefix on the chaos broker node (or on the
//! three-node cluster), an SMTP sink, one or two `settle serve` and `settle worker` processes,
//! and the faults the scenarios inject (processes killed or frozen, the broker restarted,
//! killed, frozen or alarmed, a cluster node killed, paused or restarted, PostgreSQL stopped, an
//! invoice row locked).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::check::Subscriber;

pub const STRIPE_SECRET: &str = "whsec_chaos_suite";
pub const GOCARDLESS_SECRET: &str = "gc_chaos_suite";
pub const API_KEY_ID: &str = "chaos";
pub const API_SECRET: &str = "chaos-secret";
pub const BUSINESS_EMAIL: &str = "billing-team@business.example";
/// The second RabbitMQ node of `scripts/services.sh start --chaos`: the one faults are made on.
pub const CHAOS_NODE: &str = "settle-chaos@localhost";
/// Short retry tiers, so a scenario drains in seconds.
const RETRY_DELAYS_MS: [u64; 3] = [500, 2000, 5000];

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn services(args: &[&str]) -> Command {
    let mut command = Command::new(root().join("scripts/services.sh"));
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Runs `scripts/services.sh ARGS` to completion.
pub async fn services_sh(args: &[&str]) -> anyhow::Result<()> {
    let output = services(args).output().await?;
    if !output.status.success() {
        bail!(
            "scripts/services.sh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The PostgreSQL settle runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    /// The one server of `scripts/services.sh` (`DATABASE_URL`).
    Single,
    /// The Patroni cluster of `scripts/pg-cluster.sh`, through HAProxy's primary port.
    Proxied,
    /// The Patroni cluster's members, each named (`DATABASE_URLS`): settle finds the primary.
    Members,
}

/// What differs between scenarios in how settle runs.
#[derive(Debug, Clone)]
pub struct Shape {
    pub serves: usize,
    pub workers: usize,
    /// On the three-node cluster (`AMQP_URLS`), not the chaos node.
    pub cluster: bool,
    pub database: Database,
    /// `SETTLE__…` overrides.
    pub env: Vec<(&'static str, String)>,
}

impl Shape {
    pub fn workers(workers: usize) -> Self {
        Self {
            serves: 1,
            workers,
            cluster: false,
            database: Database::Single,
            env: Vec::new(),
        }
    }

    /// One `serve` and two `worker` processes on the Patroni cluster, reached as `database`
    /// says. One attempt per event: an event held through a failover must spend none (a second
    /// attempt would be a dead letter, which the check counts).
    pub fn pg_cluster(database: Database) -> Self {
        Self {
            database,
            env: vec![("SETTLE__WORKER__MAX_ATTEMPTS", "1".to_owned())],
            ..Self::workers(2)
        }
    }

    /// Two `serve` and two `worker` processes on the cluster.
    pub fn cluster() -> Self {
        Self {
            serves: 2,
            workers: 2,
            cluster: true,
            database: Database::Single,
            env: Vec::new(),
        }
    }
}

/// A settle process of the deployment.
pub struct Process {
    role: &'static str,
    port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    async fn start(&mut self, bin: &Path) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(bin)
            .arg(self.role)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SETTLE_HTTP_ADDR", format!("127.0.0.1:{}", self.port))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting settle {}", self.role))?;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> Option<i32> {
        self.child
            .as_ref()
            .and_then(Child::id)
            .and_then(|pid| i32::try_from(pid).ok())
    }

    async fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("the process is not running")?;
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .await?;
        if !status.success() {
            bail!("kill -{signal} {pid} failed");
        }
        Ok(())
    }

    /// `kill -9`, and waits for the process to be gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.signal("KILL").await?;
        if let Some(mut child) = self.child.take() {
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGSTOP: the process keeps its sockets and its deliveries, and does nothing.
    pub async fn freeze(&self) -> anyhow::Result<()> {
        self.signal("STOP").await
    }

    pub async fn thaw(&self) -> anyhow::Result<()> {
        self.signal("CONT").await
    }

    /// SIGTERM, and waits for the graceful exit.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        if self.child.is_none() {
            return Ok(());
        }
        self.signal("TERM").await?;
        if let Some(mut child) = self.child.take()
            && tokio::time::timeout(Duration::from_secs(60), child.wait())
                .await
                .is_err()
        {
            child.kill().await?;
        }
        Ok(())
    }
}

pub struct Deployment {
    pub name: String,
    pub prefix: String,
    pub database_url: String,
    /// The server's maintenance database, where the scenario's database is created and dropped.
    admin_url: String,
    /// The chaos node's URL, or each cluster node's.
    pub amqp_urls: Vec<String>,
    pub dir: PathBuf,
    bin: PathBuf,
    smtp: Child,
    mail_dir: PathBuf,
    pub serves: Vec<Process>,
    pub workers: Vec<Process>,
    pub subscriber: Subscriber,
    /// `AMQP_URLS` of operators' commands (`settle_command`).
    ops_amqp_urls: String,
}

/// `urls` as `user` of `deploy/rabbitmq-users.sh`, on the cluster, where `scripts/services.sh`
/// created the roles' users; the single chaos node keeps its one user.
fn urls_as(shape: &Shape, urls: &[String], user: &str) -> anyhow::Result<String> {
    if !shape.cluster {
        return Ok(urls.join(","));
    }
    let password = std::env::var("SETTLE_TEST_AMQP_ROLE_PASSWORD")
        .context("SETTLE_TEST_AMQP_ROLE_PASSWORD (scripts/services.sh env)")?;
    urls.iter()
        .map(|url| {
            let (_, node) = url.split_once('@').context("an AMQP URL with user info")?;
            Ok(format!("amqp://{user}:{password}@{node}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(|urls| urls.join(","))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Deployment {
    pub async fn start(name: &str, shape: &Shape, bin: &Path) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("chaos-{}-{}", name, &id[..8]);
        let database = format!("chaos_{}", &id[..16]);
        let base = shape.database.admin_url()?;
        let (server, _) = base
            .rsplit_once('/')
            .context("DATABASE_URL names a database")?;
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&base).await?;
        sqlx::query(&format!(r#"CREATE DATABASE "{database}""#))
            .execute(&mut admin)
            .await?;
        let database_url = format!("{server}/{database}");
        let amqp_urls: Vec<String> = if shape.cluster {
            std::env::var("SETTLE_TEST_CLUSTER_AMQP_URLS")
                .context("SETTLE_TEST_CLUSTER_AMQP_URLS (scripts/services.sh env)")?
                .split(',')
                .map(str::to_owned)
                .collect()
        } else {
            vec![
                std::env::var("SETTLE_TEST_CHAOS_AMQP_URL")
                    .context("SETTLE_TEST_CHAOS_AMQP_URL (scripts/services.sh env)")?,
            ]
        };
        let dir = root().join(".local/chaos").join(&prefix);
        let mail_dir = dir.join("mail");
        std::fs::create_dir_all(&mail_dir)?;

        let smtp_port = free_port()?;
        let smtp = Command::new("/usr/bin/python3")
            .arg(root().join("scripts/smtp_sink.py"))
            .args(["--port", &smtp_port.to_string(), "--dir"])
            .arg(&mail_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("python3 with aiosmtpd (scripts/services.sh installs it)")?;

        let mut env: Vec<(String, String)> = [
            (
                "SETTLE_CONFIG_DIR",
                root().join("config").display().to_string(),
            ),
            ("SETTLE_ENV", "local".to_owned()),
            ("DATABASE_URL", database_url.clone()),
            ("AMQP_URLS", amqp_urls.join(",")),
            ("SETTLE_QUEUE_PREFIX", prefix.clone()),
            ("STRIPE_WEBHOOK_SECRETS", STRIPE_SECRET.to_owned()),
            ("GOCARDLESS_WEBHOOK_SECRETS", GOCARDLESS_SECRET.to_owned()),
            (
                "SETTLE_API_CREDENTIALS",
                format!("{API_KEY_ID}:{API_SECRET}"),
            ),
            ("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}")),
            (
                "SETTLE__NOTIFICATIONS__BUSINESS_EMAIL",
                BUSINESS_EMAIL.to_owned(),
            ),
            ("SETTLE__NOTIFICATIONS__POLL_MS", "200".to_owned()),
            ("SETTLE__NOTIFICATIONS__MAX_BACKOFF_SECS", "2".to_owned()),
            ("SETTLE__WORKER__OUTBOX_POLL_MS", "200".to_owned()),
            (
                "SETTLE__WORKER__RETRY_DELAYS_MS",
                RETRY_DELAYS_MS.map(|ms| ms.to_string()).join(","),
            ),
            ("SETTLE__WORKER__MAX_ATTEMPTS", "10".to_owned()),
            ("SETTLE__AMQP__RECONNECT_DELAY_MS", "300".to_owned()),
            ("SETTLE__TELEMETRY__LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let Some(members) = shape.database.member_urls(&database)? {
            env.push(("DATABASE_URLS".to_owned(), members));
        }
        env.extend(shape.env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));

        // On the cluster each role is its own least-privilege broker user: the topology is
        // declared once as settle-admin, and serve, worker and ops may then do their part only.
        let declare = Command::new(bin)
            .args(["broker", "declare"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AMQP_URLS", urls_as(shape, &amqp_urls, "settle-admin")?)
            .output()
            .await?;
        if !declare.status.success() {
            bail!(
                "settle broker declare: {}",
                String::from_utf8_lossy(&declare.stderr)
            );
        }
        let migrate = Command::new(bin)
            .arg("migrate")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SETTLE_HTTP_ADDR", "127.0.0.1:0")
            .output()
            .await?;
        if !migrate.status.success() {
            bail!(
                "settle migrate: {}",
                String::from_utf8_lossy(&migrate.stderr)
            );
        }
        let process = |role: &'static str, n: usize| -> anyhow::Result<Process> {
            let mut env = env.clone();
            env.push((
                "AMQP_URLS".to_owned(),
                urls_as(shape, &amqp_urls, &format!("settle-{role}"))?,
            ));
            Ok(Process {
                role,
                port: free_port()?,
                env,
                log: dir.join(format!("{role}-{n}.log")),
                child: None,
            })
        };
        let subscriber = Subscriber::bind(&connect_any(&amqp_urls).await?, &prefix).await?;
        let ops_amqp_urls = urls_as(shape, &amqp_urls, "settle-ops")?;
        let serves = (0..shape.serves)
            .map(|n| process("serve", n))
            .collect::<anyhow::Result<_>>()?;
        let workers = (0..shape.workers)
            .map(|n| process("worker", n))
            .collect::<anyhow::Result<_>>()?;
        let mut deployment = Self {
            ops_amqp_urls,
            admin_url: base.clone(),
            name: name.to_owned(),
            prefix,
            database_url,
            amqp_urls,
            dir: dir.clone(),
            bin: bin.to_owned(),
            smtp,
            mail_dir,
            subscriber,
            serves,
            workers,
        };
        for process in deployment.processes_mut() {
            process.start(bin).await?;
        }
        deployment.wait_ready().await?;
        Ok(deployment)
    }

    fn processes_mut(&mut self) -> impl Iterator<Item = &mut Process> {
        self.serves.iter_mut().chain(&mut self.workers)
    }

    /// A connection pool of the checker's own on the scenario's database (through HAProxy on
    /// the Patroni cluster), quick to give up while a failover is under way.
    pub fn checker(&self) -> anyhow::Result<sqlx::PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(1))
            .connect_lazy(&self.database_url)?)
    }

    /// `path` on the first `serve` process: the API's callers and the odd request.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.serves[0].port)
    }

    /// `path` on every `serve` process, for a load spread over them as a load balancer would.
    pub fn urls(&self, path: &str) -> Vec<String> {
        self.serves
            .iter()
            .map(|serve| format!("http://127.0.0.1:{}{path}", serve.port))
            .collect()
    }

    /// A connection to the first broker node that answers.
    pub async fn amqp(&self) -> anyhow::Result<lapin::Connection> {
        connect_any(&self.amqp_urls).await
    }

    /// The broker node (`host:port`) a `serve` process says it is connected to.
    pub async fn broker_node_of_serve(&self, serve: usize) -> anyhow::Result<String> {
        let ready: serde_json::Value = reqwest::get(format!(
            "http://127.0.0.1:{}/readyz",
            self.serves[serve].port
        ))
        .await?
        .json()
        .await?;
        ready["broker_node"]
            .as_str()
            .map(str::to_owned)
            .context("the serve process is not connected to the broker")
    }

    /// Every process answers `/readyz` with 200.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let ports: Vec<u16> = self
            .serves
            .iter()
            .chain(&self.workers)
            .map(|process| process.port)
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        for port in ports {
            loop {
                let ready = http
                    .get(format!("http://127.0.0.1:{port}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("a settle process of {} is not ready after 120 s", self.name);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    pub async fn restart_worker(&mut self, n: usize) -> anyhow::Result<()> {
        let bin = self.bin.clone();
        self.workers[n].start(&bin).await
    }

    /// `settle ARGS` with the deployment's environment, as an operator runs it.
    fn operator_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .envs(
                self.serves[0]
                    .env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .env("SETTLE_HTTP_ADDR", "127.0.0.1:0")
            .env("AMQP_URLS", &self.ops_amqp_urls)
            .kill_on_drop(true);
        command
    }

    /// Runs `settle ARGS`; the child, to wait for or kill.
    pub fn settle_command(&self, args: &[&str]) -> anyhow::Result<Child> {
        Ok(self
            .operator_command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    }

    /// Runs `settle ARGS` with `env` besides, to its end; what it printed, or an error with
    /// what it said.
    pub async fn settle_output(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let output = self
            .operator_command(args)
            .envs(env.iter().copied())
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "settle {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    }

    /// Mails the sink has received.
    pub fn mails(&self) -> usize {
        std::fs::read_to_string(self.mail_dir.join("messages.jsonl"))
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }

    /// Stops every process. A scenario that passed leaves nothing behind (its database, queues
    /// and logs go); one that failed keeps them for inspection (`make clean-test-state` removes
    /// them later).
    pub async fn stop(mut self, passed: bool) -> anyhow::Result<()> {
        for process in self.processes_mut() {
            process.terminate().await?;
        }
        let _ = self.smtp.kill().await;
        if passed {
            let mut admin =
                <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin_url).await?;
            let database = self.database_url.rsplit('/').next().unwrap_or_default();
            // FORCE cannot end an autovacuum worker busy on the database (it is not ours to
            // signal): it is tried again until that worker is done, for half a minute at most.
            let drop = format!(r#"DROP DATABASE IF EXISTS "{database}" WITH (FORCE)"#);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while let Err(error) = sqlx::query(&drop).execute(&mut admin).await {
                if tokio::time::Instant::now() > deadline {
                    return Err(error.into());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            self.delete_queues().await?;
            std::fs::remove_dir_all(&self.dir)?;
        }
        Ok(())
    }

    async fn delete_queues(&self) -> anyhow::Result<()> {
        let connection = self.amqp().await?;
        let channel = connection.create_channel().await?;
        let topology = settle::broker::Topology::new(&self.prefix, &RETRY_DELAYS_MS, 10);
        let queues = [
            topology.reconcile_queue,
            topology.dead_letter_queue,
            format!("{}.chaos-subscriber", self.prefix),
            // Scenario 23's subscriber that refuses everything.
            format!("{}.refusing-subscriber", self.prefix),
        ]
        .into_iter()
        .chain(topology.retry_queues.into_iter().map(|q| q.name));
        for queue in queues {
            channel
                .queue_delete(
                    queue.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await?;
        }
        for exchange in [
            topology.webhooks_exchange,
            topology.reconciliation_by_account_exchange,
            topology.reconciliation_exchange,
        ] {
            channel
                .exchange_delete(
                    exchange.as_str().into(),
                    lapin::options::ExchangeDeleteOptions::default(),
                )
                .await?;
        }
        let _ = connection.close(200, "cleaned".into()).await;
        Ok(())
    }
}

/// The first of `urls` that accepts a connection (a cluster's node may be down).
pub async fn connect_any(urls: &[String]) -> anyhow::Result<lapin::Connection> {
    let mut last = None;
    for url in urls {
        match lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await {
            Ok(connection) => return Ok(connection),
            Err(error) => last = Some(error),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no broker URL"), Into::into))
}

/// The faults on the three-node cluster of `scripts/services.sh start --cluster`.
pub mod cluster {
    use super::services_sh;

    pub const NODES: [&str; 3] = [
        "settle-c1@localhost",
        "settle-c2@localhost",
        "settle-c3@localhost",
    ];

    /// The node whose AMQP listener is `host:port` (as `/readyz` names it).
    pub fn node_at(address: &str) -> anyhow::Result<&'static str> {
        let port = address.rsplit(':').next().unwrap_or_default();
        match port {
            "56740" => Ok(NODES[0]),
            "56750" => Ok(NODES[1]),
            "56760" => Ok(NODES[2]),
            _ => anyhow::bail!("{address} is not a node of the cluster"),
        }
    }

    /// The node leading `queue`'s quorum, as a running node reports it.
    pub async fn leader(queue: &str) -> anyhow::Result<&'static str> {
        for node in NODES {
            let output = tokio::process::Command::new(super::root().join("scripts/services.sh"))
                .args([
                    "broker-ctl",
                    node,
                    "list_queues",
                    "--no-table-headers",
                    "name",
                    "leader",
                ])
                .output()
                .await?;
            if !output.status.success() {
                continue;
            }
            let listing = String::from_utf8_lossy(&output.stdout);
            let leader = listing
                .lines()
                .filter_map(|line| line.split_once('\t'))
                .find(|(name, _)| *name == queue)
                .map(|(_, leader)| leader.trim().to_owned());
            if let Some(leader) = leader {
                return NODES
                    .into_iter()
                    .find(|node| *node == leader)
                    .ok_or_else(|| {
                        anyhow::anyhow!("{queue} is led by {leader}, not a cluster node")
                    });
            }
        }
        anyhow::bail!("no running node of the cluster lists {queue}")
    }

    pub async fn kill(node: &str) -> anyhow::Result<()> {
        services_sh(&["broker-kill", node]).await
    }

    /// Starts what of the cluster is not running (a killed node rejoins with its data).
    pub async fn start() -> anyhow::Result<()> {
        services_sh(&["start", "--chaos", "--cluster"]).await
    }

    pub async fn restart_app(node: &str) -> anyhow::Result<()> {
        services_sh(&["broker-stop-app", node]).await?;
        services_sh(&["broker-start-app", node]).await
    }

    pub async fn freeze(node: &str) -> anyhow::Result<()> {
        services_sh(&["broker-pause", node]).await
    }

    pub async fn thaw(node: &str) -> anyhow::Result<()> {
        services_sh(&["broker-resume", node]).await
    }
}

/// The broker faults, on the chaos node.
pub mod broker {
    use super::{CHAOS_NODE, services_sh};

    pub async fn stop_app() -> anyhow::Result<()> {
        services_sh(&["broker-stop-app", CHAOS_NODE]).await
    }

    pub async fn start_app() -> anyhow::Result<()> {
        services_sh(&["broker-start-app", CHAOS_NODE]).await
    }

    pub async fn kill() -> anyhow::Result<()> {
        services_sh(&["broker-kill", CHAOS_NODE]).await
    }

    /// Brings a killed node back (the services script starts what is not running).
    pub async fn start_node() -> anyhow::Result<()> {
        services_sh(&["start", "--chaos"]).await
    }

    pub async fn freeze() -> anyhow::Result<()> {
        services_sh(&["broker-pause", CHAOS_NODE]).await
    }

    pub async fn thaw() -> anyhow::Result<()> {
        services_sh(&["broker-resume", CHAOS_NODE]).await
    }

    /// A memory alarm: any real usage is above a watermark of one byte.
    pub async fn raise_memory_alarm() -> anyhow::Result<()> {
        services_sh(&[
            "broker-ctl",
            CHAOS_NODE,
            "set_vm_memory_high_watermark",
            "absolute",
            "1",
        ])
        .await
    }

    pub async fn clear_memory_alarm() -> anyhow::Result<()> {
        services_sh(&[
            "broker-ctl",
            CHAOS_NODE,
            "set_vm_memory_high_watermark",
            "0.4",
        ])
        .await
    }
}

/// PostgreSQL itself, for every deployment at once.
impl Database {
    /// The maintenance database of the server (or the cluster's primary, through HAProxy).
    fn admin_url(self) -> anyhow::Result<String> {
        let (variable, started_by) = match self {
            Self::Single => ("DATABASE_URL", "scripts/services.sh env"),
            Self::Proxied | Self::Members => (
                "SETTLE_TEST_PG_PRIMARY_URL",
                "scripts/services.sh start --pg-cluster; scripts/services.sh env",
            ),
        };
        std::env::var(variable).with_context(|| format!("{variable} ({started_by})"))
    }

    /// `DATABASE_URLS` for `database`: every member for `Members`; the others use `DATABASE_URL`.
    fn member_urls(self, database: &str) -> anyhow::Result<Option<String>> {
        if self != Self::Members {
            return Ok(None);
        }
        let members = std::env::var("SETTLE_TEST_PG_CLUSTER_URLS")
            .context("SETTLE_TEST_PG_CLUSTER_URLS (scripts/services.sh env)")?;
        members
            .split(',')
            .map(|url| {
                let (server, _) = url
                    .rsplit_once('/')
                    .context("a member URL names a database")?;
                Ok(format!("{server}/{database}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map(|urls| Some(urls.join(",")))
    }
}

/// The Patroni cluster's members (`scripts/pg-cluster.sh`), asked through Patroni's REST API,
/// and the faults made on them.
pub mod pg_cluster {
    use std::time::Duration;

    use anyhow::Context;

    use super::services_sh;

    pub const MEMBERS: [&str; 3] = ["pg1", "pg2", "pg3"];

    fn rest(member: &str, path: &str) -> String {
        let n = MEMBERS.iter().position(|m| *m == member).unwrap_or(0);
        format!("http://127.0.0.1:{}{path}", 56801 + n)
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .expect("an HTTP client")
    }

    /// Each member's role as its Patroni says (`master`/`primary`, `replica`), `None` for one
    /// that does not answer within a second (killed, paused).
    pub async fn roles() -> Vec<(&'static str, Option<String>)> {
        let http = http();
        let mut roles = Vec::new();
        for member in MEMBERS {
            let status: Option<serde_json::Value> =
                match http.get(rest(member, "/patroni")).send().await {
                    Ok(response) => response.json().await.ok(),
                    Err(_) => None,
                };
            let role = status.and_then(|s| {
                let running = s["state"] == "running";
                running.then(|| s["role"].as_str().unwrap_or_default().to_owned())
            });
            roles.push((member, role));
        }
        roles
    }

    fn is_primary(role: Option<&String>) -> bool {
        role.is_some_and(|role| role == "master" || role == "primary")
    }

    /// The member leading the cluster now.
    pub async fn primary() -> anyhow::Result<&'static str> {
        roles()
            .await
            .into_iter()
            .find(|(_, role)| is_primary(role.as_ref()))
            .map(|(member, _)| member)
            .context("no member of the PostgreSQL cluster is the primary")
    }

    /// The synchronous standby: the replica whose loss holds every commit until Patroni names
    /// another (Patroni's `/sync` answers 200 on it alone).
    pub async fn sync_standby() -> anyhow::Result<&'static str> {
        let http = http();
        for member in MEMBERS {
            let sync = http.get(rest(member, "/sync")).send().await;
            if sync.is_ok_and(|response| response.status().is_success()) {
                return Ok(member);
            }
        }
        anyhow::bail!("no member of the PostgreSQL cluster is the synchronous standby")
    }

    /// A member other than `former` leads.
    pub async fn promoted_other_than(former: &str) -> bool {
        roles()
            .await
            .iter()
            .any(|(member, role)| *member != former && is_primary(role.as_ref()))
    }

    /// Waits until every member runs again, one of them the primary (a fault healed), for two
    /// minutes at most.
    pub async fn wait_whole() -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let roles = roles().await;
            let running = roles.iter().filter(|(_, role)| role.is_some()).count();
            let primaries = roles.iter().filter(|(_, r)| is_primary(r.as_ref())).count();
            if running == MEMBERS.len() && primaries == 1 {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the PostgreSQL cluster is not whole again after 2 min: {roles:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `scripts/pg-cluster.sh ctl ARGS`: kill, restart, pause, resume a member; switchover.
    pub async fn ctl(args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["pg-ctl"];
        all.extend_from_slice(args);
        services_sh(&all).await
    }
}

pub mod database {
    use super::services_sh;

    pub async fn stop() -> anyhow::Result<()> {
        services_sh(&["db-stop"]).await
    }

    pub async fn start() -> anyhow::Result<()> {
        services_sh(&["db-start"]).await
    }
}
