//! Stripe's separate authorisation and capture (issue 29, deliverable 1), through the real
//! receiver and worker: an authorisation holds the amount and pays nothing; a capture collects what
//! was captured, once, whichever of its events arrives first and however often; a released hold
//! (cancelled, or lapsed) leaves the invoice as it was. Each in every arrival order, in the shapes
//! of both API versions: before 2025-03-31.basil a partial capture and a release also made a
//! Refund (and sent `charge.refunded`), from it on they make none.

use futures_util::StreamExt;
use serde_json::Value;

use crate::helpers::*;

const T0: i64 = 1_790_000_000;
/// When the authorisations' captures and releases happen: an hour after them.
const T1: i64 = T0 + 3600;
const BASIL: &str = "2025-03-31.basil";
const ACACIA: &str = "2024-06-20";

/// Every order of `items`.
fn orders<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for (i, first) in items.iter().enumerate() {
        let mut rest = items.to_vec();
        rest.remove(i);
        for mut order in orders(&rest) {
            order.insert(0, first.clone());
            all.push(order);
        }
    }
    all
}

/// One payment's Stripe events, and its PaymentIntent.
struct Events {
    intent: String,
    events: Vec<Vec<u8>>,
}

/// The event `name` of payment `tag`, at `created`, as an endpoint of `version` receives it.
fn event(tag: &str, name: &str, created: i64, version: &str) -> StripeEvent {
    StripeEvent::new(name, &format!("evt_{tag}_{name}"))
        .created(created)
        .api_version(version)
}

/// The charge of payment `tag`.
fn charge_id(tag: &str) -> String {
    format!("ch_{tag}")
}

/// `authorised` held at T0 for payment `tag`: the charge's event, and with the current API
/// version the PaymentIntent's too (before it, the Refunds a release made add an event of their
/// own instead: the orders stay 24 at most).
fn authorisation(tag: &str, authorised: i64, version: &str) -> Vec<StripeEvent> {
    let intent = format!("pi_{tag}");
    let charge = event(tag, "charge.succeeded", T0, version)
        .authorised(&intent, authorised, "gbp")
        .object_id(&charge_id(tag));
    if version != BASIL {
        return vec![charge];
    }
    let capturable = event(tag, "payment_intent.amount_capturable_updated", T0, version)
        .authorised(&intent, authorised, "gbp");
    vec![capturable, charge]
}

/// The Refund a release made before 2025-03-31.basil: of `amount`, at T1.
fn release_refund(tag: &str, amount: i64) -> Value {
    let mut refund = StripeEvent::new("refund.created", "evt_unused")
        .refund(
            &format!("re_{tag}_release"),
            &format!("pi_{tag}"),
            amount,
            "gbp",
            "succeeded",
        )
        .into_json()["data"]["object"]
        .clone();
    refund["created"] = T1.into();
    refund["charge"] = charge_id(tag).into();
    refund
}

/// An authorisation of `authorised`, then a capture of `captured` of it.
fn authorise_then_capture(tag: &str, authorised: i64, captured: i64, version: &str) -> Events {
    let intent = format!("pi_{tag}");
    let released = authorised - captured;
    let before_basil = version != BASIL;
    let mut events = authorisation(tag, authorised, version);
    let mut charge = event(tag, "charge.captured", T1, version)
        .captured(&intent, authorised, captured, "gbp")
        .object_id(&charge_id(tag));
    if before_basil && released > 0 {
        // The remainder released, shown as refunded, and `charge.refunded` sent for it.
        let refund = release_refund(tag, released);
        charge = charge.object(|charge| {
            charge["amount_refunded"] = released.into();
            charge["refunds"]["data"] = Value::Array(vec![refund]);
        });
        let mut refunded = charge.json().clone();
        refunded["id"] = format!("evt_{tag}_charge.refunded").into();
        refunded["type"] = "charge.refunded".into();
        events.push(StripeEvent::from_json(refunded));
    }
    events.push(charge);
    events.push(
        event(tag, "payment_intent.succeeded", T1, version)
            .captured(&intent, authorised, captured, "gbp"),
    );
    Events {
        intent,
        events: events.iter().map(StripeEvent::to_bytes).collect(),
    }
}

