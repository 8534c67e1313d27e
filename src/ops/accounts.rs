//! `settle accounts …` and `settle connections …`: the businesses settle reconciles for, and how
//! each provider reaches them. Secrets, given in the environment or on standard input
//! (`secret_input`), are sealed before they are stored (`sealed`), and never printed back: `show`
//! says how many there are and under which key.

use anyhow::{Context, bail};
use secrecy::SecretString;
use serde::Serialize;
use sqlx::PgPool;

use super::shared::parse_provider;
use super::shared::{EXIT_NOTHING_MATCHED, EXIT_OK, Output, left, or_dash, print_table, right};
use crate::provider::Provider;
use crate::providers::rules::AccountIdShape;
use crate::repository::accounts::{self as store, Account, Connection, SealedField, seal_context};
use crate::sealed::Keyring;
use clap::Subcommand;

/// Account ids travel in API responses, headers and routing: a short, plain token.
fn check_account_id(id: &str) -> anyhow::Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if id.is_empty() || id.len() > 64 || !id.chars().all(plain) {
        bail!("account id `{id}`: 1 to 64 letters, digits, `_` or `-`");
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account.
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// Where the business's copies of failure and dispute mails go.
        #[arg(long)]
        business_email: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List the accounts (exit 3 when there is none).
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show an account and its connections (exit 3 when it does not exist).
    Show(Shown),
    /// Set the account's waits between automatic charge attempts, in days (`3,5,7`), or
    /// `default` for `charging.retry_days` (exit 3 when the account does not exist).
    Retries {
        id: String,
        #[arg(value_parser = parse_retry_days)]
        days: RetryDays,
    },
}

/// An account's retry waits: its own, or the configured ones.
#[derive(Debug, Clone)]
pub enum RetryDays {
    Own(Vec<u16>),
    Default,
}

/// The longest wait between two attempts: past it, a retry is no longer about this invoice.
const MAX_RETRY_WAIT_DAYS: u16 = 90;

fn parse_retry_days(text: &str) -> Result<RetryDays, String> {
    if text == "default" {
        return Ok(RetryDays::Default);
    }
    let days = text
        .split(',')
        .map(|day| {
            day.trim()
                .parse::<u16>()
                .ok()
                .filter(|d| (1..=MAX_RETRY_WAIT_DAYS).contains(d))
                .ok_or_else(|| format!("`{day}` is not a wait of 1 to {MAX_RETRY_WAIT_DAYS} days"))
        })
        .collect::<Result<Vec<u16>, String>>()?;
    if days.len() > crate::config::MAX_RETRY_WAITS {
        return Err(format!(
            "{} waits: at most {}",
            days.len(),
            crate::config::MAX_RETRY_WAITS
        ));
    }
    Ok(RetryDays::Own(days))
}

