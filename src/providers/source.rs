//! Where a provider's API is read from and with which key: a *source* is one account's API at one
//! provider, the default account's (the keys in `[stripe]` / `[gocardless]`) or a connection's
//! (its own API key; a Stripe connection without one is read with the platform's key and
//! `Stripe-Account`). Backfill lists a source's events, the payout lister its payouts' lines.

use secrecy::SecretString;
use sqlx::PgPool;

use super::charge::{ChargeAnswer, ChargeRequest};
use super::client::{ApiClient, ProviderApiError, Window};
use super::table::rules;
use super::{gocardless, stripe};
use crate::config::Settings;
use crate::provider::{IncomingEvent, Provider};
use crate::repository::accounts::{self, Connection, SealedField, seal_context};
use crate::sealed::Keyring;

/// One account's event list at one provider.
pub struct Source {
    pub provider: Provider,
    /// `None`: the default account's, from the configured keys.
    pub connection_id: Option<String>,
    /// The account the source's events are for.
    pub account_id: String,
    credentials: Credentials,
    client: ApiClient,
}

enum Credentials {
    Stripe {
        api_key: SecretString,
        account: Option<String>,
    },
    GoCardless {
        access_token: SecretString,
    },
}

/// Which sources a backfill reads.
#[derive(Debug, Clone)]
pub enum Which {
    /// The default account's (the configured keys).
    Default,
    /// One connection's.
    Connection(String),
    /// The default account's, when keys are configured, and every connection's of the provider
    /// that can be read (one without a key is left out, with a warning).
    All,
    /// The account's own: the configured keys' for the default account, else its connection's.
    Account(String),
}

impl Source {
    /// The client its requests go through.
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Creates a payment for an automatic charge (`providers::charge`).
    pub async fn charge(&self, request: &ChargeRequest<'_>) -> ChargeAnswer {
        match &self.credentials {
            Credentials::Stripe { api_key, account } => {
                stripe::charge::create(&self.client, &stripe_credentials(api_key, account), request)
                    .await
            }
            Credentials::GoCardless { access_token } => {
                gocardless::charge::create(&self.client, access_token, request).await
            }
        }
    }

    /// The source's name in reports: `default` or the connection id.
    pub fn name(&self) -> &str {
        self.connection_id.as_deref().unwrap_or("default")
    }

    /// The Stripe credentials of a Stripe source.
    pub fn stripe(&self) -> Option<stripe::api::Credentials<'_>> {
        match &self.credentials {
            Credentials::Stripe { api_key, account } => Some(stripe_credentials(api_key, account)),
            Credentials::GoCardless { .. } => None,
        }
    }

    /// Every event of the window (Stripe: of `types`, when given).
    pub async fn list(
        &self,
        window: Window,
        types: &[String],
    ) -> Result<Vec<IncomingEvent>, ProviderApiError> {
        match &self.credentials {
            Credentials::Stripe { api_key, account } => {
                let credentials = stripe_credentials(api_key, account);
                stripe::api::list_events(&self.client, &credentials, window, types).await
            }
            Credentials::GoCardless { access_token } => {
                gocardless::api::list_events(&self.client, access_token, window).await
            }
        }
    }
}

/// A payout's lines as its provider lists them.
#[derive(Debug)]
pub enum PayoutListing {
    Listed {
        /// The payout itself, when the provider's event did not carry it (GoCardless's).
        payout: Option<serde_json::Value>,
        lines: Vec<serde_json::Value>,
    },
    /// The provider no longer lists them (GoCardless, after 6 months), and what it said.
    Gone(String),
}

impl Source {
    /// The lines of the payout `id`: Stripe's balance transactions, GoCardless's payout items
    /// (and the payout, for its amount).
    pub async fn payout_lines(&self, id: &str) -> Result<PayoutListing, ProviderApiError> {
        use super::gocardless::api::PayoutItems;
        match &self.credentials {
            Credentials::Stripe { api_key, account } => {
                let credentials = stripe_credentials(api_key, account);
                let lines = stripe::api::payout_lines(&self.client, &credentials, id).await?;
                Ok(PayoutListing::Listed {
                    payout: None,
                    lines,
                })
            }
            Credentials::GoCardless { access_token } => {
                match gocardless::api::payout_items(&self.client, access_token, id).await? {
                    PayoutItems::Gone(why) => Ok(PayoutListing::Gone(why)),
                    PayoutItems::Listed(lines) => Ok(PayoutListing::Listed {
                        payout: Some(
                            gocardless::api::payout(&self.client, access_token, id).await?,
                        ),
                        lines,
                    }),
                }
            }
        }
    }

