//! settle on the Patroni cluster of `scripts/pg-cluster.sh` (`make test` starts it): given every
//! member (`DATABASE_URLS`) it writes to the primary whichever member is listed first, and a
//! connection that reaches a standby is refused as an outage, never used for a write; reads that
//! may lag go to a replica within its lag bound. The fault suite's scenarios 24 to 27 make the
//! failovers themselves.

use std::path::Path;
use std::time::Duration;

use crate::helpers::WAIT;

use secrecy::SecretString;
use settle::config::Settings;

/// Each member's URL (`scripts/services.sh env`), on database `name`, and whether it is the
/// primary now.
async fn members_on(name: &str) -> Vec<(String, bool)> {
    let urls = std::env::var("SETTLE_TEST_PG_CLUSTER_URLS")
        .expect("SETTLE_TEST_PG_CLUSTER_URLS (scripts/services.sh start --pg-cluster; env)");
    let mut members = Vec::new();
    for url in urls.split(',') {
        let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(url)
            .await
            .expect("every member of the cluster answers");
        let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut connection)
            .await
            .unwrap();
        let (server, _) = url.rsplit_once('/').unwrap();
        members.push((format!("{server}/{name}"), !standby));
    }
    members
}

/// A database of the test's own on the cluster (through HAProxy's primary port), dropped by
/// `drop_database`.
async fn create_database() -> String {
    let name = format!("test_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let mut admin = primary_admin().await;
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut admin)
        .await
        .unwrap();
    name
}

