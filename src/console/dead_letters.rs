//! Dead letters: grouped by reason, listed, one with its error and message; replayed one at a
//! time or as a filtered set (counted and shown first, as a dry run, then replayed with each
//! result), and purged behind a typed confirmation. Every action runs `settle dlq`'s own
//! functions (`ops::dlq`), so the console and the command can never disagree. Dead letters belong
//! to no single account (some never reached one), so only operators of every account see them.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::audit::{self, Done};
use super::page::{Chrome, Refusal, maybe_time, time};
use super::session::Signed;
use super::state::ConsoleState;
use crate::ops::dlq::{self, Filters};
use crate::ops::operators::Access;
use crate::repository::dead_letters::{self as store, DeadLetter, ReasonGroup};

/// Letters shown on the list, and in a dry run.
const SHOWN: i64 = 100;

/// The filters of the list and of a replay of a set; blank ones are no filter.
#[derive(Debug, Default, Deserialize)]
pub struct SetFilters {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    provider: String,
}

impl SetFilters {
    fn filters(&self) -> Result<Filters, Refusal> {
        let provider = match self.provider.trim() {
            "" => None,
            name => Some(
                crate::provider::Provider::from_wire_name(name).ok_or_else(|| {
                    Refusal::BadRequest(format!("no provider `{name}`: stripe or gocardless"))
                })?,
            ),
        };
        Ok(Filters {
            provider,
            reason: Some(self.reason.trim().to_owned()).filter(|reason| !reason.is_empty()),
            since: None,
        })
    }

    /// The newest `SHOWN` letters of the filters (`waiting_only`: not replayed yet), and how
    /// many wait in all.
    async fn newest(
        &self,
        state: &ConsoleState,
        waiting_only: bool,
    ) -> Result<(Vec<DeadLetter>, i64), Refusal> {
        let filters = self.filters()?;
        let provider = filters.provider.map(crate::provider::Provider::wire_name);
        Ok(store::newest(
            state.reads.pool(),
            provider,
            filters.reason.as_deref(),
            waiting_only,
            SHOWN,
        )
        .await?)
    }

    fn query(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("reason", &self.reason)
            .append_pair("provider", &self.provider)
            .finish()
    }
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "dead_letters.html")]
struct ListPage {
    chrome: Chrome,
    groups: Vec<ReasonGroup>,
    filters: SetFilters,
    filter_query: String,
    letters: Vec<DeadLetter>,
    waiting: i64,
    may_replay: bool,
}

pub async fn list(
    State(state): State<ConsoleState>,
    signed: Signed,
    Query(filters): Query<SetFilters>,
) -> Result<impl IntoResponse, Refusal> {
    signed.require_every_account("A dead letter")?;
    let groups = store::by_reason(state.reads.pool()).await?;
    let (letters, waiting) = filters.newest(&state, false).await?;
    Ok(ListPage {
        chrome: signed.chrome(),
        groups,
        filter_query: filters.query(),
        filters,
        letters,
        waiting,
        may_replay: signed.access >= Access::Operator,
    })
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "dead_letter.html")]
struct LetterPage {
    chrome: Chrome,
    letter: DeadLetter,
    event_href: Option<String>,
    first_failure: String,
    last_failure: String,
    dead_lettered: String,
    replayed: String,
    headers: String,
    payload: String,
    may_replay: bool,
}

pub async fn show(
    State(state): State<ConsoleState>,
    signed: Signed,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse, Refusal> {
    signed.require_every_account("A dead letter")?;
    let letter = dlq::letter(state.reads.pool(), id)
        .await?
        .ok_or_else(|| Refusal::NotFound(format!("no dead letter {id}")))?;
    let row = letter.row;
    let event_href = match (&row.provider, &row.event_id) {
        (Some(provider), Some(event_id)) => Some(super::links::event(provider, event_id)),
        _ => None,
    };
    Ok(LetterPage {
        chrome: signed.chrome(),
        event_href,
        first_failure: maybe_time(&row.first_failure_at),
        last_failure: maybe_time(&row.last_failure_at),
        dead_lettered: time(&row.dead_lettered_at),
        replayed: maybe_time(&row.replayed_at),
        headers: serde_json::to_string_pretty(&letter.headers).unwrap_or_default(),
        payload: serde_json::to_string_pretty(&letter.payload).unwrap_or_default(),
        letter: row,
        may_replay: signed.access >= Access::Operator,
    })
}

/// The checks every change of dead letters passes: a form of this console with this session's
/// token, an operator's role, every account (a dead letter belongs to none), and a reason: the
/// reason.
fn allowed<'a>(
    signed: &Signed,
    headers: &HeaderMap,
    csrf: &str,
    why: &'a str,
    action: &str,
) -> Result<&'a str, Refusal> {
    signed.check_post(headers, csrf)?;
    signed.require(Access::Operator, action)?;
    signed.require_every_account("A dead letter")?;
    audit::reason(why)
}

/// A replay's result as the audit row and the page say it.
fn said(result: &anyhow::Result<()>) -> String {
    match result {
        Ok(()) => "replayed".to_owned(),
        Err(error) => format!("failed: {error:#}"),
    }
}

#[derive(Debug, Deserialize)]
pub struct WriteForm {
    #[serde(default)]
    csrf: String,
    /// Why (the audit row's reason; `reason` is the dead letters' own filter).
    #[serde(default)]
    why: String,
}

