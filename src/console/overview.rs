//! The overview: the figures operators would otherwise read from `/metrics` and the commands,
//! each linking to the page that lists what it counts. An operator scoped to some accounts sees
//! their events only; the process's figures (dead letters, the outbox, background tasks, the
//! backfill cursors) belong to no one account.

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::Utc;

use super::page::{Chrome, Refusal, maybe_time, time};
use super::session::Signed;
use super::state::ConsoleState;
use crate::repository::{backfill, dead_letters, events, outbox, payouts, retention};

/// One figure, and where to see what it counts.
struct Card {
    label: String,
    figure: String,
    href: String,
}

/// What only an operator of every account sees.
struct Process {
    cards: Vec<Card>,
    /// Each queue's ready messages; `None`: the broker could not say.
    queues: Option<Vec<(String, u32)>>,
    failing_tasks: Vec<&'static str>,
    broker: &'static str,
    cursors: Vec<(String, String, String, String)>,
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    intake: Vec<Card>,
    process: Option<Process>,
    as_of: String,
}

pub async fn page(
    State(state): State<ConsoleState>,
    signed: Signed,
) -> Result<impl IntoResponse, Refusal> {
    let now = Utc::now();
    let hour_ago = now - chrono::Duration::hours(1);
    let intake = events::outcomes_since(state.reads.pool(), signed.scope.as_deref(), hour_ago)
        .await?
        .into_iter()
        .map(|(outcome, count)| Card {
            href: format!(
                "/console/events?outcome={outcome}&since={}",
                hour_ago.format("%Y-%m-%dT%H:%M:%SZ")
            ),
            label: format!("events {outcome} in the last hour"),
            figure: count.to_string(),
        })
        .collect();
    let process = match signed.scope {
        Some(_) => None,
        None => Some(process(&state).await?),
    };
    Ok(OverviewPage {
        chrome: signed.chrome(),
        intake,
        process,
        as_of: time(&now),
    })
}

async fn process(state: &ConsoleState) -> Result<Process, Refusal> {
    let groups = dead_letters::by_reason(state.reads.pool()).await?;
    let waiting: i64 = groups.iter().map(|group| group.waiting).sum();
    let oldest = groups.iter().map(|group| group.oldest).min();
    let (unmatched, unmatched_oldest) = retention::unmatched_backlog(state.reads.pool()).await?;
    let (outbox_waiting, outbox_parked) = outbox::backlog(state.reads.pool()).await?;
    let outbox_oldest = outbox::oldest_waiting(state.reads.pool()).await?;
    let webhooks = state.traffic.all_last_hour(Utc::now());
    let payouts_open = payouts::not_reconciled(state.reads.pool()).await?;
    let cards = vec![
        Card {
            label: format!("dead letters waiting (oldest {})", maybe_time(&oldest)),
            figure: waiting.to_string(),
            href: "/console/dead-letters".into(),
        },
        Card {
            label: format!(
                "unmatched events (oldest {})",
                maybe_time(&unmatched_oldest)
            ),
            figure: unmatched.to_string(),
            href: "/console/unmatched".into(),
        },
        Card {
            label: format!(
                "webhook requests this process refused in the last hour ({} queued)",
                webhooks.queued
            ),
            figure: webhooks.refused.to_string(),
            href: "/console/accounts".into(),
        },
        Card {
            label: format!(
                "reconciliation events waiting to be published (oldest {})",
                maybe_time(&outbox_oldest)
            ),
            figure: outbox_waiting.to_string(),
            href: "/console".into(),
        },
        Card {
            label: "reconciliation events parked (settle outbox list)".into(),
            figure: outbox_parked.to_string(),
            href: "/console".into(),
        },
        Card {
            label: "payouts waiting for their lines, or partly matched".into(),
            figure: payouts_open.to_string(),
            href: "/console/payouts".into(),
        },
    ];
    let broker = if !state.broker.is_connected() {
        "not connected"
    } else if state.broker.is_blocked() {
        "connected, blocked by a resource alarm"
    } else {
        "connected"
    };
    let cursors = backfill::cursors(state.reads.pool())
        .await?
        .into_iter()
        .map(|cursor| {
            (
                cursor.provider,
                cursor.source,
                time(&cursor.swept_until),
                time(&cursor.last_success_at),
            )
        })
        .collect();
    Ok(Process {
        cards,
        queues: state.broker.queue_depths().await,
        failing_tasks: state.supervisor.failing(),
        broker,
        cursors,
    })
}
