//! `settle backfill stripe --verify-open-invoices`: what event lists cannot show. Stripe lists
//! only the events it created; a PaymentIntent whose event Stripe never made is not in any
//! list. So for every PaymentIntent registered against an unpaid invoice and not settled yet,
//! this asks Stripe for the object itself, and when Stripe says it succeeded, failed or was
//! canceled, queues a *synthetic* event of that type carrying the object as Stripe returned it.
//!
//! A synthetic event's id is `evt_settle_verify_<pi>_<outcome>` (a failure adds the failing
//! charge, so a later attempt's decline is a new event): a second verify run is a duplicate in
//! the inbox. A real event for the same outcome arriving later has another id, so the inbox lets
//! it through, and the worker finds nothing left to do: the money is keyed by the PaymentIntent
//! in the ledger, a succeeded PaymentIntent stays succeeded, and a failure of the same charge is
//! the same attempt (`reconcile::plan`): it moves no money and publishes no reconciliation event.

use serde_json::{Value, json};
use sqlx::PgPool;

use super::queue::{Report, SOURCE};
use crate::broker::Broker;
use crate::envelope::QueuedEvent;
use crate::provider::Provider;
use crate::providers::source::Source;

/// The synthetic event for what Stripe says of a PaymentIntent, when it settled: its id, type
/// and exact JSON. `None` while it is still in progress.
pub fn synthetic_event(
    intent: &Value,
    account: Option<&str>,
    now: i64,
) -> Option<(String, String, Vec<u8>)> {
    let id = intent["id"].as_str()?;
    let failing_charge = intent["last_payment_error"]["charge"]
        .as_str()
        .or(intent["latest_charge"].as_str());
    let (event_type, suffix) = match intent["status"].as_str()? {
        "succeeded" => ("payment_intent.succeeded", "succeeded".to_owned()),
        "canceled" => ("payment_intent.canceled", "canceled".to_owned()),
        // Authorised, waiting for its capture: the hold, which pays nothing yet.
        "requires_capture" => (
            "payment_intent.amount_capturable_updated",
            "authorised".to_owned(),
        ),
        "requires_payment_method" if intent["last_payment_error"].is_object() => (
            "payment_intent.payment_failed",
            format!("failed_{}", failing_charge.unwrap_or("unknown")),
        ),
        _ => return None,
    };
    let event_id = format!("evt_settle_verify_{id}_{suffix}");
    let mut event = json!({
        "id": event_id,
        "object": "event",
        "type": event_type,
        // When settle learned it: the object is as of now.
        "created": now,
        "livemode": intent["livemode"],
        "data": {"object": intent},
        "request": {"id": null, "idempotency_key": null},
        "pending_webhooks": 0,
    });
    if let Some(account) = account {
        event["account"] = account.into();
    }
    let body = serde_json::to_vec(&event).ok()?;
    Some((event_id, event_type.to_owned(), body))
}

