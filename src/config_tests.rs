//! The settings' tests: loading, conventional names, validation.

use super::*;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn local_overlay_and_conventional_variables_apply() {
    let settings = Settings::load(
        &config_dir(),
        "local",
        vars(&[
            ("SETTLE_HTTP_ADDR", "127.0.0.1:9999"),
            ("SETTLE_QUEUE_PREFIX", "custom"),
            ("STRIPE_WEBHOOK_SECRETS", "whsec_a, whsec_b"),
            ("SETTLE__WORKER__PREFETCH", "7"),
            ("SETTLE__WORKER__RETRY_DELAYS_MS", "5,50"),
        ]),
    )
    .unwrap();
    assert_eq!(settings.environment, "local");
    assert_eq!(settings.http.addr.port(), 9999);
    assert_eq!(settings.amqp.prefix, "custom");
    assert_eq!(settings.worker.prefetch, 7);
    assert_eq!(settings.worker.retry_delays_ms, vec![5, 50]);
    let stripe: Vec<&str> = settings
        .webhooks
        .stripe_secrets
        .iter()
        .map(|s| s.expose_secret())
        .collect();
    assert_eq!(stripe, ["whsec_a", "whsec_b"]);
    // From local.toml, untouched by the environment.
    assert_eq!(settings.webhooks.gocardless_secrets.len(), 1);
    assert_eq!(settings.telemetry.log_format, LogFormat::Pretty);
}

/// A production deployment's settings, each strong and unpublished.
const PRODUCTION: [(&str, &str); 6] = [
    (
        "STRIPE_WEBHOOK_SECRETS",
        "whsec_Qm9v3kXw8RZpL2nT7yFh4sJcD1aGbEuV",
    ),
    ("GOCARDLESS_WEBHOOK_SECRETS", "gc-7Hq2Lw9Zr4Tx8Nv3Kp6Yd1Sb"),
    (
        "SETTLE_API_CREDENTIALS",
        "billing:Zk3Pq8Wn2Rt7Vx4Ly9Hc6Md1,ops:Bf5Gj8Kq2Nw6Rz9Tc3Vx7Yp4",
    ),
    (
        "SETTLE_SECRET_KEYS",
        "k1:7Y0mJ8m0q4m2b0Q9l0pS3m6cW2bV8nY5a1dK4eF7gH0=",
    ),
    ("DATABASE_URL", "postgres://settle:pw@db.internal/settle"),
    ("AMQP_URL", "amqp://settle:pw@rabbit.internal/%2f"),
];

fn production_with(changes: &[(&str, &str)]) -> anyhow::Result<Settings> {
    let set = PRODUCTION
        .into_iter()
        .filter(|(name, _)| !changes.iter().any(|(changed, _)| changed == name))
        .chain(
            changes
                .iter()
                .copied()
                .filter(|(_, value)| !value.is_empty()),
        );
    Settings::load(&config_dir(), "production", vars(&set.collect::<Vec<_>>()))
}

#[test]
fn production_starts_with_every_setting_given_and_keeps_the_api_off_the_public_listener() {
    let settings = production_with(&[]).unwrap();
    assert!(settings.app.require_secrets);
    assert_eq!(settings.api.credentials.len(), 2);
    assert_eq!(settings.api.credentials[1].parts().0, "ops");
    assert_eq!(
        settings.http.admin_addr,
        Some("127.0.0.1:8081".parse().unwrap())
    );
}

#[test]
fn production_names_every_missing_setting_at_once() {
    let err = Settings::load(&config_dir(), "production", vars(&[])).unwrap_err();
    let message = format!("{err:#}");
    for (name, _) in PRODUCTION {
        assert!(message.contains(name), "{name}: {message}");
    }
    for (missing, _) in PRODUCTION {
        let err = production_with(&[(missing, "")]).unwrap_err();
        assert!(format!("{err:#}").contains(missing), "{missing}: {err:#}");
    }
}

