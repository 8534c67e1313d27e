//! Events: the inbox searched by any id (the event's, its object's, the payment, mandate, refund
//! or payout it names, or an invoice's), filtered, a page at a time; and one event with what it
//! did: its outcome, the ledger movements it recorded, the reconciliation events it published,
//! its dead letters and their replays, the payload, and a link into the provider's dashboard.

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::page::{Chrome, Refusal, money, time};
use super::session::Signed;
use super::state::ConsoleState;
use crate::provider::Provider;
use crate::repository::events::{self as store, EventCursor, EventRow, EventSearch};
use crate::repository::{accounts, dead_letters};

const PAGE: i64 = 50;

/// The search form's fields; blank ones are no filter.
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    account: String,
    #[serde(default, rename = "type")]
    event_type: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// The cursor of the next page: received time, provider, event id.
    after_at: Option<DateTime<Utc>>,
    after_provider: Option<String>,
    after_id: Option<String>,
}

fn given(field: &str) -> Option<&str> {
    Some(field.trim()).filter(|field| !field.is_empty())
}

/// A time the form was given: RFC 3339, or a date (midnight UTC).
fn parse_time(field: &str, name: &str) -> Result<Option<DateTime<Utc>>, Refusal> {
    let Some(text) = given(field) else {
        return Ok(None);
    };
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|at| Some(at.and_utc()))
        .ok_or_else(|| {
            Refusal::BadRequest(format!(
                "`{name}` is not a time: give an RFC 3339 time or a date (2026-12-07)"
            ))
        })
}

/// An event row as the list shows it.
struct Listed {
    row: EventRow,
    href: String,
    provider: &'static str,
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "events.html")]
struct EventsPage {
    chrome: Chrome,
    filters: Filters,
    providers: Vec<&'static str>,
    outcomes: [&'static str; 8],
    events: Vec<Listed>,
    next: Option<String>,
}

/// The provider of a stored name (`STRIPE`), or of a wire name (`stripe`).
fn provider_named(name: &str) -> Option<Provider> {
    Provider::from_wire_name(&name.to_ascii_lowercase())
}

pub async fn list(
    State(state): State<ConsoleState>,
    signed: Signed,
    Query(filters): Query<Filters>,
) -> Result<impl IntoResponse, Refusal> {
    let mut accounts = signed.accounts(&state).await?;
    let mut scope = signed.scope.clone();
    if let Some(account) = given(&filters.account) {
        accounts.retain(|known| known == account);
        scope = Some(accounts.clone());
    }
    let provider = match given(&filters.provider) {
        Some(name) => Some(
            provider_named(name)
                .ok_or_else(|| Refusal::BadRequest(format!("no provider `{name}`")))?
                .stored_name(),
        ),
        None => None,
    };
    let after = match (
        &filters.after_at,
        &filters.after_provider,
        &filters.after_id,
    ) {
        (Some(at), Some(provider), Some(id)) => Some(EventCursor {
            received_at: *at,
            provider: provider.clone(),
            event_id: id.clone(),
        }),
        _ => None,
    };
    let term = given(&filters.q);
    if term.is_some_and(|term| term.len() > crate::providers::lookup::MAX_ID_LEN) {
        return Err(Refusal::BadRequest(
            "that is longer than any id settle stores".into(),
        ));
    }
    let providers: Vec<&str> = <Provider as strum::VariantArray>::VARIANTS
        .iter()
        .map(|provider| provider.stored_name())
        .collect();
    let search = EventSearch {
        scope: scope.as_deref(),
        accounts: &accounts,
        term,
        provider,
        event_type: given(&filters.event_type),
        outcome: given(&filters.outcome),
        since: parse_time(&filters.since, "since")?,
        until: parse_time(&filters.until, "until")?,
        after,
        limit: PAGE + 1,
    };
    let mut rows = store::search(state.reads.pool(), &search, &providers).await?;
    let next = (rows.len() > PAGE as usize).then(|| {
        rows.truncate(PAGE as usize);
        rows.last().map(|last| next_page(&filters, &last.cursor()))
    });
    let events = rows
        .into_iter()
        .map(|row| {
            let provider = provider_named(&row.provider).map_or("?", Provider::wire_name);
            Listed {
                href: super::links::event(provider, &row.event_id),
                provider,
                row,
            }
        })
        .collect();
    Ok(EventsPage {
        chrome: signed.chrome(),
        filters,
        providers: <Provider as strum::VariantArray>::VARIANTS
            .iter()
            .map(|provider| provider.wire_name())
            .collect(),
        outcomes: OUTCOMES,
        events,
        next: next.flatten(),
    })
}

/// The outcomes an inbox row can have, for the filter: the worker's (`reconcile::outcome::Outcome`,
/// less `duplicate`, which stores nothing), then what an unmatched event becomes when an operator
/// discards it or retention gives up on it.
const OUTCOMES: [&str; 8] = [
    "applied",
    "stale",
    "unchanged",
    "recorded",
    "ignored",
    "unmatched",
    "discarded",
    "expired",
];

fn next_page(filters: &Filters, cursor: &EventCursor) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("q", &filters.q)
        .append_pair("provider", &filters.provider)
        .append_pair("account", &filters.account)
        .append_pair("type", &filters.event_type)
        .append_pair("outcome", &filters.outcome)
        .append_pair("since", &filters.since)
        .append_pair("until", &filters.until)
        .append_pair("after_at", &cursor.received_at.to_rfc3339())
        .append_pair("after_provider", &cursor.provider)
        .append_pair("after_id", &cursor.event_id)
        .finish();
    format!("/console/events?{query}")
}

