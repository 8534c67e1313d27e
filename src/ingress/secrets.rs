//! The webhook secrets of per-connection endpoints (`/webhooks/{provider}/{connection}`), held in
//! memory. A request reads only this cache, never the database: intake keeps its one dependency,
//! the broker. A background task (`Refresher`) reloads every connection's secrets from
//! PostgreSQL, opens them with the keyring, and swaps the whole map in; when the database is out
//! of reach it keeps the last map it loaded, so a connection that verified before an outage goes
//! on verifying through it. A connection added (or a secret rotated) is seen by the next refresh.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::provider::Provider;
use crate::repository::accounts::{self, SealedField, seal_context};
use crate::sealed::Keyring;

/// One connection's provider and the secrets that may sign for it, newest first.
#[derive(Clone)]
pub struct ConnectionSecrets {
    pub provider: Provider,
    pub secrets: Arc<[SecretString]>,
}

/// Connection id → its secrets. Cheap to clone: one map shared by every request.
#[derive(Clone, Default)]
pub struct SecretsCache {
    connections: Arc<RwLock<Arc<HashMap<String, ConnectionSecrets>>>>,
}

impl SecretsCache {
    pub fn get(&self, connection: &str) -> Option<ConnectionSecrets> {
        self.snapshot().get(connection).cloned()
    }

    fn snapshot(&self) -> Arc<HashMap<String, ConnectionSecrets>> {
        match self.connections.read() {
            Ok(map) => map.clone(),
            // A writer panicked mid-swap: the map it left is still a whole one.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, map: HashMap<String, ConnectionSecrets>) {
        let map = Arc::new(map);
        match self.connections.write() {
            Ok(mut current) => *current = map,
            Err(poisoned) => *poisoned.into_inner() = map,
        }
    }
}

/// Reloads the cache from the database every `interval`.
#[derive(Clone)]
pub struct Refresher {
    pub db: PgPool,
    pub keyring: Keyring,
    pub cache: SecretsCache,
    pub interval: Duration,
    pub shutdown: CancellationToken,
}

impl Refresher {
    pub async fn run(self) {
        loop {
            match self.refresh().await {
                Ok(loaded) => {
                    metrics::gauge!(crate::telemetry::CONNECTION_SECRETS_LOADED).set(loaded as f64)
                }
                Err(error) => {
                    metrics::counter!(crate::telemetry::CONNECTION_SECRETS_REFRESH_FAILURES)
                        .increment(1);
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "connection secrets not refreshed; verifying with the last ones loaded"
                    );
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// One reload; the number of connections loaded. A secret that does not open (sealed with a
    /// key no longer listed) is left out with an error logged: its connection's other secrets
    /// still verify.
    pub async fn refresh(&self) -> anyhow::Result<usize> {
        let rows = accounts::webhook_secrets(&self.db).await?;
        let mut map = HashMap::with_capacity(rows.len());
        for (id, provider, sealed) in rows {
            let Ok(provider) = provider.parse::<Provider>() else {
                continue;
            };
            let context = seal_context(&id, SealedField::WebhookSecret);
            let secrets: Vec<SecretString> = sealed
                .iter()
                .filter_map(|sealed| match self.keyring.open(sealed, &context) {
                    Ok(secret) => Some(secret),
                    Err(error) => {
                        tracing::error!(connection = %id, %error, "a webhook secret does not open with SETTLE_SECRET_KEYS; left out");
                        None
                    }
                })
                .collect();
            map.insert(
                id,
                ConnectionSecrets {
                    provider,
                    secrets: secrets.into(),
                },
            );
        }
        let loaded = map.len();
        self.cache.replace(map);
        Ok(loaded)
    }
}