    /// Every payout created since `since`, as the provider lists them.
    pub async fn payouts(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<serde_json::Value>, ProviderApiError> {
        match &self.credentials {
            Credentials::Stripe { api_key, account } => {
                let credentials = stripe_credentials(api_key, account);
                stripe::api::list_payouts(&self.client, &credentials, since).await
            }
            Credentials::GoCardless { access_token } => {
                gocardless::api::list_payouts(&self.client, access_token, since).await
            }
        }
    }
}

impl Source {
    /// What the provider holds for the source's account and has not paid out, per currency (as
    /// the provider writes it) in minor units, net of its fees: Stripe's balance, GoCardless's
    /// creditors' balances. A currency may come more than once: the caller sums.
    pub async fn balance(&self) -> Result<Vec<(String, i64)>, ProviderApiError> {
        match &self.credentials {
            Credentials::Stripe { api_key, account } => {
                stripe::api::balance(&self.client, &stripe_credentials(api_key, account)).await
            }
            Credentials::GoCardless { access_token } => {
                gocardless::api::balances(&self.client, access_token).await
            }
        }
    }
}

fn stripe_credentials<'a>(
    api_key: &'a SecretString,
    account: &'a Option<String>,
) -> stripe::api::Credentials<'a> {
    stripe::api::Credentials {
        api_key,
        account: account.as_deref(),
    }
}

/// Why the platform's own source cannot be read: no key is configured.
pub fn no_platform_key(provider: Provider) -> String {
    format!(
        "no {} API key is configured for the platform ({})",
        provider.display_name(),
        rules(provider).api_key_variable()
    )
}

fn configured(secret: &SecretString) -> Option<SecretString> {
    use secrecy::ExposeSecret;
    (!secret.expose_secret().is_empty()).then(|| secret.clone())
}

/// The sources `which` names for `provider`. A connection that cannot be read (no key, a key
/// that does not open) is an error naming it.
pub async fn sources(
    db: &PgPool,
    settings: &Settings,
    keyring: &Keyring,
    provider: Provider,
    which: &Which,
) -> anyhow::Result<Vec<Source>> {
    let rules = rules(provider);
    let client = ApiClient::new(provider.display_name(), rules.api_base(settings))?;
    let platform_key = configured(rules.platform_api_key(settings));
    let default = || -> anyhow::Result<Source> {
        let key = platform_key
            .clone()
            .ok_or_else(|| anyhow::anyhow!("{}", no_platform_key(provider)))?;
        Ok(Source {
            provider,
            connection_id: None,
            account_id: settings.account.id.clone(),
            credentials: credentials(provider, key, None),
            client: client.clone(),
        })
    };
    let of = |connection: &Connection| -> anyhow::Result<Source> {
        let own = connection
            .api_key
            .as_deref()
            .map(|sealed| keyring.open(sealed, &seal_context(&connection.id, SealedField::ApiKey)))
            .transpose()?;
        // Stripe Connect: the platform's key reads a connected account's events with
        // `Stripe-Account`; an account's own key reads its own.
        let (key, account) = match (own, &platform_key) {
            (Some(own), _) => (own, None),
            (None, Some(platform)) if rules.platform_key_reads_connections() => {
                (platform.clone(), Some(connection.external_id.clone()))
            }
            (None, _) => anyhow::bail!(
                "connection `{}` has no API key (SETTLE_CONNECTION_API_KEY at settle connections add)",
                connection.id
            ),
        };
        Ok(Source {
            provider,
            connection_id: Some(connection.id.clone()),
            account_id: connection.account_id.clone(),
            credentials: credentials(provider, key, account),
            client: client.clone(),
        })
    };
    match which {
        Which::Default => Ok(vec![default()?]),
        Which::Connection(id) => {
            let connection = accounts::connection(db, id)
                .await?
                .filter(|connection| connection.provider == provider.stored_name())
                .ok_or_else(|| {
                    anyhow::anyhow!("no {} connection `{id}`", provider.display_name())
                })?;
            Ok(vec![of(&connection)?])
        }
        Which::Account(account_id) if *account_id == settings.account.id => Ok(vec![default()?]),
        Which::Account(account_id) => {
            let connection = accounts::connections(db, Some(account_id))
                .await?
                .into_iter()
                .find(|c| c.provider == provider.stored_name())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "account `{account_id}` has no {} connection",
                        provider.display_name()
                    )
                })?;
            Ok(vec![of(&connection)?])
        }
        Which::All => {
            let mut sources = Vec::new();
            if platform_key.is_some() {
                sources.push(default()?);
            }
            for connection in accounts::connections(db, None).await? {
                if connection.provider != provider.stored_name() {
                    continue;
                }
                match of(&connection) {
                    Ok(source) => sources.push(source),
                    Err(error) => tracing::warn!(
                        connection = %connection.id,
                        error = format!("{error:#}"),
                        "connection left out of the backfill"
                    ),
                }
            }
            Ok(sources)
        }
    }
}

fn credentials(provider: Provider, key: SecretString, account: Option<String>) -> Credentials {
    match provider {
        Provider::Stripe => Credentials::Stripe {
            api_key: key,
            account,
        },
        Provider::GoCardless => Credentials::GoCardless { access_token: key },
    }
}
