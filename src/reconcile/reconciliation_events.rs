//! Reconciliation events: what settle tells internal services, published to
//! `<prefix>.reconciliation` with the type as routing key. This module is that public contract;
//! the README's table of fields is written from these types.
//!
//! Each message is `{id, type, occurredAt, accountId, data}`. The `id` is derived from the
//! provider event and the type (`stripe:evt_…:invoice.paid`), so a redelivery or a replay of the
//! provider event can never produce a second one: subscribers dedupe on it. A tenant chooses the
//! parts (an event id as long as intake accepts, refund, dispute and payout ids of any length), so
//! the id is a `MessageId`: kept whole up to 255 bytes, else a readable prefix and a digest of the
//! whole, the same each time (`crate::names`).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::dispute::DisputeStatus;
use super::invoice::InvoiceStatus;
use super::ledger::RefundState;
use super::money::Currency;
use super::payment::PaymentStatus;
use super::payment_methods::{Gateway, MethodStatus};
use super::payout::PayoutStatus;
use super::refund::RefundStatus;
use crate::names::MessageId;
use crate::provider::{PaymentProvider, Provider};

/// One reconciliation event, typed by what it announces.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReconciliationEvent {
    PaymentAuthorised(PaymentData),
    PaymentSucceeded(PaymentData),
    PaymentCanceled(PaymentData),
    PaymentFailed(PaymentData),
    InvoicePaid(InvoiceData),
    InvoicePartiallyPaid(InvoiceData),
    InvoicePaymentFailed(InvoiceData),
    InvoiceReopened(InvoiceData),
    InvoiceDisputed(InvoiceData),
    InvoiceRefunded(InvoiceData),
    PaymentRefunded(RefundData),
    PaymentRefundFailed(RefundData),
    PaymentDisputed(DisputeData),
    DisputeWon(DisputeData),
    DisputeLost(DisputeData),
    PaymentMethodUpdated(PaymentMethodData),
    PayoutReconciled(PayoutData),
    PayoutPartiallyMatched(PayoutData),
    PayoutFailed(PayoutData),
    ChargeRequested(ChargeData),
    ChargeRetryScheduled(ChargeData),
    CustomerMerged(CustomerMergedData),
}

impl ReconciliationEvent {
    /// The event's `type`, also its routing key.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::PaymentAuthorised(_) => "payment.authorised",
            Self::PaymentSucceeded(_) => "payment.succeeded",
            Self::PaymentCanceled(_) => "payment.canceled",
            Self::PaymentFailed(_) => "payment.failed",
            Self::InvoicePaid(_) => "invoice.paid",
            Self::InvoicePartiallyPaid(_) => "invoice.partially_paid",
            Self::InvoicePaymentFailed(_) => "invoice.payment_failed",
            Self::InvoiceReopened(_) => "invoice.reopened",
            Self::InvoiceDisputed(_) => "invoice.disputed",
            Self::InvoiceRefunded(_) => "invoice.refunded",
            Self::PaymentRefunded(_) => "payment.refunded",
            Self::PaymentRefundFailed(_) => "payment.refund_failed",
            Self::PaymentDisputed(_) => "payment.disputed",
            Self::DisputeWon(_) => "dispute.won",
            Self::DisputeLost(_) => "dispute.lost",
            Self::PaymentMethodUpdated(_) => "payment_method.updated",
            Self::PayoutReconciled(_) => "payout.reconciled",
            Self::PayoutPartiallyMatched(_) => "payout.partially_matched",
            Self::PayoutFailed(_) => "payout.failed",
            Self::ChargeRequested(_) => "charge.requested",
            Self::ChargeRetryScheduled(_) => "charge.retry_scheduled",
            Self::CustomerMerged(_) => "customer.merged",
        }
    }

    /// The refund or dispute an event is about: part of its id, since one provider event may
    /// report several refunds (`charge.refunded` lists them all).
    fn subject(&self) -> Option<&str> {
        match self {
            Self::PaymentRefunded(data) | Self::PaymentRefundFailed(data) => {
                Some(&data.provider_refund_id)
            }
            Self::PaymentDisputed(data) | Self::DisputeWon(data) | Self::DisputeLost(data) => {
                Some(&data.provider_dispute_id)
            }
            // A method going away and the next one taking over are two events of one cause.
            Self::PaymentMethodUpdated(data) => Some(&data.payment_method_id),
            _ => None,
        }
    }
}

