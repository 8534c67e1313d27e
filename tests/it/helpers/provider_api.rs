//! Stand-ins for the providers' APIs, started by a test on a port of its own: what settle's
//! backfill and payout lister read, in the documented shapes (Stripe `GET /v1/events`: `data`,
//! `has_more`, `starting_after`, `created[gte|lte]`, `types[]`, `Stripe-Account`; GoCardless
//! `GET /events`: `events`, `meta.cursors.after`, `created_at[gte|lte]`, `GoCardless-Version`;
//! and their payouts and payout lines). `localstripe` (`helpers::localstripe`) is used where it
//! covers a test: it keeps real PaymentIntents and lists their events. But it lists only its own
//! objects' (in a 2017 API version's shape), with neither `types[]` nor `Stripe-Account`, cannot
//! be told to answer 429 or 500, and its payouts are manual, in euros, with no balance
//! transactions: the stand-in serves the fixtures' full objects with all of those. The README's
//! payout walk-through runs it too (`examples/provider_standin.rs`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// A scripted failure, answered to the next request instead of the page.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// 429 with `Retry-After: <seconds>`.
    TooManyRequests(u64),
    ServerError,
}

/// A Stripe create call (`POST /v1/payment_intents`) as the stand-in received it.
#[derive(Debug, Clone)]
pub struct IntentRequest {
    /// `Stripe-Account`: the connected account it was made for.
    pub account: Option<String>,
    pub idempotency_key: String,
    pub form: Vec<(String, String)>,
}

/// One currency of a Stripe account's balance, in minor units.
struct StripeBalance {
    account: Option<String>,
    currency: String,
    available: i64,
    pending: i64,
}

#[derive(Default)]
struct Events {
    /// Stripe events by the connected account they belong to (`None`: the platform's).
    stripe: Vec<(Option<String>, Value)>,
    /// Stripe PaymentIntents as `GET /v1/payment_intents/{id}` returns them, by account.
    intents: Vec<(Option<String>, Value)>,
    gocardless: Vec<Value>,
    /// Stripe balance transactions by (connected account, payout), in Stripe's order.
    balance_transactions: Vec<(Option<String>, String, Value)>,
    /// GoCardless payout items by payout, in GoCardless's order; payouts answered 410.
    payout_items: Vec<(String, Value)>,
    gone_payouts: Vec<String>,
    /// Stripe payouts by connected account, and GoCardless payouts, as their lists return them.
    stripe_payouts: Vec<(Option<String>, Value)>,
    gocardless_payouts: Vec<Value>,
    /// Stripe's balance by connected account and currency.
    stripe_balances: Vec<StripeBalance>,
    /// GoCardless's creditor balances: (balance type, currency, amount).
    gocardless_balances: Vec<(String, String, i64)>,
    refusals: VecDeque<Refusal>,
    /// Every request's path and query, in order.
    requests: Vec<String>,
    /// Stripe's create calls (`POST /v1/payment_intents`).
    intent_requests: Vec<IntentRequest>,
    /// GoCardless payments created (`POST /payments`), by the idempotency key that created each.
    payments: Vec<(String, Value)>,
    /// Every idempotency key a create call carried, repeats included, in order.
    payment_keys: Vec<String>,
    /// How long a create call's answer takes after the payment is created.
    answer_delay: std::time::Duration,
    /// How long each answer takes, and the most requests ever in flight at once.
    delay: std::time::Duration,
    in_flight: usize,
    max_in_flight: usize,
}

pub struct ProviderApi {
    pub addr: SocketAddr,
    events: Arc<Mutex<Events>>,
    server: tokio::task::JoinHandle<()>,
}

pub const STRIPE_KEY: &str = "sk_test_standin";
pub const GOCARDLESS_TOKEN: &str = "gc_access_standin";
/// A mandate the GoCardless stand-in refuses payments against (422 `mandate_is_inactive`).
pub const INACTIVE_MANDATE: &str = "MD0000INACTIVE";
/// The stand-in's GoCardless page size (the API allows up to 500; a smaller page is as valid, and
/// makes the tests cross page boundaries).
const GOCARDLESS_PAGE: usize = 40;