/// `show <id> [--output table|json]`.
#[derive(Debug, clap::Args)]
pub struct Shown {
    id: String,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Add a connection to an account; prints its id. Secrets are sealed before they are stored.
    ///
    /// Secrets never go on the command line (any user can read it in /proc, and shells keep it):
    /// SETTLE_CONNECTION_WEBHOOK_SECRETS, the webhook signing secrets of the connection's own
    /// endpoint (comma-separated, the newest first, several while rotating), and
    /// SETTLE_CONNECTION_API_KEY, the provider API key settle reads the provider's event list
    /// with; or standard input with --secrets-from-stdin. A connection may have neither.
    Add {
        #[arg(long)]
        account: String,
        /// stripe or gocardless.
        #[arg(long, value_parser = parse_provider)]
        provider: Provider,
        /// The provider's id for the account: Stripe `acct_…`, GoCardless `OR…`.
        #[arg(long)]
        external_id: String,
        #[arg(long, value_enum, default_value_t)]
        mode: Mode,
        /// Read the secrets from standard input instead of the environment: lines
        /// `webhook_secret=…` (repeat while rotating, the newest first) and `api_key=…`; blank
        /// lines and surrounding whitespace are ignored.
        #[arg(long)]
        secrets_from_stdin: bool,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List connections, of one account or all (exit 3 when there is none).
    List {
        #[arg(long)]
        account: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show a connection, without its secrets (exit 3 when it does not exist).
    Show(Shown),
    /// Rotate a connection's webhook secret: --new adds one beside the newest old one (both
    /// verify); --retire-old then keeps only the newest.
    ///
    /// The new secret is read from SETTLE_CONNECTION_WEBHOOK_SECRET, or with --secret-from-stdin
    /// from the first line of standard input: never from the command line.
    #[command(group(clap::ArgGroup::new("rotation").required(true).args(["new", "retire_old"])))]
    RotateSecret {
        id: String,
        /// Add the new secret.
        #[arg(long)]
        new: bool,
        /// Read the new secret from the first line of standard input.
        // `requires = "new"` would not do: a flag's default `false` counts as present for it.
        #[arg(long, conflicts_with = "retire_old")]
        secret_from_stdin: bool,
        #[arg(long)]
        retire_old: bool,
    },
    /// Seal every stored secret again under the first key of SETTLE_SECRET_KEYS (key rotation:
    /// afterwards the other keys can be removed).
    Reseal,
    /// Remove a connection. Destructive: needs --yes.
    Remove {
        id: String,
        #[arg(long, required = true)]
        yes: bool,
    },
}

/// Runs `settle accounts <command>`.
pub async fn run_accounts(command: AccountsCommand, db: &PgPool) -> anyhow::Result<u8> {
    match command {
        AccountsCommand::Create {
            id,
            name,
            business_email,
            output,
        } => create_account(db, &id, name.as_deref(), business_email.as_deref(), output).await,
        AccountsCommand::List { output } => list_accounts(db, output).await,
        AccountsCommand::Show(Shown { id, output }) => show_account(db, &id, output).await,
        AccountsCommand::Retries { id, days } => {
            let stored = match &days {
                RetryDays::Own(days) => Some(days.iter().map(|d| *d as i16).collect::<Vec<_>>()),
                RetryDays::Default => None,
            };
            if !store::set_charge_retry_days(db, &id, stored.as_deref()).await? {
                eprintln!("no account `{id}`");
                return Ok(EXIT_NOTHING_MATCHED);
            }
            match days {
                RetryDays::Own(days) => eprintln!("account `{id}` retries after {days:?} days"),
                RetryDays::Default => eprintln!("account `{id}` retries on charging.retry_days"),
            }
            Ok(EXIT_OK)
        }
    }
}

/// Runs `settle connections <command>`.
pub async fn run_connections(
    command: ConnectionsCommand,
    db: &PgPool,
    keyring: &Keyring,
) -> anyhow::Result<u8> {
    match command {
        ConnectionsCommand::Add {
            account,
            provider,
            external_id,
            mode,
            secrets_from_stdin,
            output,
        } => {
            let secrets = super::secret_input::connection_secrets(secrets_from_stdin)?;
            let new = NewConnection {
                account: &account,
                provider,
                external_id: &external_id,
                mode,
                webhook_secrets: &secrets.webhook_secrets,
                api_key: secrets.api_key.as_ref(),
            };
            add_connection(db, keyring, &new, output).await
        }
        ConnectionsCommand::List { account, output } => {
            list_connections(db, account.as_deref(), output).await
        }
        ConnectionsCommand::Show(Shown { id, output }) => show_connection(db, &id, output).await,
        ConnectionsCommand::RotateSecret {
            id,
            new,
            secret_from_stdin,
            retire_old: _,
        } => {
            let secret = new
                .then(|| super::secret_input::new_webhook_secret(secret_from_stdin))
                .transpose()?;
            let rotation = match &secret {
                Some(secret) => Rotation::Add(secret),
                None => Rotation::RetireOld,
            };
            rotate_secret(db, keyring, &id, rotation).await
        }
        ConnectionsCommand::Reseal => reseal(db, keyring).await,
        ConnectionsCommand::Remove { id, yes: _ } => remove_connection(db, &id).await,
    }
}

pub async fn create_account(
    db: &PgPool,
    id: &str,
    name: Option<&str>,
    business_email: Option<&str>,
    output: Output,
) -> anyhow::Result<u8> {
    check_account_id(id)?;
    if let Some(email) = business_email {
        crate::api::validate::email(email)
            .map_err(|error| anyhow::anyhow!("--business-email: {error}"))?;
    }
    if !store::create(db, id, name, business_email).await? {
        bail!("account `{id}` already exists");
    }
    let account = store::find(db, id)
        .await?
        .context("the account just created")?;
    print_accounts(&[account], output)?;
    Ok(EXIT_OK)
}

pub async fn list_accounts(db: &PgPool, output: Output) -> anyhow::Result<u8> {
    let accounts = store::list(db).await?;
    print_accounts(&accounts, output)?;
    Ok(super::shared::listed(&accounts))
}

pub async fn show_account(db: &PgPool, id: &str, output: Output) -> anyhow::Result<u8> {
    let Some(account) = store::find(db, id).await? else {
        eprintln!("no account `{id}`");
        return Ok(EXIT_NOTHING_MATCHED);
    };
    let connections: Vec<ConnectionView> = store::connections(db, Some(id))
        .await?
        .iter()
        .map(ConnectionView::of)
        .collect();
    match output {
        Output::Json => {
            let shown = serde_json::json!({ "account": account, "connections": connections });
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        Output::Table => {
            print_accounts(&[account], output)?;
            println!();
            print_connections(&connections, output)?;
        }
    }
    Ok(EXIT_OK)
}

fn print_accounts(accounts: &[Account], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(accounts)?),
        Output::Table => {
            let columns = [
                left("id"),
                left("name"),
                left("business email"),
                left("created at"),
            ];
            print_table(
                &columns,
                accounts.iter().map(|account| {
                    vec![
                        account.id.clone(),
                        or_dash(account.name.as_deref()),
                        or_dash(account.business_email.as_deref()),
                        account.created_at.to_rfc3339(),
                    ]
                }),
            );
        }
    }
    Ok(())
}

/// Live or test: which of the provider's two worlds a connection belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    #[default]
    Live,
    Test,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
        }
    }
}