/// Where an amount came from: the provider's event; the payment or refund the billing system
/// registered (GoCardless events carry no amount); or, with neither, what the invoice still owed
/// (a payment) or what was left to refund of the payment (a refund). `migrated`: a payment
/// settle recorded before the ledger existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[derive(Serialize, serde::Deserialize, strum::IntoStaticStr, strum::EnumString)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum AmountSource {
    Event,
    RegisteredPayment,
    InvoiceOutstanding,
    RegisteredRefund,
    PaymentRemainder,
    Migrated,
}

impl AmountSource {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// `payment.succeeded`, `payment.failed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentData {
    pub payment_id: String,
    pub invoice_id: String,
    pub provider: Provider,
    pub provider_payment_id: String,
    pub amount: i64,
    pub currency: Currency,
    pub amount_source: AmountSource,
    pub status: PaymentStatus,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    /// GoCardless's `will_attempt_retry`; `null` when the provider does not say.
    pub provider_will_retry: Option<bool>,
    pub effective_payment_provider: PaymentProvider,
    /// The money moved through another provider than the invoice's effective settings name.
    pub provider_mismatch: bool,
    /// An authorised payment's hold lapses then unless captured (`payment.authorised`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_expires_at: Option<DateTime<Utc>>,
}

/// An invoice's figures, derived from its ledger, as every invoice, refund and dispute event
/// carries them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FiguresData {
    pub status: InvoiceStatus,
    pub amount_due: i64,
    /// Collected, less what disputes and chargebacks hold or took.
    pub amount_paid: i64,
    pub amount_refunded: i64,
    /// What open disputes claim.
    pub amount_in_dispute: i64,
    /// Paid less refunded.
    pub amount_net: i64,
    pub refund_state: RefundState,
    /// Paid more than due: recorded and flagged, never silently absorbed.
    pub overpaid: bool,
}

/// `invoice.paid`, `invoice.partially_paid`, `invoice.payment_failed`, `invoice.reopened`,
/// `invoice.disputed`, `invoice.refunded`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceData {
    pub invoice_id: String,
    pub customer_id: String,
    pub number: String,
    pub currency: Currency,
    #[serde(flatten)]
    pub figures: FiguresData,
    /// The payment whose event changed the invoice.
    pub payment_id: String,
    pub provider: Provider,
    pub effective_payment_provider: PaymentProvider,
    pub provider_mismatch: bool,
}

/// `charge.requested` (settle sent an automatic attempt to the provider) and
/// `charge.retry_scheduled` (after a failure, the next attempt is due at `dueAt`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeData {
    pub invoice_id: String,
    /// The invoice's attempt number (1 for the first).
    pub attempt: i32,
    pub provider: Provider,
    /// What the attempt asks for (`charge.requested`); a scheduled attempt's amount is what the
    /// invoice owes when it is sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    pub currency: Currency,
    pub due_at: DateTime<Utc>,
    /// The provider's `Idempotency-Key`, also in the payment's metadata (`settle_charge`).
    pub idempotency_key: String,
}

/// `payment.refunded`, `payment.refund_failed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundData {
    pub refund_id: String,
    pub provider_refund_id: String,
    pub payment_id: String,
    pub provider_payment_id: Option<String>,
    pub invoice_id: String,
    pub provider: Provider,
    pub amount: i64,
    pub currency: Currency,
    pub amount_source: AmountSource,
    pub status: RefundStatus,
    pub failure_reason: Option<String>,
    /// The invoice's figures after the refund.
    pub invoice: FiguresData,
}