impl ProviderApi {
    /// On a port of its own.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// On `addr` (`127.0.0.1:56790`: the README's payout walk-through).
    pub async fn start_on(addr: &str) -> Self {
        let events = Arc::new(Mutex::new(Events::default()));
        let app = axum::Router::new()
            .route("/v1/events", get(stripe_events))
            .route("/events", get(gocardless_events))
            .route("/v1/payment_intents/{id}", get(stripe_payment_intent))
            .route(
                "/v1/payment_intents",
                axum::routing::post(stripe_create_payment_intent),
            )
            .route("/v1/balance_transactions", get(stripe_balance_transactions))
            .route("/payout_items", get(gocardless_payout_items))
            .route("/v1/payouts", get(stripe_payouts))
            .route("/payouts", get(gocardless_payouts))
            .route("/payouts/{id}", get(gocardless_payout))
            .route("/payments", axum::routing::post(gocardless_create_payment))
            .route("/v1/balance", get(stripe_balance))
            .route("/creditors", get(gocardless_creditors))
            .route("/balances", get(gocardless_balances))
            .layer(axum::middleware::from_fn_with_state(
                events.clone(),
                in_flight,
            ))
            .with_state(events.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            events,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a Stripe event (its full JSON) of the platform, or of a connected account.
    pub fn add_stripe(&self, account: Option<&str>, event: Value) {
        let mut events = self.events.lock().unwrap();
        events.stripe.push((account.map(str::to_owned), event));
    }

    /// Sets what Stripe holds for a PaymentIntent (of the platform, or of a connected account).
    pub fn set_payment_intent(&self, account: Option<&str>, intent: Value) {
        let mut events = self.events.lock().unwrap();
        events
            .intents
            .retain(|(owner, held)| !(owner.as_deref() == account && held["id"] == intent["id"]));
        events.intents.push((account.map(str::to_owned), intent));
    }

    /// Adds a balance transaction (its full JSON, `source` expanded) to a payout's lines.
    pub fn add_balance_transaction(&self, account: Option<&str>, payout: &str, transaction: Value) {
        let mut events = self.events.lock().unwrap();
        let owner = account.map(str::to_owned);
        events
            .balance_transactions
            .push((owner, payout.to_owned(), transaction));
    }

    /// Adds an item to a GoCardless payout's.
    pub fn add_payout_item(&self, payout: &str, item: Value) {
        let mut events = self.events.lock().unwrap();
        events.payout_items.push((payout.to_owned(), item));
    }

    /// Adds (or replaces) a Stripe payout, as `GET /v1/payouts` lists it.
    pub fn set_stripe_payout(&self, account: Option<&str>, payout: Value) {
        let mut events = self.events.lock().unwrap();
        events
            .stripe_payouts
            .retain(|(owner, held)| !(owner.as_deref() == account && held["id"] == payout["id"]));
        events
            .stripe_payouts
            .push((account.map(str::to_owned), payout));
    }

    /// Adds a GoCardless payout, as `GET /payouts` and `GET /payouts/{id}` return it.
    pub fn add_gocardless_payout(&self, payout: Value) {
        self.events.lock().unwrap().gocardless_payouts.push(payout);
    }

    /// Sets Stripe's balance (of a connected account, or the platform's) in one currency.
    pub fn set_stripe_balance(
        &self,
        account: Option<&str>,
        currency: &str,
        available: i64,
        pending: i64,
    ) {
        let mut events = self.events.lock().unwrap();
        events
            .stripe_balances
            .retain(|held| !(held.account.as_deref() == account && held.currency == currency));
        events.stripe_balances.push(StripeBalance {
            account: account.map(str::to_owned),
            currency: currency.to_owned(),
            available,
            pending,
        });
    }

    /// Sets one of GoCardless's creditor balances (`confirmed_funds`, `pending_payouts`,
    /// `pending_payments_submitted`) in one currency.
    pub fn set_gocardless_balance(&self, balance_type: &str, currency: &str, amount: i64) {
        let mut events = self.events.lock().unwrap();
        events
            .gocardless_balances
            .retain(|(kind, held, _)| !(kind == balance_type && held == currency));
        events
            .gocardless_balances
            .push((balance_type.to_owned(), currency.to_owned(), amount));
    }

    /// A payout whose items GoCardless no longer lists (older than 6 months): 410.
    pub fn expire_payout(&self, payout: &str) {
        self.events
            .lock()
            .unwrap()
            .gone_payouts
            .push(payout.to_owned());
    }

    pub fn add_gocardless(&self, event: Value) {
        self.events.lock().unwrap().gocardless.push(event);
    }

    /// The next requests are answered with these, in order, before any page.
    pub fn refuse_next(&self, refusals: &[Refusal]) {
        self.events.lock().unwrap().refusals.extend(refusals);
    }

    pub fn requests(&self) -> Vec<String> {
        self.events.lock().unwrap().requests.clone()
    }

    /// Every answer takes `delay` from now on.
    pub fn slow_down(&self, delay: std::time::Duration) {
        self.events.lock().unwrap().delay = delay;
    }

    /// Stripe's create calls, in order.
    pub fn intent_requests(&self) -> Vec<IntentRequest> {
        self.events.lock().unwrap().intent_requests.clone()
    }

    /// The GoCardless payments created, in order.
    pub fn gocardless_payments(&self) -> Vec<Value> {
        let events = self.events.lock().unwrap();
        events.payments.iter().map(|(_, p)| p.clone()).collect()
    }

    /// Every idempotency key a create call carried, repeats included.
    pub fn payment_keys(&self) -> Vec<String> {
        self.events.lock().unwrap().payment_keys.clone()
    }

    /// Create calls answer `delay` after the payment is created (a process can die meanwhile).
    pub fn answer_late(&self, delay: std::time::Duration) {
        self.events.lock().unwrap().answer_delay = delay;
    }

    /// The most requests that were ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.events.lock().unwrap().max_in_flight
    }
}

impl Drop for ProviderApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Counts the requests in flight, and holds each answer for the configured delay.
async fn in_flight(
    State(events): State<Arc<Mutex<Events>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let delay = {
        let mut events = events.lock().unwrap();
        events.in_flight += 1;
        events.max_in_flight = events.max_in_flight.max(events.in_flight);
        events.delay
    };
    tokio::time::sleep(delay).await; // the stand-in's configured latency, not synchronisation
    let response = next.run(request).await;
    events.lock().unwrap().in_flight -= 1;
    response
}

/// The connected account a Stripe request is made for (`Stripe-Account`); `None`: the platform.
fn stripe_account(headers: &HeaderMap) -> Option<String> {
    headers
        .get("stripe-account")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn query_pairs(query: &Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Records the request; then a 401 for a wrong token, or the next scripted refusal, or the
/// query's pairs to serve the page with.
fn admit(
    events: &mut Events,
    path: &str,
    query: &Option<String>,
    headers: &HeaderMap,
    token: &str,
) -> Result<Vec<(String, String)>, Box<Response>> {
    events
        .requests
        .push(format!("{path}?{}", query.clone().unwrap_or_default()));
    let expected = format!("Bearer {token}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Err(Box::new(
            (StatusCode::UNAUTHORIZED, "bad token").into_response(),
        ));
    }
    match events.refusals.pop_front() {
        Some(Refusal::TooManyRequests(seconds)) => Err(Box::new(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", seconds.to_string())],
                "slow down",
            )
                .into_response(),
        )),
        Some(Refusal::ServerError) => Err(Box::new(
            (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        )),
        None => Ok(query_pairs(query)),
    }
}

async fn stripe_events(
    State(events): State<Arc<Mutex<Events>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut events = events.lock().unwrap();
    let pairs = match admit(&mut events, "/v1/events", &query, &headers, STRIPE_KEY) {
        Ok(pairs) => pairs,
        Err(refused) => return *refused,
    };
    let number = |name: &str| param(&pairs, name).map(|v| v.parse::<i64>().unwrap());
    let (gte, lte) = (number("created[gte]"), number("created[lte]"));
    let limit = number("limit").unwrap_or(10) as usize;
    let types: Vec<&str> = pairs
        .iter()
        .filter(|(key, _)| key == "types[]")
        .map(|(_, value)| value.as_str())
        .collect();
    let account = stripe_account(&headers);
    // Newest first, as Stripe lists them.
    let mut listed: Vec<&Value> = events
        .stripe
        .iter()
        .filter(|(owner, _)| *owner == account)
        .map(|(_, event)| event)
        .filter(|event| {
            let created = event["created"].as_i64().unwrap();
            gte.is_none_or(|t| created >= t)
                && lte.is_none_or(|t| created <= t)
                && (types.is_empty() || types.contains(&event["type"].as_str().unwrap()))
        })
        .collect();
    listed.sort_by_key(|event| std::cmp::Reverse(event["created"].as_i64().unwrap()));
    let start = match param(&pairs, "starting_after") {
        Some(after) => listed.iter().position(|e| e["id"] == after).unwrap() + 1,
        None => 0,
    };
    let page: Vec<&Value> = listed.iter().skip(start).take(limit).copied().collect();
    let has_more = start + page.len() < listed.len();
    axum::Json(json!({"object": "list", "url": "/v1/events", "has_more": has_more, "data": page}))
        .into_response()
}

async fn stripe_payment_intent(
    State(events): State<Arc<Mutex<Events>>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut events = events.lock().unwrap();
    let path = format!("/v1/payment_intents/{id}");
    if let Err(refused) = admit(&mut events, &path, &None, &headers, STRIPE_KEY) {
        return *refused;
    }
    let account = stripe_account(&headers);
    match events
        .intents
        .iter()
        .find(|(owner, intent)| *owner == account && intent["id"] == id.as_str())
    {
        Some((_, intent)) => axum::Json(intent.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"error": {"type": "invalid_request_error", "code": "resource_missing"}}),
            ),
        )
            .into_response(),
    }
}

