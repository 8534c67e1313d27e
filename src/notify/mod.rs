//! 5. Failure notifications. When a payment fails on an invoice that is not paid, the worker's
//!    transaction writes two rows to `notifications`, one for the customer and one for the
//!    business, keyed by (payment, failure event, recipient kind): a redelivery or a replay of the
//!    same failure writes nothing new. The sender (`sender.rs`) mails them afterwards, so an SMTP
//!    outage delays mail without blocking reconciliation, and loses none.
//!
//!    The wording lives in `templates/` (plain text and HTML, rendered with minijinja; HTML is
//!    escaped automatically), not in code.

pub mod sender;

use std::collections::HashMap;
use std::sync::OnceLock;

use minijinja::Environment;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

/// What a failure mail says. Rendered once, when the failure is recorded.
#[derive(Debug, Clone, Serialize)]
pub struct FailureNotice {
    pub customer_id: String,
    pub customer_name: String,
    pub invoice_id: String,
    pub invoice_number: String,
    /// "GBP 12.34".
    pub amount: String,
    pub provider: String,
    pub provider_payment_id: String,
    pub payment_id: String,
    pub event_id: String,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    /// The provider's reason in plain words.
    pub reason: String,
    pub will_retry: bool,
    /// Why a retry will or will not happen, in one sentence.
    pub retry_explanation: String,
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

#[derive(Deserialize)]
struct Reasons {
    generic: String,
    codes: HashMap<String, String>,
}

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
        ] {
            env.add_template(name, source).expect("templates parse");
        }
        env
    })
}

/// (subject, plain text, HTML) of one recipient's mail.
pub fn render(recipient: Recipient, notice: &FailureNotice) -> (String, String, String) {
    let render = |suffix: &str| {
        templates()
            .get_template(&format!("{}.{suffix}", recipient.template()))
            .and_then(|t| t.render(notice))
            .expect("templates render with a FailureNotice")
    };
    (
        render("subject.txt").trim().to_owned(),
        render("txt"),
        render("html"),
    )
}

/// Writes the notification rows for a failure, in the caller's transaction. Idempotent per
/// (payment, failure event, recipient kind). A recipient kind with no address is skipped.
pub async fn enqueue(
    tx: &mut PgConnection,
    account_id: &str,
    notice: &FailureNotice,
    customer_recipients: &[String],
    business_email: Option<&str>,
) -> sqlx::Result<()> {
    let business: Vec<String> = business_email.into_iter().map(str::to_owned).collect();
    for (recipient, addresses) in [
        (Recipient::Customer, customer_recipients),
        (Recipient::Business, business.as_slice()),
    ] {
        if addresses.is_empty() {
            tracing::warn!(invoice = %notice.invoice_id, recipient = recipient.as_str(), "no address to notify of a failed payment");
            continue;
        }
        let (subject, text, html) = render(recipient, notice);
        sqlx::query(
            "INSERT INTO notifications (account_id, payment_id, failure_event_id, recipient_kind,
                 recipients, subject, body_text, body_html)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (payment_id, failure_event_id, recipient_kind) DO NOTHING",
        )
        .bind(account_id)
        .bind(&notice.payment_id)
        .bind(&notice.event_id)
        .bind(recipient.as_str())
        .bind(addresses)
        .bind(subject)
        .bind(text)
        .bind(html)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> FailureNotice {
        FailureNotice {
            customer_id: "cust_1".into(),
            customer_name: "Acme <Ltd>".into(),
            invoice_id: "inv_1".into(),
            invoice_number: "INV-0001".into(),
            amount: "GBP 125.00".into(),
            provider: "GOCARDLESS".into(),
            provider_payment_id: "PM1".into(),
            payment_id: "pay_1".into(),
            event_id: "EV1".into(),
            failure_code: Some("insufficient_funds".into()),
            failure_message: Some("The customer's account had insufficient funds.".into()),
            reason: plain_reason(Some("insufficient_funds"), None),
            will_retry: true,
            retry_explanation: "GoCardless will retry the payment.".into(),
            payment_link: None,
            business_name: "Acme Billing".into(),
            customer_recipients: "billing@acme.example".into(),
        }
    }

    #[test]
    fn the_customer_mail_says_what_failed_whether_it_retries_and_how_to_pay() {
        let (subject, text, html) = render(Recipient::Customer, &notice());
        assert_eq!(subject, "Payment failed for invoice INV-0001");
        assert!(text.contains("GBP 125.00"));
        assert!(text.contains("there were not enough funds in the account"));
        assert!(text.contains("GoCardless will retry the payment."));
        assert!(text.contains("Acme Billing will be in touch"));
        assert!(
            html.contains("Acme &lt;Ltd&gt;"),
            "HTML escapes values: {html}"
        );
        let mut with_link = notice();
        with_link.payment_link = Some("https://pay.example/inv_1".into());
        with_link.will_retry = false;
        let (_, text, _) = render(Recipient::Customer, &with_link);
        assert!(text.contains("https://pay.example/inv_1"));
        assert!(text.contains("will not retry"));
    }

    #[test]
    fn the_business_mail_adds_the_code_and_ids() {
        let (subject, text, _) = render(Recipient::Business, &notice());
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
