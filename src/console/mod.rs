//! The operator console: HTML pages on the admin listener at `/console`, rendered on the server
//! from templates checked when settle compiles (askama), with no JavaScript at all: every page is
//! a plain page, every action a plain form, so everything works in any browser and at a phone's
//! width. Operators sign in (`session`); every write passes the same-origin and form-token
//! checks, asks why, and writes an audit row (`audit`).
//!
//! The console has no SQL and no decisions of its own: it reads through `repository` and acts
//! through the functions the commands and the API use (`ops::dlq` for dead letters,
//! `api::invoices::read` for an invoice), so a page and a command can never disagree.

mod accounts;
mod audit;
mod books;
mod customers;
mod dead_letters;
mod events;
mod filters;
mod invoices;
mod limits;
mod links;
mod overview;
mod page;
mod payouts;
mod session;
mod state;
mod unmatched;

pub use self::state::ConsoleState;

use axum::Router;
use axum::routing::{get, post};

/// The console's routes, all under `/console`.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/console", get(overview::page))
        .route("/console/assets/console.css", get(page::stylesheet))
        .route(
            "/console/login",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/console/logout", post(session::sign_out))
        .route("/console/events", get(events::list))
        .route("/console/event", get(events::show))
        .route("/console/invoices", get(invoices::find))
        .route("/console/invoice", get(invoices::show))
        .route("/console/invoice/resend", post(invoices::resend))
        .route("/console/customer", get(customers::show))
        .route("/console/dead-letters", get(dead_letters::list))
        .route(
            "/console/dead-letters/replay",
            get(dead_letters::replay_set_preview).post(dead_letters::replay_set),
        )
        .route("/console/dead-letters/purge", post(dead_letters::purge))
        .route("/console/dead-letters/{id}", get(dead_letters::show))
        .route(
            "/console/dead-letters/{id}/replay",
            post(dead_letters::replay_one),
        )
        .route("/console/payouts", get(payouts::list))
        .route("/console/payout", get(payouts::show))
        .route("/console/unmatched", get(unmatched::list))
        .route("/console/unmatched/discard", post(unmatched::discard))
        .route("/console/accounts", get(accounts::page))
        .route("/console/audit", get(audit::page))
        .route("/console/books", get(books::page))
        .route("/console/books/export", get(books::export))
        .with_state(state)
}