async fn gocardless_events(
    State(events): State<Arc<Mutex<Events>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut events = events.lock().unwrap();
    let pairs = match admit(&mut events, "/events", &query, &headers, GOCARDLESS_TOKEN) {
        Ok(pairs) => pairs,
        Err(refused) => return *refused,
    };
    if headers.get("gocardless-version").is_none() {
        return (StatusCode::BAD_REQUEST, "GoCardless-Version is required").into_response();
    }
    let time =
        |name: &str| param(&pairs, name).map(|v| chrono::DateTime::parse_from_rfc3339(v).unwrap());
    let (gte, lte) = (time("created_at[gte]"), time("created_at[lte]"));
    let limit: usize = param(&pairs, "limit").map_or(50, |v| v.parse().unwrap());
    let mut listed: Vec<&Value> = events
        .gocardless
        .iter()
        .filter(|event| {
            let created =
                chrono::DateTime::parse_from_rfc3339(event["created_at"].as_str().unwrap())
                    .unwrap();
            gte.is_none_or(|t| created >= t) && lte.is_none_or(|t| created <= t)
        })
        .collect();
    listed.sort_by_key(|event| std::cmp::Reverse(event["created_at"].as_str().unwrap().to_owned()));
    let start = match param(&pairs, "after") {
        Some(after) => listed.iter().position(|e| e["id"] == after).unwrap() + 1,
        None => 0,
    };
    let page: Vec<&Value> = listed
        .iter()
        .skip(start)
        .take(limit.min(GOCARDLESS_PAGE))
        .copied()
        .collect();
    let after = (start + page.len() < listed.len()).then(|| page.last().unwrap()["id"].clone());
    axum::Json(json!({
        "events": page,
        "meta": {"cursors": {"before": null, "after": after}, "limit": limit}
    }))
    .into_response()
}

