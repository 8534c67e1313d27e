//! The `settle` binary run as an operator runs it, against a test app's database and prefix.

use super::{ApiKey, TestApp};

/// Where `settle connections add` reads a connection's webhook secrets (comma-separated) and API
/// key, and `rotate-secret --new` the new secret: never the command line.
pub const CONNECTION_WEBHOOK_SECRETS: &str = "SETTLE_CONNECTION_WEBHOOK_SECRETS";
pub const CONNECTION_API_KEY: &str = "SETTLE_CONNECTION_API_KEY";
pub const NEW_WEBHOOK_SECRET: &str = "SETTLE_CONNECTION_WEBHOOK_SECRET";

/// The environment a `settle` child process needs to work on this test's database and prefix.
pub fn settle_env(app: &TestApp) -> Vec<(&'static str, String)> {
    let delays = app
        .settings
        .worker
        .retry_delays_ms
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    vec![
        (
            "SETTLE_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config").to_owned(),
        ),
        ("SETTLE_ENV", "local".to_owned()),
        ("SETTLE_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("SETTLE_QUEUE_PREFIX", app.prefix.clone()),
        ("AMQP_URL", app.amqp_url.clone()),
        ("DATABASE_URL", app.database_url().to_owned()),
        ("SETTLE__WORKER__RETRY_DELAYS_MS", delays),
        ("SETTLE__TELEMETRY__LOG_FORMAT", "json".to_owned()),
    ]
}

/// Runs `settle <args>` to completion: (exit code, stdout, stderr).
pub async fn settle(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    settle_with(app, args, &[]).await
}

/// `settle <args>` with `extra` set in its environment too (another keyring, say).
pub async fn settle_with(
    app: &TestApp,
    args: &[&str],
    extra: &[(&str, &str)],
) -> (i32, String, String) {
    settle_with_stdin(app, args, extra, "").await
}

/// `settle <args>` with `extra` in its environment and `stdin` on its standard input (secrets).
pub async fn settle_with_stdin(
    app: &TestApp,
    args: &[&str],
    extra: &[(&str, &str)],
    stdin: &str,
) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_settle"))
        .args(args)
        .envs(settle_env(app))
        .envs(extra.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("settle runs");
    let mut input = child.stdin.take().expect("a piped stdin");
    // A command that exits without reading closes the pipe first: not the test's failure.
    let _ = input.write_all(stdin.as_bytes()).await;
    drop(input);
    let output = child.wait_with_output().await.expect("settle exits");
    (
        output.status.code().expect("exited"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Creates account `id` and an API key of it with the binary, as an operator does.
pub async fn account_with_key(app: &TestApp, id: &str) -> ApiKey {
    let (code, _, err) = settle(app, &["accounts", "create", id]).await;
    assert_eq!(code, 0, "accounts create {id}: {err}");
    api_key_of(app, id).await
}

/// A new API key of `account`, made with `settle api-keys create --output json`.
pub async fn api_key_of(app: &TestApp, account: &str) -> ApiKey {
    let (code, out, err) = settle(
        app,
        &[
            "api-keys",
            "create",
            "--account",
            account,
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 0, "api-keys create --account {account}: {err}");
    let created: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(created.as_object().map(|o| o.len()), Some(2), "{created}");
    ApiKey {
        id: created["keyId"].as_str().expect("a key id").to_owned(),
        secret: created["secret"].as_str().expect("a secret").to_owned(),
    }
}
