//! GoCardless events: `<resource_type>.<action>` with links to the resource. Payment events carry
//! no amount (the registered payment's or the invoice's outstanding amount counts); mandate events
//! make the customer's direct-debit method usable or not.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::provider::{GoCardlessCollectedAt, Provider};
use crate::providers::charge::METADATA_CHARGE;
use crate::reconcile::events::{
    DomainEvent, EventError, Failure, MethodEvent, PaymentEvent, PayoutEvent, PayoutStage,
    RefundEvent, RefundObservation, integer, text,
};
use crate::reconcile::money::Currency;
use crate::reconcile::payment::PaymentSignal;
use crate::reconcile::refund::RefundStatus;

pub(super) fn interpret(
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
                provider: Provider::GoCardless,
                provider_payment_id,
                invoice_ref: text(event, "/resource_metadata/invoice_id")
                    .or_else(|| text(event, "/metadata/invoice_id")),
                provider_invoice_id: None,
                signal,
                amount: None,
                currency: None,
                occurred_at,
                failure,
                // Each GoCardless failure event is an attempt of its own.
                attempt_id: None,
                provider_will_retry,
                hold_expires_at: None,
                charge_key: text(event, &format!("/resource_metadata/{METADATA_CHARGE}"))
                    .or_else(|| text(event, &format!("/metadata/{METADATA_CHARGE}"))),
            }))
        }
        "payouts" => match action.as_str() {
            // Paid: its items are final, and listing them says what it is.
            "paid" => Ok(DomainEvent::Payout(PayoutEvent {
                provider: Provider::GoCardless,
                provider_payout_id: text(event, "/links/payout")
                    .ok_or(EventError::Missing("links.payout"))?,
                stage: PayoutStage::Listable,
                amount: None,
                currency: None,
                arrival_date: None,
                occurred_at,
            })),
            _ => Ok(DomainEvent::Ignored("unhandled GoCardless payout action")),
        },
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
                occurred_at,
            }))
        }
        "refunds" => {
            // `funds_returned` and `bounced`: the refund never reached the customer and the
            // money came back, even after it was paid.
            let status = match action.as_str() {
                "created" => RefundStatus::Pending,
                "paid" | "refund_settled" => RefundStatus::Succeeded,
                "failed" | "funds_returned" | "bounced" => RefundStatus::Failed,
                _ => return Ok(DomainEvent::Ignored("unhandled GoCardless refund action")),
            };
            let provider_refund_id =
                text(event, "/links/refund").ok_or(EventError::Missing("links.refund"))?;
            Ok(DomainEvent::Refund(RefundEvent {
                provider: Provider::GoCardless,
                // Refund events link the refund only; the registered refund names its payment.
                provider_payment_id: text(event, "/links/payment"),
                currency: None,
                occurred_at,
                refunds: vec![RefundObservation {
                    provider_refund_id,
                    status,
                    // GoCardless events carry no amounts.
                    amount: None,
                    failure_reason: status
                        .is_reversed()
                        .then(|| text(event, "/details/cause"))
                        .flatten(),
                }],
            }))
        }
        _ => Ok(DomainEvent::Ignored("unhandled GoCardless resource type")),
    }
}

