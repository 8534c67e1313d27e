//! 5. Failure notifications. When a payment fails on an invoice that is not paid, the worker's
//!    transaction writes two rows to `notifications`, one for the customer and one for the
//!    business, keyed by (payment, failure event, recipient kind): a redelivery or a replay of the
//!    same failure writes nothing new. The sender (`sender.rs`) mails them afterwards, so an SMTP
//!    outage delays mail without blocking reconciliation, and loses none.
//!
//!    The business is also mailed when a dispute (or an inquiry) opens, with the evidence due
//!    date, and when one is lost: one mail each per dispute, keyed by (payment,
//!    `dispute:<provider dispute id>:opened|lost`, `BUSINESS`).
//!
//!    The wording lives in `templates/` (plain text and HTML, rendered with minijinja; HTML is
//!    escaped automatically), not in code.

pub mod sender;

use std::collections::HashMap;
use std::sync::OnceLock;

use minijinja::Environment;
use serde::{Deserialize, Serialize};

use crate::reconcile::money::{MinorUnits, format_amount};
use crate::reconcile::plan::{DisputeNotice, DisputeNoticeKind, FailureNotification, RetryOutlook};
use crate::repository::customers::CustomerRow;
use crate::repository::invoices::InvoiceRow;
use crate::repository::notifications::NewNotification;

/// Whose invoice a mail is about: the part every mail's templates share.
#[derive(Debug, Clone, Serialize)]
pub struct InvoiceParty {
    pub customer_id: String,
    pub customer_name: String,
    pub invoice_id: String,
    pub invoice_number: String,
}

impl InvoiceParty {
    pub fn new(invoice: &InvoiceRow, customer: &CustomerRow) -> Self {
        Self {
            customer_id: customer.id.clone(),
            customer_name: customer
                .contact_name
                .clone()
                .unwrap_or_else(|| customer.legal_name.clone()),
            invoice_id: invoice.id.clone(),
            invoice_number: invoice.number.clone(),
        }
    }
}

/// What a failure mail says: the values its templates render.
#[derive(Debug, Clone, Serialize)]
pub struct FailureNotice {
    #[serde(flatten)]
    pub party: InvoiceParty,
    /// "GBP 12.34", with the currency's own exponent.
    pub amount: String,
    /// `STRIPE`, `GOCARDLESS`.
    pub provider: &'static str,
    /// `Stripe`, `GoCardless`: for sentences.
    pub provider_name: &'static str,
    pub provider_payment_id: String,
    pub payment_id: String,
    pub event_id: String,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    /// The provider's reason in plain words.
    pub reason: String,
    pub will_retry: bool,
    /// Why a retry will or will not happen; `templates/retry.txt` says it in words.
    pub retry_outlook: RetryOutlook,
    /// The day of the next automatic attempt ("10 December 2026", UTC), when one follows.
    pub retry_on: Option<String>,
    pub payment_link: Option<String>,
    pub business_name: String,
    /// The customer mail's recipients, shown to the business.
    pub customer_recipients: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    Customer,
    Business,
}

impl Recipient {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "CUSTOMER",
            Self::Business => "BUSINESS",
        }
    }

    fn template(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Business => "business",
        }
    }
}

/// The customer's billing emails, else their email.
fn customer_recipients(customer: &CustomerRow) -> Vec<String> {
    if customer.billing_emails.is_empty() {
        customer.email.iter().cloned().collect()
    } else {
        customer.billing_emails.clone()
    }
}

impl FailureNotice {
    pub fn new(
        notification: &FailureNotification,
        invoice: &InvoiceRow,
        customer: &CustomerRow,
        event_id: &str,
        business_name: &str,
    ) -> Self {
        let failure = &notification.failure;
        Self {
            party: InvoiceParty::new(invoice, customer),
            amount: format_amount(notification.amount, notification.currency),
            provider: notification.provider.stored_name(),
            provider_name: notification.provider.display_name(),
            provider_payment_id: notification.provider_payment_id.clone(),
            payment_id: notification.payment_id.clone(),
            event_id: event_id.to_owned(),
            reason: plain_reason(failure.code.as_deref(), failure.message.as_deref()),
            failure_code: failure.code.clone(),
            failure_message: failure.message.clone(),
            will_retry: notification.outlook.will_retry(),
            retry_outlook: notification.outlook,
            retry_on: notification
                .retry_at
                .map(|at| at.format("%-d %B %Y").to_string()),
            payment_link: invoice.payment_link.clone(),
            business_name: business_name.to_owned(),
            customer_recipients: customer_recipients(customer).join(", "),
        }
    }
}