/// An authorisation of 1000 released at T1: lapsed (`charge.expired`, the PaymentIntent
/// cancelled `expired`, `automatic` before basil) or cancelled by the business.
fn authorise_then_release(tag: &str, lapsed: bool, version: &str) -> Events {
    let intent = format!("pi_{tag}");
    let before_basil = version != BASIL;
    let mut events = authorisation(tag, 1000, version);
    let reason = match (lapsed, before_basil) {
        (true, true) => "automatic",
        (true, false) => "expired",
        (false, _) => "requested_by_customer",
    };
    events.push(
        event(tag, "payment_intent.canceled", T1, version)
            .authorised(&intent, 1000, "gbp")
            .object(|intent| {
                intent["status"] = "canceled".into();
                intent["amount_capturable"] = 0.into();
                intent["cancellation_reason"] = reason.into();
            }),
    );
    if lapsed {
        events.push(
            event(tag, "charge.expired", T1, version)
                .authorised(&intent, 1000, "gbp")
                .object_id(&charge_id(tag)),
        );
    }
    if before_basil {
        // The whole hold shown as refunded, and `charge.refunded` sent for it.
        let refund = release_refund(tag, 1000);
        events.push(
            event(tag, "charge.refunded", T1, version)
                .authorised(&intent, 1000, "gbp")
                .object_id(&charge_id(tag))
                .object(|charge| {
                    charge["refunded"] = true.into();
                    charge["amount_refunded"] = 1000.into();
                    charge["amount_captured"] = Value::Null;
                    charge["refunds"]["data"] = Value::Array(vec![refund]);
                }),
        );
    }
    Events {
        intent,
        events: events.iter().map(StripeEvent::to_bytes).collect(),
    }
}

fn event_id(body: &[u8]) -> String {
    let event: Value = serde_json::from_slice(body).unwrap();
    event["id"].as_str().unwrap().to_owned()
}

/// Registers invoice `invoice` of 1000 GBP with the payment `intent`, then delivers `events` in
/// their order, each twice, the first copy processed (as `db` shows) before the next arrives.
async fn deliver_in_order(
    app: &TestApp,
    db: &sqlx::PgPool,
    invoice: &str,
    intent: &str,
    events: &[Vec<u8>],
) {
    app.create_invoice(invoice, "cust", None, "GBP", 1000).await;
    app.register_payment(invoice, "STRIPE", intent, 1000).await;
    for body in events {
        deliver(app, body).await;
        let id = event_id(body);
        poll_until(&format!("{id} processed"), WAIT, || async {
            sqlx::query_scalar::<_, i32>("SELECT 1 FROM webhook_events WHERE event_id = $1")
                .bind(&id)
                .fetch_optional(db)
                .await
                .unwrap()
        })
        .await;
        deliver(app, body).await;
    }
}

/// Posts `body` as Stripe does: again after a 503 (the broker did not confirm in time, under
/// the load of every order at once), until it is taken.
async fn deliver(app: &TestApp, body: &[u8]) {
    poll_until("the event taken", WAIT, || async {
        let status = app.post_stripe_signed(body).await.status();
        assert!(status == 200 || status == 503, "{status}");
        (status == 200).then_some(())
    })
    .await;
}

/// Each order of `payment(tag)`'s events, on an invoice of its own, eight at a time; the invoices.
async fn every_order(app: &TestApp, name: &str, payment: impl Fn(&str) -> Events) -> Vec<String> {
    let count = orders(&payment(&format!("{name}0")).events).len();
    let db = app.db();
    let db = &db;
    let runs = (0..count).map(|n| {
        let tag = format!("{name}{n}");
        let payment = payment(&tag);
        let order = orders(&payment.events).swap_remove(n);
        async move {
            let invoice = format!("inv_{tag}");
            deliver_in_order(app, db, &invoice, &payment.intent, &order).await;
            invoice
        }
    });
    futures_util::stream::iter(runs)
        .buffer_unordered(8)
        .collect()
        .await
}

/// Each invoice once its last event is processed: its status, amount paid and refunded, its
/// payment's status, and how many times money was collected.
async fn outcome(app: &TestApp, invoice: &str) -> (String, i64, i64, String, i64) {
    let body = app.invoice(invoice).await;
    let intent = invoice.replacen("inv_", "pi_", 1);
    let collected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM money_movements WHERE invoice_id = $1 AND kind = 'COLLECTED'",
    )
    .bind(invoice)
    .fetch_one(&app.db())
    .await
    .unwrap();
    (
        body["status"].as_str().unwrap().to_owned(),
        body["amountPaid"].as_i64().unwrap(),
        body["amountRefunded"].as_i64().unwrap(),
        payment_status(&body, &intent),
        collected,
    )
}

async fn spawn_with_customer() -> TestApp {
    let app = spawn_worker(Retries::PATIENT).await;
    app.create_customer("cust").await;
    app
}

