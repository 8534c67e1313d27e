//! `DATABASE_REPLICA_URLS`: the API's lists and the console's pages read the replica while its
//! lag is within the bound, and the primary when it does not answer; `/readyz` says which, and
//! the lag. A replica here is a database of its own (another server's copy, as far as settle can
//! tell), so what a list returns shows where it read; `pg_cluster.rs` checks the lag bound on a
//! real streaming replica.

use serde_json::Value;

use crate::helpers::*;

/// An app whose replica is the database at `replica_url`, with one customer on its primary.
async fn app_reading(replica_url: String) -> TestApp {
    let app = spawn_app_with(AppOptions {
        tweak: Box::new(move |settings| {
            settings.database.replica_urls = vec![secrecy::SecretString::from(replica_url)];
        }),
        ..AppOptions::default()
    })
    .await;
    app.create_customer("cust_on_the_primary").await;
    app
}

fn listed(page: &Value) -> Vec<&str> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|customer| customer["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn lists_read_the_replica_while_it_answers_within_the_bound() {
    // A migrated database without the primary's customer: what a list returns says where it read.
    let (replica_url, replica) = database_before_migration(i64::MAX).await;
    let app = app_reading(replica_url).await;

    let (status, page) = app.api_get("/customers").await;
    assert_eq!(status, 200, "{page}");
    assert!(listed(&page).is_empty(), "read on the replica: {page}");
    // A single customer is not a list: it reads the primary.
    let (status, _) = app.api_get("/customers/cust_on_the_primary").await;
    assert_eq!(status, 200);

    let (_, ready) = app.readyz().await;
    assert_eq!(ready["checks"]["database_replica"], "reading", "{ready}");
    assert_eq!(ready["database_replica_lag_seconds"], 0.0, "{ready}");
    replica.close().await;
}

#[tokio::test]
async fn lists_read_the_primary_while_the_replica_does_not_answer() {
    let app = app_reading("postgres://settle:settle@127.0.0.1:1/nowhere".to_owned()).await;

    let (status, page) = app.api_get("/customers").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(listed(&page), ["cust_on_the_primary"], "{page}");
    let (status, ready) = app.readyz().await;
    assert_eq!(
        status, 200,
        "a replica is never a reason to be unready: {ready}"
    );
    assert_eq!(ready["checks"]["database_replica"], "down", "{ready}");
    assert_eq!(
        ready["database_replica_lag_seconds"],
        Value::Null,
        "{ready}"
    );
}