/// `GET /v1/balance_transactions?payout=…`: the payout's transactions in order, `source`
/// expanded only when `expand[]=data.source` asks (otherwise its id), paged by `starting_after`.
async fn stripe_balance_transactions(
    State(events): State<Arc<Mutex<Events>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut events = events.lock().unwrap();
    let path = "/v1/balance_transactions";
    let pairs = match admit(&mut events, path, &query, &headers, STRIPE_KEY) {
        Ok(pairs) => pairs,
        Err(refused) => return *refused,
    };
    let account = stripe_account(&headers);
    let payout = param(&pairs, "payout").unwrap_or_default().to_owned();
    let expanded = param(&pairs, "expand[]") == Some("data.source");
    let limit: usize = param(&pairs, "limit").map_or(10, |v| v.parse().unwrap());
    let listed: Vec<Value> = events
        .balance_transactions
        .iter()
        .filter(|(owner, of, _)| *owner == account && *of == payout)
        .map(|(_, _, transaction)| {
            let mut transaction = transaction.clone();
            if !expanded {
                transaction["source"] = transaction["source"]["id"].clone();
            }
            transaction
        })
        .collect();
    let start = match param(&pairs, "starting_after") {
        Some(after) => listed.iter().position(|t| t["id"] == after).unwrap() + 1,
        None => 0,
    };
    // Two a page at most, whatever the limit: the tests cross page boundaries.
    let page: Vec<&Value> = listed.iter().skip(start).take(limit.min(2)).collect();
    let has_more = start + page.len() < listed.len();
    axum::Json(json!({"object": "list", "url": path, "has_more": has_more, "data": page}))
        .into_response()
}

