//! Scenario 23, a hostile tenant. Two accounts share the deployment: the default one under the
//! standard provider-like load, with payouts of its own, and a tenant that signs what it likes
//! for its own connection's endpoint: the longest ids intake accepts in every kind of event, the
//! other account's payout, payment and refund ids, NUL in the provider's text, and `%` in ids.
//! Meanwhile a subscriber's queue refuses everything. Nothing may be lost or applied twice, no
//! row or announcement may cross accounts, and the well-behaved account's announcements all
//! reach the other subscribers.

use lapin::types::{AMQPValue, FieldTable};

use crate::check::{Expected, Row, bind_subscriber_queue};
use crate::deployment::{Deployment, Shape};
use crate::fixtures::StripeEvent;
use crate::load::{Connection, Plan, Sender, Sending, Webhook, shuffle};
use crate::scenarios::{Run, slug};

const TENANT: &str = "acc_hostile";
const TENANT_SECRET: &str = "whsec_chaos_hostile_tenant_signs_its_own";
/// The well-behaved account's payouts.
const PAYOUTS: usize = 5;

/// An id of `start` followed by `x`s, the most bytes intake accepts from Stripe: `stripe:<id>`
/// is 255 bytes, AMQP's limit for a message id.
fn longest_event_id(start: &str) -> String {
    let room = 255 - "stripe:".len() - start.len();
    format!("{start}{}", "x".repeat(room))
}

/// A provider object id longer than any AMQP name: nothing bounds those at intake.
fn long_object_id(prefix: &str) -> String {
    format!("{prefix}_{}", "y".repeat(300))
}

fn payout_event(event_type: &str, event_id: &str, payout: &str, created: i64) -> StripeEvent {
    StripeEvent::new(event_type, event_id)
        .created(created)
        .payout(payout, true)
        .object(|object| {
            if object["status"] == "failed" {
                // NUL, which PostgreSQL refuses in text, in what becomes the payout's reason.
                object["failure_message"] = "The bank account\u{0}has been closed".into();
            }
        })
}

/// The tenant's events, each signed for its own connection.
fn hostile_events(tag: &str, invoices: usize, t0: i64) -> Vec<StripeEvent> {
    let mut events = vec![
        // The longest ids, in every kind of event.
        StripeEvent::new("payment_intent.succeeded", &longest_event_id("evt_paid_"))
            .created(t0)
            .payment(&long_object_id("pi"), 1000, "gbp"),
        StripeEvent::new("refund.created", &longest_event_id("evt_refund_"))
            .created(t0 + 1)
            .refund(
                &long_object_id("re"),
                &long_object_id("pi"),
                300,
                "gbp",
                "succeeded",
            ),
        StripeEvent::new("charge.dispute.created", &longest_event_id("evt_dispute_"))
            .created(t0 + 2)
            .dispute(
                &long_object_id("dp"),
                &long_object_id("pi"),
                700,
                "gbp",
                "needs_response",
            ),
        payout_event(
            "payout.failed",
            &longest_event_id("evt_payout_"),
            &long_object_id("po"),
            t0 + 3,
        ),
        // `%` and `_` in ids, which a LIKE pattern would take for wildcards.
        StripeEvent::new("payment_intent.succeeded", &format!("evt_%_{tag}_pct"))
            .created(t0 + 4)
            .payment(&format!("pi_%{tag}%"), 1000, "gbp"),
        StripeEvent::new("refund.created", &format!("evt_%_{tag}_pct_refund"))
            .created(t0 + 5)
            .refund("re_%_%", &format!("pi_%{tag}%"), 100, "gbp", "succeeded"),
    ];
    // The other account's payouts, failed.
    for k in 0..PAYOUTS {
        events.push(payout_event(
            "payout.failed",
            &format!("evt_{tag}_hostile_po{k}"),
            &format!("po_{tag}_a{k}"),
            t0 + 10 + k as i64,
        ));
    }
    // The other account's payments, refunded and declined, by their ids.
    for i in (0..invoices).step_by(4) {
        let intent = format!("pi_{tag}_{i}");
        events.push(
            StripeEvent::new("refund.created", &format!("evt_{tag}_hostile_re{i}"))
                .created(t0 + 20 + i as i64)
                .refund(&format!("re_{tag}_{i}"), &intent, 500, "gbp", "succeeded"),
        );
        events.push(
            StripeEvent::new(
                "payment_intent.payment_failed",
                &format!("evt_{tag}_hostile_failed{i}"),
            )
            .created(t0 + 21 + i as i64)
            .payment(&intent, 1000, "gbp")
            .object(|intent| {
                crate::fixtures::declined_for_insufficient_funds(intent);
                intent["last_payment_error"]["message"] = "Your card\u{0}was declined.".into();
            }),
        );
    }
    events
}