/// What `connections add` is given.
pub struct NewConnection<'a> {
    pub account: &'a str,
    pub provider: Provider,
    pub external_id: &'a str,
    pub mode: Mode,
    pub webhook_secrets: &'a [SecretString],
    pub api_key: Option<&'a SecretString>,
}

/// The provider's id for an account, as each provider writes it.
fn check_external_id(provider: Provider, id: &str) -> anyhow::Result<()> {
    let AccountIdShape {
        prefix,
        described: what,
    } = crate::providers::rules(provider).account_id();
    if id.len() <= prefix.len() || !id.starts_with(prefix) || id.len() > 255 {
        bail!("--external-id `{id}` is not {what}");
    }
    Ok(())
}

pub async fn add_connection(
    db: &PgPool,
    keyring: &Keyring,
    new: &NewConnection<'_>,
    output: Output,
) -> anyhow::Result<u8> {
    check_external_id(new.provider, new.external_id)?;
    if store::find(db, new.account).await?.is_none() {
        bail!(
            "no account `{}`: create it first (settle accounts create {})",
            new.account,
            new.account
        );
    }
    let id = format!("conn_{}", uuid::Uuid::new_v4().simple());
    let webhook_secrets = new
        .webhook_secrets
        .iter()
        .map(|secret| keyring.seal(secret, &seal_context(&id, SealedField::WebhookSecret)))
        .collect::<Result<Vec<_>, _>>()?;
    let api_key = new
        .api_key
        .map(|key| keyring.seal(key, &seal_context(&id, SealedField::ApiKey)))
        .transpose()?;
    let connection = Connection {
        id: id.clone(),
        account_id: new.account.to_owned(),
        provider: new.provider.stored_name().to_owned(),
        mode: new.mode.as_str().to_owned(),
        external_id: new.external_id.to_owned(),
        webhook_secrets,
        api_key,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    };
    if !store::add_connection(db, &connection).await? {
        bail!(
            "{} {} ({}) already has a connection: see settle connections list",
            new.provider.display_name(),
            new.external_id,
            new.mode.as_str()
        );
    }
    match output {
        Output::Json => println!("{}", serde_json::json!({ "id": id })),
        Output::Table => println!("{id}"),
    }
    Ok(EXIT_OK)
}

/// A connection as operators see it (`connections list`, the console): never a secret, only how
/// many and under which key.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    pub id: String,
    pub account_id: String,
    pub provider: String,
    pub mode: String,
    pub external_id: String,
    pub webhook_secrets: usize,
    pub api_key: bool,
    /// The keys the secrets are sealed under (rotation: what still needs the old key).
    pub sealed_with: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl ConnectionView {
    pub fn of(connection: &Connection) -> Self {
        let mut sealed_with: Vec<String> = connection
            .webhook_secrets
            .iter()
            .chain(&connection.api_key)
            .filter_map(|sealed| crate::sealed::key_id_of(sealed).map(str::to_owned))
            .collect();
        sealed_with.sort();
        sealed_with.dedup();
        Self {
            id: connection.id.clone(),
            account_id: connection.account_id.clone(),
            provider: connection.provider.to_lowercase(),
            mode: connection.mode.clone(),
            external_id: connection.external_id.clone(),
            webhook_secrets: connection.webhook_secrets.len(),
            api_key: connection.api_key.is_some(),
            sealed_with,
            created_at: connection.created_at,
        }
    }
}

fn print_connections(connections: &[ConnectionView], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(connections)?),
        Output::Table => {
            let columns = [
                left("id"),
                left("account"),
                left("provider"),
                left("mode"),
                left("external id"),
                right("secrets"),
                left("api key"),
                left("sealed with"),
            ];
            print_table(
                &columns,
                connections.iter().map(|c| {
                    vec![
                        c.id.clone(),
                        c.account_id.clone(),
                        c.provider.to_string(),
                        c.mode.to_string(),
                        c.external_id.clone(),
                        c.webhook_secrets.to_string(),
                        (if c.api_key { "set" } else { "-" }).to_owned(),
                        c.sealed_with.join(","),
                    ]
                }),
            );
        }
    }
    Ok(())
}

