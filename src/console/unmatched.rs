//! Unmatched events: payment events that name no registered payment yet, waiting for it. Listed
//! newest first; each opens on its event page, where an operator discards it with a reason,
//! through `settle unmatched discard`'s own function (`ops::unmatched::discard_events`).

use axum::Form;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::audit::{self, Done};
use super::page::{Chrome, Refusal};
use super::session::Signed;
use super::state::ConsoleState;
use crate::ops::operators::Access;
use crate::provider::Provider;
use crate::repository::inbox::{self, Discarding, UnmatchedEvent};

const SHOWN: i64 = 200;

struct Waiting {
    event: UnmatchedEvent,
    href: String,
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "unmatched.html")]
struct UnmatchedPage {
    chrome: Chrome,
    events: Vec<Waiting>,
}

pub async fn list(
    State(state): State<ConsoleState>,
    signed: Signed,
) -> Result<impl IntoResponse, Refusal> {
    let mut events = Vec::new();
    match &signed.scope {
        None => events = inbox::list_unmatched(state.reads.pool(), None, None, SHOWN).await?,
        Some(accounts) => {
            for account in accounts {
                events.extend(
                    inbox::list_unmatched(state.reads.pool(), Some(account), None, SHOWN).await?,
                );
            }
            events.sort_by_key(|event| std::cmp::Reverse(event.received_at));
            events.truncate(SHOWN as usize);
        }
    }
    let events = events
        .into_iter()
        .map(|event| Waiting {
            href: super::links::event(event.provider.wire_name(), &event.event_id),
            event,
        })
        .collect();
    Ok(UnmatchedPage {
        chrome: signed.chrome(),
        events,
    })
}

#[derive(Debug, Deserialize)]
pub struct DiscardForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    why: String,
    provider: String,
    id: String,
    account: String,
}

/// Discards one unmatched event of the operator's accounts, then shows its page.
pub async fn discard(
    State(state): State<ConsoleState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<DiscardForm>,
) -> Result<Response, Refusal> {
    signed.check_post(&headers, &form.csrf)?;
    signed.require(Access::Operator, "Discarding an unmatched event")?;
    let why = audit::reason(&form.why)?;
    let not_found = || Refusal::NotFound(format!("no unmatched event {}", form.id));
    if !signed.may_read(&form.account) {
        return Err(not_found());
    }
    let provider = Provider::from_wire_name(&form.provider).ok_or_else(not_found)?;
    let ids = [form.id.clone()];
    let which = Discarding {
        account_id: Some(&form.account),
        provider: Some(provider),
        event_ids: Some(&ids),
        received_before: None,
    };
    let discarded = crate::ops::unmatched::discard_events(&state.db, &which, why, false)
        .await
        .map_err(|error| Refusal::BadRequest(format!("{error:#}")))?;
    if discarded.is_empty() {
        return Err(not_found());
    }
    audit::record(
        &state,
        &signed,
        &Done {
            action: "unmatched.discard",
            target: &format!("{} event {}", provider.wire_name(), form.id),
            account_id: Some(&form.account),
            reason: why,
            outcome: "discarded",
        },
    )
    .await?;
    Ok(Redirect::to(&super::links::event(provider.wire_name(), &form.id)).into_response())
}
