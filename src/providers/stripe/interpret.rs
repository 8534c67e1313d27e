//! Stripe events: one payment fans out into several event types (PaymentIntent, charge, Checkout
//! Session, Stripe invoice, invoice payment), and they all key on the PaymentIntent id, so money
//! is counted once per payment.
//!
//! Linking a payment to settle's invoice: the PaymentIntent's `metadata.invoice_id` when the
//! billing system set it; else the payment it registered; else, for Stripe Billing (current API
//! versions, whose invoices name no PaymentIntent, and Checkout in subscription mode), through the
//! Stripe invoice: an `invoice.*` or `checkout.session.*` event whose object carries
//! `metadata.invoice_id` links its Stripe invoice `in_…` to settle's invoice (`InvoiceLink`), and
//! `invoice_payment.paid` names that Stripe invoice and the PaymentIntent that paid it. Events
//! that arrive before the link wait as unmatched and are applied when it is made.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::provider::Provider;
use crate::providers::charge::METADATA_CHARGE;
use crate::reconcile::dispute::DisputeStatus;
use crate::reconcile::events::{
    DisputeEvent, DisputeFunds, DomainEvent, EventError, Failure, InvoiceLink, MethodEvent,
    PaymentEvent, PayoutEvent, PayoutStage, RefundEvent, RefundObservation, amount, integer,
    storable_json, text,
};
use crate::reconcile::money::Currency;
use crate::reconcile::payment::PaymentSignal;
use crate::reconcile::refund::RefundStatus;