/// Verifies the source's account's unsettled PaymentIntents (a Stripe source).
#[tracing::instrument(name = "backfill", skip_all, fields(trace_id = tracing::field::Empty))]
pub async fn run(
    db: &PgPool,
    broker: Option<&Broker>,
    keyring: &crate::sealed::Keyring,
    source: &Source,
) -> Report {
    // A run starts a trace: the events it queues, and what the worker makes of them, join it.
    crate::trace::continue_in(&tracing::Span::current(), None);
    let mut report = Report {
        source: source.name().to_owned(),
        ..Report::default()
    };
    let Some(credentials) = source.stripe() else {
        report.error = Some("only Stripe PaymentIntents are verified".into());
        return report;
    };
    let intents =
        match crate::repository::payments::unsettled_on_open_invoices(db, &source.account_id).await
        {
            Ok(intents) => intents,
            Err(error) => {
                report.error = Some(format!("reading the payments: {error}"));
                return report;
            }
        };
    let now = chrono::Utc::now();
    let mut settled = Vec::new();
    for id in &intents {
        match crate::providers::stripe::api::payment_intent(source.client(), &credentials, id).await
        {
            Ok(intent) => {
                if let Some(event) = synthetic_event(&intent, credentials.account, now.timestamp())
                {
                    settled.push(event);
                }
            }
            Err(error) => {
                report.failed += 1;
                report.error = Some(format!("{id}: {error}"));
            }
        }
    }
    report.found = settled.len();
    let ids: Vec<String> = settled.iter().map(|(id, _, _)| id.clone()).collect();
    let known = match crate::repository::inbox::known(db, Provider::Stripe, &ids).await {
        Ok(known) => known,
        Err(error) => {
            report.error = Some(format!("reading the inbox: {error}"));
            return report;
        }
    };
    let missed: Vec<_> = settled
        .into_iter()
        .filter(|(id, _, _)| !known.contains(id))
        .collect();
    report.known = report.found - missed.len();
    let Some(broker) = broker else {
        report.queued = missed.len();
        return report;
    };
    let messages: Result<Vec<_>, _> = missed
        .into_iter()
        .map(|(id, event_type, body)| {
            QueuedEvent::new(Provider::Stripe, id, event_type, now, body).map(|queued| {
                queued
                    .via_connection(source.connection_id.as_deref())
                    .from_source(SOURCE)
                    .in_trace_of(&tracing::Span::current())
                    .to_webhook_message(broker.topology(), keyring)
            })
        })
        .collect();
    match messages {
        Ok(messages) => match broker.publish_all(&messages).await {
            Ok(()) => report.queued += messages.len(),
            Err(error) => {
                report.failed += messages.len();
                report.error = Some(error.to_string());
            }
        },
        Err(error) => report.error = Some(error.to_string()),
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(edit: impl FnOnce(&mut Value)) -> Value {
        let fixtures: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/stripe-objects.json")).unwrap();
        let mut intent = fixtures["payment_intent"].clone();
        intent["id"] = "pi_v".into();
        edit(&mut intent);
        intent
    }

    #[test]
    fn a_settled_intent_becomes_an_event_of_its_outcome_with_a_stable_id() {
        let succeeded = intent(|i| i["status"] = "succeeded".into());
        let (id, event_type, body) =
            synthetic_event(&succeeded, Some("acct_1"), 1_790_000_000).unwrap();
        assert_eq!(id, "evt_settle_verify_pi_v_succeeded");
        assert_eq!(event_type, "payment_intent.succeeded");
        let event: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            event["data"]["object"], succeeded,
            "the object as Stripe returned it"
        );
        assert_eq!(event["account"], "acct_1");
        assert_eq!(event["created"], 1_790_000_000);

        let declined = intent(|i| {
            i["status"] = "requires_payment_method".into();
            i["last_payment_error"] = json!({"type": "card_error", "charge": "ch_2"});
        });
        let (id, event_type, _) = synthetic_event(&declined, None, 0).unwrap();
        assert_eq!(id, "evt_settle_verify_pi_v_failed_ch_2");
        assert_eq!(event_type, "payment_intent.payment_failed");

        let authorised = intent(|i| {
            i["status"] = "requires_capture".into();
            i["capture_method"] = "manual".into();
            i["amount_capturable"] = i["amount"].clone();
        });
        let (id, event_type, _) = synthetic_event(&authorised, None, 0).unwrap();
        assert_eq!(id, "evt_settle_verify_pi_v_authorised");
        assert_eq!(event_type, "payment_intent.amount_capturable_updated");

        let canceled = intent(|i| i["status"] = "canceled".into());
        assert_eq!(
            synthetic_event(&canceled, None, 0).unwrap().1,
            "payment_intent.canceled"
        );
        for status in ["processing", "requires_confirmation", "requires_action"] {
            let open = intent(|i| {
                i["status"] = status.into();
                i["last_payment_error"] = Value::Null;
            });
            assert!(synthetic_event(&open, None, 0).is_none(), "{status}");
        }
        // Waiting for a payment method without an error: never tried, not failed.
        let fresh = intent(|i| i["last_payment_error"] = Value::Null);
        assert!(synthetic_event(&fresh, None, 0).is_none());
    }
}