#[test]
fn without_settle_env_a_process_runs_as_production() {
    assert_eq!(PRODUCTION_ENVIRONMENT, "production");
    // No overlay of its own: default.toml alone still refuses, as production does.
    let err = Settings::load(&config_dir(), "staging", vars(&[])).unwrap_err();
    assert!(format!("{err:#}").contains("DATABASE_URL"), "{err:#}");
}

#[test]
fn published_development_secrets_are_refused_outside_local_naming_the_setting_not_the_value() {
    let local = Settings::load(&config_dir(), "local", vars(&[])).unwrap();
    let published = [
        ("STRIPE_WEBHOOK_SECRETS", "whsec_local_development_secret"),
        (
            "GOCARDLESS_WEBHOOK_SECRETS",
            "gocardless_local_development_secret",
        ),
        ("SETTLE_API_CREDENTIALS", "settle-local:local-api-secret"),
        ("SETTLE_SECRET_KEYS", local.secrets.keys.expose_secret()),
        // Relabelled: the key's bytes are what is published.
        (
            "SETTLE_SECRET_KEYS",
            "prod:bG9jYWwtZGV2ZWxvcG1lbnQta2V5LW5vdC1zZWNyZXQ=",
        ),
    ];
    for (name, value) in published {
        for environment in ["production", "staging"] {
            let mut set: Vec<_> = PRODUCTION.into_iter().filter(|(n, _)| *n != name).collect();
            set.push((name, value));
            let err = Settings::load(&config_dir(), environment, vars(&set)).unwrap_err();
            let message = format!("{err:#}");
            assert!(message.contains(name), "{environment} {name}: {message}");
            assert!(
                message.contains("development") && !message.contains(value),
                "{environment} {name}: {message}"
            );
        }
    }
}

#[test]
fn provider_api_bases_are_https_outside_local() {
    let err = production_with(&[("STRIPE_API_BASE", "http://stripe.internal")]).unwrap_err();
    assert!(format!("{err:#}").contains("STRIPE_API_BASE"), "{err:#}");
    let err = production_with(&[("GOCARDLESS_API_BASE", "http://gc.internal")]).unwrap_err();
    assert!(
        format!("{err:#}").contains("GOCARDLESS_API_BASE"),
        "{err:#}"
    );
    let local = Settings::load(
        &config_dir(),
        "local",
        vars(&[("STRIPE_API_BASE", "http://127.0.0.1:9")]),
    );
    assert!(local.is_ok(), "a local stand-in may be plain http");
}

#[test]
fn weak_secrets_are_refused_outside_local() {
    for (name, weak) in [
        ("STRIPE_WEBHOOK_SECRETS", "whsec_short"),
        (
            "GOCARDLESS_WEBHOOK_SECRETS",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
        ("SETTLE_API_CREDENTIALS", "billing:s3cret"),
    ] {
        let err = production_with(&[(name, weak)]).unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains(name) && message.contains("too weak"),
            "{name}: {message}"
        );
        assert!(!message.contains(weak), "{message}");
    }
}

#[test]
fn an_outbox_poll_that_would_lose_the_relays_lease_is_refused() {
    let err = Settings::load(
        &config_dir(),
        "local",
        vars(&[("SETTLE__WORKER__OUTBOX_POLL_MS", "10000")]),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("worker.outbox_poll_ms is 10000, above 5000"),
        "{err:#}"
    );
    assert!(
        Settings::load(
            &config_dir(),
            "local",
            vars(&[("SETTLE__WORKER__OUTBOX_POLL_MS", "5000")])
        )
        .is_ok()
    );
}

#[test]
fn an_inbox_kept_shorter_than_the_providers_retry_for_is_refused() {
    let err = Settings::load(
        &config_dir(),
        "local",
        vars(&[("SETTLE__RETENTION__INBOX_DAYS", "3")]),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("retention.inbox_days is 3, below 7"),
        "{err:#}"
    );
    let kept = Settings::load(
        &config_dir(),
        "local",
        vars(&[("SETTLE__RETENTION__INBOX_DAYS", "7")]),
    )
    .unwrap();
    assert_eq!(kept.retention.inbox_days, 7);
}

