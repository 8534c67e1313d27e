//! Accounts and provider connections, managed with the `settle` binary as an operator does:
//! secrets go in sealed and never come back out.

use serde_json::Value;

use crate::helpers::*;

/// Business B's Stripe test-mode connection.
const STRIPE_B: [&str; 8] = [
    "--account",
    "acc_b",
    "--provider",
    "stripe",
    "--external-id",
    "acct_1Nv0FGQ9RKHgCVdK",
    "--mode",
    "test",
];

async fn json(app: &TestApp, args: &[&str]) -> Value {
    json_with(app, args, &[]).await
}

/// `settle <args>` with `env` set too (a connection's secrets), its JSON output.
async fn json_with(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> Value {
    let (code, out, err) = settle_with(app, args, env).await;
    assert_eq!(code, 0, "settle {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The connections stored for business B: what a refused command must leave unchanged.
async fn connections_of_b(app: &TestApp) -> Vec<(String, Vec<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT id, webhook_secrets, api_key FROM provider_connections \
         WHERE account_id = 'acc_b' ORDER BY id",
    )
    .fetch_all(&app.db())
    .await
    .unwrap()
}

#[tokio::test]
async fn an_operator_creates_an_account_and_its_connections_whose_secrets_are_stored_sealed() {
    let app = spawn_app().await;
    let created = json(
        &app,
        &[
            "accounts",
            "create",
            "acc_b",
            "--name",
            "Business B",
            "--business-email",
            "finance@b.example",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(created[0]["id"], "acc_b");
    assert_eq!(created[0]["name"], "Business B");
    assert_eq!(created[0]["businessEmail"], "finance@b.example");
    let (code, _, err) = settle(
        &app,
        &["accounts", "create", "acc_c", "--business-email", "nobody"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("--business-email: `nobody` is not an email address"),
        "{err}"
    );
    let (code, _, err) = settle(&app, &["accounts", "create", "acc_b"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("account `acc_b` already exists"), "{err}");
    let (code, _, err) = settle(&app, &["accounts", "create", "not an id"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("1 to 64 letters"), "{err}");

    let added = json_with(
        &app,
        &[
            ["connections", "add"].as_slice(),
            &STRIPE_B,
            &["--output", "json"],
        ]
        .concat(),
        &[
            (CONNECTION_WEBHOOK_SECRETS, "whsec_connection_b"),
            (CONNECTION_API_KEY, "sk_test_b"),
        ],
    )
    .await;
    let id = added["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("conn_"), "{id}");
    // The same provider account and mode twice is refused; an unknown account, a wrong id too.
    for (args, message) in [
        (STRIPE_B.to_vec(), "already has a connection"),
        (
            vec![
                "--account",
                "acc_nobody",
                "--provider",
                "gocardless",
                "--external-id",
                "OR000123",
            ],
            "no account `acc_nobody`",
        ),
        (
            vec![
                "--account",
                "acc_b",
                "--provider",
                "gocardless",
                "--external-id",
                "acct_x",
            ],
            "is not a GoCardless organisation id",
        ),
    ] {
        let (code, _, err) =
            settle(&app, &[["connections", "add"].as_slice(), &args].concat()).await;
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains(message), "{args:?}: {err}");
    }

    // Stored sealed: neither secret appears in the row, and show never prints one.
    let (secrets, api_key): (Vec<String>, Option<String>) =
        sqlx::query_as("SELECT webhook_secrets, api_key FROM provider_connections WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.db())
            .await
            .unwrap();
    assert_eq!(secrets.len(), 1);
    assert!(secrets[0].starts_with("v1.local.") && !secrets[0].contains("whsec_connection_b"));
    assert!(
        api_key
            .as_deref()
            .is_some_and(|k| k.starts_with("v1.local.") && !k.contains("sk_test_b"))
    );
    let (code, shown, _) = settle(&app, &["connections", "show", &id]).await;
    assert_eq!(code, 0);
    assert!(
        !shown.contains("whsec_connection_b") && !shown.contains("sk_test_b"),
        "{shown}"
    );
    let shown = json(&app, &["accounts", "show", "acc_b", "--output", "json"]).await;
    let connection = &shown["connections"][0];
    assert_eq!(connection["externalId"], "acct_1Nv0FGQ9RKHgCVdK");
    assert_eq!(connection["mode"], "test");
    assert_eq!(connection["webhookSecrets"], 1);
    assert_eq!(connection["apiKey"], true);
    assert_eq!(connection["sealedWith"], serde_json::json!(["local"]));

    // Rotation: the new secret (from the environment, never the command line) beside the old,
    // then the old retired.
    let rotate_new = ["connections", "rotate-secret", &id, "--new"];
    let (code, _, err) = settle(&app, &rotate_new).await;
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "no webhook secret: set SETTLE_CONNECTION_WEBHOOK_SECRET or pass --secret-from-stdin"
        ),
        "{err}"
    );
    let (code, out, err) =
        settle_with(&app, &rotate_new, &[(NEW_WEBHOOK_SECRET, "whsec_b2")]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 webhook secret(s)"), "{out}");
    let (code, out, _) = settle(&app, &["connections", "rotate-secret", &id, "--retire-old"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("1 webhook secret(s)"), "{out}");
    let keyring = app.settings.keyring().unwrap();
    let (secrets,): (Vec<String>,) =
        sqlx::query_as("SELECT webhook_secrets FROM provider_connections WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.db())
            .await
            .unwrap();
    let context = format!("provider_connections/{id}/webhook_secret");
    let kept = keyring.open(&secrets[0], &context).unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&kept),
        "whsec_b2",
        "the newest is kept"
    );

    // Key rotation: with a new key first, `reseal` seals every secret again under it, after
    // which the new key alone opens them and the old one can go.
    let local = app.settings.secrets.keys.clone();
    let new_key = "new:HxYdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
    let rotating = format!("{new_key},{}", secrecy::ExposeSecret::expose_secret(&local));
    let env = [("SETTLE_SECRET_KEYS", rotating.as_str())];
    let (code, out, err) = settle_with(&app, &["connections", "reseal"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 secret(s) sealed again"), "{out}");
    let (_, out, _) = settle_with(&app, &["connections", "reseal"], &env).await;
    assert!(out.contains("0 secret(s) sealed again"), "{out}");
    let only_new = [("SETTLE_SECRET_KEYS", new_key)];
    let (code, shown, err) = settle_with(
        &app,
        &["connections", "show", &id, "--output", "json"],
        &only_new,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        shown[0]["sealedWith"],
        serde_json::json!(["new"]),
        "{shown}"
    );
    let (code, _, err) = settle_with(&app, &["connections", "reseal"], &only_new).await;
    assert_eq!(code, 0, "the new key alone opens everything: {err}");

    let (code, _, _) = settle(&app, &["connections", "remove", &id]).await;
    assert_eq!(code, 2, "remove needs --yes");
    let (code, _, _) = settle(&app, &["connections", "remove", &id, "--yes"]).await;
    assert_eq!(code, 0);
    let (code, _, _) = settle(&app, &["connections", "list", "--account", "acc_b"]).await;
    assert_eq!(code, 3, "none left");
    app.stop().await;
}

#[tokio::test]
async fn secrets_on_the_command_line_are_refused_by_clap_and_nothing_is_stored() {
    let app = spawn_app().await;
    let (code, _, err) = settle(&app, &["accounts", "create", "acc_b"]).await;
    assert_eq!(code, 0, "{err}");
    let add = add_args();
    for secret in [
        ["--webhook-secret", "whsec_in_argv"].as_slice(),
        &["--webhook-secret=whsec_in_argv"],
        &["--api-key", "sk_test_in_argv"],
    ] {
        let (code, _, err) = settle(&app, &[add.as_slice(), secret].concat()).await;
        assert_eq!(code, 2, "{secret:?}: {err}");
        assert!(err.contains("unexpected argument"), "{secret:?}: {err}");
    }
    assert!(connections_of_b(&app).await.is_empty());

    // `--new` takes no value any more: a secret after it is refused, the secrets stay as they were.
    let added = json_with(
        &app,
        &[add.as_slice(), &["--output", "json"]].concat(),
        &[(CONNECTION_WEBHOOK_SECRETS, "whsec_kept")],
    )
    .await;
    let id = added["id"].as_str().unwrap();
    let before = connections_of_b(&app).await;
    let (code, _, err) = settle(
        &app,
        &["connections", "rotate-secret", id, "--new", "whsec_in_argv"],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert_eq!(connections_of_b(&app).await, before);
    app.stop().await;
}

#[tokio::test]
async fn bad_secrets_input_is_refused_by_its_line_never_its_value_and_nothing_is_stored() {
    let app = spawn_app().await;
    let (code, _, err) = settle(&app, &["accounts", "create", "acc_b"]).await;
    assert_eq!(code, 0, "{err}");
    let from_stdin = [add_args().as_slice(), &["--secrets-from-stdin"]].concat();
    let leftover = [(CONNECTION_API_KEY, "sk_test_leftover")];
    let singular = [(NEW_WEBHOOK_SECRET, "whsec_leftover")];
    for (args, env, stdin, expected) in [
        (
            from_stdin.as_slice(),
            [].as_slice(),
            "webhook_secret=whsec_fine\n\n  whsec_pasted_bare  \napi_key=sk_test_fine\n",
            "standard input, line 3: not `webhook_secret=…` or `api_key=…`",
        ),
        (
            &from_stdin,
            &[],
            "api_key=sk_test_fine\napi_key=sk_test_pasted\n",
            "standard input, line 2: a second `api_key=`",
        ),
        (
            &from_stdin,
            &[],
            "\n\n",
            "standard input holds no `webhook_secret=…` or `api_key=…` line",
        ),
        // A secret left in the environment beside standard input: which one would be stored?
        (
            &from_stdin,
            &leftover,
            "webhook_secret=whsec_fine\n",
            "--secrets-from-stdin and SETTLE_CONNECTION_API_KEY both give secrets",
        ),
        // rotate-secret's variable given to add would be silently ignored.
        (
            &add_args(),
            &singular,
            "",
            "SETTLE_CONNECTION_WEBHOOK_SECRET is rotate-secret's; connections add reads \
             SETTLE_CONNECTION_WEBHOOK_SECRETS",
        ),
    ] {
        let (code, out, err) = settle_with_stdin(&app, args, env, stdin).await;
        assert_eq!(code, 1, "{stdin:?}: {err}");
        assert!(err.contains(expected), "{stdin:?}: {err}");
        for secret in ["whsec_", "sk_test_"] {
            assert!(!err.contains(secret) && !out.contains(secret), "{out}{err}");
        }
    }
    assert!(connections_of_b(&app).await.is_empty());
    app.stop().await;
}

/// `connections add` for business B, its secrets left to the environment.
fn add_args() -> Vec<&'static str> {
    [["connections", "add"].as_slice(), &STRIPE_B].concat()
}
