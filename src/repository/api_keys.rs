//! API keys of accounts: `settle api-keys …` creates, lists and revokes them; the API's `Caller`
//! looks one up by id. Only the SHA-256 of a key's secret is stored (`secret_hash`; the migration
//! says why a fast hash is the right one for 32 random bytes).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;

/// The prefix of every stored key's id (`key_<32 hex digits>`, `new_key_id`).
pub const ID_PREFIX: &str = "key_";

/// A fresh key id.
pub fn new_key_id() -> String {
    super::rows::new_id("key")
}

/// A key as operators see it: never its secret, nor its hash.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub account_id: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What authenticating with a key needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredKey {
    pub account_id: String,
    pub secret_hash: Vec<u8>,
    pub revoked: bool,
}

/// What is stored for a secret.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    id: &str,
    account_id: &str,
    secret_hash: &[u8; 32],
) -> sqlx::Result<ApiKey> {
    sqlx::query_as!(
        ApiKey,
        "INSERT INTO api_keys (id, account_id, secret_hash) VALUES ($1, $2, $3)
         RETURNING id, account_id, created_at, revoked_at",
        id,
        account_id,
        secret_hash.as_slice(),
    )
    .fetch_one(db)
    .await
}

/// The account's keys, oldest first, revoked ones included.
pub async fn list(db: impl PgExecutor<'_>, account_id: &str) -> sqlx::Result<Vec<ApiKey>> {
    sqlx::query_as!(
        ApiKey,
        "SELECT id, account_id, created_at, revoked_at FROM api_keys WHERE account_id = $1
         ORDER BY created_at, id",
        account_id,
    )
    .fetch_all(db)
    .await
}

/// Revokes the key (a revoked key stays revoked, at its first revocation's time). `None` when
/// there is no such key.
pub async fn revoke(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<Option<ApiKey>> {
    sqlx::query_as!(
        ApiKey,
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1
         RETURNING id, account_id, created_at, revoked_at",
        id,
    )
    .fetch_optional(db)
    .await
}

pub async fn find(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<Option<StoredKey>> {
    sqlx::query_as!(
        StoredKey,
        r#"SELECT account_id, secret_hash, revoked_at IS NOT NULL AS "revoked!" FROM api_keys
         WHERE id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_carry_the_prefix_the_api_looks_for() {
        assert!(new_key_id().starts_with(ID_PREFIX));
        assert_eq!(
            hex::encode(secret_hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "SHA-256"
        );
    }
}