pub async fn list_connections(
    db: &PgPool,
    account: Option<&str>,
    output: Output,
) -> anyhow::Result<u8> {
    let connections: Vec<ConnectionView> = store::connections(db, account)
        .await?
        .iter()
        .map(ConnectionView::of)
        .collect();
    print_connections(&connections, output)?;
    Ok(super::shared::listed(&connections))
}

pub async fn show_connection(db: &PgPool, id: &str, output: Output) -> anyhow::Result<u8> {
    let Some(connection) = store::connection(db, id).await? else {
        eprintln!("no connection `{id}`");
        return Ok(EXIT_NOTHING_MATCHED);
    };
    print_connections(&[ConnectionView::of(&connection)], output)?;
    Ok(EXIT_OK)
}

/// How `rotate-secret` changes a connection's webhook secrets.
pub enum Rotation<'a> {
    /// The new secret first, the newest old one kept beside it: both verify until it is retired.
    Add(&'a SecretString),
    /// Only the newest is kept.
    RetireOld,
}

pub async fn rotate_secret(
    db: &PgPool,
    keyring: &Keyring,
    id: &str,
    rotation: Rotation<'_>,
) -> anyhow::Result<u8> {
    let Some(connection) = store::connection(db, id).await? else {
        eprintln!("no connection `{id}`");
        return Ok(EXIT_NOTHING_MATCHED);
    };
    let mut secrets = connection.webhook_secrets;
    match rotation {
        Rotation::Add(secret) => {
            let sealed = keyring.seal(secret, &seal_context(id, SealedField::WebhookSecret))?;
            secrets.truncate(1);
            secrets.insert(0, sealed);
        }
        Rotation::RetireOld => secrets.truncate(1),
    }
    if !store::set_webhook_secrets(db, id, &secrets).await? {
        bail!("connection `{id}` was removed meanwhile");
    }
    println!("connection {id}: {} webhook secret(s)", secrets.len());
    Ok(EXIT_OK)
}

/// `settle connections reseal`: seals again, under the keyring's first key, every secret sealed
/// under another, so that key can leave `SETTLE_SECRET_KEYS`. Each connection in a transaction
/// of its own, its row locked: a rotation running at the same time is not undone.
pub async fn reseal(db: &PgPool, keyring: &Keyring) -> anyhow::Result<u8> {
    let sealing = keyring
        .sealing_key_id()
        .context("SETTLE_SECRET_KEYS lists no key")?;
    let mut resealed = 0;
    for listed in store::connections(db, None).await? {
        let mut tx = db.begin().await?;
        let Some(connection) = store::connection_for_update(&mut *tx, &listed.id).await? else {
            continue;
        };
        let id = &connection.id;
        let reseal = |sealed: &String, field| {
            keyring
                .reseal(sealed, &seal_context(id, field))
                .with_context(|| format!("connection `{id}`"))
        };
        let mut changed = 0;
        let mut secrets = Vec::with_capacity(connection.webhook_secrets.len());
        for sealed in &connection.webhook_secrets {
            let (value, again) = reseal(sealed, SealedField::WebhookSecret)?;
            changed += usize::from(again);
            secrets.push(value);
        }
        let api_key = match &connection.api_key {
            Some(sealed) => {
                let (value, again) = reseal(sealed, SealedField::ApiKey)?;
                changed += usize::from(again);
                Some(value)
            }
            None => None,
        };
        if changed > 0 {
            store::set_sealed(&mut *tx, id, &secrets, api_key.as_deref()).await?;
            tx.commit().await?;
            println!("connection {id}: {changed} secret(s) sealed again under `{sealing}`");
            resealed += changed;
        }
    }
    println!("{resealed} secret(s) sealed again; every secret is now sealed under `{sealing}`");
    Ok(EXIT_OK)
}

pub async fn remove_connection(db: &PgPool, id: &str) -> anyhow::Result<u8> {
    if !store::remove_connection(db, id).await? {
        eprintln!("no connection `{id}`");
        return Ok(EXIT_NOTHING_MATCHED);
    }
    println!("removed connection {id}");
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_as_each_provider_writes_them() {
        assert!(check_external_id(Provider::Stripe, "acct_1Nv0FGQ9RKHgCVdK").is_ok());
        assert!(check_external_id(Provider::Stripe, "OR123").is_err());
        assert!(check_external_id(Provider::GoCardless, "OR000123").is_ok());
        assert!(check_external_id(Provider::GoCardless, "acct_1").is_err());
        assert!(check_account_id("acc_default").is_ok());
        assert!(check_account_id("a b").is_err());
        assert!(check_account_id("").is_err());
    }
}