/// A subscriber's queue that refuses every message (full at once, `reject-publish`), bound to
/// every reconciliation event before the load starts.
async fn refusing_subscriber(deployment: &Deployment) -> anyhow::Result<()> {
    let queue = format!("{}.refusing-subscriber", deployment.prefix);
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    bind_subscriber_queue(
        &deployment.amqp().await?,
        &deployment.prefix,
        &queue,
        arguments,
    )
    .await
}

/// The tenant's account and its Stripe connection, as an operator adds them.
async fn tenant_connection(deployment: &Deployment) -> anyhow::Result<Connection> {
    deployment
        .settle_output(&["accounts", "create", TENANT], &[])
        .await?;
    let added = deployment
        .settle_output(
            &[
                "connections",
                "add",
                "--account",
                TENANT,
                "--provider",
                "stripe",
                "--external-id",
                "acct_1HostileTenant00",
                "--mode",
                "test",
                "--output",
                "json",
            ],
            &[(
                settle::ops::secret_input::WEBHOOK_SECRETS_VAR,
                TENANT_SECRET,
            )],
        )
        .await?;
    let added: serde_json::Value = serde_json::from_str(&added)?;
    let id = added["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("connections add printed no id: {added}"))?;
    Ok(Connection {
        id: id.to_owned(),
        secret: TENANT_SECRET.to_owned(),
    })
}

impl Run<'_> {
    pub async fn hostile_tenant(&self, name: &str, tag: &str) -> anyhow::Result<Row> {
        let shape = Shape {
            env: vec![
                // Payouts stay as their events leave them: no provider API to list them here.
                ("SETTLE__PAYOUTS__LIST_INTERVAL_SECS", "0".to_owned()),
                // The refused announcements are parked after three attempts.
                ("SETTLE__WORKER__OUTBOX_MAX_ATTEMPTS", "3".to_owned()),
                (
                    "SETTLE__WEBHOOKS__CONNECTION_SECRETS_REFRESH_SECS",
                    "1".to_owned(),
                ),
            ],
            ..Shape::workers(1)
        };
        let deployment = Deployment::start(&slug(name), &shape, self.bin).await?;
        refusing_subscriber(&deployment).await?;
        let tenant = tenant_connection(&deployment).await?;
        let account: String = {
            let db = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy(&deployment.database_url)?;
            sqlx::query_scalar("SELECT id FROM accounts WHERE id <> $1")
                .bind(TENANT)
                .fetch_one(&db)
                .await?
        };

        let invoices = if self.quick { 60 } else { 200 };
        let mut plan = Plan::new(tag, invoices, 1);
        let t0 = chrono::Utc::now().timestamp() - 3600;
        let mut payouts = Vec::new();
        for k in 0..PAYOUTS {
            let payout = format!("po_{tag}_a{k}");
            let paid = payout_event(
                "payout.paid",
                &format!("evt_{tag}_po{k}"),
                &payout,
                t0 + k as i64,
            );
            plan.webhooks.push(Webhook::stripe(&paid, None));
            payouts.push((account.clone(), payout, "EXPECTED"));
        }
        for event in hostile_events(tag, invoices, t0) {
            plan.webhooks
                .push(Webhook::stripe(&event, Some(tenant.clone())));
        }
        shuffle(&mut plan.webhooks);

        crate::load::Api::new(&deployment).register(&plan).await?;
        let sending = Sending {
            rate: if self.quick { 40.0 } else { 25.0 },
            ..Sending::default()
        };
        let sent = std::sync::Arc::new(Sender::new(&deployment))
            .send(plan.webhooks.clone(), sending)
            .await;
        let healed = tokio::time::Instant::now();
        let expected = Expected {
            parking: true,
            payouts,
            ..Expected::default()
        };
        self.finish(name, deployment, &plan, &sent, &expected, healed)
            .await
    }
}