async fn drop_database(name: &str) {
    let mut admin = primary_admin().await;
    sqlx::query(&format!(r#"DROP DATABASE "{name}" WITH (FORCE)"#))
        .execute(&mut admin)
        .await
        .unwrap();
}

async fn primary_admin() -> sqlx::PgConnection {
    let url = std::env::var("SETTLE_TEST_PG_PRIMARY_URL")
        .expect("SETTLE_TEST_PG_PRIMARY_URL (scripts/services.sh start --pg-cluster; env)");
    <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("HAProxy's primary port reaches the primary")
}

fn settings() -> Settings {
    Settings::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        "local",
        Vec::new(),
    )
    .expect("test settings load")
}

/// The port of the server a query on `pool` reached, and whether it was the primary.
async fn reached(pool: &sqlx::PgPool) -> (i32, bool) {
    sqlx::query_as("SELECT inet_server_port(), NOT pg_is_in_recovery()")
        .fetch_one(pool)
        .await
        .expect("the pool reaches a member")
}

fn port_of(url: &str) -> i32 {
    let (_, rest) = url.rsplit_once(':').unwrap();
    rest.split('/').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn database_urls_reach_the_primary_whichever_member_is_listed_first() {
    let name = create_database().await;
    let mut members = members_on(&name).await;
    // The standbys first: the pool must pass them over.
    members.sort_by_key(|(_, primary)| *primary);
    assert!(!members[0].1, "a standby is listed first: {members:?}");
    let primary_port = members
        .iter()
        .find(|(_, primary)| *primary)
        .map(|(url, _)| port_of(url))
        .expect("one member is the primary");
    let mut settings = settings();
    settings.database.urls = members
        .iter()
        .map(|(url, _)| SecretString::from(url.as_str()))
        .collect();

    let pool = settle::database::pool(&settings).await.unwrap();
    assert_eq!(reached(&pool).await, (primary_port, true));
    // And it writes there.
    sqlx::query("CREATE TABLE written (id int)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    drop_database(&name).await;
}

#[tokio::test]
async fn a_connection_that_reaches_a_standby_is_refused_as_an_outage() {
    let name = create_database().await;
    let members = members_on(&name).await;
    let (standby, _) = members.iter().find(|(_, primary)| !primary).unwrap();
    let mut settings = settings();
    settings.database.url = SecretString::from(standby.as_str());

    let pool = settle::database::pool(&settings).await.unwrap();
    let error = sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .expect_err("a pool on a standby hands out no connection");
    assert!(
        settle::repository::is_outage(&error),
        "refused as an outage, to be waited out: {error}"
    );
    // A lease's session is refused too: the relay never runs its passes on a standby.
    let mut lease = settle::lease::Lease::new(settle::lease::OUTBOX_RELAY, None);
    assert!(!lease.hold(&pool).await, "no lease on a standby");
    pool.close().await;
    drop_database(&name).await;
}

/// `scripts/services.sh pg-ctl ARGS`.
async fn pg_ctl(args: &[&str]) {
    let status =
        tokio::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh"))
            .arg("pg-ctl")
            .args(args)
            .status()
            .await
            .unwrap();
    assert!(status.success(), "pg-ctl {args:?}");
}

/// `pg_wal_replay_pause()` or `_resume()` on a standby.
async fn replay(on_standby: &mut sqlx::PgConnection, verb: &str) {
    let call = format!("SELECT pg_wal_replay_{verb}()");
    sqlx::query(&call).execute(on_standby).await.unwrap();
}

/// A replica whose replay is paused: its lag grows past the bound, the reads go to the primary,
/// and come back once it has caught up. `settle::database::Reads` as the API and console use it.
#[tokio::test]
async fn reads_leave_a_replica_that_lags_past_the_bound_and_return_when_it_catches_up() {
    let name = create_database().await;
    let members = members_on(&name).await;
    let (primary, _) = members.iter().find(|(_, primary)| *primary).unwrap();
    // The asynchronous standby (pg1..pg3 on 54341..54343): pausing it holds no commit.
    let mut admin = primary_admin().await;
    let member: String = sqlx::query_scalar(
        "SELECT application_name FROM pg_stat_replication WHERE sync_state = 'async' LIMIT 1",
    )
    .fetch_one(&mut admin)
    .await
    .expect("an asynchronous standby");
    let port = 54340 + member.trim_start_matches("pg").parse::<i32>().unwrap();
    let (standby, _) = members
        .iter()
        .find(|(url, _)| port_of(url) == port)
        .unwrap();
    let mut settings = settings();
    settings.database.url = SecretString::from(primary.as_str());
    settings.database.replica_urls = vec![SecretString::from(standby.as_str())];
    settings.database.replica_max_lag_ms = 500;
    let db = settle::database::pool(&settings).await.unwrap();
    let reads = settle::database::Reads::from_settings(&settings, db.clone())
        .await
        .unwrap();
    // Once the standby has replayed the database's creation, it is read.
    crate::helpers::poll_until("the reads go to the caught-up replica", WAIT, || async {
        reads.replica().unwrap().reading.then_some(())
    })
    .await;
    assert_eq!(reached(reads.pool()).await.0, port);

    // Replay paused on the standby (its Patroni held, or it would resume it), then a commit on
    // the primary it receives and does not apply.
    pg_ctl(&["hold", &member]).await;
    let mut on_standby = <sqlx::PgConnection as sqlx::Connection>::connect(standby)
        .await
        .unwrap();
    replay(&mut on_standby, "pause").await;
    let written = sqlx::query("CREATE TABLE written_while_paused (id int)");
    written.execute(&db).await.unwrap();
    // Polled without panicking: replay and Patroni are resumed before anything is asserted.
    crate::helpers::poll_for(WAIT, || async {
        (!reads.replica().unwrap().reading).then_some(())
    })
    .await;
    let lagging = (reached(reads.pool()).await, reads.replica().unwrap().lag);
    replay(&mut on_standby, "resume").await;
    pg_ctl(&["release", &member]).await;
    let ((port_read, on_primary), lag) = lagging;
    assert_eq!(
        (port_read, on_primary),
        (port_of(primary), true),
        "read the primary"
    );
    assert!(
        lag.is_some_and(|lag| lag > Duration::from_millis(500)),
        "{lag:?}"
    );

    crate::helpers::poll_until("the reads return to the replica", WAIT, || async {
        reads.replica().unwrap().reading.then_some(())
    })
    .await;
    assert_eq!(reached(reads.pool()).await.0, port);
    db.close().await;
    drop_database(&name).await;
}