pub(super) fn interpret(event: &Value) -> Result<DomainEvent, EventError> {
    let event_type = text(event, "/type").ok_or(EventError::Missing("type"))?;
    let event_type = event_type.as_str();
    let occurred_at = integer(event, "/created")
        .and_then(|t| DateTime::from_timestamp(t, 0))
        .ok_or(EventError::Missing("created"))?;
    let object = event
        .pointer("/data/object")
        .ok_or(EventError::Missing("data.object"))?;
    let id = || text(object, "/id").ok_or(EventError::Missing("data.object.id"));
    use PaymentSignal as S;

    // (signal, the amount's field), per event type.
    let (signal, amount_field) = match event_type {
        "charge.refunded" => return refunds_of_charge(object, occurred_at),
        "refund.created" | "refund.updated" | "refund.failed" | "charge.refund.updated" => {
            return one_refund(object, occurred_at);
        }
        dispute if dispute.starts_with("charge.dispute.") => {
            return self::dispute(dispute, object, occurred_at);
        }
        "payout.paid" | "payout.reconciliation_completed" | "payout.failed" | "payout.canceled" => {
            return payout(event_type, object, occurred_at).map(DomainEvent::Payout);
        }
        // The PaymentIntent's own count of what moved: after a capture, what was captured.
        "payment_intent.succeeded" => (S::Succeeded, "/amount_received"),
        // Authorised, to be captured (`capture_method: manual`): the amount is held, not paid.
        "payment_intent.amount_capturable_updated" => (S::Authorised, "/amount_capturable"),
        "payment_intent.processing" => (S::Pending, "/amount"),
        "payment_intent.payment_failed" => (S::AttemptFailed, "/amount"),
        "payment_intent.canceled" => (S::Canceled, "/amount"),
        "checkout.session.completed" => {
            let paid = text(object, "/payment_status").as_deref() == Some("paid");
            (
                if paid { S::Succeeded } else { S::Pending },
                "/amount_total",
            )
        }
        "checkout.session.async_payment_succeeded" => (S::Succeeded, "/amount_total"),
        "checkout.session.async_payment_failed" => (S::AttemptFailed, "/amount_total"),
        "invoice.paid" => (S::Succeeded, "/amount_paid"),
        "invoice.payment_failed" => (S::AttemptFailed, "/amount_due"),
        // An uncaptured charge succeeds as an authorisation: Stripe's own example charge is one
        // (`captured: false`, `amount_captured: 0`), and it collected nothing.
        "charge.succeeded" if object.pointer("/captured") == Some(&Value::Bool(false)) => {
            (S::Authorised, "/amount")
        }
        "charge.succeeded" | "charge.captured" => (S::Succeeded, "/amount_captured"),
        // An uncaptured charge's hold lapsed: released, nothing collected.
        "charge.expired" => (S::Canceled, "/amount"),
        "charge.failed" => (S::AttemptFailed, "/amount"),
        "invoice_payment.paid" => (S::Succeeded, "/amount_paid"),
        "payment_method.attached"
        | "payment_method.updated"
        | "payment_method.automatically_updated" => {
            return Ok(DomainEvent::Method(method(
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
    // A legacy charge without one keys on the charge. An invoice or a Checkout Session without one
    // (the current API's invoices name none; Checkout in subscription mode) only confirms money
    // its PaymentIntent's own events count: keyed on the invoice or session, it would be counted
    // a second time.
    let object_kind = event_type.split('.').next().unwrap_or_default();
    let payment_intent = match object_kind {
        // An invoice payment names what paid: a PaymentIntent, or (legacy) a charge.
        "invoice_payment" => {
            id_at(object, "/payment/payment_intent").or_else(|| id_at(object, "/payment/charge"))
        }
        _ => id_at(object, "/payment_intent"),
    };
    let provider_payment_id = match (object_kind, payment_intent) {
        ("payment_intent", _) => id()?,
        (_, Some(payment_intent)) => payment_intent,
        ("charge", None) => id()?,
        (_, None) => return Ok(invoice_link(object_kind, object, occurred_at)),
    };
    let amount = match amount(object, amount_field, "data.object.amount")? {
        Some(amount) => Some(amount),
        None if object_kind == "charge" && signal == S::Succeeded => captured_of(object)?,
        None => amount(object, "/amount", "data.object.amount")?,
    };
    let currency = currency(object)?;
    let failure = signal.is_failure().then(|| failure(object));
    let attempt_id = signal
        .is_failure()
        .then(|| failing_charge(object_kind, object))
        .flatten();
    Ok(DomainEvent::Payment(PaymentEvent {
        provider: Provider::Stripe,
        provider_payment_id,
        invoice_ref: text(object, "/metadata/invoice_id"),
        provider_invoice_id: (object_kind == "invoice_payment")
            .then(|| id_at(object, "/invoice"))
            .flatten(),
        signal,
        amount,
        currency,
        occurred_at,
        failure,
        attempt_id,
        provider_will_retry: None,
        hold_expires_at: (signal == S::Authorised)
            .then(|| integer(object, "/payment_method_details/card/capture_before"))
            .flatten()
            .and_then(|t| DateTime::from_timestamp(t, 0)),
        charge_key: text(object, &format!("/metadata/{METADATA_CHARGE}")),
    }))
}

/// What a captured charge that does not say `amount_captured` collected: its amount less what it
/// shows refunded, as API versions before 2025-03-31.basil show the remainder a partial capture
/// released (a Refund of it).
fn captured_of(charge: &Value) -> Result<Option<crate::reconcile::money::MinorUnits>, EventError> {
    let Some(charged) = amount(charge, "/amount", "data.object.amount")? else {
        return Ok(None);
    };
    let released = amount(charge, "/amount_refunded", "data.object.amount_refunded")?
        .map_or(0, |released| released.get());
    crate::reconcile::money::MinorUnits::new(charged.get().saturating_sub(released))
        .map(Some)
        .map_err(|message| EventError::Invalid {
            field: "data.object.amount",
            message,
        })
}

/// An invoice or Checkout Session that names no PaymentIntent: it confirms money its
/// PaymentIntent's events count (counted here it would be counted twice), and links its Stripe
/// invoice to settle's invoice when its metadata names one.
fn invoice_link(object_kind: &str, object: &Value, occurred_at: DateTime<Utc>) -> DomainEvent {
    let stripe_invoice = match object_kind {
        "invoice" => text(object, "/id"),
        // A Checkout Session in subscription mode names the invoice it created.
        _ => id_at(object, "/invoice"),
    };
    match (stripe_invoice, text(object, "/metadata/invoice_id")) {
        (Some(provider_invoice_id), Some(invoice_ref)) => DomainEvent::Link(InvoiceLink {
            provider: Provider::Stripe,
            provider_invoice_id,
            invoice_ref,
            occurred_at,
        }),
        _ => DomainEvent::Ignored(
            "names no PaymentIntent: its PaymentIntent's events count the money",
        ),
    }
}

/// A payout's event. Only an automatic payout's lines can be listed; a manual one's cannot, and
/// is recorded as such whatever the event.
fn payout(
    event_type: &str,
    object: &Value,
    occurred_at: DateTime<Utc>,
) -> Result<PayoutEvent, EventError> {
    let automatic = object
        .pointer("/automatic")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let stage = match event_type {
        // Canceled: it never left, so the money is no more in the bank than a failed one's.
        "payout.failed" | "payout.canceled" => PayoutStage::Failed(Failure {
            code: text(object, "/failure_code"),
            message: text(object, "/failure_message"),
        }),
        _ if !automatic => PayoutStage::Unlistable(
            "a manual payout: Stripe does not know which balance transactions it took",
        ),
        "payout.reconciliation_completed" => PayoutStage::Listable,
        _ => PayoutStage::Expected,
    };
    Ok(PayoutEvent {
        provider: Provider::Stripe,
        provider_payout_id: text(object, "/id").ok_or(EventError::Missing("data.object.id"))?,
        stage,
        amount: Some(integer(object, "/amount").ok_or(EventError::Missing("data.object.amount"))?),
        currency: currency(object)?,
        arrival_date: integer(object, "/arrival_date")
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .map(|t| t.date_naive()),
        occurred_at,
    })
}

/// A payout as `GET /v1/payouts` lists it, read as the event its state stands for: failed or
/// canceled as `payout.failed`; paid with its reconciliation `completed` as
/// `payout.reconciliation_completed`; paid otherwise as `payout.paid`. `None`: not paid yet
/// (`pending`, `in_transit`).
pub(super) fn listed_payout(object: &Value) -> Result<Option<PayoutEvent>, EventError> {
    let occurred_at = integer(object, "/created")
        .and_then(|t| DateTime::from_timestamp(t, 0))
        .ok_or(EventError::Missing("created"))?;
    let status = text(object, "/status").unwrap_or_default();
    let reconciliation = text(object, "/reconciliation_status").unwrap_or_default();
    let as_event = match (status.as_str(), reconciliation.as_str()) {
        ("failed", _) => "payout.failed",
        ("canceled", _) => "payout.canceled",
        ("paid", "completed") => "payout.reconciliation_completed",
        ("paid", _) => "payout.paid",
        _ => return Ok(None),
    };
    payout(as_event, object, occurred_at).map(Some)
}

/// Stripe writes currencies in lower case (`gbp`).
fn currency(object: &Value) -> Result<Option<Currency>, EventError> {
    text(object, "/currency")
        .map(|code| {
            Currency::parse_any_case(&code).map_err(|message| EventError::Invalid {
                field: "data.object.currency",
                message,
            })
        })
        .transpose()
}

/// The id at `pointer`, whether Stripe sent the id or the expanded object.
fn id_at(object: &Value, pointer: &str) -> Option<String> {
    text(object, pointer).or_else(|| text(object, &format!("{pointer}/id")))
}

/// The payment a refund or dispute belongs to: its PaymentIntent, else (a legacy charge) its
/// charge, as payment events key them.
fn refunded_or_disputed_payment(object: &Value) -> Option<String> {
    id_at(object, "/payment_intent").or_else(|| id_at(object, "/charge"))
}

/// `charge.refunded`: the refunds the charge lists (its `refunds` list, in API versions and
/// expansions that include it), each keyed by its own id. The current API versions leave the list
/// out: then the event only confirms what the refunds' own `refund.*` events count, as an invoice
/// event only confirms its PaymentIntent's.
fn refunds_of_charge(
    charge: &Value,
    occurred_at: DateTime<Utc>,
) -> Result<DomainEvent, EventError> {
    // Before API version 2025-03-31.basil, releasing a hold made a Refund too: a cancelled or
    // lapsed uncaptured charge lists one of its whole amount, and a partial capture one of the
    // remainder it released. Nothing was collected for them: they are no refunds of money.
    if charge.pointer("/captured") == Some(&Value::Bool(false)) {
        return Ok(DomainEvent::Ignored(
            "an uncaptured charge's hold released: nothing was collected",
        ));
    }
    let mut listed: Vec<&Value> = charge
        .pointer("/refunds/data")
        .and_then(Value::as_array)
        .map(|refunds| refunds.iter().collect())
        .unwrap_or_default();
    if let Some(release) = capture_release(charge, &listed) {
        listed.remove(release);
    }
    if listed.is_empty() {
        return Ok(DomainEvent::Ignored(
            "lists no refunds: the refunds' own refund.* events count the money",
        ));
    }
    let provider_payment_id = id_at(charge, "/payment_intent")
        .or_else(|| text(charge, "/id"))
        .ok_or(EventError::Missing("data.object.id"))?;
    let refunds = listed
        .into_iter()
        .filter_map(|refund| refund_observation(refund).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DomainEvent::Refund(RefundEvent {
        provider: Provider::Stripe,
        provider_payment_id: Some(provider_payment_id),
        currency: currency(charge)?,
        occurred_at,
        refunds,
    }))
}

/// The position in `listed` of the Refund a partial capture made of the remainder it released
/// (API versions before 2025-03-31.basil): of the refunds of exactly that remainder, the oldest,
/// as the capture made it before any refund of captured money could be.
fn capture_release(charge: &Value, listed: &[&Value]) -> Option<usize> {
    let released = integer(charge, "/amount")? - integer(charge, "/amount_captured")?;
    if released <= 0 {
        return None;
    }
    listed
        .iter()
        .enumerate()
        .filter(|(_, refund)| integer(refund, "/amount") == Some(released))
        .min_by_key(|(_, refund)| integer(refund, "/created"))
        .map(|(position, _)| position)
}

/// `refund.created|updated|failed`, `charge.refund.updated`: one refund object.
fn one_refund(refund: &Value, occurred_at: DateTime<Utc>) -> Result<DomainEvent, EventError> {
    let Some(observation) = refund_observation(refund)? else {
        return Ok(DomainEvent::Ignored("unknown Stripe refund status"));
    };
    let provider_payment_id = refunded_or_disputed_payment(refund)
        .ok_or(EventError::Missing("data.object.payment_intent"))?;
    Ok(DomainEvent::Refund(RefundEvent {
        provider: Provider::Stripe,
        provider_payment_id: Some(provider_payment_id),
        currency: currency(refund)?,
        occurred_at,
        refunds: vec![observation],
    }))
}

/// A refund object; `None` for a status settle does not know.
fn refund_observation(refund: &Value) -> Result<Option<RefundObservation>, EventError> {
    let status = match text(refund, "/status").as_deref() {
        Some("pending" | "requires_action") => RefundStatus::Pending,
        Some("succeeded") => RefundStatus::Succeeded,
        Some("failed") => RefundStatus::Failed,
        Some("canceled") => RefundStatus::Canceled,
        _ => return Ok(None),
    };
    Ok(Some(RefundObservation {
        provider_refund_id: text(refund, "/id").ok_or(EventError::Missing("refund id"))?,
        status,
        amount: Some(
            amount(refund, "/amount", "refund amount")?
                .ok_or(EventError::Missing("refund amount"))?,
        ),
        failure_reason: text(refund, "/failure_reason"),
    }))
}

/// `charge.dispute.*`: the dispute object, its status, and whether the event says funds moved.
fn dispute(
    event_type: &str,
    dispute: &Value,
    occurred_at: DateTime<Utc>,
) -> Result<DomainEvent, EventError> {
    let provider_status =
        text(dispute, "/status").ok_or(EventError::Missing("data.object.status"))?;
    let status = match provider_status.as_str() {
        "warning_needs_response" | "warning_under_review" => DisputeStatus::Inquiry,
        "warning_closed" => DisputeStatus::InquiryClosed,
        "needs_response" | "under_review" => DisputeStatus::Open,
        "won" => DisputeStatus::Won,
        "lost" => DisputeStatus::Lost,
        _ => return Ok(DomainEvent::Ignored("unknown Stripe dispute status")),
    };
    let funds = match event_type {
        "charge.dispute.funds_withdrawn" => Some(DisputeFunds::Withdrawn),
        "charge.dispute.funds_reinstated" => Some(DisputeFunds::Reinstated),
        _ => None,
    };
    Ok(DomainEvent::Dispute(DisputeEvent {
        provider: Provider::Stripe,
        provider_payment_id: refunded_or_disputed_payment(dispute)
            .ok_or(EventError::Missing("data.object.charge"))?,
        provider_dispute_id: text(dispute, "/id").ok_or(EventError::Missing("data.object.id"))?,
        status,
        provider_status,
        amount: amount(dispute, "/amount", "data.object.amount")?
            .ok_or(EventError::Missing("data.object.amount"))?,
        currency: currency(dispute)?,
        reason: text(dispute, "/reason"),
        evidence_due_by: integer(dispute, "/evidence_details/due_by")
            .and_then(|t| DateTime::from_timestamp(t, 0)),
        funds,
        occurred_at,
    }))
}

/// The charge whose failure an event reports: a charge's own id, a PaymentIntent's failing charge
/// (`last_payment_error.charge`, else `latest_charge`), an invoice's `charge` (API versions before
/// 2025; current invoices name none). Ids or expanded objects alike.
fn failing_charge(object_kind: &str, object: &Value) -> Option<String> {
    let id_at = |pointer: &str| id_at(object, pointer);
    match object_kind {
        "charge" => text(object, "/id"),
        "payment_intent" => id_at("/last_payment_error/charge").or_else(|| id_at("/latest_charge")),
        "invoice" => id_at("/charge"),
        _ => None,
    }
}

/// The provider's reason, the same whichever of a decline's events tells it: the decline code
/// first, the more precise (a PaymentIntent's `last_payment_error.decline_code`; a charge the
/// issuer declined says it as its `outcome.reason`), else the error code (`last_payment_error.code`,
/// the charge's `failure_code`, which say the same), else what the charge's outcome says (a
/// Radar block's `highest_risk_level`); the message is `last_payment_error.message`, the
/// charge's `failure_message` (the same text), else the outcome's `seller_message`.
fn failure(object: &Value) -> Failure {
    let issuer_declined = text(object, "/outcome/type").as_deref() == Some("issuer_declined");
    let code = text(object, "/last_payment_error/decline_code")
        .or_else(|| {
            issuer_declined
                .then(|| text(object, "/outcome/reason"))
                .flatten()
        })
        .or_else(|| text(object, "/last_payment_error/code"))
        .or_else(|| text(object, "/failure_code"))
        .or_else(|| text(object, "/outcome/reason"));
    let message = text(object, "/last_payment_error/message")
        .or_else(|| text(object, "/failure_message"))
        .or_else(|| text(object, "/outcome/seller_message"));
    Failure { code, message }
}

fn method(
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
            .map(storable_json),
        details: Value::Object(details),
        occurred_at,
    })
}

#[cfg(test)]
#[path = "interpret_tests.rs"]
mod tests;