/// `payment.disputed`, `dispute.won`, `dispute.lost`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisputeData {
    pub dispute_id: String,
    pub provider_dispute_id: String,
    pub payment_id: String,
    pub provider_payment_id: Option<String>,
    pub invoice_id: String,
    pub provider: Provider,
    /// The disputed amount (the dispute's own; it may differ from the payment's).
    pub amount: i64,
    pub currency: Currency,
    pub status: DisputeStatus,
    /// The provider's own status (`warning_needs_response`, `needs_response`, `lost`, …).
    pub provider_status: String,
    pub reason: Option<String>,
    pub evidence_due_by: Option<DateTime<Utc>>,
    /// The invoice's figures after the event.
    pub invoice: FiguresData,
}

/// `payment_method.updated`: a method put on file, changed, taken out of use, or taking over.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentMethodData {
    pub customer_id: String,
    pub payment_method_id: String,
    /// `null` for a gateway settle does not reconcile.
    pub provider: Option<Provider>,
    /// Chargebee's name of the gateway holding it (`stripe`, `braintree`, …).
    pub gateway: Gateway,
    #[serde(rename = "type")]
    pub method_type: String,
    pub reference_id: String,
    pub status: MethodStatus,
    pub on_file: bool,
}

/// `customer.merged`: `mergedCustomerId`'s invoices, payment methods, settings and external ids
/// now belong to `customerId`, and the merged customer is deleted. Provider events naming its
/// provider customer ids find `customerId`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerMergedData {
    pub customer_id: String,
    pub merged_customer_id: String,
    pub invoice_ids: Vec<String>,
    pub billing_schedule_ids: Vec<String>,
    pub payment_method_ids: Vec<String>,
    /// Whether the merged customer's payment settings moved (the survivor had none).
    pub settings_moved: bool,
    /// The survivor's version after the merge.
    pub version: i32,
}

/// `payout.reconciled`, `payout.partially_matched`, `payout.failed`: a bank deposit, its lines'
/// totals and the invoices whose money it carries. Its id is the payout's and the type's
/// (`stripe:po_…:payout.reconciled`), whichever event or listing caused it: listed again with the
/// same outcome, it is not announced twice.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PayoutData {
    pub provider: Provider,
    pub provider_payout_id: String,
    pub status: PayoutStatus,
    /// The deposit; `null` for a GoCardless payout not listed yet.
    pub amount: Option<i64>,
    pub currency: Option<Currency>,
    pub arrival_date: Option<chrono::NaiveDate>,
    /// Its lines' sums (the payout's own line left out), and what they leave unexplained:
    /// `null` until its lines are listed.
    pub lines_gross: Option<i64>,
    pub lines_fees: Option<i64>,
    pub lines_net: Option<i64>,
    pub difference: Option<i64>,
    pub unmatched_lines: Option<i32>,
    /// The invoices its matched lines belong to.
    pub invoice_ids: Vec<String>,
    /// Why it failed, as the provider said.
    pub status_reason: Option<String>,
}

impl ReconciliationEvent {
    /// What a payout in `data`'s status announces: its outcome once listed, or its failure;
    /// nothing while it is expected, waits to be listed, or cannot be.
    pub fn of_payout(data: PayoutData) -> Option<Self> {
        match data.status {
            PayoutStatus::Reconciled => Some(Self::PayoutReconciled(data)),
            PayoutStatus::PartiallyMatched => Some(Self::PayoutPartiallyMatched(data)),
            PayoutStatus::Failed => Some(Self::PayoutFailed(data)),
            PayoutStatus::Expected | PayoutStatus::Listing | PayoutStatus::Unlistable => None,
        }
    }
}

/// The message as published.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message<'a> {
    pub id: MessageId,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub occurred_at: DateTime<Utc>,
    pub account_id: &'a str,
    pub data: &'a ReconciliationEvent,
}

impl<'a> Message<'a> {
    /// The message for `event`, caused by a change made through settle's API, `cause` naming
    /// that change once (`acct_…/customer/cust_1/merge/cust_2`): `api:<cause>:<type>`.
    pub fn of_api(
        event: &'a ReconciliationEvent,
        cause: &str,
        occurred_at: DateTime<Utc>,
        account_id: &'a str,
    ) -> Self {
        Self::with_id(event, format!("api:{cause}"), occurred_at, account_id)
    }