/// The mails of one failure, rendered: one to the customer, one to the business. A recipient
/// kind with no address is skipped (and logged).
pub fn compose(
    notification: &FailureNotification,
    invoice: &InvoiceRow,
    customer: &CustomerRow,
    event_id: &str,
    business_name: &str,
    business_email: Option<&str>,
) -> Result<Vec<NewNotification>, minijinja::Error> {
    let notice = FailureNotice::new(notification, invoice, customer, event_id, business_name);
    let business: Vec<String> = business_email.into_iter().map(str::to_owned).collect();
    [
        (Recipient::Customer, customer_recipients(customer)),
        (Recipient::Business, business),
    ]
    .into_iter()
    .filter_map(|(recipient, addresses)| {
        if addresses.is_empty() {
            tracing::warn!(invoice = %notice.party.invoice_id, recipient = recipient.as_str(), "no address to notify of a failed payment");
            return None;
        }
        Some(render(recipient, &notice).map(|(subject, body_text, body_html)| {
            NewNotification {
                payment_id: notice.payment_id.clone(),
                // One pair of mails per failed attempt, whichever event reported it first.
                failure_event_id: notification
                    .attempt_id
                    .clone()
                    .unwrap_or_else(|| notice.event_id.clone()),
                recipient_kind: recipient.as_str(),
                recipients: addresses,
                subject,
                body_text,
                body_html,
            }
        }))
    })
    .collect()
}

/// What a dispute mail to the business says: the values its templates render.
#[derive(Debug, Clone, Serialize)]
pub struct DisputeMail {
    #[serde(flatten)]
    pub party: InvoiceParty,
    /// The disputed amount, "GBP 12.34".
    pub amount: String,
    /// The invoice's figures after the event, formatted alike.
    pub amount_due: String,
    pub amount_paid: String,
    pub provider: &'static str,
    pub provider_name: &'static str,
    pub provider_dispute_id: String,
    pub provider_payment_id: String,
    pub payment_id: String,
    pub provider_status: String,
    pub reason: Option<String>,
    /// "2026-12-15 23:59 UTC".
    pub evidence_due_by: Option<String>,
    pub inquiry: bool,
    pub event_id: String,
}

/// The business's mail about a dispute (none without a business address: logged).
pub fn compose_dispute(
    notice: &DisputeNotice,
    invoice: &InvoiceRow,
    amount_paid: i64,
    customer: &CustomerRow,
    event_id: &str,
    business_email: Option<&str>,
) -> Result<Option<NewNotification>, minijinja::Error> {
    let Some(business_email) = business_email else {
        tracing::warn!(invoice = %invoice.id, dispute = %notice.dispute.provider_dispute_id, "no business address to notify of a dispute");
        return Ok(None);
    };
    let dispute = &notice.dispute;
    let money = |amount: i64| {
        format_amount(
            MinorUnits::new(amount).unwrap_or(MinorUnits::ZERO),
            notice.currency,
        )
    };
    let mail = DisputeMail {
        party: InvoiceParty::new(invoice, customer),
        amount: money(dispute.amount),
        amount_due: money(invoice.amount_due),
        amount_paid: money(amount_paid),
        provider: dispute.provider.stored_name(),
        provider_name: dispute.provider.display_name(),
        provider_dispute_id: dispute.provider_dispute_id.clone(),
        provider_payment_id: notice.provider_payment_id.clone(),
        payment_id: dispute.payment_id.clone(),
        provider_status: dispute.provider_status.clone(),
        reason: dispute.reason.clone(),
        evidence_due_by: dispute
            .evidence_due_by
            .map(|at| at.format("%Y-%m-%d %H:%M UTC").to_string()),
        inquiry: dispute.status.is_inquiry(),
        event_id: event_id.to_owned(),
    };
    let template = match notice.kind {
        DisputeNoticeKind::Opened => "dispute_opened",
        DisputeNoticeKind::Lost => "dispute_lost",
    };
    let (subject, body_text, body_html) = render_template(template, &mail)?;
    Ok(Some(NewNotification {
        payment_id: dispute.payment_id.clone(),
        failure_event_id: format!(
            "dispute:{}:{}",
            dispute.provider_dispute_id,
            notice.kind.key()
        ),
        recipient_kind: Recipient::Business.as_str(),
        recipients: vec![business_email.to_owned()],
        subject,
        body_text,
        body_html,
    }))
}

#[derive(Deserialize)]
struct Reasons {
    generic: String,
    codes: HashMap<String, String>,
}

#[expect(
    clippy::expect_used,
    reason = "compiled in; every code is read by the tests"
)]
fn reasons() -> &'static Reasons {
    static REASONS: OnceLock<Reasons> = OnceLock::new();
    REASONS.get_or_init(|| {
        toml::from_str(include_str!("templates/reasons.toml")).expect("reasons.toml is valid")
    })
}