/// Replays one dead letter (again, if it was replayed before), then shows it.
pub async fn replay_one(
    State(state): State<ConsoleState>,
    signed: Signed,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<WriteForm>,
) -> Result<Response, Refusal> {
    let why = allowed(
        &signed,
        &headers,
        &form.csrf,
        &form.why,
        "Replaying a dead letter",
    )?;
    let rows = dlq::replayable(&state.db, &[id], &Filters::default(), true).await?;
    let Some(row) = rows.first() else {
        return Err(Refusal::NotFound(format!("no dead letter {id}")));
    };
    let result = dlq::replay_letters(&state.db, &state.broker, &state.keyring, &rows)
        .await
        .pop()
        .unwrap_or_else(|| Err(anyhow::anyhow!("nothing was replayed")));
    let outcome = said(&result);
    audit::record(
        &state,
        &signed,
        &Done {
            action: "dead_letter.replay",
            target: &letter_target(row),
            account_id: None,
            reason: why,
            outcome: &outcome,
        },
    )
    .await?;
    result.map_err(Refusal::Internal)?;
    Ok(Redirect::to(&format!("/console/dead-letters/{id}")).into_response())
}

fn letter_target(row: &DeadLetter) -> String {
    format!(
        "dead letter {} ({} {})",
        row.id,
        row.provider.as_deref().unwrap_or("-"),
        row.event_id.as_deref().unwrap_or("-")
    )
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "dead_letters_replay.html")]
struct ReplaySetPage {
    chrome: Chrome,
    filters: SetFilters,
    letters: Vec<DeadLetter>,
    count: i64,
    /// More letters wait than are shown.
    more: bool,
    /// After the replay: each letter's result.
    results: Vec<(i64, String)>,
    replayed: usize,
    failed: usize,
    done: bool,
}

/// The dry run of a set's replay: how many letters, and which.
pub async fn replay_set_preview(
    State(state): State<ConsoleState>,
    signed: Signed,
    Query(filters): Query<SetFilters>,
) -> Result<impl IntoResponse, Refusal> {
    signed.require_every_account("A dead letter")?;
    let (letters, count) = filters.newest(&state, true).await?;
    let more = count > letters.len() as i64;
    Ok(ReplaySetPage {
        chrome: signed.chrome(),
        filters,
        letters,
        count,
        more,
        results: Vec::new(),
        replayed: 0,
        failed: 0,
        done: false,
    })
}

/// (Fields listed out: `serde(flatten)` reads every form value as text, and `expected` is a
/// number.)
#[derive(Debug, Deserialize)]
pub struct ReplaySetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    why: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    provider: String,
    /// The count the dry run showed: a set that grew or shrank since is not replayed blind.
    expected: usize,
}

/// Replays every waiting letter of the set, each with its result, and records one audit row.
pub async fn replay_set(
    State(state): State<ConsoleState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<ReplaySetForm>,
) -> Result<Response, Refusal> {
    let why = allowed(
        &signed,
        &headers,
        &form.csrf,
        &form.why,
        "Replaying dead letters",
    )?;
    let filters = SetFilters {
        reason: form.reason,
        provider: form.provider,
    };
    let rows = dlq::replayable(&state.db, &[], &filters.filters()?, false).await?;
    if rows.len() != form.expected {
        return Err(Refusal::BadRequest(format!(
            "the set now holds {} dead letters, not the {} the dry run showed: look again before replaying",
            rows.len(),
            form.expected
        )));
    }
    let results = dlq::replay_letters(&state.db, &state.broker, &state.keyring, &rows).await;
    let failed = results.iter().filter(|result| result.is_err()).count();
    let replayed = results.len() - failed;
    audit::record(
        &state,
        &signed,
        &Done {
            action: "dead_letter.replay_set",
            target: &format!(
                "dead letters with reason {} and provider {}",
                or_any(&filters.reason),
                or_any(&filters.provider)
            ),
            account_id: None,
            reason: why,
            outcome: &format!("replayed {replayed}, failed {failed}"),
        },
    )
    .await?;
    let shown = rows
        .iter()
        .zip(&results)
        .map(|(row, result)| (row.id, said(result)))
        .collect();
    Ok(ReplaySetPage {
        chrome: signed.chrome(),
        filters,
        letters: Vec::new(),
        count: rows.len() as i64,
        more: false,
        results: shown,
        replayed,
        failed,
        done: true,
    }
    .into_response())
}

fn or_any(field: &str) -> &str {
    match field.trim() {
        "" => "any",
        given => given,
    }
}

#[derive(Debug, Deserialize)]
pub struct PurgeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    why: String,
    /// Dead letters older than this (`7d`, `24h`), as `settle dlq purge --older-than`.
    older_than: String,
    /// Must read `purge`.
    confirm: String,
}

/// Deletes the dead letters older than the given age, once the operator typed `purge`.
pub async fn purge(
    State(state): State<ConsoleState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<PurgeForm>,
) -> Result<Response, Refusal> {
    let why = allowed(
        &signed,
        &headers,
        &form.csrf,
        &form.why,
        "Purging dead letters",
    )?;
    if form.confirm.trim() != "purge" {
        return Err(Refusal::BadRequest(
            "type `purge` to confirm: purged dead letters cannot be replayed".into(),
        ));
    }
    let age = crate::ops::parse_duration(form.older_than.trim())
        .map_err(|error| Refusal::BadRequest(format!("older than: {error}")))?;
    let purged = dlq::purge_letters(&state.db, &[], Some(age)).await?;
    audit::record(
        &state,
        &signed,
        &Done {
            action: "dead_letter.purge",
            target: &format!("dead letters older than {}", form.older_than.trim()),
            account_id: None,
            reason: why,
            outcome: &format!("purged {purged}"),
        },
    )
    .await?;
    Ok(Redirect::to("/console/dead-letters").into_response())
}
