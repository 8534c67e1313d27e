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
    let (code, out, err) = settle(app, args).await;
    assert_eq!(code, 0, "settle {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
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

    let added = json(
        &app,
        &[
            ["connections", "add"].as_slice(),
            &STRIPE_B,
            &[
                "--webhook-secret",
                "whsec_connection_b",
                "--api-key",
                "sk_test_b",
                "--output",
                "json",
            ],
        ]
        .concat(),
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

    // Rotation: the new secret beside the old, then the old retired.
    let (code, out, _) = settle(
        &app,
        &["connections", "rotate-secret", &id, "--new", "whsec_b2"],
    )
    .await;
    assert_eq!(code, 0);
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
