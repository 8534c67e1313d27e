//! `settle operators create|list|disable`: who may sign in to the console, with which role, for
//! which accounts. A secret is a password the operator chose (`--password-stdin`) or a login token
//! settle generates and prints once; either is kept as an Argon2id hash only (`hash_secret`), and
//! the console checks a sign-in with `verify_secret`.

use anyhow::{Context, bail};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use sqlx::PgPool;

use super::shared::{EXIT_NOTHING_MATCHED, EXIT_OK, Output, left, or_dash, print_table};
use crate::repository::{accounts, operators as store};
use clap::Subcommand;

/// What an operator may do in the console, each level including the one before.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    clap::ValueEnum,
    strum::EnumString,
    strum::IntoStaticStr
)]
#[strum(serialize_all = "lowercase")]
pub enum Access {
    /// Reads every page of its accounts.
    Viewer,
    /// Also replays, discards and resends.
    Operator,
    /// Also manages accounts and connections.
    Admin,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// An Argon2id hash (PHC string, the crate's defaults: 19 MiB, two passes) of a secret.
pub fn hash_secret(secret: &str) -> anyhow::Result<String> {
    Ok(Argon2::default()
        .hash_password(secret.as_bytes())
        .map_err(|error| anyhow::anyhow!("hashing the secret: {error}"))?
        .to_string())
}

/// Whether `secret` is the one `hash` was made from (false for a hash that does not parse).
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(secret.as_bytes(), hash)
        .is_ok()
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an operator. Prints a login token once, unless --password-stdin gives a password.
    Create {
        /// Lower case letters, digits and `._@-`, at most 64.
        name: String,
        #[arg(long, value_enum)]
        role: Access,
        /// Only these accounts (comma-separated); every account when left out.
        #[arg(long, value_delimiter = ',')]
        accounts: Vec<String>,
        /// Read a password (12 characters or more) from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List operators, without secrets (exit 3 when there is none).
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Disable an operator and end its sessions (exit 3 when there is none of that name).
    Disable { name: String },
}

/// Runs `settle operators <command>`.
pub async fn run(command: Command, db: &PgPool) -> anyhow::Result<u8> {
    match command {
        Command::Create {
            name,
            role,
            accounts,
            password_stdin,
        } => create(db, &name, role, &accounts, password_stdin).await,
        Command::List { output } => list(db, output).await,
        Command::Disable { name } => disable(db, &name).await,
    }
}

async fn create(
    db: &PgPool,
    name: &str,
    role: Access,
    scope: &[String],
    password_stdin: bool,
) -> anyhow::Result<u8> {
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._@-".contains(c));
    if !valid_name {
        bail!(
            "`{name}` is not an operator name: lower case letters, digits and `._@-`, at most 64"
        );
    }
    for account in scope {
        if accounts::find(db, account).await?.is_none() {
            bail!("no account `{account}`: create it first (settle accounts create {account})");
        }
    }
    let (secret, generated) = if password_stdin {
        (super::secret_input::operator_password()?, false)
    } else {
        (
            zeroize::Zeroizing::new(super::shared::random_token()?),
            true,
        )
    };
    let hash = hash_secret(&secret)?;
    let accounts = (!scope.is_empty()).then_some(scope);
    let created = store::create(db, name, role.as_str(), accounts, &hash)
        .await
        .context("storing the operator")?;
    if !created {
        bail!("an operator named `{name}` exists already");
    }
    if generated {
        println!("{}", secret.as_str());
        eprintln!("operator {name} created; the line above is its login token, shown only once");
    } else {
        eprintln!("operator {name} created");
    }
    Ok(EXIT_OK)
}

async fn list(db: &PgPool, output: Output) -> anyhow::Result<u8> {
    let operators = store::list(db).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&operators)?),
        Output::Table => print_table(
            &[
                left("name"),
                left("role"),
                left("accounts"),
                left("created at"),
                left("disabled at"),
            ],
            operators.iter().map(|operator| {
                vec![
                    operator.name.clone(),
                    operator.role.clone(),
                    operator
                        .accounts
                        .as_ref()
                        .map_or_else(|| "all".to_owned(), |accounts| accounts.join(",")),
                    operator.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    or_dash(
                        operator
                            .disabled_at
                            .map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string())
                            .as_deref(),
                    ),
                ]
            }),
        ),
    }
    Ok(super::shared::listed(&operators))
}

async fn disable(db: &PgPool, name: &str) -> anyhow::Result<u8> {
    if store::disable(db, name).await? {
        println!("operator {name} disabled; its sessions are ended");
        Ok(EXIT_OK)
    } else {
        eprintln!("no operator {name}");
        Ok(EXIT_NOTHING_MATCHED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_verifies_against_its_own_hash_only() {
        let hash = hash_secret("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_secret("correct horse battery", &hash));
        assert!(!verify_secret("correct horse batterz", &hash));
        assert!(!verify_secret("correct horse battery", "not a hash"));
    }

    #[test]
    fn roles_include_the_ones_below() {
        assert!(Access::Admin > Access::Operator && Access::Operator > Access::Viewer);
        assert_eq!("operator".parse::<Access>().unwrap(), Access::Operator);
    }
}
