//! 7. Backfill: what the webhooks missed, recovered from the providers' own event lists and put
//!    through the same pipeline. Each listed event the inbox does not hold is published to the
//!    webhooks exchange exactly as the receiver would have published it (message id
//!    `<provider>:<event id>`, the same headers, the event's exact JSON), marked `source:
//!    backfill`, with confirms. The worker's inbox is what makes this safe to repeat: an event
//!    queued twice (a webhook arriving meanwhile, a backfill run again) is applied once.
//!
//! A *source* is one account's event list at one provider: the default account's (the keys in
//! `[stripe]` / `[gocardless]`) or a connection's (its own API key; a Stripe connection without
//! one is read with the platform's key and `Stripe-Account`). A connection's events carry its id,
//! so the worker routes them to its account as if they had come to its endpoint.
//!
//! `settle backfill` runs it on demand; the worker's `sweeper` runs it every interval.

pub mod sweeper;
pub mod verify;

use secrecy::SecretString;
use sqlx::PgPool;

use crate::broker::Broker;
use crate::config::Settings;
use crate::envelope::QueuedEvent;
use crate::ingress::IncomingEvent;
use crate::provider::Provider;
use crate::provider_api::{self, ApiClient, ProviderApiError, Window};
use crate::repository::accounts::{self, Connection, SealedField, seal_context};
use crate::sealed::Keyring;

/// The value of the `source` header on backfilled events.
pub const SOURCE: &str = "backfill";
/// Events published per confirmed batch.
const PUBLISH_BATCH: usize = 100;

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
}

impl Source {
    /// The source's name in reports: `default` or the connection id.
    pub fn name(&self) -> &str {
        self.connection_id.as_deref().unwrap_or("default")
    }

    /// The Stripe credentials of a Stripe source.
    fn stripe(&self) -> Option<provider_api::stripe::Credentials<'_>> {
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
                provider_api::stripe::list_events(&self.client, &credentials, window, types).await
            }
            Credentials::GoCardless { access_token } => {
                provider_api::gocardless::list_events(&self.client, access_token, window).await
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
        use provider_api::gocardless::{self, PayoutItems};
        match &self.credentials {
            Credentials::Stripe { api_key, account } => {
                let credentials = stripe_credentials(api_key, account);
                let lines =
                    provider_api::stripe::payout_lines(&self.client, &credentials, id).await?;
                Ok(PayoutListing::Listed {
                    payout: None,
                    lines,
                })
            }
            Credentials::GoCardless { access_token } => {
                match gocardless::payout_items(&self.client, access_token, id).await? {
                    PayoutItems::Gone(why) => Ok(PayoutListing::Gone(why)),
                    PayoutItems::Listed(lines) => Ok(PayoutListing::Listed {
                        payout: Some(gocardless::payout(&self.client, access_token, id).await?),
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
                provider_api::stripe::list_payouts(&self.client, &credentials, since).await
            }
            Credentials::GoCardless { access_token } => {
                provider_api::gocardless::list_payouts(&self.client, access_token, since).await
            }
        }
    }
}

fn stripe_credentials<'a>(
    api_key: &'a SecretString,
    account: &'a Option<String>,
) -> provider_api::stripe::Credentials<'a> {
    provider_api::stripe::Credentials {
        api_key,
        account: account.as_deref(),
    }
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
    let base = match provider {
        Provider::Stripe => &settings.stripe.api_base,
        Provider::GoCardless => &settings.gocardless.api_base,
    };
    let client = ApiClient::new(provider.display_name(), base)?;
    let platform_key = match provider {
        Provider::Stripe => configured(&settings.stripe.api_key),
        Provider::GoCardless => configured(&settings.gocardless.access_token),
    };
    let default = || -> anyhow::Result<Source> {
        let key = platform_key.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "no {} API key is configured for the default account ({})",
                provider.display_name(),
                match provider {
                    Provider::Stripe => "STRIPE_API_KEY",
                    Provider::GoCardless => "GOCARDLESS_ACCESS_TOKEN",
                }
            )
        })?;
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
        let (key, account) = match (own, provider, &platform_key) {
            (Some(own), _, _) => (own, None),
            (None, Provider::Stripe, Some(platform)) => {
                (platform.clone(), Some(connection.external_id.clone()))
            }
            (None, _, _) => anyhow::bail!(
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

/// What one source's backfill did.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub source: String,
    /// Listed by the provider in the window.
    pub found: usize,
    /// Of those, already in the inbox.
    pub known: usize,
    /// Queued (or, in a dry run, that would be).
    pub queued: usize,
    /// Not queued: the broker refused them, or the listing failed (`error`).
    pub failed: usize,
    pub error: Option<String>,
}

/// Lists the source's events in the window and queues those the inbox does not hold.
pub async fn run(
    db: &PgPool,
    broker: Option<&Broker>,
    keyring: &crate::sealed::Keyring,
    source: &Source,
    window: Window,
    types: &[String],
) -> Report {
    let mut report = Report {
        source: source.name().to_owned(),
        ..Report::default()
    };
    let events = match source.list(window, types).await {
        Ok(events) => events,
        Err(error) => {
            report.error = Some(error.to_string());
            return report;
        }
    };
    report.found = events.len();
    let ids: Vec<String> = events.iter().map(|event| event.id.clone()).collect();
    let known = match crate::repository::inbox::known(db, source.provider, &ids).await {
        Ok(known) => known,
        Err(error) => {
            report.failed = events.len();
            report.error = Some(format!("reading the inbox: {error}"));
            return report;
        }
    };
    let missed: Vec<IncomingEvent> = events
        .into_iter()
        .filter(|event| !known.contains(&event.id))
        .collect();
    report.known = report.found - missed.len();
    let Some(broker) = broker else {
        // A dry run: what would be queued.
        report.queued = missed.len();
        return report;
    };
    let received_at = chrono::Utc::now();
    for batch in missed.chunks(PUBLISH_BATCH) {
        let messages: Result<Vec<_>, _> = batch
            .iter()
            .map(|event| {
                QueuedEvent::new(
                    source.provider,
                    event.id.clone(),
                    event.event_type.clone(),
                    received_at,
                    event.body.clone(),
                )
                .map(|queued| {
                    queued
                        .via_connection(source.connection_id.as_deref())
                        .from_source(SOURCE)
                        .to_webhook_message(broker.topology(), keyring)
                })
            })
            .collect();
        let published = match messages {
            Ok(messages) => broker
                .publish_all(&messages)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match published {
            Ok(()) => report.queued += batch.len(),
            Err(error) => {
                report.failed += batch.len();
                report.error = Some(error);
            }
        }
    }
    report
}
