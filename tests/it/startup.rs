//! What the binary refuses at start: production (also what runs without `SETTLE_ENV`) without
//! its settings, or on a secret this repository publishes.

use crate::helpers::*;

/// `settle serve` run with exactly `vars` (and PATH): exit code (2: a configuration error) and
/// stderr.
async fn serve_with_only(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_settle"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "SETTLE_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .envs(vars.iter().copied())
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(20), output)
        .await
        .expect("settle exits at once")
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Strong, unpublished values for every setting production needs.
fn production_settings() -> Vec<(&'static str, String)> {
    vec![
        (
            "STRIPE_WEBHOOK_SECRETS",
            "whsec_Qm9v3kXw8RZpL2nT7yFh4sJcD1aGbEuV".into(),
        ),
        (
            "GOCARDLESS_WEBHOOK_SECRETS",
            "gc-7Hq2Lw9Zr4Tx8Nv3Kp6Yd1Sb".into(),
        ),
        (
            "SETTLE_API_CREDENTIALS",
            "billing:Zk3Pq8Wn2Rt7Vx4Ly9Hc6Md1".into(),
        ),
        (
            "SETTLE_SECRET_KEYS",
            "k1:7Y0mJ8m0q4m2b0Q9l0pS3m6cW2bV8nY5a1dK4eF7gH0=".into(),
        ),
        ("DATABASE_URL", database_url()),
        ("AMQP_URL", amqp_url()),
        ("SETTLE_HTTP_ADDR", "127.0.0.1:0".into()),
        ("SETTLE_ADMIN_ADDR", "127.0.0.1:0".into()),
    ]
}

#[tokio::test]
async fn without_settle_env_settle_runs_as_production_and_names_every_missing_setting() {
    let (code, stderr) = serve_with_only(&[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    for setting in [
        "STRIPE_WEBHOOK_SECRETS",
        "GOCARDLESS_WEBHOOK_SECRETS",
        "SETTLE_API_CREDENTIALS",
        "SETTLE_SECRET_KEYS",
        "DATABASE_URL",
        "AMQP_URL",
    ] {
        assert!(stderr.contains(setting), "{setting}: {stderr}");
    }
    assert!(stderr.contains("`production`"), "{stderr}");
}

#[tokio::test]
async fn a_published_development_secret_is_refused_outside_local_whatever_the_environment_says() {
    for (name, published) in [
        ("STRIPE_WEBHOOK_SECRETS", "whsec_local_development_secret"),
        (
            "GOCARDLESS_WEBHOOK_SECRETS",
            "gocardless_local_development_secret",
        ),
        ("SETTLE_API_CREDENTIALS", "settle-local:local-api-secret"),
        (
            "SETTLE_SECRET_KEYS",
            "local:bG9jYWwtZGV2ZWxvcG1lbnQta2V5LW5vdC1zZWNyZXQ=",
        ),
    ] {
        for environment in [None, Some("production"), Some("staging")] {
            let mut vars = production_settings();
            vars.retain(|(n, _)| *n != name);
            vars.push((name, published.to_owned()));
            if let Some(environment) = environment {
                vars.push(("SETTLE_ENV", environment.to_owned()));
            }
            let vars: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let (code, stderr) = serve_with_only(&vars).await;
            assert_eq!(code, Some(2), "{name} in {environment:?}: {stderr}");
            assert!(
                stderr.contains(name) && stderr.contains("development"),
                "{name} in {environment:?}: {stderr}"
            );
            assert!(!stderr.contains(published), "{stderr}");
        }
    }
}
