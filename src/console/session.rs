//! Who is using the console: signing in (an operator's name and secret, checked against its
//! Argon2id hash off the async threads, at most a few attempts a minute), the session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` outside loopback; a random token whose SHA-256 is
//! the stored key), and the checks every POST passes: a same-origin `Origin` header and the
//! session's form token. `Signed` is the signed-in operator a handler receives.

use std::sync::LazyLock;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, extract::Query};
use chrono::Utc;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::page::{Chrome, Refusal};
use super::state::ConsoleState;
use crate::ops::operators::{Access, hash_secret, verify_secret};
use crate::repository::{accounts, operators};

const COOKIE: &str = "settle_session";
/// A session lasts a working day; signing out or disabling the operator ends it sooner.
const SESSION_HOURS: i64 = 12;
/// The signed-in operator.
#[derive(Debug, Clone)]
pub struct Signed {
    pub name: String,
    pub access: Access,
    /// `None`: every account.
    pub scope: Option<Vec<String>>,
    /// The form token every POST of this session sends back.
    pub csrf: String,
    /// The session's key (its cookie token's SHA-256), to end it.
    session: Vec<u8>,
}

impl Signed {
    /// Refuses an action the operator's role does not include.
    pub fn require(&self, access: Access, action: &str) -> Result<(), Refusal> {
        if self.access >= access {
            Ok(())
        } else {
            Err(Refusal::Forbidden(format!(
                "{action} needs the {} role; {} has {}",
                access.as_str(),
                self.name,
                self.access.as_str()
            )))
        }
    }

    /// Refuses what only an operator of every account may see or do (dead letters, the
    /// overview's process figures: they belong to no one account).
    pub fn require_every_account(&self, what: &str) -> Result<(), Refusal> {
        match self.scope {
            None => Ok(()),
            Some(_) => Err(Refusal::Forbidden(format!(
                "{what} belongs to no single account: only an operator of every account sees it"
            ))),
        }
    }

    /// The accounts this operator reads: its scope, or every account there is.
    pub async fn accounts(&self, state: &ConsoleState) -> Result<Vec<String>, Refusal> {
        match &self.scope {
            Some(scope) => Ok(scope.clone()),
            None => Ok(accounts::list(&state.db)
                .await?
                .into_iter()
                .map(|account| account.id)
                .collect()),
        }
    }

    pub fn may_read(&self, account_id: &str) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|scope| scope.iter().any(|account| account == account_id))
    }

    pub fn chrome(&self) -> Chrome {
        Chrome {
            operator: self.name.clone(),
            role: self.access.as_str(),
            scope: self.scope.as_ref().map(|scope| scope.join(", ")),
            csrf: self.csrf.clone(),
        }
    }

    /// Checks a POST: sent from a page of this console (`Origin` names the host it was sent
    /// to) with this session's form token.
    pub fn check_post(&self, headers: &HeaderMap, csrf: &str) -> Result<(), Refusal> {
        same_origin(headers)?;
        if bool::from(csrf.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(Refusal::Forbidden(
                "the form's token is missing or not this session's: reload the page and try again"
                    .into(),
            ))
        }
    }
}

