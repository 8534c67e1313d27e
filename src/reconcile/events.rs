//! Provider events → what they mean to settle. This is DESIGN §5's event → effect table, as pure
//! functions over the provider's JSON. Unknown types and actions are `Ignored`, never errors: a new
//! provider event type must not need a release, nor end in the dead-letter queue.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::methods::MethodProvider;
use super::payment::PaymentSignal;

/// When a GoCardless payment counts as paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoCardlessCollectedAt {
    /// At `confirmed`: the bank did not return an error in time (a late failure may still come).
    Confirmed,
    /// Only at `paid_out`: the money reached the merchant's account.
    PaidOut,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    Payment(PaymentEvent),
    Method(MethodEvent),
    /// Recorded in the inbox and acknowledged; nothing else happens.
    Ignored(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PaymentEvent {
    pub provider: MethodProvider,
    /// Stripe PaymentIntent id (every Stripe event of one payment keys on it) or GoCardless `PM…`.
    pub provider_payment_id: String,
    /// The billing system's invoice id from the provider's metadata, when present.
    pub invoice_ref: Option<String>,
    pub signal: PaymentSignal,
    /// Stripe gives amounts; GoCardless events carry none.
    pub amount: Option<i64>,
    /// As the provider wrote it (Stripe writes lower case).
    pub currency: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub failure: Option<Failure>,
    /// GoCardless `details.will_attempt_retry`.
    pub provider_will_retry: Option<bool>,
    /// The provider customer id, when the event names one (Stripe `customer`).
    pub provider_customer_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MethodEvent {
    /// A Stripe payment method attached to (or set up for) a customer: it becomes the method on
    /// file when `on_file`, and its details are refreshed either way.
    StripeMethod {
        customer: Option<String>,
        method_id: String,
        method_type: String,
        on_file: bool,
        exp_month: Option<i16>,
        exp_year: Option<i16>,
        billing_details: Option<Value>,
        details: Value,
        occurred_at: DateTime<Utc>,
    },
    StripeDetached {
        method_id: String,
        occurred_at: DateTime<Utc>,
    },
    /// A GoCardless mandate became usable or unusable.
    Mandate {
        mandate: String,
        usable: bool,
        action: String,
        occurred_at: DateTime<Utc>,
    },
    /// `replaced`: the customer's method switches to the new mandate.
    MandateReplaced {
        mandate: String,
        new_mandate: String,
        occurred_at: DateTime<Utc>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("the event is not valid JSON: {0}")]
    Json(String),
    #[error("the event has no usable `{0}`")]
    Missing(&'static str),
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn integer(value: &Value, pointer: &str) -> Option<i64> {
    value.pointer(pointer).and_then(Value::as_i64)
}

/// Interprets one provider event (the exact JSON queued by the receiver).
pub fn interpret(
    provider: MethodProvider,
    event_type: &str,
    event: &Value,
    collected_at: GoCardlessCollectedAt,
) -> Result<DomainEvent, EventError> {
    match provider {
        MethodProvider::Stripe => stripe(event_type, event),
        MethodProvider::GoCardless => gocardless(event, collected_at),
    }
}

fn stripe(event_type: &str, event: &Value) -> Result<DomainEvent, EventError> {
    let occurred_at = integer(event, "/created")
        .and_then(|t| DateTime::from_timestamp(t, 0))
        .ok_or(EventError::Missing("created"))?;
    let object = event
        .pointer("/data/object")
        .ok_or(EventError::Missing("data.object"))?;
    let id = || text(object, "/id").ok_or(EventError::Missing("data.object.id"));
    use PaymentSignal as S;

    // (signal, the PaymentIntent id's field, the amount's field), per event type.
    let (signal, amount_field) = match event_type {
        "payment_intent.succeeded" => (S::Succeeded, "/amount_received"),
        "payment_intent.processing" => (S::Pending, "/amount"),
        "payment_intent.payment_failed" => (S::Failed, "/amount"),
        "payment_intent.canceled" => (S::Canceled, "/amount"),
        "checkout.session.completed" => {
            let paid = text(object, "/payment_status").as_deref() == Some("paid");
            (
                if paid { S::Succeeded } else { S::Pending },
                "/amount_total",
            )
        }
        "checkout.session.async_payment_succeeded" => (S::Succeeded, "/amount_total"),
        "checkout.session.async_payment_failed" => (S::Failed, "/amount_total"),
        "invoice.paid" => (S::Succeeded, "/amount_paid"),
        "invoice.payment_failed" => (S::Failed, "/amount_due"),
        "charge.succeeded" => (S::Succeeded, "/amount_captured"),
        "charge.failed" => (S::Failed, "/amount"),
        "payment_method.attached"
        | "payment_method.updated"
        | "payment_method.automatically_updated" => {
            return Ok(DomainEvent::Method(stripe_method(
                object,
                event_type == "payment_method.attached",
                occurred_at,
            )?));
        }
        "payment_method.detached" => {
            return Ok(DomainEvent::Method(MethodEvent::StripeDetached {
                method_id: id()?,
                occurred_at,
            }));
        }
        "setup_intent.succeeded" => {
            let method_id = text(object, "/payment_method")
                .or_else(|| text(object, "/payment_method/id"))
                .ok_or(EventError::Missing("data.object.payment_method"))?;
            return Ok(DomainEvent::Method(MethodEvent::StripeMethod {
                customer: text(object, "/customer"),
                method_id,
                method_type: text(object, "/payment_method_types/0")
                    .unwrap_or_else(|| "card".into()),
                on_file: true,
                exp_month: None,
                exp_year: None,
                billing_details: None,
                details: serde_json::json!({ "setupIntent": text(object, "/id") }),
                occurred_at,
            }));
        }
        _ => return Ok(DomainEvent::Ignored("unhandled Stripe event type")),
    };

    // Every event of one payment keys on its PaymentIntent, so money is counted once per payment.
    let object_kind = event_type.split('.').next().unwrap_or_default();
    let provider_payment_id = if object_kind == "payment_intent" {
        id()?
    } else {
        text(object, "/payment_intent")
            .or_else(|| text(object, "/payment_intent/id"))
            .or_else(|| text(object, "/id"))
            .ok_or(EventError::Missing("data.object.payment_intent"))?
    };
    let amount = integer(object, amount_field).or_else(|| integer(object, "/amount"));
    let failure = (signal == S::Failed).then(|| stripe_failure(object));
    Ok(DomainEvent::Payment(PaymentEvent {
        provider: MethodProvider::Stripe,
        provider_payment_id,
        invoice_ref: text(object, "/metadata/invoice_id"),
        signal,
        amount,
        currency: text(object, "/currency"),
        occurred_at,
        failure,
        provider_will_retry: None,
        provider_customer_id: text(object, "/customer"),
    }))
}

/// The provider's reason: a PaymentIntent's `last_payment_error` (decline code first, it is the
/// more precise), a charge's `failure_code`/`outcome`.
fn stripe_failure(object: &Value) -> Failure {
    let code = text(object, "/last_payment_error/decline_code")
        .or_else(|| text(object, "/last_payment_error/code"))
        .or_else(|| text(object, "/failure_code"))
        .or_else(|| text(object, "/outcome/reason"));
    let message = text(object, "/last_payment_error/message")
        .or_else(|| text(object, "/failure_message"))
        .or_else(|| text(object, "/outcome/seller_message"));
    Failure { code, message }
}

fn stripe_method(
    object: &Value,
    attached: bool,
    occurred_at: DateTime<Utc>,
) -> Result<MethodEvent, EventError> {
    let method_id = text(object, "/id").ok_or(EventError::Missing("data.object.id"))?;
    let mut details = serde_json::Map::new();
    for (key, pointer) in [
        ("brand", "/card/brand"),
        ("last4", "/card/last4"),
        ("funding", "/card/funding"),
    ] {
        if let Some(value) = text(object, pointer) {
            details.insert(key.into(), value.into());
        }
    }
    Ok(MethodEvent::StripeMethod {
        customer: text(object, "/customer"),
        method_id,
        method_type: text(object, "/type").unwrap_or_else(|| "card".into()),
        on_file: attached,
        exp_month: integer(object, "/card/exp_month").and_then(|m| i16::try_from(m).ok()),
        exp_year: integer(object, "/card/exp_year").and_then(|y| i16::try_from(y).ok()),
        billing_details: object
            .get("billing_details")
            .filter(|v| v.is_object())
            .cloned(),
        details: Value::Object(details),
        occurred_at,
    })
}

fn gocardless(
    event: &Value,
    collected_at: GoCardlessCollectedAt,
) -> Result<DomainEvent, EventError> {
    let occurred_at = text(event, "/created_at")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or(EventError::Missing("created_at"))?;
    let resource_type = text(event, "/resource_type").unwrap_or_default();
    let action = text(event, "/action").unwrap_or_default();
    use PaymentSignal as S;
    match resource_type.as_str() {
        "payments" => {
            let signal = match action.as_str() {
                "created"
                | "submitted"
                | "customer_approval_granted"
                | "resubmission_requested" => S::Pending,
                "confirmed" => match collected_at {
                    GoCardlessCollectedAt::Confirmed => S::Succeeded,
                    GoCardlessCollectedAt::PaidOut => S::Pending,
                },
                "paid_out" => S::Succeeded,
                "failed" | "cancelled" | "customer_approval_denied" => S::Failed,
                "charged_back" => S::ChargedBack,
                "chargeback_cancelled" => S::ChargebackCancelled,
                "late_failure_settled" | "chargeback_settled" => S::Recorded,
                a if a.starts_with("surcharge_fee_") => S::Recorded,
                _ => return Ok(DomainEvent::Ignored("unhandled GoCardless payment action")),
            };
            let provider_payment_id =
                text(event, "/links/payment").ok_or(EventError::Missing("links.payment"))?;
            let failure = (signal == S::Failed).then(|| Failure {
                code: text(event, "/details/cause"),
                message: text(event, "/details/description"),
            });
            // Cancellation and a denied approval are final: GoCardless will not retry them.
            let provider_will_retry = match action.as_str() {
                "cancelled" | "customer_approval_denied" => Some(false),
                _ => event
                    .pointer("/details/will_attempt_retry")
                    .and_then(Value::as_bool),
            };
            Ok(DomainEvent::Payment(PaymentEvent {
                provider: MethodProvider::GoCardless,
                provider_payment_id,
                invoice_ref: text(event, "/resource_metadata/invoice_id")
                    .or_else(|| text(event, "/metadata/invoice_id")),
                signal,
                amount: None,
                currency: None,
                occurred_at,
                failure,
                provider_will_retry,
                provider_customer_id: None,
            }))
        }
        "mandates" => {
            let mandate =
                text(event, "/links/mandate").ok_or(EventError::Missing("links.mandate"))?;
            let usable = match action.as_str() {
                "active" | "reinstated" | "transferred" => true,
                "cancelled" | "failed" | "expired" | "consumed" | "blocked" => false,
                "replaced" => {
                    let new_mandate = text(event, "/links/new_mandate")
                        .ok_or(EventError::Missing("links.new_mandate"))?;
                    return Ok(DomainEvent::Method(MethodEvent::MandateReplaced {
                        mandate,
                        new_mandate,
                        occurred_at,
                    }));
                }
                _ => return Ok(DomainEvent::Ignored("unhandled GoCardless mandate action")),
            };
            Ok(DomainEvent::Method(MethodEvent::Mandate {
                mandate,
                usable,
                action,
                occurred_at,
            }))
        }
        _ => Ok(DomainEvent::Ignored("unhandled GoCardless resource type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = include_str!("../../tests/fixtures/stripe-objects.json");

    /// `interpret` over raw bytes, as they come off the queue.
    fn interpret(
        provider: MethodProvider,
        event_type: &str,
        body: &[u8],
        collected_at: GoCardlessCollectedAt,
    ) -> Result<DomainEvent, EventError> {
        super::interpret(
            provider,
            event_type,
            &serde_json::from_slice(body).unwrap(),
            collected_at,
        )
    }

    fn stripe_event(event_type: &str, object_kind: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let fixtures: Value = serde_json::from_str(FIXTURES).unwrap();
        let mut event = fixtures["event"].clone();
        event["type"] = event_type.into();
        event["created"] = 1_800_000_000.into();
        event["data"]["object"] = fixtures[object_kind].clone();
        edit(&mut event["data"]["object"]);
        serde_json::to_vec(&event).unwrap()
    }

    fn payment(event: DomainEvent) -> PaymentEvent {
        match event {
            DomainEvent::Payment(payment) => payment,
            other => panic!("not a payment event: {other:?}"),
        }
    }

    const C: GoCardlessCollectedAt = GoCardlessCollectedAt::Confirmed;

    #[test]
    fn stripe_payment_rows_of_the_table() {
        use PaymentSignal as S;
        let rows: &[(&str, &str, &str, S)] = &[
            (
                "payment_intent.succeeded",
                "payment_intent",
                "",
                S::Succeeded,
            ),
            (
                "payment_intent.processing",
                "payment_intent",
                "",
                S::Pending,
            ),
            (
                "payment_intent.payment_failed",
                "payment_intent",
                "",
                S::Failed,
            ),
            ("payment_intent.canceled", "payment_intent", "", S::Canceled),
            (
                "checkout.session.completed",
                "checkout.session",
                "paid",
                S::Succeeded,
            ),
            (
                "checkout.session.completed",
                "checkout.session",
                "unpaid",
                S::Pending,
            ),
            (
                "checkout.session.async_payment_succeeded",
                "checkout.session",
                "",
                S::Succeeded,
            ),
            (
                "checkout.session.async_payment_failed",
                "checkout.session",
                "",
                S::Failed,
            ),
            ("invoice.paid", "invoice", "", S::Succeeded),
            ("invoice.payment_failed", "invoice", "", S::Failed),
        ];
        for (event_type, kind, payment_status, signal) in rows {
            let body = stripe_event(event_type, kind, |object| {
                object["metadata"] = serde_json::json!({"invoice_id": "inv_1"});
                if *kind != "payment_intent" {
                    object["payment_intent"] = "pi_shared".into();
                } else {
                    object["id"] = "pi_shared".into();
                }
                if !payment_status.is_empty() {
                    object["payment_status"] = (*payment_status).into();
                }
            });
            let event = payment(interpret(MethodProvider::Stripe, event_type, &body, C).unwrap());
            assert_eq!(event.signal, *signal, "{event_type} {payment_status}");
            assert_eq!(
                event.provider_payment_id, "pi_shared",
                "{event_type} keys on the PaymentIntent"
            );
            assert_eq!(event.invoice_ref.as_deref(), Some("inv_1"));
            assert_eq!(event.occurred_at.timestamp(), 1_800_000_000);
        }
    }

    #[test]
    fn stripe_failures_carry_the_decline_code_and_message() {
        let body = stripe_event(
            "payment_intent.payment_failed",
            "payment_intent",
            |object| {
                object["last_payment_error"] = serde_json::json!({
                    "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
                    "message": "Your card has insufficient funds."
                });
            },
        );
        let event = payment(
            interpret(
                MethodProvider::Stripe,
                "payment_intent.payment_failed",
                &body,
                C,
            )
            .unwrap(),
        );
        let failure = event.failure.unwrap();
        assert_eq!(failure.code.as_deref(), Some("insufficient_funds"));
        assert_eq!(
            failure.message.as_deref(),
            Some("Your card has insufficient funds.")
        );
        // The fixture's odd `last_payment_error` with only a `type` parses to no reason at all.
        let body = stripe_event("payment_intent.payment_failed", "payment_intent", |_| {});
        let event = payment(
            interpret(
                MethodProvider::Stripe,
                "payment_intent.payment_failed",
                &body,
                C,
            )
            .unwrap(),
        );
        assert_eq!(
            event.failure,
            Some(Failure {
                code: None,
                message: None
            })
        );
    }

    #[test]
    fn stripe_amounts_come_from_the_field_that_means_money_moved() {
        let body = stripe_event("payment_intent.succeeded", "payment_intent", |object| {
            object["amount"] = 5000.into();
            object["amount_received"] = 4000.into();
        });
        let event = payment(
            interpret(MethodProvider::Stripe, "payment_intent.succeeded", &body, C).unwrap(),
        );
        assert_eq!(event.amount, Some(4000));
        assert_eq!(event.currency.as_deref(), Some("usd"));
    }

    #[test]
    fn stripe_method_events() {
        let body = stripe_event("payment_method.attached", "payment_method", |object| {
            object["customer"] = "cus_1".into();
        });
        match interpret(MethodProvider::Stripe, "payment_method.attached", &body, C).unwrap() {
            DomainEvent::Method(MethodEvent::StripeMethod {
                customer,
                on_file,
                exp_month,
                exp_year,
                ..
            }) => {
                assert_eq!(customer.as_deref(), Some("cus_1"));
                assert!(on_file);
                assert_eq!((exp_month, exp_year), (Some(8), Some(2030)));
            }
            other => panic!("{other:?}"),
        }
        let body = stripe_event("payment_method.detached", "payment_method", |_| {});
        assert!(matches!(
            interpret(MethodProvider::Stripe, "payment_method.detached", &body, C).unwrap(),
            DomainEvent::Method(MethodEvent::StripeDetached { .. })
        ));
        let body = stripe_event("setup_intent.succeeded", "setup_intent", |object| {
            object["customer"] = "cus_1".into();
            object["payment_method"] = "pm_1".into();
        });
        assert!(matches!(
            interpret(MethodProvider::Stripe, "setup_intent.succeeded", &body, C).unwrap(),
            DomainEvent::Method(MethodEvent::StripeMethod { on_file: true, .. })
        ));
    }

    #[test]
    fn unknown_stripe_types_are_ignored_not_errors() {
        let body = stripe_event("plan.created", "invoice", |_| {});
        assert!(matches!(
            interpret(MethodProvider::Stripe, "plan.created", &body, C).unwrap(),
            DomainEvent::Ignored(_)
        ));
    }

    fn gocardless_event(resource_type: &str, action: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "id": "EV1", "created_at": "2026-11-02T12:00:03.000Z",
            "resource_type": resource_type, "action": action,
            "links": {"payment": "PM1", "mandate": "MD1", "new_mandate": "MD2"},
            "details": {"cause": "insufficient_funds", "description": "No money.", "will_attempt_retry": true},
            "resource_metadata": {"invoice_id": "inv_9"}
        }))
        .unwrap()
    }

    #[test]
    fn gocardless_payment_rows_of_the_table() {
        use PaymentSignal as S;
        let rows: &[(&str, S)] = &[
            ("created", S::Pending),
            ("submitted", S::Pending),
            ("customer_approval_granted", S::Pending),
            ("resubmission_requested", S::Pending),
            ("confirmed", S::Succeeded),
            ("paid_out", S::Succeeded),
            ("failed", S::Failed),
            ("cancelled", S::Failed),
            ("customer_approval_denied", S::Failed),
            ("charged_back", S::ChargedBack),
            ("chargeback_cancelled", S::ChargebackCancelled),
            ("late_failure_settled", S::Recorded),
            ("chargeback_settled", S::Recorded),
            ("surcharge_fee_debited", S::Recorded),
        ];
        for (action, signal) in rows {
            let event = payment(
                interpret(
                    MethodProvider::GoCardless,
                    "",
                    &gocardless_event("payments", action),
                    C,
                )
                .unwrap(),
            );
            assert_eq!(event.signal, *signal, "{action}");
            assert_eq!(event.provider_payment_id, "PM1");
            assert_eq!(event.invoice_ref.as_deref(), Some("inv_9"));
            assert_eq!(event.amount, None);
        }
        let failed = payment(
            interpret(
                MethodProvider::GoCardless,
                "",
                &gocardless_event("payments", "failed"),
                C,
            )
            .unwrap(),
        );
        assert_eq!(failed.provider_will_retry, Some(true));
        assert_eq!(
            failed.failure.unwrap().code.as_deref(),
            Some("insufficient_funds")
        );
        let cancelled = payment(
            interpret(
                MethodProvider::GoCardless,
                "",
                &gocardless_event("payments", "cancelled"),
                C,
            )
            .unwrap(),
        );
        assert_eq!(cancelled.provider_will_retry, Some(false));
        let confirmed = payment(
            interpret(
                MethodProvider::GoCardless,
                "",
                &gocardless_event("payments", "confirmed"),
                GoCardlessCollectedAt::PaidOut,
            )
            .unwrap(),
        );
        assert_eq!(
            confirmed.signal,
            S::Pending,
            "counted only at paid_out when so configured"
        );
        assert!(matches!(
            interpret(
                MethodProvider::GoCardless,
                "",
                &gocardless_event("payments", "brand_new_action"),
                C
            )
            .unwrap(),
            DomainEvent::Ignored(_)
        ));
    }

    #[test]
    fn gocardless_mandate_rows_of_the_table() {
        for (action, usable) in [
            ("active", true),
            ("reinstated", true),
            ("transferred", true),
            ("cancelled", false),
            ("failed", false),
            ("expired", false),
            ("consumed", false),
            ("blocked", false),
        ] {
            match interpret(
                MethodProvider::GoCardless,
                "",
                &gocardless_event("mandates", action),
                C,
            )
            .unwrap()
            {
                DomainEvent::Method(MethodEvent::Mandate {
                    mandate, usable: u, ..
                }) => {
                    assert_eq!(mandate, "MD1");
                    assert_eq!(u, usable, "{action}");
                }
                other => panic!("{action}: {other:?}"),
            }
        }
        assert_eq!(
            interpret(
                MethodProvider::GoCardless,
                "",
                &gocardless_event("mandates", "replaced"),
                C
            )
            .unwrap(),
            DomainEvent::Method(MethodEvent::MandateReplaced {
                mandate: "MD1".into(),
                new_mandate: "MD2".into(),
                occurred_at: "2026-11-02T12:00:03Z".parse().unwrap()
            })
        );
        assert!(matches!(
            interpret(
                MethodProvider::GoCardless,
                "",
                &gocardless_event("refunds", "created"),
                C
            )
            .unwrap(),
            DomainEvent::Ignored(_)
        ));
    }

    #[test]
    fn the_shared_gocardless_fixture_interprets_without_error() {
        let fixture: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/gocardless-webhook.json"))
                .unwrap();
        for event in fixture["events"].as_array().unwrap() {
            let body = serde_json::to_vec(event).unwrap();
            interpret(MethodProvider::GoCardless, "", &body, C).unwrap();
        }
    }
}