/// `GET /payout_items?payout=…`: the payout's items in order, paged by `after` (the position as
/// the cursor), or 410 for a payout older than 6 months.
async fn gocardless_payout_items(
    State(events): State<Arc<Mutex<Events>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut events = events.lock().unwrap();
    let pairs = match admit(
        &mut events,
        "/payout_items",
        &query,
        &headers,
        GOCARDLESS_TOKEN,
    ) {
        Ok(pairs) => pairs,
        Err(refused) => return *refused,
    };
    let payout = param(&pairs, "payout").unwrap_or_default().to_owned();
    if events.gone_payouts.contains(&payout) {
        let gone = json!({"error": {"code": 410, "type": "invalid_api_usage",
            "message": "Payout items are only available for payouts created in the last 6 months"}});
        return (StatusCode::GONE, axum::Json(gone)).into_response();
    }
    let listed: Vec<&Value> = events
        .payout_items
        .iter()
        .filter(|(of, _)| *of == payout)
        .map(|(_, item)| item)
        .collect();
    let start: usize = param(&pairs, "after").map_or(0, |v| v.parse().unwrap());
    let page: Vec<&Value> = listed.iter().skip(start).take(2).copied().collect();
    let end = start + page.len();
    let after = (end < listed.len()).then(|| end.to_string());
    axum::Json(json!({
        "payout_items": page,
        "meta": {"cursors": {"before": null, "after": after}, "limit": 2}
    }))
    .into_response()
}

/// `GET /v1/payouts?created[gte]=…`: the account's payouts, newest first, in one page.
async fn stripe_payouts(
    State(events): State<Arc<Mutex<Events>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut events = events.lock().unwrap();
    let pairs = match admit(&mut events, "/v1/payouts", &query, &headers, STRIPE_KEY) {
        Ok(pairs) => pairs,
        Err(refused) => return *refused,
    };
    let gte: i64 = param(&pairs, "created[gte]").map_or(0, |v| v.parse().unwrap());
    let account = stripe_account(&headers);
    let mut listed: Vec<&Value> = events
        .stripe_payouts
        .iter()
        .filter(|(owner, payout)| *owner == account && payout["created"].as_i64().unwrap() >= gte)
        .map(|(_, payout)| payout)
        .collect();
    listed.sort_by_key(|payout| std::cmp::Reverse(payout["created"].as_i64().unwrap()));
    axum::Json(json!({"object": "list", "url": "/v1/payouts", "has_more": false, "data": listed}))
        .into_response()
}

/// `GET /v1/balance`: the account's balance, as Stripe's Balance object documents it.
async fn stripe_balance(
    State(events): State<Arc<Mutex<Events>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut events = events.lock().unwrap();
    if let Err(refused) = admit(&mut events, "/v1/balance", &query, &headers, STRIPE_KEY) {
        return *refused;
    }
    let account = stripe_account(&headers);
    let held: Vec<&StripeBalance> = events
        .stripe_balances
        .iter()
        .filter(|held| held.account == account)
        .collect();
    let part = |pick: fn(&StripeBalance) -> i64| -> Vec<Value> {
        held.iter()
            .map(|row| {
                json!({"amount": pick(row), "currency": row.currency,
                       "source_types": {"card": pick(row)}})
            })
            .collect()
    };
    axum::Json(json!({
        "object": "balance",
        "available": part(|row| row.available),
        "pending": part(|row| row.pending),
        "connect_reserved": [],
        "livemode": false,
    }))
    .into_response()
}

