//! The broker is not a way in (issue 28, deliverable 8): each role runs on its own broker user
//! with the least it needs (`deploy/rabbitmq-users.sh`, which `scripts/services.sh` applies to
//! the test node), and that least is enough: a payment goes from the receiver to a subscriber.

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};

use crate::helpers::*;
use settle::role::Role;

/// The test node's URL as `user` of `deploy/rabbitmq-users.sh`.
fn url_as(user: &str) -> String {
    let password = std::env::var("SETTLE_TEST_AMQP_ROLE_PASSWORD")
        .expect("SETTLE_TEST_AMQP_ROLE_PASSWORD (scripts/services.sh env)");
    let url = amqp_url();
    let (_, host) = url.split_once('@').expect("AMQP_URL has user info");
    format!("amqp://{user}:{password}@{host}")
}

async fn connect_as(user: &str) -> Connection {
    Connection::connect(&url_as(user), ConnectionProperties::default())
        .await
        .unwrap_or_else(|error| panic!("{user} connects: {error}"))
}

/// Whether the broker refuses `user` reading `queue` (a basic.get).
async fn may_read(user: &str, queue: &str) -> bool {
    let connection = connect_as(user).await;
    let channel = connection.create_channel().await.unwrap();
    let read = channel
        .basic_get(queue.into(), BasicGetOptions::default())
        .await;
    let _ = connection.close(200, "checked".into()).await;
    match read {
        Ok(_) => true,
        Err(error) if settle::broker::refused_access(&error) => false,
        Err(error) => panic!("{user} reading {queue}: {error}"),
    }
}

/// Whether the broker takes a message from `user` on `exchange` (a confirmed publish).
async fn may_publish(user: &str, exchange: &str, routing_key: &str) -> bool {
    let connection = connect_as(user).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let published = async {
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                b"{}",
                BasicProperties::default(),
            )
            .await?
            .await
    }
    .await;
    let _ = connection.close(200, "checked".into()).await;
    match published {
        Ok(_) => true,
        Err(error) if settle::broker::refused_access(&error) => false,
        Err(error) => panic!("{user} publishing to {exchange:?}: {error}"),
    }
}

#[tokio::test]
async fn each_role_runs_on_its_own_least_privilege_broker_user_and_can_do_no_more() {
    let prefix = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let patient = move |settings: &mut settle::config::Settings| {
        Retries::PATIENT.apply_to(settings);
    };

    // The deployment's setup step, with the admin user: the roles' users may not declare.
    let mut settings = settle::config::Settings::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        "local",
        Vec::new(),
    )
    .unwrap();
    settings.amqp.prefix = prefix.clone();
    patient(&mut settings);
    let topology = settle::broker::Topology::from_settings(&settings);
    settings.amqp.url = url_as("settle-worker").into();
    let refused = settle::broker::declare_topology(&settings.amqp, &topology)
        .await
        .expect_err("the worker's user may not declare the topology");
    assert!(refused.to_string().contains("admin user"), "{refused:#}");
    settings.amqp.url = url_as("settle-admin").into();
    settle::broker::declare_topology(&settings.amqp, &topology)
        .await
        .expect("the admin user declares the topology");

    let worker = spawn_app_with(AppOptions {
        role: Role::Worker,
        amqp_url: url_as("settle-worker"),
        prefix: Some(prefix.clone()),
        tweak: Box::new(patient),
        ..AppOptions::default()
    })
    .await;
    let serve = spawn_app_with(AppOptions {
        role: Role::Serve,
        amqp_url: url_as("settle-serve"),
        prefix: Some(prefix.clone()),
        database_url: Some(worker.database_url().to_owned()),
        tweak: Box::new(patient),
        ..AppOptions::default()
    })
    .await;

    // A subscribing service binds a queue of its own, as its own user.
    let subscriber = connect_as("settle-subscriber").await;
    let channel = subscriber.create_channel().await.unwrap();
    let queue = format!("sub.{prefix}");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            topology.reconciliation_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    serve.create_customer("cust").await;
    serve
        .create_invoice("inv_roles", "cust", None, "GBP", 7000)
        .await;
    let event = GoCardlessEvent::payment("EV_ROLES", "confirmed", "PM_ROLES")
        .created_at("2026-11-02T12:00:00.000Z")
        .edit(|event| event["resource_metadata"] = json!({"invoice_id": "inv_roles"}));
    serve.deliver_gocardless(vec![event]).await;
    let invoice = serve.wait_invoice_status("inv_roles", "PAID").await;
    assert_eq!(invoice["amountPaid"], 7000);
    let announced = poll_until("the subscriber's payment.succeeded", WAIT, || async {
        let message = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()?;
        (message.delivery.routing_key.as_str() == "payment.succeeded")
            .then(|| serde_json::from_slice::<Value>(&message.delivery.data).unwrap())
    })
    .await;
    assert_eq!(announced["data"]["invoiceId"], "inv_roles", "{announced}");

    // And no more than that.
    let work = &topology.reconcile_queue;
    let dead = &topology.dead_letter_queue;
    let webhooks = &topology.webhooks_exchange;
    let reconciliation = &topology.reconciliation_exchange;
    for user in ["settle-serve", "settle-ops", "settle-subscriber"] {
        assert!(!may_read(user, work).await, "{user} reads the work queue");
        assert!(!may_read(user, dead).await, "{user} reads the dead letters");
    }
    for (user, exchange) in [
        ("settle-serve", reconciliation.as_str()),
        ("settle-serve", ""),
        ("settle-ops", reconciliation),
        ("settle-subscriber", webhooks),
        ("settle-subscriber", reconciliation),
        ("settle-subscriber", ""),
    ] {
        assert!(
            !may_publish(user, exchange, work).await,
            "{user} publishes to {exchange:?}"
        );
    }
    assert!(may_publish("settle-serve", webhooks, "stripe.none").await);

    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let _ = subscriber.close(200, "done".into()).await;
    // The roles' users may not delete the topology; the test's own user does.
    let mut serve = serve;
    serve.shutdown_only().await;
    let mut worker = worker;
    worker.amqp_url = amqp_url();
    worker.stop().await;
}
