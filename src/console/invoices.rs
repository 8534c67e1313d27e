//! Invoices: found by id in the operator's accounts; one invoice's money as a timeline (each
//! movement of the ledger, each payment attempt's end, each mail) beside the figures the API
//! gives (`api::invoices::read`, the same function as `GET /invoices/{id}`, so the two cannot
//! disagree) and where each comes from, its payment attempts and automatic charges, and its
//! effective payment settings with the level each comes from.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::audit::{self, Done};
use super::links;
use super::page::{Chrome, Refusal, label, money};
use super::session::Signed;
use super::state::ConsoleState;
use crate::api::invoices::InvoiceDetail;
use crate::ops::operators::Access;
use crate::ops::outbox::Resent;
use crate::provider::Provider;
use crate::repository::events::{self, EventSearch, PublishedMessage};
use crate::repository::{invoices, notifications};

#[derive(Debug, Default, Deserialize)]
pub struct Find {
    #[serde(default)]
    q: String,
}

struct Found {
    href: String,
    account_id: String,
    number: String,
    status: String,
    due: String,
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "invoices.html")]
struct FindPage {
    chrome: Chrome,
    q: String,
    found: Vec<Found>,
    searched: bool,
}

/// Finds an invoice by id among the operator's accounts: straight to it when one account has it.
pub async fn find(
    State(state): State<ConsoleState>,
    signed: Signed,
    Query(find): Query<Find>,
) -> Result<Response, Refusal> {
    let q = find.q.trim().to_owned();
    let rows = if q.is_empty() {
        Vec::new()
    } else {
        invoices::find_in(state.reads.pool(), &signed.accounts(&state).await?, &q).await?
    };
    if let [only] = rows.as_slice() {
        return Ok(Redirect::to(&links::invoice(&only.account_id, &only.id)).into_response());
    }
    let found = rows
        .iter()
        .map(|row| Found {
            href: links::invoice(&row.account_id, &row.id),
            account_id: row.account_id.clone(),
            number: row.number.clone(),
            status: label(&row.status),
            due: money(row.amount_due, row.currency.as_str()),
        })
        .collect();
    Ok(FindPage {
        chrome: signed.chrome(),
        searched: !q.is_empty(),
        q,
        found,
    }
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct WhichInvoice {
    account: String,
    id: String,
}

/// One moment of an invoice's money.
struct Moment {
    at: DateTime<Utc>,
    what: String,
    amount: String,
    detail: String,
    href: Option<String>,
}

/// A derived figure, and where it comes from.
struct Figure {
    name: &'static str,
    id: &'static str,
    value: String,
    from: &'static str,
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "invoice.html")]
struct InvoicePage {
    chrome: Chrome,
    invoice: InvoiceDetail,
    status: String,
    figures: Vec<Figure>,
    timeline: Vec<Moment>,
    payments: Vec<(String, String, String, String)>,
    charges: Vec<(i32, String, String, String)>,
    next_charge: String,
    settings: Vec<(&'static str, String, String)>,
    events_href: String,
    customer_href: String,
    /// The newest reconciliation event about it, and whether this operator may resend it.
    announcement: Option<PublishedMessage>,
    may_resend: bool,
}

pub async fn show(
    State(state): State<ConsoleState>,
    signed: Signed,
    Query(which): Query<WhichInvoice>,
) -> Result<impl IntoResponse, Refusal> {
    // Another account's invoice is not found, exactly as one that does not exist.
    let not_found = || Refusal::NotFound(format!("no invoice {}", which.id));
    if !signed.may_read(&which.account) {
        return Err(not_found());
    }
    let invoice = crate::api::invoices::read(&state.api, &which.account, &which.id)
        .await
        .map_err(|error| Refusal::Internal(anyhow::anyhow!("{error:?}")))?
        .ok_or_else(not_found)?;
    let payment_ids: Vec<String> = invoice.payments.iter().map(|p| p.id.clone()).collect();
    let mails =
        notifications::of_payments(state.reads.pool(), &which.account, &payment_ids).await?;
    let currency = invoice.invoice.currency.as_str();
    let figures = figures(&invoice);
    let mut timeline: Vec<Moment> = invoice
        .money
        .movements
        .iter()
        .map(|movement| Moment {
            at: movement.occurred_at,
            what: label(&movement.kind),
            amount: money(movement.amount, currency),
            detail: format!(
                "{} {} (amount from {})",
                movement.provider.wire_name(),
                movement.provider_object_id,
                movement.amount_source
            ),
            href: Some(links::event(
                movement.provider.wire_name(),
                &movement.event_id,
            )),
        })
        .collect();
    for payment in &invoice.payments {
        timeline.push(Moment {
            at: payment.created_at,
            what: "PAYMENT_REGISTERED".into(),
            amount: money(payment.amount, currency),
            detail: format!(
                "{} {}",
                payment.provider.wire_name(),
                payment.provider_payment_id
            ),
            href: Some(links::events_naming(
                &payment.provider_payment_id,
                &which.account,
            )),
        });
        if let (Some(at), Some(code)) = (payment.last_event_at, &payment.failure_code) {
            timeline.push(Moment {
                at,
                what: format!("PAYMENT_{}", label(&payment.status)),
                amount: money(payment.amount, currency),
                detail: format!(
                    "{code}: {}",
                    payment.failure_message.as_deref().unwrap_or("no message")
                ),
                href: Some(links::events_naming(
                    &payment.provider_payment_id,
                    &which.account,
                )),
            });
        }
    }
    for mail in &mails {
        timeline.push(Moment {
            at: mail.sent_at.unwrap_or(mail.created_at),
            what: format!("MAIL_{}", mail.status),
            amount: String::new(),
            detail: format!(
                "to the {}: {} ({} attempt(s))",
                mail.recipient_kind.to_lowercase(),
                mail.subject,
                mail.attempts
            ),
            href: None,
        });
    }
    timeline.sort_by_key(|moment| moment.at);
    let payments = invoice
        .payments
        .iter()
        .map(|payment| {
            (
                format!(
                    "{} {}",
                    payment.provider.wire_name(),
                    payment.provider_payment_id
                ),
                money(payment.amount, currency),
                label(&payment.status),
                payment.failure_code.clone().unwrap_or_default(),
            )
        })
        .collect();
    let charges = invoice
        .charges
        .iter()
        .map(|charge| {
            (
                charge.attempt,
                label(&charge.state),
                charge.due_at.format("%Y-%m-%d %H:%M").to_string(),
                charge.reason.clone().unwrap_or_default(),
            )
        })
        .collect();
    let next = &invoice.next_charge;
    let next_charge = match (next.due_at, next.none_because) {
        (Some(at), _) => format!(
            "attempt {} due {}",
            next.attempt.unwrap_or_default(),
            at.format("%Y-%m-%d %H:%M UTC")
        ),
        (None, Some(because)) => format!("none: {because}"),
        (None, None) => "none".into(),
    };
    let announcement = last_announcement(&state, &which.account, &which.id).await?;
    let effective = &invoice.payment_settings;
    let settings = vec![
        (
            "Payment provider",
            label(&effective.payment_provider.value),
            label(&effective.payment_provider.source),
        ),
        (
            "Auto-charge",
            effective.auto_charge.value.to_string(),
            label(&effective.auto_charge.source),
        ),
    ];
    Ok(InvoicePage {
        chrome: signed.chrome(),
        status: label(&invoice.invoice.status),
        events_href: links::events_naming(&invoice.invoice.id, &which.account),
        customer_href: links::customer(&which.account, &invoice.invoice.customer_id),
        announcement,
        may_resend: signed.access >= Access::Operator,
        figures,
        timeline,
        payments,
        charges,
        next_charge,
        settings,
        invoice,
    })
}

/// Events of an invoice looked through for its newest announcement.
const EVENTS_LOOKED_AT: i64 = 50;

/// The newest reconciliation event about the invoice among those its newest events published
/// (the events that name its payments, found as the events page finds them).
async fn last_announcement(
    state: &ConsoleState,
    account: &str,
    invoice: &str,
) -> Result<Option<PublishedMessage>, Refusal> {
    let accounts = [account.to_owned()];
    let providers: Vec<&str> = <Provider as strum::VariantArray>::VARIANTS
        .iter()
        .map(|provider| provider.stored_name())
        .collect();
    let search = EventSearch {
        scope: Some(&accounts),
        accounts: &accounts,
        term: Some(invoice),
        limit: EVENTS_LOOKED_AT,
        ..EventSearch::default()
    };
    for event in events::search(state.reads.pool(), &search, &providers).await? {
        let Some(provider) = Provider::from_wire_name(&event.provider.to_ascii_lowercase()) else {
            continue;
        };
        let prefix = format!("{}:{}:", provider.wire_name(), event.event_id);
        let mut published = events::published(state.reads.pool(), account, &prefix).await?;
        published.retain(|message| {
            serde_json::from_str::<serde_json::Value>(&message.payload)
                .is_ok_and(|payload| payload.pointer("/data/invoiceId") == Some(&invoice.into()))
        });
        if let Some(newest) = published.pop() {
            return Ok(Some(newest));
        }
    }
    Ok(None)
}

#[derive(Debug, Deserialize)]
pub struct ResendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    why: String,
    account: String,
    id: String,
    message: String,
}

/// Publishes the invoice's newest reconciliation event again (`settle outbox resend`'s own
/// function), then shows the invoice.
pub async fn resend(
    State(state): State<ConsoleState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<ResendForm>,
) -> Result<Response, Refusal> {
    signed.check_post(&headers, &form.csrf)?;
    signed.require(Access::Operator, "Resending a reconciliation event")?;
    let why = audit::reason(&form.why)?;
    let not_found = || Refusal::NotFound(format!("no reconciliation event {}", form.message));
    if !signed.may_read(&form.account) {
        return Err(not_found());
    }
    let outcome = match crate::ops::outbox::resend(&state.db, &form.account, &form.message).await? {
        Resent::Queued => "queued for the relay",
        Resent::Waiting => "waiting for the relay already",
        Resent::NotFound => return Err(not_found()),
    };
    audit::record(
        &state,
        &signed,
        &Done {
            action: "reconciliation_event.resend",
            target: &format!("{} of invoice {}", form.message, form.id),
            account_id: Some(&form.account),
            reason: why,
            outcome,
        },
    )
    .await?;
    Ok(Redirect::to(&links::invoice(&form.account, &form.id)).into_response())
}

/// The invoice's figures as the API gives them, each with the movements it sums.
fn figures(detail: &InvoiceDetail) -> Vec<Figure> {
    let invoice = &detail.invoice;
    let currency = invoice.currency.as_str();
    vec![
        Figure {
            name: "Amount due",
            id: "amount-due",
            value: money(invoice.amount_due, currency),
            from: "registered by the billing system",
        },
        Figure {
            name: "Paid",
            id: "amount-paid",
            value: money(invoice.amount_paid, currency),
            from: "collected, less collections reversed and what disputes withdrew, plus what they reinstated",
        },
        Figure {
            name: "Refunded",
            id: "amount-refunded",
            value: money(invoice.amount_refunded, currency),
            from: "refunded, less refunds reversed",
        },
        Figure {
            name: "In dispute",
            id: "amount-in-dispute",
            value: money(invoice.amount_in_dispute, currency),
            from: "what open disputes claim",
        },
        Figure {
            name: "Net",
            id: "amount-net",
            value: money(invoice.amount_net, currency),
            from: "paid less refunded",
        },
    ]
}
