//! Accounts and their connections: each connection's provider, mode, provider account, endpoint,
//! its secrets as `settle connections list` shows them (how many, sealed under which key, never
//! a character of one), and what its endpoint received in the last hour in this process: when it
//! last queued an event, and the share it refused.

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::Utc;

use super::page::{Chrome, Refusal, maybe_time};
use super::session::Signed;
use super::state::ConsoleState;
use crate::ingress::traffic::LastHour;
use crate::ops::accounts::ConnectionView;
use crate::provider::Provider;
use crate::repository::accounts::{self as store, Account};

/// An endpoint's row.
struct EndpointShown {
    path: String,
    provider: String,
    mode: String,
    external_id: String,
    secrets: String,
    last_queued: String,
    last_hour: String,
}

struct AccountShown {
    account: Account,
    endpoints: Vec<EndpointShown>,
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "accounts.html")]
struct AccountsPage {
    chrome: Chrome,
    accounts: Vec<AccountShown>,
}

fn traffic(hour: &LastHour) -> (String, String) {
    let last_hour = match hour.refused_percent() {
        Some(percent) => format!(
            "{} queued, {} refused ({percent:.0}%)",
            hour.queued, hour.refused
        ),
        None => "nothing".into(),
    };
    (maybe_time(&hour.last_queued), last_hour)
}

pub async fn page(
    State(state): State<ConsoleState>,
    signed: Signed,
) -> Result<impl IntoResponse, Refusal> {
    let now = Utc::now();
    let default_account = state.api.account_id.to_string();
    let mut accounts = Vec::new();
    for account in store::list(state.reads.pool()).await? {
        if !signed.may_read(&account.id) {
            continue;
        }
        let mut endpoints = Vec::new();
        // The platform's endpoints deliver the default account's events (and route the others').
        if account.id == default_account {
            for provider in <Provider as strum::VariantArray>::VARIANTS {
                let (last_queued, last_hour) =
                    traffic(&state.traffic.last_hour(*provider, None, now));
                endpoints.push(EndpointShown {
                    path: format!("/webhooks/{}", provider.wire_name()),
                    provider: provider.wire_name().into(),
                    mode: "-".into(),
                    external_id: "the platform's".into(),
                    secrets: "configured (settings)".into(),
                    last_queued,
                    last_hour,
                });
            }
        }
        for connection in store::connections(state.reads.pool(), Some(&account.id)).await? {
            let view = ConnectionView::of(&connection);
            let provider = Provider::from_wire_name(&view.provider);
            let hour = provider
                .map(|provider| state.traffic.last_hour(provider, Some(&view.id), now))
                .unwrap_or_default();
            let (last_queued, last_hour) = traffic(&hour);
            endpoints.push(EndpointShown {
                path: format!("/webhooks/{}/{}", view.provider, view.id),
                secrets: format!(
                    "{} webhook secret(s){}{}",
                    view.webhook_secrets,
                    if view.api_key { ", an API key" } else { "" },
                    if view.sealed_with.is_empty() {
                        String::new()
                    } else {
                        format!("; sealed with {}", view.sealed_with.join(", "))
                    }
                ),
                provider: view.provider,
                mode: view.mode,
                external_id: view.external_id,
                last_queued,
                last_hour,
            });
        }
        accounts.push(AccountShown { account, endpoints });
    }
    Ok(AccountsPage {
        chrome: signed.chrome(),
        accounts,
    })
}