#[derive(Debug, Deserialize)]
pub struct WhichEvent {
    provider: String,
    id: String,
}

struct MovementLine {
    invoice_href: String,
    movement: store::RecordedMovement,
    amount: String,
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "event.html")]
struct EventPage {
    chrome: Chrome,
    event: EventRow,
    provider: &'static str,
    received_at: String,
    processed_at: String,
    dashboard: Option<String>,
    payload: String,
    object_ids: Vec<String>,
    /// The invoices of the payments it names: (id, link).
    invoices: Vec<(String, String)>,
    movements: Vec<MovementLine>,
    published: Vec<store::PublishedMessage>,
    letters: Vec<dead_letters::DeadLetter>,
    /// An operator may discard it (it is unmatched).
    may_discard: bool,
}

pub async fn show(
    State(state): State<ConsoleState>,
    signed: Signed,
    Query(which): Query<WhichEvent>,
) -> Result<impl IntoResponse, Refusal> {
    let not_found = || Refusal::NotFound(format!("no event {} of {}", which.id, which.provider));
    let provider = provider_named(&which.provider).ok_or_else(not_found)?;
    let accounts = signed.accounts(&state).await?;
    let detail = store::one(
        state.reads.pool(),
        &accounts,
        provider.stored_name(),
        &which.id,
    )
    .await?
    .ok_or_else(not_found)?;
    let event = detail.row;
    let object_ids = detail.object_ids.unwrap_or_default();
    let payload: serde_json::Value = serde_json::from_str(&detail.payload)
        .unwrap_or_else(|_| serde_json::Value::String(detail.payload.clone()));
    let test_mode = match &event.connection_id {
        Some(id) => accounts::connection(state.reads.pool(), id)
            .await?
            .is_some_and(|connection| connection.mode == "test"),
        None => false,
    };
    let rules = crate::providers::rules(provider);
    let movements = store::movements(
        state.reads.pool(),
        &event.account_id,
        provider.stored_name(),
        &event.event_id,
        &object_ids,
    )
    .await?
    .into_iter()
    .map(|movement| MovementLine {
        invoice_href: super::links::invoice(&event.account_id, &movement.invoice_id),
        amount: money(movement.amount, &movement.currency),
        movement,
    })
    .collect();
    let invoices = store::invoices_of(
        state.reads.pool(),
        &event.account_id,
        provider.stored_name(),
        &object_ids,
    )
    .await?
    .into_iter()
    .map(|id| {
        let href = super::links::invoice(&event.account_id, &id);
        (id, href)
    })
    .collect();
    let prefix = format!("{}:{}:", provider.wire_name(), event.event_id);
    let published = store::published(state.reads.pool(), &event.account_id, &prefix).await?;
    let letters =
        dead_letters::of_event(state.reads.pool(), provider.wire_name(), &event.event_id).await?;
    Ok(EventPage {
        chrome: signed.chrome(),
        provider: provider.wire_name(),
        received_at: time(&event.received_at),
        processed_at: time(&event.processed_at),
        dashboard: rules.dashboard_url(&payload, test_mode),
        payload: serde_json::to_string_pretty(&payload).unwrap_or(detail.payload),
        object_ids,
        invoices,
        movements,
        published,
        letters,
        may_discard: event.outcome == "unmatched"
            && signed.access >= crate::ops::operators::Access::Operator,
        event,
    })
}