    /// The message for `event`, caused by provider event `event_id` of `provider`.
    pub fn new(
        event: &'a ReconciliationEvent,
        provider: Provider,
        event_id: &str,
        occurred_at: DateTime<Utc>,
        account_id: &'a str,
    ) -> Self {
        Self::with_id(
            event,
            format!("{}:{event_id}", provider.wire_name()),
            occurred_at,
            account_id,
        )
    }

    /// `<cause>:<type>`, and the refund, dispute or method it is about when one cause has several.
    fn with_id(
        event: &'a ReconciliationEvent,
        cause: String,
        occurred_at: DateTime<Utc>,
        account_id: &'a str,
    ) -> Self {
        let event_type = event.event_type();
        let mut id = format!("{cause}:{event_type}");
        if let Some(subject) = event.subject() {
            id = format!("{id}:{subject}");
        }
        Self {
            id: MessageId::new(id),
            event_type,
            occurred_at,
            account_id,
            data: event,
        }
    }
}

impl<'a> Message<'a> {
    /// The message announcing what happened to payout `provider_payout_id` of `account_id`
    /// (`payout.failed`, `payout.reconciled`, …), in its outcome's `version`. Its cause is the
    /// account's payout, not the payout id alone: each account keeps its own payout of an id (a
    /// tenant may name another's), and their announcements must not take each other's id. A
    /// later version (matched again once the ledger learned more) is a message of its own:
    /// `…/<payout>/v2:payout.reconciled`.
    pub fn of_payout(
        event: &'a ReconciliationEvent,
        provider: Provider,
        provider_payout_id: &str,
        version: i32,
        occurred_at: DateTime<Utc>,
        account_id: &'a str,
    ) -> Self {
        let cause = if version > 1 {
            format!("{account_id}/{provider_payout_id}/v{version}")
        } else {
            format!("{account_id}/{provider_payout_id}")
        };
        Self::new(event, provider, &cause, occurred_at, account_id)
    }

    /// The message about attempt `data.attempt` of an invoice of `account_id`: one per attempt
    /// requested, and one per time an attempt is scheduled for (a new method on file brings one
    /// forward: a message of its own).
    pub fn of_charge(
        event: &'a ReconciliationEvent,
        data: &ChargeData,
        occurred_at: DateTime<Utc>,
        account_id: &'a str,
    ) -> Self {
        let cause = format!(
            "{account_id}/{}/charge/{}/{}",
            data.invoice_id,
            data.attempt,
            data.due_at.timestamp()
        );
        Self::new(event, data.provider, &cause, occurred_at, account_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_has_a_stable_id_and_the_documented_shape() {
        let event = ReconciliationEvent::InvoicePaid(InvoiceData {
            invoice_id: "inv_1".into(),
            customer_id: "cust_1".into(),
            number: "INV-1".into(),
            currency: Currency::parse("GBP").unwrap(),
            figures: FiguresData {
                status: InvoiceStatus::Paid,
                amount_due: 1000,
                amount_paid: 1000,
                amount_refunded: 0,
                amount_in_dispute: 0,
                amount_net: 1000,
                refund_state: RefundState::None,
                overpaid: false,
            },
            payment_id: "pay_1".into(),
            provider: Provider::Stripe,
            effective_payment_provider: PaymentProvider::None,
            provider_mismatch: true,
        });
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let message = Message::new(&event, Provider::Stripe, "evt_1", at, "acc_1");
        assert_eq!(
            serde_json::to_value(&message).unwrap(),
            serde_json::json!({
                "id": "stripe:evt_1:invoice.paid",
                "type": "invoice.paid",
                "occurredAt": "2027-01-15T08:00:00Z",
                "accountId": "acc_1",
                "data": {
                    "invoiceId": "inv_1", "customerId": "cust_1", "number": "INV-1",
                    "currency": "GBP", "amountDue": 1000, "amountPaid": 1000, "status": "PAID",
                    "amountRefunded": 0, "amountInDispute": 0, "amountNet": 1000,
                    "refundState": "NONE", "overpaid": false, "paymentId": "pay_1", "provider": "STRIPE",
                    "effectivePaymentProvider": "NONE", "providerMismatch": true
                }
            })
        );
    }
}
