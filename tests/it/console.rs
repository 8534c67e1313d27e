//! The operator console in a real browser (headless Chromium over WebDriver): an operator signs
//! in, finds an event by its PaymentIntent, reads its invoice's money beside the API's figures,
//! and replays a dead letter with a reason that the audit log keeps; a viewer cannot replay; a
//! POST from another origin or without the session's form token is refused; an operator scoped
//! to another account finds none of this one's invoices or events.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::browser::Browser;
use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);
const T0: i64 = 1_790_000_000;
const PASSWORD: &str = "correct horse battery staple";
const LAPTOP: u32 = 1280;
const PHONE: u32 = 390;

/// Creates an operator with `PASSWORD`, as an administrator does on the server.
async fn operator(app: &TestApp, name: &str, role: &str, accounts: Option<&str>) {
    let mut args = vec![
        "operators",
        "create",
        name,
        "--role",
        role,
        "--password-stdin",
    ];
    if let Some(accounts) = accounts {
        args.extend(["--accounts", accounts]);
    }
    let (code, _, err) = settle_with_stdin(app, &args, &[], &format!("{PASSWORD}\n")).await;
    assert_eq!(code, 0, "operators create {name}: {err}");
}

fn declined(event_id: &str, payment_intent: &str, invoice: &str) -> Vec<u8> {
    StripeEvent::new("payment_intent.payment_failed", event_id)
        .created(T0)
        .payment(payment_intent, 12_500, "gbp")
        .invoice_id(invoice)
        .object(declined_for_insufficient_funds)
        .to_bytes()
}

fn succeeded(event_id: &str, payment_intent: &str, invoice: &str, amount: i64) -> Vec<u8> {
    StripeEvent::new("payment_intent.succeeded", event_id)
        .created(T0 + 60)
        .payment(payment_intent, amount, "gbp")
        .invoice_id(invoice)
        .to_bytes()
}

/// Delivers an event for an invoice nobody registered: retried, then dead-lettered. Its id.
async fn dead_letter(app: &TestApp, event_id: &str, invoice: &str) -> i64 {
    app.deliver_stripe(&succeeded(
        event_id,
        &format!("pi_{event_id}"),
        invoice,
        8_000,
    ))
    .await;
    let db = app.db();
    poll_until("the dead letter", WAIT, || async {
        sqlx::query_scalar("SELECT id FROM dead_letters WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&db)
            .await
            .unwrap()
    })
    .await
}

/// Takes the subscriber's messages until one with `message_id` has come: how many came.
async fn copies_until_one(app: &TestApp, subscriber: &str, message_id: &str) -> usize {
    let mut copies = 0;
    while copies == 0 {
        copies = app
            .take_messages(subscriber, 1)
            .await
            .iter()
            .filter(|message| message.message_id.as_deref() == Some(message_id))
            .count();
    }
    copies
}

/// "GBP 125.00": how the console shows the API's minor units.
fn gbp(minor_units: &Value) -> String {
    let minor = minor_units.as_i64().unwrap();
    format!("GBP {}.{:02}", minor / 100, minor % 100)
}

async fn replays_and_audit_rows(app: &TestApp, letter: i64) -> (i32, i64) {
    let db = app.db();
    let replays = sqlx::query_scalar("SELECT replay_count FROM dead_letters WHERE id = $1")
        .bind(letter)
        .fetch_one(&db)
        .await
        .unwrap();
    let audited = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&db)
        .await
        .unwrap();
    (replays, audited)
}