/// The provider's reason in plain words: a known code, else the provider's message, else generic.
pub fn plain_reason(code: Option<&str>, message: Option<&str>) -> String {
    let reasons = reasons();
    code.and_then(|code| reasons.codes.get(code))
        .cloned()
        .or_else(|| message.map(|m| m.trim_end_matches('.').to_owned()))
        .unwrap_or_else(|| reasons.generic.clone())
}

#[expect(
    clippy::expect_used,
    reason = "compiled in; every template is rendered by the tests"
)]
fn templates() -> &'static Environment<'static> {
    static TEMPLATES: OnceLock<Environment<'static>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut env = Environment::new();
        // Auto-escaping follows the name: `.html` templates escape every value.
        for (name, source) in [
            (
                "customer.subject.txt",
                include_str!("templates/customer.subject.txt"),
            ),
            ("customer.txt", include_str!("templates/customer.txt")),
            ("customer.html", include_str!("templates/customer.html")),
            (
                "business.subject.txt",
                include_str!("templates/business.subject.txt"),
            ),
            ("business.txt", include_str!("templates/business.txt")),
            ("business.html", include_str!("templates/business.html")),
            ("retry.txt", include_str!("templates/retry.txt")),
            (
                "dispute_opened.subject.txt",
                include_str!("templates/dispute_opened.subject.txt"),
            ),
            (
                "dispute_opened.txt",
                include_str!("templates/dispute_opened.txt"),
            ),
            (
                "dispute_opened.html",
                include_str!("templates/dispute_opened.html"),
            ),
            (
                "dispute_lost.subject.txt",
                include_str!("templates/dispute_lost.subject.txt"),
            ),
            (
                "dispute_lost.txt",
                include_str!("templates/dispute_lost.txt"),
            ),
            (
                "dispute_lost.html",
                include_str!("templates/dispute_lost.html"),
            ),
        ] {
            env.add_template(name, source).expect("templates parse");
        }
        env
    })
}

/// (subject, plain text, HTML) of one recipient's mail. The templates are compiled in and every
/// one is rendered by the tests, so an error here is a bug, reported rather than panicked on.
pub fn render(
    recipient: Recipient,
    notice: &FailureNotice,
) -> Result<(String, String, String), minijinja::Error> {
    render_template(recipient.template(), notice)
}