#[tokio::test]
async fn an_authorisation_holds_the_amount_and_pays_nothing() {
    let app = spawn_with_customer().await;
    let hold = authorise_then_capture("hold", 1000, 1000, BASIL);
    app.create_invoice("inv_hold", "cust", None, "GBP", 1000)
        .await;
    let subscriber = app.subscribe().await;
    // Stripe's own example charge, uncaptured, for this payment.
    let charge = &hold.events[1];
    app.deliver_stripe(charge).await;
    let waiting = app.wait_processed("STRIPE", &event_id(charge)).await;
    assert_eq!(waiting, "unmatched");
    app.register_payment("inv_hold", "STRIPE", &hold.intent, 1000)
        .await;
    let invoice = app.invoice("inv_hold").await;
    assert_eq!(invoice["status"], "OPEN", "{invoice}");
    assert_eq!(invoice["amountPaid"], 0);
    let held = payment(&invoice, &hold.intent);
    assert_eq!(held["status"], "AUTHORISED", "{held}");
    assert_eq!(held["amount"], 1000);
    assert_eq!(held["collected"], false);
    let expires = chrono::DateTime::from_timestamp(T0 + 7 * 86_400, 0).unwrap();
    assert_eq!(
        held["holdExpiresAt"],
        expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let messages = app.take_messages(&subscriber, 1).await;
    assert_eq!(messages[0].routing_key, "payment.authorised");
    app.stop().await;
}

#[tokio::test]
async fn a_capture_collects_once_in_every_order_of_its_events_in_both_api_versions() {
    let app = spawn_with_customer().await;
    for (name, version) in [("cap", BASIL), ("capold", ACACIA)] {
        let invoices = every_order(&app, name, |tag| {
            authorise_then_capture(tag, 1000, 1000, version)
        })
        .await;
        for invoice in invoices {
            assert_eq!(
                outcome(&app, &invoice).await,
                ("PAID".to_owned(), 1000, 0, "SUCCEEDED".to_owned(), 1),
                "{invoice} ({version})"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_partial_capture_counts_the_captured_part_and_its_release_is_no_refund() {
    let app = spawn_with_customer().await;
    for (name, version) in [("part", BASIL), ("partold", ACACIA)] {
        let invoices = every_order(&app, name, |tag| {
            authorise_then_capture(tag, 1000, 600, version)
        })
        .await;
        for invoice in invoices {
            assert_eq!(
                outcome(&app, &invoice).await,
                (
                    "PARTIALLY_PAID".to_owned(),
                    600,
                    0,
                    "SUCCEEDED".to_owned(),
                    1
                ),
                "{invoice} ({version})"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_hold_that_lapses_or_is_cancelled_leaves_the_invoice_as_it_was() {
    let app = spawn_with_customer().await;
    for (name, lapsed, version) in [
        ("lapse", true, BASIL),
        ("lapseold", true, ACACIA),
        ("cancel", false, BASIL),
        ("cancelold", false, ACACIA),
    ] {
        let invoices = every_order(&app, name, |tag| {
            authorise_then_release(tag, lapsed, version)
        })
        .await;
        for invoice in invoices {
            assert_eq!(
                outcome(&app, &invoice).await,
                ("OPEN".to_owned(), 0, 0, "CANCELED".to_owned(), 0),
                "{invoice} ({name})"
            );
        }
    }
    app.stop().await;
}

/// A decline's `charge.failed` and `payment_intent.payment_failed` in either order: the payment
/// fails once, with the decline code and the message a person can act on, whichever came first.
#[tokio::test]
async fn a_declines_reason_is_the_same_whichever_of_its_events_arrives_first() {
    let app = spawn_with_customer().await;
    let subscriber = app.subscribe().await;
    for (tag, charge_first) in [("declc", true), ("declp", false)] {
        let intent = format!("pi_{tag}");
        let charge = charge_id(tag);
        let failed_charge = event(tag, "charge.failed", T0, BASIL)
            .payment(&intent, 1000, "gbp")
            .object_id(&charge)
            .object(declined_for_insufficient_funds);
        let failed_intent = event(tag, "payment_intent.payment_failed", T0, BASIL)
            .payment(&intent, 1000, "gbp")
            .object(|object| {
                object["status"] = "requires_payment_method".into();
                object["amount_received"] = 0.into();
                object["latest_charge"] = charge.clone().into();
                declined_for_insufficient_funds(object);
            });
        let mut events = vec![failed_charge.to_bytes(), failed_intent.to_bytes()];
        if !charge_first {
            events.reverse();
        }
        deliver_in_order(&app, &app.db(), &format!("inv_{tag}"), &intent, &events).await;
        let invoice = app.invoice(&format!("inv_{tag}")).await;
        let failed = payment(&invoice, &intent);
        assert_eq!(failed["status"], "FAILED", "{tag}: {failed}");
        assert_eq!(
            failed["failureCode"], "insufficient_funds",
            "{tag}: {failed}"
        );
        assert_eq!(
            failed["failureMessage"], "Your card has insufficient funds.",
            "{tag}: {failed}"
        );
    }
    // One `payment.failed` for each decline, not one per event.
    let messages = app.take_messages(&subscriber, 4).await;
    let failed = messages
        .iter()
        .filter(|m| m.routing_key == "payment.failed")
        .count();
    assert_eq!(failed, 2);
    app.stop().await;
}