#[tokio::test]
async fn an_operator_finds_a_failed_payment_reads_why_and_replays_a_dead_letter() {
    let app = spawn_worker(Retries::GIVE_UP_SOON).await;
    operator(&app, "olivia", "operator", None).await;
    app.create_customer("cust").await;
    app.create_invoice("inv_declined", "cust", None, "GBP", 12_500)
        .await;
    app.deliver_stripe(&declined("evt_declined", "pi_declined", "inv_declined"))
        .await;
    app.wait_processed("STRIPE", "evt_declined").await;
    let letter = dead_letter(&app, "evt_early", "inv_early").await;
    let subscriber = app.subscribe().await;

    let browser = Browser::open(&app, LAPTOP).await;
    browser.goto("/console/events").await;
    assert!(
        browser.path().await.starts_with("/console/login"),
        "sign in first"
    );
    browser.sign_in("olivia", PASSWORD).await;
    assert_eq!(
        browser.path().await,
        "/console/events",
        "back where it started"
    );

    // Find the event by its PaymentIntent, and read why the payment failed.
    browser.fill("input[name=q]", "pi_declined").await;
    browser.click("form.filters button").await;
    assert!(
        browser
            .page_text()
            .await
            .contains("payment_intent.payment_failed")
    );
    browser.screenshot("events-search").await;
    browser.follow("evt_declined").await;
    assert_eq!(browser.text("#outcome").await, "applied");
    assert!(
        browser
            .text("#payload")
            .await
            .contains("insufficient_funds")
    );
    browser.follow("inv_declined").await;

    // The invoice's figures are the API's, and its timeline says why the payment failed.
    let api = app.invoice("inv_declined").await;
    for (id, field) in [
        ("#amount-due", "amountDue"),
        ("#amount-paid", "amountPaid"),
        ("#amount-refunded", "amountRefunded"),
        ("#amount-in-dispute", "amountInDispute"),
        ("#amount-net", "amountNet"),
    ] {
        assert_eq!(browser.text(id).await, gbp(&api[field]), "{field}");
    }
    assert_eq!(
        browser.text("#status").await,
        api["status"].as_str().unwrap()
    );
    let timeline = browser.text("#timeline").await;
    let payment = &api["payments"][0];
    assert!(timeline.contains("PAYMENT_FAILED"), "{timeline}");
    for field in ["failureCode", "failureMessage"] {
        let said = payment[field].as_str().unwrap();
        assert!(timeline.contains(said), "{field} {said} in {timeline}");
    }
    browser.screenshot("invoice-timeline").await;

    // The billing system registers the invoice the early payment was for: replay its letter.
    app.create_invoice("inv_early", "cust", None, "GBP", 8_000)
        .await;
    browser.goto("/console/dead-letters").await;
    assert!(browser.text("#reasons").await.contains("invoice_not_found"));
    browser.follow(&format!("#{letter}")).await;
    browser.screenshot("dead-letter").await;
    browser
        .fill(
            "input[name=why]",
            "inv_early was registered late; it exists now",
        )
        .await;
    browser.click("form.action button").await;
    assert!(browser.text("#replays").await.starts_with('1'));
    poll_until("the replayed payment to pay its invoice", WAIT, || async {
        (app.invoice("inv_early").await["status"] == "PAID").then_some(())
    })
    .await;
    browser.goto("/console/invoices?q=inv_early").await;
    assert_eq!(browser.text("#status").await, "PAID");
    assert_eq!(browser.text("#amount-paid").await, "GBP 80.00");

    // A subscriber lost it: its newest reconciliation event goes out again, with the same id.
    let paid = "stripe:evt_early:invoice.paid";
    assert!(browser.text("#announcement").await.contains(paid));
    assert_eq!(copies_until_one(&app, &subscriber, paid).await, 1);
    browser
        .fill("input[name=why]", "the ledger service lost its queue")
        .await;
    browser.click("form.action button").await;
    assert_eq!(
        copies_until_one(&app, &subscriber, paid).await,
        1,
        "published once more, with the same id"
    );
    // The command does the same, with the same function.
    let (code, out, err) = settle(&app, &["outbox", "resend", paid]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(copies_until_one(&app, &subscriber, paid).await, 1);
    let (code, _, _) = settle(&app, &["outbox", "resend", "stripe:evt_none:invoice.paid"]).await;
    assert_eq!(code, 3, "no such event");

    browser.goto("/console/audit").await;
    let audit = browser.text("#audit").await;
    for said in [
        "olivia",
        "dead_letter.replay",
        "inv_early was registered late; it exists now",
        "replayed",
        "evt_early",
        "reconciliation_event.resend",
        "the ledger service lost its queue",
    ] {
        assert!(audit.contains(said), "{said} in {audit}");
    }
    assert_eq!(replays_and_audit_rows(&app, letter).await, (1, 2));
    browser.close().await;
}

#[tokio::test]
async fn a_viewer_cannot_replay_and_a_post_from_elsewhere_or_without_the_token_is_refused() {
    let app = spawn_worker(Retries::GIVE_UP_SOON).await;
    operator(&app, "vera", "viewer", None).await;
    operator(&app, "olivia", "operator", None).await;
    let letter = dead_letter(&app, "evt_orphan", "inv_missing").await;
    let replay_path = format!("/console/dead-letters/{letter}/replay");

    // A viewer sees the letter but no replay, and a replay posted anyway is refused.
    let viewer = Browser::open(&app, LAPTOP).await;
    viewer.sign_in("vera", PASSWORD).await;
    viewer
        .goto(&format!("/console/dead-letters/{letter}"))
        .await;
    assert!(viewer.text("h1").await.contains(&letter.to_string()));
    assert!(
        !viewer.has("form.action").await,
        "no replay form for a viewer"
    );
    post_from_page(&viewer, &replay_path, true).await;
    let refused = viewer.page_text().await;
    assert!(refused.contains("needs the operator role"), "{refused}");
    viewer.close().await;

    let operator = Browser::open(&app, LAPTOP).await;
    operator.sign_in("olivia", PASSWORD).await;
    // Without the session's form token, from the console's own page.
    post_from_page(&operator, &replay_path, false).await;
    let refused = operator.page_text().await;
    assert!(
        refused.contains("token is missing or not this session's"),
        "{refused}"
    );
    operator.goto("/console").await;
    // From a page of another origin (another port of the same host: the same site, so the
    // cookie goes along), with the right token even.
    let csrf = operator
        .client
        .find(fantoccini::Locator::Css("header input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let target = format!("http://{}{replay_path}", app.admin_addr.unwrap_or(app.addr));
    let elsewhere = other_origin_form(&target, &csrf).await;
    // The page posts its form as it loads: wait for the console's answer.
    operator.client.goto(&elsewhere).await.unwrap();
    poll_until("the forged form's answer", WAIT, || async {
        let answer = operator
            .client
            .find(fantoccini::Locator::Css("main h1"))
            .await
            .ok()?;
        (answer.text().await.ok()? == "Not allowed").then_some(())
    })
    .await;
    let refused = operator.page_text().await;
    assert!(
        refused.contains("not sent from the console's own pages"),
        "{refused}"
    );
    assert_eq!(
        replays_and_audit_rows(&app, letter).await,
        (0, 0),
        "nothing replayed, nothing audited"
    );
    operator.close().await;
}

/// Posts a replay form built in the current console page (same origin), with the page's form
/// token or without it.
async fn post_from_page(browser: &Browser, path: &str, with_token: bool) {
    let script = r#"
        const [path, withToken] = arguments;
        const form = document.createElement('form');
        form.method = 'post';
        form.action = path;
        const field = (name, value) => {
            const input = document.createElement('input');
            input.type = 'hidden'; input.name = name; input.value = value;
            form.appendChild(input);
        };
        field('why', 'trying anyway');
        if (withToken) field('csrf', document.querySelector('header input[name=csrf]').value);
        document.body.appendChild(form);
        form.submit();
    "#;
    let before = browser.client.current_url().await.unwrap();
    browser
        .client
        .execute(script, vec![path.into(), with_token.into()])
        .await
        .unwrap();
    poll_until("the form's answer", WAIT, || async {
        (browser.client.current_url().await.unwrap() != before && browser.has("main h1").await)
            .then_some(())
    })
    .await;
}

/// A page on another origin whose form posts to `target` by itself; its URL.
async fn other_origin_form(target: &str, csrf: &str) -> String {
    let page = format!(
        r#"<!doctype html><form id="f" method="post" action="{target}">
           <input type="hidden" name="csrf" value="{csrf}">
           <input type="hidden" name="why" value="forged"></form>
           <script>document.getElementById('f').submit()</script>"#
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(page) }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/")
}

#[tokio::test]
async fn an_operator_scoped_to_another_account_finds_none_of_this_ones_money() {
    let app = spawn_worker(Retries::GIVE_UP_SOON).await;
    let (code, _, err) = settle(&app, &["accounts", "create", "acc_b"]).await;
    assert_eq!(code, 0, "{err}");
    operator(&app, "bob", "operator", Some("acc_b")).await;
    operator(&app, "olga", "viewer", None).await;
    let account = app.settings.account.id.clone();
    app.create_customer("cust").await;
    app.create_invoice("inv_a", "cust", None, "GBP", 4_200)
        .await;
    app.deliver_stripe(&succeeded("evt_a", "pi_a", "inv_a", 4_200))
        .await;
    app.wait_invoice_status("inv_a", "PAID").await;
    // And a request with a forged signature, refused.
    let forged = app
        .post_stripe(
            &succeeded("evt_forged", "pi_a", "inv_a", 1),
            Some("t=1,v1=00".into()),
        )
        .await;
    assert_eq!(forged.status(), 400);
    let invoice_page = format!("/console/invoice?account={account}&id=inv_a");

    // Every account's operator sees it, at a phone's width too.
    let olga = Browser::open(&app, PHONE).await;
    olga.sign_in("olga", PASSWORD).await;
    olga.goto(&invoice_page).await;
    assert_eq!(olga.text("#amount-paid").await, "GBP 42.00");
    let overflow: Value = olga
        .client
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page fits a phone: {overflow}"
    );
    olga.screenshot("invoice-phone").await;
    // What the platform's Stripe endpoint received in the last hour.
    olga.goto("/console/accounts").await;
    let accounts = olga.page_text().await;
    assert!(accounts.contains("acc_b"), "{accounts}");
    assert!(accounts.contains("1 queued, 1 refused (50%)"), "{accounts}");
    olga.close().await;

    // An operator of account B finds neither the invoice nor its events.
    let bob = Browser::open(&app, LAPTOP).await;
    bob.sign_in("bob", PASSWORD).await;
    bob.goto(&invoice_page).await;
    assert_eq!(bob.text("h1").await, "Not found");
    assert!(bob.page_text().await.contains("no invoice inv_a"));
    bob.goto("/console/invoices?q=inv_a").await;
    assert!(
        bob.page_text()
            .await
            .contains("No invoice inv_a in your accounts")
    );
    for search in ["pi_a", "evt_a", "inv_a"] {
        bob.goto(&format!("/console/events?q={search}")).await;
        assert!(
            bob.page_text().await.contains("No event matches"),
            "{search}"
        );
    }
    bob.goto("/console/event?provider=stripe&id=evt_a").await;
    assert_eq!(bob.text("h1").await, "Not found");
    bob.goto("/console/dead-letters").await;
    assert!(
        bob.page_text()
            .await
            .contains("belongs to no single account")
    );
    bob.close().await;
}

#[tokio::test]
async fn an_operator_discards_an_unmatched_event_and_reads_a_customer_and_a_payout() {
    use crate::helpers::provider_api::ProviderApi;
    use crate::payouts::{
        charge, paid_by_stripe, reconciliation_completed, spawn_listing_app, stripe_transaction,
        wait_payout,
    };
    let api = ProviderApi::start().await;
    let app = spawn_listing_app(&api).await;
    operator(&app, "olivia", "operator", None).await;
    app.create_customer("cust").await;
    paid_by_stripe(&app, "inv_paid", "pi_paid", 1_000).await;
    // A payout of that payment and of one settle does not know.
    let mut own = crate::payouts::fixture_object("payout");
    own["id"] = "po_console".into();
    let listed = [
        stripe_transaction("charge", charge("ch_paid", "pi_paid"), 1_000, 44),
        stripe_transaction("charge", charge("ch_elsewhere", "pi_elsewhere"), 500, 27),
        stripe_transaction("payout", own, -1_429, 0),
    ];
    for (n, mut transaction) in listed.into_iter().enumerate() {
        transaction["id"] = format!("txn_console{n}").into();
        api.add_balance_transaction(None, "po_console", transaction);
    }
    app.deliver_stripe(&reconciliation_completed(
        "evt_po_console",
        "po_console",
        1_429,
    ))
    .await;
    wait_payout(&app, "po_console", "PARTIALLY_MATCHED").await;
    // A payment nobody registered, whose event names no invoice: it waits, unmatched.
    app.deliver_stripe(
        &StripeEvent::new("payment_intent.succeeded", "evt_stray")
            .created(T0)
            .payment("pi_stray", 700, "gbp")
            .to_bytes(),
    )
    .await;
    assert_eq!(app.wait_processed("STRIPE", "evt_stray").await, "unmatched");

    let browser = Browser::open(&app, LAPTOP).await;
    browser.sign_in("olivia", PASSWORD).await;
    browser.goto("/console/unmatched").await;
    assert!(browser.text("#unmatched").await.contains("pi_stray"));
    browser.follow("evt_stray").await;
    browser
        .fill("input[name=why]", "a test payment made in the dashboard")
        .await;
    browser.click("form.action button").await;
    assert_eq!(browser.text("#outcome").await, "discarded");
    let (code, out, _) = settle(&app, &["unmatched", "list"]).await;
    assert_eq!(code, 3, "none waits any more: {out}");

    // The customer: its invoice and where it leads.
    browser.goto("/console/invoices?q=inv_paid").await;
    browser.follow("cust").await;
    assert!(browser.text("#invoices").await.contains("INV-inv_paid"));

    // The payout: its lines, what matched, what did not, and the accountant's CSV, which is
    // `settle payouts show --output csv`'s.
    browser.goto("/console/payouts").await;
    browser.follow("po_console").await;
    assert_eq!(browser.text("#status").await, "PARTIALLY_MATCHED");
    let lines = browser.text("#lines").await;
    assert!(
        lines.contains("MATCHED") && lines.contains("UNMATCHED"),
        "{lines}"
    );
    assert!(
        lines.contains("inv_paid") && lines.contains("ch_elsewhere"),
        "{lines}"
    );
    let (code, expected, err) =
        settle(&app, &["payouts", "show", "po_console", "--output", "csv"]).await;
    assert_eq!(code, 0, "{err}");
    let account = app.settings.account.id.clone();
    let csv = app
        .http
        .get(app.url(&format!(
            "/console/payout?account={account}&id=po_console&format=csv"
        )))
        .header("cookie", browser_cookie(&browser).await)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv, expected);

    browser.goto("/console/audit").await;
    assert!(browser.text("#audit").await.contains("unmatched.discard"));
    browser.close().await;
}

/// The browser's session cookie, for a download a test reads itself.
async fn browser_cookie(browser: &Browser) -> String {
    let cookie = browser
        .client
        .get_named_cookie("settle_session")
        .await
        .unwrap();
    format!("settle_session={}", cookie.value())
}

#[tokio::test]
async fn sign_ins_are_slowed_after_a_few_tries_and_a_disabled_operator_is_signed_out() {
    let app = spawn_app().await;
    operator(&app, "olivia", "operator", None).await;
    operator(&app, "vera", "viewer", None).await;
    let base = format!("http://{}", app.admin_addr.unwrap_or(app.addr));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |name: &'static str, secret: &'static str, origin: Option<&str>| {
        let mut request = http.post(format!("{base}/console/login")).form(&[
            ("name", name),
            ("secret", secret),
            ("next", "/console"),
        ]);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    // Not from the console's own sign-in page: refused before any secret is checked.
    let response = sign_in("vera", PASSWORD, None).await.unwrap();
    assert_eq!(response.status(), 403);
    for _ in 0..5 {
        let response = sign_in("olivia", "a wrong guess", Some(&base))
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    // The sixth try within the minute is not even checked, right or wrong.
    let response = sign_in("olivia", PASSWORD, Some(&base)).await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("too many sign-in attempts")
    );

    // Another operator is not slowed by them; disabling it ends its session.
    let response = sign_in("vera", PASSWORD, Some(&base)).await.unwrap();
    assert_eq!(response.status(), 303);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_owned();
    let overview = || {
        http.get(format!("{base}/console"))
            .header("cookie", &session)
            .send()
    };
    assert_eq!(overview().await.unwrap().status(), 200);
    let (code, _, err) = settle(&app, &["operators", "disable", "vera"]).await;
    assert_eq!(code, 0, "{err}");
    let response = overview().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"].to_str().unwrap(),
        "/console/login?next=%2Fconsole"
    );
}

#[tokio::test]
async fn a_viewer_downloads_the_books_the_command_writes_and_reads_the_drift_and_the_audit() {
    use crate::books_export::{drift_now, export, reconciled_period};
    use crate::helpers::provider_api::ProviderApi;
    use chrono::{Duration, Utc};
    let api = ProviderApi::start().await;
    let app = crate::payouts::spawn_listing_app(&api).await;
    let today = Utc::now().date_naive();
    reconciled_period(&app, &api, today + Duration::days(1)).await;
    api.set_stripe_balance(None, "gbp", 0, 750);
    assert_eq!(drift_now(&app, &api).await.0, 5);
    let (code, _, err) = settle(&app, &["audit", "--since", "1h"]).await;
    assert_eq!(code, 0, "{err}");
    operator(&app, "fiona", "viewer", None).await;

    let browser = Browser::open(&app, LAPTOP).await;
    browser.sign_in("fiona", PASSWORD).await;
    browser.goto("/console/books").await;
    let drift = browser.text("#drift").await;
    assert!(
        drift.contains("stripe default GBP 7.50 GBP 0.00 GBP 7.50"),
        "{drift}"
    );
    assert!(browser.text("#audits").await.contains("6 invoices"));
    assert!(browser.text("#audits").await.contains("no difference"));

    // The download is the command's export, byte for byte.
    let (from, to) = (today - Duration::days(7), today + Duration::days(2));
    let (code, expected, err) = export(&app, from, to, "qbo-journal", &[], None).await;
    assert_eq!(code, 0, "{err}");
    let account = app.settings.account.id.clone();
    let response = app
        .http
        .get(app.url(&format!(
            "/console/books/export?account={account}&from={from}&to={to}&format=qbo-journal"
        )))
        .header("cookie", browser_cookie(&browser).await)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"settle-"),
        "{disposition}"
    );
    assert_eq!(response.text().await.unwrap(), expected);
    browser.close().await;
}