/// (subject, plain text, HTML) of the mail whose templates are named `<name>.subject.txt`,
/// `<name>.txt`, `<name>.html`.
fn render_template(
    name: &str,
    values: &impl Serialize,
) -> Result<(String, String, String), minijinja::Error> {
    let render = |suffix: &str| {
        templates()
            .get_template(&format!("{name}.{suffix}"))
            .and_then(|t| t.render(values))
    };
    Ok((
        render("subject.txt")?.trim().to_owned(),
        render("txt")?,
        render("html")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party() -> InvoiceParty {
        InvoiceParty {
            customer_id: "cust_1".into(),
            customer_name: "Acme <Ltd>".into(),
            invoice_id: "inv_1".into(),
            invoice_number: "INV-0001".into(),
        }
    }

    fn notice() -> FailureNotice {
        FailureNotice {
            party: party(),
            amount: "GBP 125.00".into(),
            provider: "GOCARDLESS",
            provider_name: "GoCardless",
            provider_payment_id: "PM1".into(),
            payment_id: "pay_1".into(),
            event_id: "EV1".into(),
            failure_code: Some("insufficient_funds".into()),
            failure_message: Some("The customer's account had insufficient funds.".into()),
            reason: plain_reason(Some("insufficient_funds"), None),
            will_retry: true,
            retry_outlook: RetryOutlook::ProviderRetries,
            retry_on: None,
            payment_link: None,
            business_name: "Acme Billing".into(),
            customer_recipients: "billing@acme.example".into(),
        }
    }

    #[test]
    fn the_customer_mail_says_what_failed_whether_it_retries_and_how_to_pay() {
        let (subject, text, html) = render(Recipient::Customer, &notice()).unwrap();
        assert_eq!(subject, "Payment failed for invoice INV-0001");
        assert!(text.contains("GBP 125.00"));
        assert!(text.contains("there were not enough funds in the account"));
        assert!(text.contains("GoCardless will retry the payment automatically"));
        assert!(text.contains("Acme Billing will be in touch"));
        assert!(
            html.contains("Acme &lt;Ltd&gt;"),
            "HTML escapes values: {html}"
        );
        let mut with_link = notice();
        with_link.payment_link = Some("https://pay.example/inv_1".into());
        with_link.will_retry = false;
        with_link.retry_outlook = RetryOutlook::AutoChargeOff;
        let (_, text, _) = render(Recipient::Customer, &with_link).unwrap();
        assert!(text.contains("https://pay.example/inv_1"));
        assert!(text.contains("will not retry"));
        assert!(text.contains("Automatic collection is off for this invoice."));
    }

    #[test]
    fn dispute_mails_say_what_is_disputed_and_when_evidence_is_due() {
        let mut mail = DisputeMail {
            party: party(),
            amount: "GBP 40.00".into(),
            amount_due: "GBP 125.00".into(),
            amount_paid: "GBP 85.00".into(),
            provider: "STRIPE",
            provider_name: "Stripe",
            provider_dispute_id: "dp_1".into(),
            provider_payment_id: "pi_1".into(),
            payment_id: "pay_1".into(),
            provider_status: "needs_response".into(),
            reason: Some("fraudulent".into()),
            evidence_due_by: Some("2026-12-15 23:59 UTC".into()),
            inquiry: false,
            event_id: "evt_1".into(),
        };
        let (subject, text, html) = render_template("dispute_opened", &mail).unwrap();
        assert_eq!(
            subject,
            "Dispute opened: Acme <Ltd>, invoice INV-0001, GBP 40.00, evidence due 2026-12-15 23:59 UTC"
        );
        for expected in [
            "has withdrawn the disputed amount",
            "fraudulent",
            "dp_1",
            "pi_1",
            "pay_1",
            "evt_1",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        assert!(html.contains("Acme &lt;Ltd&gt;"));
        mail.inquiry = true;
        mail.evidence_due_by = None;
        let (subject, text, _) = render_template("dispute_opened", &mail).unwrap();
        assert!(subject.starts_with("Inquiry opened") && !subject.contains("evidence due"));
        assert!(text.contains("No money has been withdrawn yet"));
        let (subject, text, html) = render_template("dispute_lost", &mail).unwrap();
        assert_eq!(
            subject,
            "Dispute lost: Acme <Ltd>, invoice INV-0001, GBP 40.00"
        );
        assert!(text.contains("GBP 85.00 of GBP 125.00 now counts as paid"));
        assert!(html.contains("dp_1"));
    }

    #[test]
    fn the_business_mail_adds_the_code_and_ids() {
        let (subject, text, _) = render(Recipient::Business, &notice()).unwrap();
        assert!(subject.contains("INV-0001") && subject.contains("GBP 125.00"));
        for expected in [
            "insufficient_funds",
            "inv_1",
            "pay_1",
            "PM1",
            "EV1",
            "cust_1",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }

    #[test]
    fn every_retry_outlook_is_said_in_every_mail() {
        use RetryOutlook as R;
        let said = [
            (
                R::ProviderRetries,
                "GoCardless will retry the payment automatically in the next few days.",
            ),
            (
                R::ProviderWillNotRetry,
                "GoCardless will not retry this payment.",
            ),
            (
                R::RetryWithMethodOnFile,
                "We will try the payment again on 10 December 2026 with the payment method on file.",
            ),
            (
                R::NoUsableMethod,
                "There is no usable payment method on file to retry with.",
            ),
            (
                R::AutoChargeOff,
                "Automatic collection is off for this invoice.",
            ),
            (
                R::NeedsAuthentication,
                "Your bank asks you to confirm this payment yourself, so it cannot be taken automatically.",
            ),
            (R::AttemptsExhausted, "That was the last automatic attempt."),
            (
                R::ChargeRefused,
                "GoCardless refused the automatic charge, so it will not be tried again automatically.",
            ),
            (
                R::ChargingCancelled,
                "Automatic collection was stopped for this invoice.",
            ),
            (
                R::PaymentInFlight,
                "Another payment of this invoice is under way.",
            ),
        ];
        for (outlook, sentence) in said {
            let mut notice = notice();
            notice.retry_on = Some("10 December 2026".into());
            notice.retry_outlook = outlook;
            notice.will_retry = outlook.will_retry();
            for recipient in [Recipient::Customer, Recipient::Business] {
                let (_, text, html) = render(recipient, &notice).unwrap();
                assert!(text.contains(sentence), "{outlook:?} {recipient:?}: {text}");
                assert!(html.contains(sentence), "{outlook:?} {recipient:?}: {html}");
            }
        }
    }

    #[test]
    fn reasons_in_plain_words() {
        assert_eq!(
            plain_reason(Some("expired_card"), Some("x")),
            "the card has expired"
        );
        assert_eq!(
            plain_reason(Some("new_code"), Some("Bank said no.")),
            "Bank said no"
        );
        assert_eq!(plain_reason(None, None), "the payment was declined");
    }
}