/// Refuses a POST whose `Origin` is missing or another site's: browsers send it with every
/// form POST, and a page elsewhere cannot make it name this host.
fn same_origin(headers: &HeaderMap) -> Result<(), Refusal> {
    let refused = || {
        Refusal::Forbidden(
            "this form was not sent from the console's own pages (Origin missing or another site)"
                .into(),
        )
    };
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let (Some(origin), Some(host)) = (origin, host) else {
        return Err(refused());
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    if authority.is_some_and(|authority| authority.eq_ignore_ascii_case(host)) {
        Ok(())
    } else {
        Err(refused())
    }
}

fn token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn session_token(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| cookie.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

impl FromRequestParts<ConsoleState> for Signed {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Self, Refusal> {
        let to_sign_in = || {
            let next = parts
                .uri
                .path_and_query()
                .map_or("/console", |path| path.as_str());
            Refusal::SignIn(next.to_owned())
        };
        let Some(token) = session_token(parts) else {
            return Err(to_sign_in());
        };
        let session = token_digest(token);
        let Some((operator, csrf)) = operators::session(&state.db, &session).await? else {
            return Err(to_sign_in());
        };
        let access = operator.role.parse().map_err(|_| {
            Refusal::Internal(anyhow::anyhow!(
                "operator {} has role {}",
                operator.name,
                operator.role
            ))
        })?;
        Ok(Self {
            name: operator.name,
            access,
            scope: operator.accounts,
            csrf,
            session,
        })
    }
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "login.html")]
struct SignInPage {
    next: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// Only a page of the console: never another site (an open redirect).
fn console_path(next: Option<String>) -> String {
    next.filter(|next| {
        next.starts_with("/console")
            && !next.starts_with("//")
            && !next.contains(['\\', '\r', '\n'])
    })
    .unwrap_or_else(|| "/console".to_owned())
}

pub async fn sign_in_page(Query(query): Query<Next>) -> impl IntoResponse {
    SignInPage {
        next: console_path(query.next),
        error: None,
    }
}

#[derive(Deserialize)]
pub struct SignInForm {
    name: String,
    secret: String,
    next: Option<String>,
}

/// A hash that no secret was hashed into, checked for an unknown name so that an unknown name
/// takes as long to refuse as a wrong secret.
static NOBODY: LazyLock<Option<String>> = LazyLock::new(|| hash_secret("no operator").ok());

pub async fn sign_in(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, Refusal> {
    same_origin(&headers)?;
    let next = console_path(form.next);
    let refused = |error: &str, status| {
        let page = SignInPage {
            next: next.clone(),
            error: Some(error.to_owned()),
        };
        Ok((status, page).into_response())
    };
    let name = form.name.trim().to_ascii_lowercase();
    if name.len() > 64 || form.secret.len() > 1024 {
        return refused(
            "no operator signs in with that name and secret",
            axum::http::StatusCode::UNAUTHORIZED,
        );
    }
    if !state.sign_in_limits.admit(&name) {
        return refused(
            "too many sign-in attempts: wait a minute and try again",
            axum::http::StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let operator = operators::find(&state.db, &name)
        .await?
        .filter(|operator| operator.disabled_at.is_none());
    let hash = match &operator {
        Some(operator) => Some(operator.secret_hash.clone()),
        None => NOBODY.clone(),
    };
    let secret = zeroize::Zeroizing::new(form.secret);
    let verified =
        tokio::task::spawn_blocking(move || hash.is_some_and(|hash| verify_secret(&secret, &hash)))
            .await
            .unwrap_or(false);
    let Some(operator) = operator.filter(|_| verified) else {
        tracing::warn!(operator = %name, "console sign-in refused");
        return refused(
            "no operator signs in with that name and secret",
            axum::http::StatusCode::UNAUTHORIZED,
        );
    };
    let token = crate::ops::shared::random_token()?;
    let csrf = crate::ops::shared::random_token()?;
    let expires_at = Utc::now() + chrono::Duration::hours(SESSION_HOURS);
    operators::open_session(
        &state.db,
        &token_digest(&token),
        &operator.name,
        &csrf,
        expires_at,
    )
    .await?;
    tracing::info!(operator = %operator.name, "console sign-in");
    let cookie = format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_HOURS * 3600,
        if state.secure_cookie { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|error| Refusal::Internal(error.into()))?,
    );
    Ok(response)
}

#[derive(Deserialize)]
pub struct SignOutForm {
    csrf: String,
}

/// Ends the session (its row, and the cookie in this browser).
pub async fn sign_out(
    State(state): State<ConsoleState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<SignOutForm>,
) -> Result<Response, Refusal> {
    signed.check_post(&headers, &form.csrf)?;
    operators::close_session(&state.db, &signed.session).await?;
    let mut response = Redirect::to("/console/login").into_response();
    let expired = format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&expired).map_err(|error| Refusal::Internal(error.into()))?,
    );
    Ok(response)
}