#[test]
fn a_cluster_is_several_amqp_urls_and_a_bad_one_is_named_by_position_not_printed() {
    fn addresses(settings: &Settings) -> Vec<&str> {
        let addresses = settings.amqp.addresses().iter();
        addresses.map(|a| a.expose_secret()).collect()
    }
    let single = Settings::load(&config_dir(), "local", vars(&[])).unwrap();
    assert_eq!(addresses(&single), [single.amqp.url.expose_secret()]);

    let cluster = Settings::load(
        &config_dir(),
        "local",
        vars(&[(
            "AMQP_URLS",
            "amqp://u:p@rabbit-1:5672/%2f, amqp://u:p@rabbit-2:5672/%2f",
        )]),
    )
    .unwrap();
    assert_eq!(
        addresses(&cluster),
        [
            "amqp://u:p@rabbit-1:5672/%2f",
            "amqp://u:p@rabbit-2:5672/%2f"
        ]
    );

    let err = Settings::load(
        &config_dir(),
        "local",
        vars(&[(
            "AMQP_URLS",
            "amqp://u:p@rabbit-1/%2f,http://u:s3cret@rabbit-2/",
        )]),
    )
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("AMQP URL number 2 of 2"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
}

#[test]
fn database_urls_name_each_member_and_a_bad_one_stops_the_process_at_load() {
    let members = "postgres://u:p@pg-1:5432/settle, postgres://u:p@pg-2:5432/settle";
    let cluster =
        Settings::load(&config_dir(), "local", vars(&[("DATABASE_URLS", members)])).unwrap();
    let urls: Vec<&str> = cluster
        .database
        .addresses()
        .iter()
        .map(ExposeSecret::expose_secret)
        .collect();
    assert_eq!(
        urls,
        [
            "postgres://u:p@pg-1:5432/settle",
            "postgres://u:p@pg-2:5432/settle"
        ]
    );

    let bad = "postgres://u:p@pg-1/settle,postgres://u:s3cret@pg-2:port/settle";
    let err = Settings::load(&config_dir(), "local", vars(&[("DATABASE_URLS", bad)])).unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("database URL number 2 of 2"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");

    // Production takes either.
    let err = production_with(&[("DATABASE_URL", "")]).unwrap_err();
    assert!(
        format!("{err:#}").contains("DATABASE_URL or DATABASE_URLS"),
        "{err:#}"
    );
    production_with(&[("DATABASE_URL", ""), ("DATABASE_URLS", members)]).unwrap();
}

#[test]
fn a_bad_secret_key_list_stops_the_process_at_load() {
    let err = Settings::load(
        &config_dir(),
        "local",
        vars(&[("SETTLE_SECRET_KEYS", "k1:not-32-bytes")]),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("key `k1` is not the base64 of 32 bytes"),
        "{err:#}"
    );
    let local = Settings::load(&config_dir(), "local", vars(&[])).unwrap();
    assert_eq!(local.keyring().unwrap().sealing_key_id(), Some("local"));
}

#[test]
fn debug_output_never_shows_secrets() {
    let settings = Settings::load(
        &config_dir(),
        "local",
        vars(&[
            ("STRIPE_WEBHOOK_SECRETS", "whsec_very_secret_value"),
            ("DATABASE_URL", "postgres://u:hunter2@db/settle"),
            ("SETTLE_API_CREDENTIALS", "billing:api-secret-value"),
        ]),
    )
    .unwrap();
    let shown = format!("{settings:?}");
    assert!(!shown.contains("whsec_very_secret_value"));
    assert!(!shown.contains("hunter2"));
    assert!(!shown.contains("api-secret-value"));
}

#[test]
fn the_books_account_codes_keep_their_leading_zeros() {
    let settings = Settings::load(
        &config_dir(),
        "local",
        vars(&[
            ("SETTLE__BOOKS__ACCOUNTS__GOCARDLESS_BANK__CODE", "091"),
            ("SETTLE__BOOKS__DRIFT_INTERVAL_SECS", "60"),
        ]),
    )
    .unwrap();
    assert_eq!(
        settings.books.accounts["gocardless_bank"].code.as_deref(),
        Some("091")
    );
    assert_eq!(settings.books.drift_interval_secs, 60);
}