/// `GET /creditors`: the organisation's one creditor.
async fn gocardless_creditors(
    State(events): State<Arc<Mutex<Events>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut events = events.lock().unwrap();
    if let Err(refused) = admit(
        &mut events,
        "/creditors",
        &query,
        &headers,
        GOCARDLESS_TOKEN,
    ) {
        return *refused;
    }
    axum::Json(json!({
        "creditors": [{"id": "CR000123", "name": "Business Ltd", "country_code": "GB",
                       "created_at": "2026-01-01T00:00:00.000Z", "creditor_type": "company",
                       "links": {}, "verification_status": "successful"}],
        "meta": {"cursors": {"before": null, "after": null}, "limit": 500}
    }))
    .into_response()
}

/// `GET /balances?creditor=…`: the creditor's balances, one per type and currency.
async fn gocardless_balances(
    State(events): State<Arc<Mutex<Events>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut events = events.lock().unwrap();
    let pairs = match admit(&mut events, "/balances", &query, &headers, GOCARDLESS_TOKEN) {
        Ok(pairs) => pairs,
        Err(refused) => return *refused,
    };
    assert_eq!(
        param(&pairs, "creditor"),
        Some("CR000123"),
        "a creditor is required"
    );
    let balances: Vec<Value> = events
        .gocardless_balances
        .iter()
        .map(|(kind, currency, amount)| {
            json!({"amount": amount, "balance_type": kind, "currency": currency,
                   "last_updated_at": "2026-12-07T00:00:00.000Z",
                   "links": {"creditor": "CR000123"}})
        })
        .collect();
    axum::Json(json!({
        "balances": balances,
        "meta": {"cursors": {"before": null, "after": null}, "limit": 500}
    }))
    .into_response()
}

/// `GET /payouts?created_at[gte]=…`: the organisation's payouts, in one page.
async fn gocardless_payouts(
    State(events): State<Arc<Mutex<Events>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut events = events.lock().unwrap();
    let pairs = match admit(&mut events, "/payouts", &query, &headers, GOCARDLESS_TOKEN) {
        Ok(pairs) => pairs,
        Err(refused) => return *refused,
    };
    let gte =
        param(&pairs, "created_at[gte]").map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap());
    let listed: Vec<&Value> = events
        .gocardless_payouts
        .iter()
        .filter(|payout| {
            let created =
                chrono::DateTime::parse_from_rfc3339(payout["created_at"].as_str().unwrap())
                    .unwrap();
            gte.is_none_or(|t| created >= t)
        })
        .collect();
    axum::Json(json!({
        "payouts": listed,
        "meta": {"cursors": {"before": null, "after": null}, "limit": 500}
    }))
    .into_response()
}

/// `GET /payouts/{id}`.
async fn gocardless_payout(
    State(events): State<Arc<Mutex<Events>>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut events = events.lock().unwrap();
    let path = format!("/payouts/{id}");
    if let Err(refused) = admit(&mut events, &path, &None, &headers, GOCARDLESS_TOKEN) {
        return *refused;
    }
    match events
        .gocardless_payouts
        .iter()
        .find(|payout| payout["id"] == id.as_str())
    {
        Some(payout) => axum::Json(json!({"payouts": payout})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"code": 404, "type": "invalid_api_usage",
                "message": "Resource not found"}})),
        )
            .into_response(),
    }
}

/// `POST /payments`: a payment against a mandate, in GoCardless's documented shapes (API version
/// 2015-07-06): 201 with the payment; a repeated `Idempotency-Key`, 409
/// `idempotent_creation_conflict` naming the payment the key created; 422 `validation_failed` for
/// a body that is not a payment.
async fn gocardless_create_payment(
    State(events): State<Arc<Mutex<Events>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (answer, delay) = {
        let mut events = events.lock().unwrap();
        let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
        events.payment_keys.push(key.unwrap_or_default().to_owned());
        if let Err(refused) = admit(&mut events, "/payments", &None, &headers, GOCARDLESS_TOKEN) {
            return *refused;
        }
        (
            create_payment(&mut events, &headers, &body),
            events.answer_delay,
        )
    };
    tokio::time::sleep(delay).await; // the configured latency of the answer, not synchronisation
    answer
}

