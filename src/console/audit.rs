//! The audit log: every write made in the console, with who, what, when, why and what it touched,
//! written by `record` after the write; and its page, newest first.

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::page::{Chrome, Refusal};
use super::session::Signed;
use super::state::ConsoleState;
use crate::repository::operators::{self as store, AuditEntry, NewAuditEntry};

/// A reason longer than this is not a reason.
const MAX_REASON: usize = 500;
const PAGE: i64 = 100;

/// The reason a write form gave: required, at most `MAX_REASON` characters.
pub fn reason(text: &str) -> Result<&str, Refusal> {
    let reason = text.trim();
    if reason.is_empty() {
        return Err(Refusal::BadRequest(
            "say why: every change made in the console records its reason".into(),
        ));
    }
    if reason.chars().count() > MAX_REASON {
        return Err(Refusal::BadRequest(format!(
            "the reason is longer than {MAX_REASON} characters"
        )));
    }
    Ok(reason)
}

/// What one write did, for its audit row.
pub struct Done<'a> {
    pub action: &'a str,
    pub target: &'a str,
    pub account_id: Option<&'a str>,
    pub reason: &'a str,
    pub outcome: &'a str,
}

/// Writes the audit row of a write the operator made.
pub async fn record(state: &ConsoleState, signed: &Signed, done: &Done<'_>) -> Result<(), Refusal> {
    store::audit(
        &state.db,
        &NewAuditEntry {
            operator: &signed.name,
            action: done.action,
            target: done.target,
            account_id: done.account_id,
            reason: done.reason,
            outcome: done.outcome,
        },
    )
    .await?;
    tracing::info!(
        operator = %signed.name,
        action = done.action,
        target = done.target,
        outcome = done.outcome,
        "console change"
    );
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct Page {
    before: Option<i64>,
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    entries: Vec<AuditEntry>,
    next: Option<i64>,
}

pub async fn page(
    State(state): State<ConsoleState>,
    signed: Signed,
    Query(page): Query<Page>,
) -> Result<impl IntoResponse, Refusal> {
    let mut entries = store::audit_log(
        state.reads.pool(),
        signed.scope.as_deref(),
        page.before,
        PAGE + 1,
    )
    .await?;
    let next = (entries.len() > PAGE as usize).then(|| {
        entries.truncate(PAGE as usize);
        entries.last().map(|entry| entry.id)
    });
    Ok(AuditPage {
        chrome: signed.chrome(),
        entries,
        next: next.flatten(),
    })
}
