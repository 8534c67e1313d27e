//! `settle api-keys create|list|revoke`: the API keys of an account. `create` prints the
//! credential once, as `<key id>:<secret>` for Basic auth; only the secret's SHA-256 is stored
//! (`repository::api_keys`), so a lost secret is replaced by a new key, never recovered.

use anyhow::bail;
use sqlx::PgPool;

use super::shared::{EXIT_NOTHING_MATCHED, EXIT_OK, Output, left, or_dash, print_table};
use crate::repository::accounts;
use crate::repository::api_keys::{self as store, ApiKey};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a key for an account; prints `<key id>:<secret>` once (only a hash is stored).
    Create {
        #[arg(long)]
        account: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List an account's keys, without secrets (exit 3 when there is none).
    List {
        #[arg(long)]
        account: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke a key: requests with it get 401 from then on (exit 3 when it does not exist).
    Revoke { id: String },
}

/// Runs `settle api-keys <command>`.
pub async fn run(command: Command, db: &PgPool) -> anyhow::Result<u8> {
    match command {
        Command::Create { account, output } => create(db, &account, output).await,
        Command::List { account, output } => list(db, &account, output).await,
        Command::Revoke { id } => revoke(db, &id).await,
    }
}

pub async fn create(db: &PgPool, account: &str, output: Output) -> anyhow::Result<u8> {
    if accounts::find(db, account).await?.is_none() {
        bail!("no account `{account}`: create it first (settle accounts create {account})");
    }
    let id = store::new_key_id();
    let secret = super::shared::random_token()?;
    store::insert(db, &id, account, &store::secret_hash(&secret)).await?;
    match output {
        Output::Json => println!("{}", serde_json::json!({ "keyId": id, "secret": secret })),
        Output::Table => {
            println!("{id}:{secret}");
            eprintln!(
                "API key {id} of account {account}: the line above is its Basic credential, shown only now"
            );
        }
    }
    Ok(EXIT_OK)
}

pub async fn list(db: &PgPool, account: &str, output: Output) -> anyhow::Result<u8> {
    let keys = store::list(db, account).await?;
    print_keys(&keys, output)?;
    Ok(super::shared::listed(&keys))
}

fn print_keys(keys: &[ApiKey], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(keys)?),
        Output::Table => {
            let columns = [
                left("id"),
                left("account"),
                left("created at"),
                left("revoked at"),
            ];
            print_table(
                &columns,
                keys.iter().map(|key| {
                    vec![
                        key.id.clone(),
                        key.account_id.clone(),
                        key.created_at.to_rfc3339(),
                        or_dash(key.revoked_at.map(|at| at.to_rfc3339()).as_deref()),
                    ]
                }),
            );
        }
    }
    Ok(())
}

pub async fn revoke(db: &PgPool, id: &str) -> anyhow::Result<u8> {
    let Some(key) = store::revoke(db, id).await? else {
        eprintln!("no API key `{id}`");
        return Ok(EXIT_NOTHING_MATCHED);
    };
    let at = key.revoked_at.map(|at| at.to_rfc3339()).unwrap_or_default();
    println!("revoked API key {id} of account {} ({at})", key.account_id);
    Ok(EXIT_OK)
}