fn create_payment(events: &mut Events, headers: &HeaderMap, body: &[u8]) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let error = |status: StatusCode, kind: &str, reason: &str, message: &str, links: Value| {
        let body = json!({"error": {"message": message, "type": kind, "code": status.as_u16(),
            "documentation_url": format!("https://developer.gocardless.com/api-reference#{reason}"),
            "request_id": "RQ_STANDIN",
            "errors": [{"reason": reason, "message": message, "links": links}]}});
        (status, axum::Json(body)).into_response()
    };
    if header("gocardless-version").as_deref() != Some("2015-07-06") {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_api_usage",
            "missing_version_header",
            "GoCardless-Version header is required",
            json!({}),
        );
    }
    let key = header("idempotency-key").unwrap_or_default();
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let payment = &request["payments"];
    let valid = payment["amount"].as_i64().is_some_and(|a| a > 0)
        && payment["currency"].as_str().is_some_and(|c| c.len() == 3)
        && payment["links"]["mandate"]
            .as_str()
            .is_some_and(|m| m.starts_with("MD"));
    if !valid {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "validation_failed",
            "Validation failed",
            json!({}),
        );
    }
    // GoCardless refuses a payment against a cancelled or expired mandate.
    if payment["links"]["mandate"] == INACTIVE_MANDATE {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_state",
            "mandate_is_inactive",
            "Mandate is inactive",
            json!({}),
        );
    }
    if let Some((_, existing)) = events
        .payments
        .iter()
        .find(|(k, _)| !key.is_empty() && *k == key)
    {
        return error(
            StatusCode::CONFLICT,
            "invalid_state",
            "idempotent_creation_conflict",
            "A resource has already been created with this idempotency key",
            json!({"conflicting_resource_id": existing["id"]}),
        );
    }
    let created = json!({
        "id": format!("PM{:012}", events.payments.len() + 1),
        "created_at": "2026-12-07T10:00:00.000Z",
        "charge_date": "2026-12-10",
        "amount": payment["amount"],
        "description": payment["description"],
        "currency": payment["currency"],
        "status": "pending_submission",
        "amount_refunded": 0,
        "reference": null,
        "metadata": payment["metadata"],
        "retry_if_possible": false,
        "fx": {"fx_currency": payment["currency"], "fx_amount": null, "exchange_rate": null,
            "estimated_exchange_rate": null},
        "links": {"mandate": payment["links"]["mandate"], "creditor": "CR000STANDIN"},
    });
    events.payments.push((key, created.clone()));
    (
        StatusCode::CREATED,
        axum::Json(json!({"payments": created})),
    )
        .into_response()
}

/// `POST /v1/payment_intents` with `confirm=true`: the PaymentIntent (Stripe's example object, as
/// `tests/fixtures/stripe-objects.json` has it) created and succeeded, for the platform or the
/// connected account `Stripe-Account` names.
async fn stripe_create_payment_intent(
    State(events): State<Arc<Mutex<Events>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut events = events.lock().unwrap();
    if let Err(refused) = admit(
        &mut events,
        "/v1/payment_intents",
        &None,
        &headers,
        STRIPE_KEY,
    ) {
        return *refused;
    }
    let form = query_pairs(&Some(body));
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let fixtures: Value =
        serde_json::from_str(include_str!("../../fixtures/stripe-objects.json")).unwrap();
    let mut intent = fixtures["payment_intent"].clone();
    intent["id"] = format!("pi_standin_{}", events.intent_requests.len() + 1).into();
    intent["status"] = "succeeded".into();
    for (field, name) in [("amount", "amount"), ("amount_received", "amount")] {
        intent[field] = param(&form, name)
            .and_then(|a| a.parse::<i64>().ok())
            .into();
    }
    for field in ["currency", "customer", "payment_method"] {
        intent[field] = param(&form, field).into();
    }
    let metadata: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((name.to_owned(), Value::from(v.as_str())))
        })
        .collect();
    intent["metadata"] = metadata.into();
    events.intent_requests.push(IntentRequest {
        account: stripe_account(&headers),
        idempotency_key: key,
        form,
    });
    axum::Json(intent).into_response()
}
