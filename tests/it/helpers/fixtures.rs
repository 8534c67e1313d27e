//! Provider events for the tests, built from the providers' own published example objects
//! (`tests/fixtures`), and the signatures the receiver checks.

use secrecy::SecretString;
use serde_json::{Value, json};

use super::{GOCARDLESS_SECRET, STRIPE_SECRET};

pub fn stripe_signature(body: &[u8], timestamp: i64) -> String {
    settle::ingress::stripe::sign(&SecretString::from(STRIPE_SECRET), timestamp, body)
}

pub fn gocardless_signature(body: &[u8]) -> String {
    settle::ingress::gocardless::sign(&SecretString::from(GOCARDLESS_SECRET), body)
}

/// A Stripe event built from Stripe's own published example objects (tests/fixtures), with the
/// fields that matter set: real-shaped, with every field Stripe sends.
pub fn stripe_event(event_type: &str, object_kind: &str, id: &str) -> Vec<u8> {
    let fixtures: Value =
        serde_json::from_str(include_str!("../../fixtures/stripe-objects.json")).unwrap();
    let mut event = fixtures["event"].clone();
    event["id"] = id.into();
    event["type"] = event_type.into();
    event["created"] = chrono::Utc::now().timestamp().into();
    event["data"]["object"] = fixtures[object_kind].clone();
    serde_json::to_vec(&event).unwrap()
}

/// A Stripe event from Stripe's published example objects, with the fields that matter set.
pub fn stripe_payment_event(
    event_type: &str,
    event_id: &str,
    payment_intent: &str,
    invoice_id: Option<&str>,
    amount: i64,
    created: i64,
) -> Vec<u8> {
    let object_kind = match event_type.split('.').next().unwrap() {
        "checkout" => "checkout.session",
        kind => kind,
    };
    let fixtures: Value =
        serde_json::from_str(include_str!("../../fixtures/stripe-objects.json")).unwrap();
    let mut event = fixtures["event"].clone();
    event["id"] = event_id.into();
    event["type"] = event_type.into();
    event["created"] = created.into();
    let mut object = fixtures[object_kind].clone();
    match object_kind {
        "payment_intent" => {
            object["id"] = payment_intent.into();
            object["amount"] = amount.into();
            object["amount_received"] = amount.into();
        }
        "checkout.session" => {
            object["payment_intent"] = payment_intent.into();
            object["amount_total"] = amount.into();
            object["payment_status"] = "paid".into();
        }
        "invoice" => {
            object["payment_intent"] = payment_intent.into();
            object["amount_paid"] = amount.into();
            object["amount_due"] = amount.into();
        }
        _ => {}
    }
    object["currency"] = "gbp".into();
    object["metadata"] = match invoice_id {
        Some(id) => json!({ "invoice_id": id }),
        None => json!({}),
    };
    event["data"]["object"] = object;
    serde_json::to_vec(&event).unwrap()
}

pub fn gocardless_event(
    id: &str,
    resource_type: &str,
    action: &str,
    links: Value,
    created_at: &str,
) -> Value {
    let fixture: Value =
        serde_json::from_str(include_str!("../../fixtures/gocardless-webhook.json")).unwrap();
    let mut event = fixture["events"][1].clone(); // the `failed` payment: every field present
    event["id"] = id.into();
    event["resource_type"] = resource_type.into();
    event["action"] = action.into();
    event["links"] = links;
    event["created_at"] = created_at.into();
    event
}

/// A GoCardless webhook body: one batch of `events`.
pub fn gocardless_batch(events: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"events": events, "meta": {"webhook_id": "WB_TEST"}})).unwrap()
}