/// A payout as `GET /payouts` or `GET /payouts/{id}` returns it (`amount` in minor units):
/// paid as `payouts.paid`, with the amount, currency and arrival date the event lacks; bounced
/// (the bank returned it) as failed. `None`: still `pending`.
pub(super) fn listed_payout(payout: &Value) -> Result<Option<PayoutEvent>, EventError> {
    let occurred_at = text(payout, "/created_at")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or(EventError::Missing("created_at"))?;
    let stage = match text(payout, "/status").as_deref() {
        Some("paid") => PayoutStage::Listable,
        Some("bounced") => PayoutStage::Failed(Failure {
            code: Some("bounced".to_owned()),
            message: Some("the bank returned the payout".to_owned()),
        }),
        _ => return Ok(None),
    };
    let currency = text(payout, "/currency")
        .map(|code| {
            Currency::parse(&code).map_err(|message| EventError::Invalid {
                field: "currency",
                message,
            })
        })
        .transpose()?;
    Ok(Some(PayoutEvent {
        provider: Provider::GoCardless,
        provider_payout_id: text(payout, "/id").ok_or(EventError::Missing("id"))?,
        stage,
        amount: Some(integer(payout, "/amount").ok_or(EventError::Missing("amount"))?),
        currency,
        arrival_date: text(payout, "/arrival_date")
            .and_then(|d| chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok()),
        occurred_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `interpret` over raw bytes, as they come off the queue.
    fn interpret(
        body: &[u8],
        collected_at: GoCardlessCollectedAt,
    ) -> Result<DomainEvent, EventError> {
        super::interpret(&serde_json::from_slice(body).unwrap(), collected_at)
    }

    #[test]
    fn a_listed_payout_carries_what_its_event_lacks_and_a_bounced_one_failed() {
        let mut payout = serde_json::json!({
            "id": "PO000123", "amount": 9900, "arrival_date": "2026-11-20",
            "created_at": "2026-11-19T09:51:33.167Z", "currency": "GBP", "deducted_fees": 100,
            "links": {"creditor": "CR000123", "creditor_bank_account": "BA000123"},
            "payout_type": "merchant", "reference": "REF-REF", "status": "paid"
        });
        let paid = listed_payout(&payout).unwrap().unwrap();
        assert_eq!(paid.stage, PayoutStage::Listable);
        assert_eq!(paid.amount, Some(9900));
        assert_eq!(paid.currency.map(|c| c.as_str()), Some("GBP"));
        assert_eq!(
            paid.arrival_date.map(|d| d.to_string()).as_deref(),
            Some("2026-11-20")
        );
        payout["status"] = "bounced".into();
        assert!(matches!(
            listed_payout(&payout).unwrap().unwrap().stage,
            PayoutStage::Failed(_)
        ));
        payout["status"] = "pending".into();
        assert_eq!(listed_payout(&payout).unwrap(), None);
        payout["currency"] = "XYZ".into();
        payout["status"] = "paid".into();
        assert!(
            listed_payout(&payout).is_err(),
            "a currency that is not ISO 4217"
        );
    }

    fn payment(event: DomainEvent) -> PaymentEvent {
        match event {
            DomainEvent::Payment(payment) => payment,
            other => panic!("not a payment event: {other:?}"),
        }
    }

    use crate::reconcile::events::fixtures::GoCardlessEvent;

    const C: GoCardlessCollectedAt = GoCardlessCollectedAt::Confirmed;

    /// The fixture's full event (its `details` say insufficient funds, will retry), as
    /// `action` on `resource_type`, linked to payment PM1 and mandates MD1 → MD2.
    fn gocardless_event(resource_type: &str, action: &str) -> Vec<u8> {
        GoCardlessEvent::new("EV1", resource_type, action)
            .links(serde_json::json!({"payment": "PM1", "mandate": "MD1", "new_mandate": "MD2"}))
            .created_at("2026-11-02T12:00:03.000Z")
            .edit(|event| event["resource_metadata"] = serde_json::json!({"invoice_id": "inv_9"}))
            .json()
            .to_string()
            .into_bytes()
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
            let event = payment(interpret(&gocardless_event("payments", action), C).unwrap());
            assert_eq!(event.signal, *signal, "{action}");
            assert_eq!(event.provider_payment_id, "PM1");
            assert_eq!(event.invoice_ref.as_deref(), Some("inv_9"));
            assert_eq!(event.amount, None);
        }
        let failed = payment(interpret(&gocardless_event("payments", "failed"), C).unwrap());
        assert_eq!(failed.provider_will_retry, Some(true));
        assert_eq!(
            failed.failure.unwrap().code.as_deref(),
            Some("insufficient_funds")
        );
        let cancelled = payment(interpret(&gocardless_event("payments", "cancelled"), C).unwrap());
        assert_eq!(cancelled.provider_will_retry, Some(false));
        let confirmed = payment(
            interpret(
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
            interpret(&gocardless_event("payments", "brand_new_action"), C).unwrap(),
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
            match interpret(&gocardless_event("mandates", action), C).unwrap() {
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
            interpret(&gocardless_event("mandates", "replaced"), C).unwrap(),
            DomainEvent::Method(MethodEvent::MandateReplaced {
                mandate: "MD1".into(),
                new_mandate: "MD2".into(),
                occurred_at: "2026-11-02T12:00:03Z".parse().unwrap()
            })
        );
        assert!(matches!(
            interpret(&gocardless_event("creditors", "updated"), C).unwrap(),
            DomainEvent::Ignored(_)
        ));
    }

    #[test]
    fn gocardless_refund_rows_of_the_table() {
        use crate::reconcile::refund::RefundStatus as R;
        for (action, status) in [
            ("created", R::Pending),
            ("paid", R::Succeeded),
            ("refund_settled", R::Succeeded),
            ("failed", R::Failed),
            ("funds_returned", R::Failed),
            ("bounced", R::Failed),
        ] {
            let body = GoCardlessEvent::new("EV1", "refunds", action)
                .links(serde_json::json!({"refund": "RF1", "organisation": "OR1"}))
                .json()
                .to_string();
            match interpret(body.as_bytes(), C).unwrap() {
                DomainEvent::Refund(event) => {
                    assert_eq!(
                        event.provider_payment_id, None,
                        "refund events name no payment"
                    );
                    assert_eq!(event.refunds[0].provider_refund_id, "RF1");
                    assert_eq!(event.refunds[0].status, status, "{action}");
                    assert_eq!(event.refunds[0].amount, None);
                    assert_eq!(
                        event.refunds[0].failure_reason.is_some(),
                        status == R::Failed,
                        "{action}: the fixture's details.cause"
                    );
                }
                other => panic!("{action}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_shared_gocardless_fixture_interprets_without_error() {
        let fixture: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/gocardless-webhook.json"
        ))
        .unwrap();
        for event in fixture["events"].as_array().unwrap() {
            let body = serde_json::to_vec(event).unwrap();
            interpret(&body, C).unwrap();
        }
    }
}
