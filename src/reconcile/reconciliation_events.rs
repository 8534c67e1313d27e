//! Reconciliation events: what settle tells internal services, published to
//! `<prefix>.reconciliation` with the type as routing key. This module is that public contract;
//! the README's table of fields is written from these types.
//!
//! Each message is `{id, type, occurredAt, accountId, data}`. The `id` is derived from the
//! provider event and the type (`stripe:evt_…:invoice.paid`), so a redelivery or a replay of the
//! provider event can never produce a second one: subscribers dedupe on it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::invoice::InvoiceStatus;
use super::money::Currency;
use super::payment::PaymentStatus;
use super::payment_methods::MethodStatus;
use crate::provider::{PaymentProvider, Provider};

/// One reconciliation event, typed by what it announces.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReconciliationEvent {
    PaymentSucceeded(PaymentData),
    PaymentFailed(PaymentData),
    InvoicePaid(InvoiceData),
    InvoicePartiallyPaid(InvoiceData),
    InvoicePaymentFailed(InvoiceData),
    InvoiceReopened(InvoiceData),
    PaymentMethodUpdated(PaymentMethodData),
}

impl ReconciliationEvent {
    /// The event's `type`, also its routing key.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::PaymentSucceeded(_) => "payment.succeeded",
            Self::PaymentFailed(_) => "payment.failed",
            Self::InvoicePaid(_) => "invoice.paid",
            Self::InvoicePartiallyPaid(_) => "invoice.partially_paid",
            Self::InvoicePaymentFailed(_) => "invoice.payment_failed",
            Self::InvoiceReopened(_) => "invoice.reopened",
            Self::PaymentMethodUpdated(_) => "payment_method.updated",
        }
    }
}

/// Where a payment's `amount` came from: the provider's event, the payment the billing system
/// registered (GoCardless events carry no amount), or, with neither, what the invoice still owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AmountSource {
    Event,
    RegisteredPayment,
    InvoiceOutstanding,
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
}

/// `invoice.paid`, `invoice.partially_paid`, `invoice.payment_failed`, `invoice.reopened`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceData {
    pub invoice_id: String,
    pub customer_id: String,
    pub number: String,
    pub currency: Currency,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub status: InvoiceStatus,
    /// Paid more than due: recorded and flagged, never silently absorbed.
    pub overpaid: bool,
    /// The payment whose event changed the invoice.
    pub payment_id: String,
    pub provider: Provider,
    pub effective_payment_provider: PaymentProvider,
    pub provider_mismatch: bool,
}

/// `payment_method.updated`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentMethodData {
    pub customer_id: String,
    pub payment_method_id: String,
    pub provider: Provider,
    #[serde(rename = "type")]
    pub method_type: String,
    pub reference_id: String,
    pub status: MethodStatus,
    pub on_file: bool,
}

/// The message as published.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message<'a> {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub occurred_at: DateTime<Utc>,
    pub account_id: &'a str,
    pub data: &'a ReconciliationEvent,
}

impl<'a> Message<'a> {
    /// The message for `event`, caused by provider event `event_id` of `provider`.
    pub fn new(
        event: &'a ReconciliationEvent,
        provider: Provider,
        event_id: &str,
        occurred_at: DateTime<Utc>,
        account_id: &'a str,
    ) -> Self {
        let event_type = event.event_type();
        Self {
            id: format!("{}:{event_id}:{event_type}", provider.wire_name()),
            event_type,
            occurred_at,
            account_id,
            data: event,
        }
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
            amount_due: 1000,
            amount_paid: 1000,
            status: InvoiceStatus::Paid,
            overpaid: false,
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
                    "overpaid": false, "paymentId": "pay_1", "provider": "STRIPE",
                    "effectivePaymentProvider": "NONE", "providerMismatch": true
                }
            })
        );
    }
}
