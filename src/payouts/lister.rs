//! The payout lister: every worker process runs one, and one lists at a time across them (a
//! lease, `lease`). Every `payouts.list_interval_secs` it lists the lines of each
//! payout waiting for it (`LISTING`), the longest-waiting first. A payout it cannot list now (its
//! provider down, no key for its account) keeps waiting, with the reason shown on it
//! (`status_reason`) and counted (`settle_payout_listing_failures_total`), and is tried again
//! next interval, after the others.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::listing::{Listed, list, match_again};
use crate::config::Settings;
use crate::lease::{self, Lease};
use crate::provider::Provider;
use crate::providers::source::{Source, Which, no_platform_key, sources};
use crate::repository::payouts::{self, PayoutRow};
use crate::sealed::Keyring;
use crate::telemetry as metric;

/// Payouts listed per round; the rest wait for the next.
const ROUND: i64 = 100;

#[derive(Clone)]
pub struct Lister {
    pub db: PgPool,
    pub settings: Settings,
    pub keyring: Keyring,
    pub shutdown: CancellationToken,
}

impl Lister {
    pub async fn run(self) {
        let every = self.settings.payouts.list_interval_secs;
        let interval = Duration::from_secs(every);
        while crate::supervise::wait_interval(interval, &self.shutdown).await {
            if let Err(error) = self.round().await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "payouts not listed; will retry at the next interval"
                );
            }
        }
    }

    /// Matches again what the ledger has learned more of, then lists what is waiting, if no
    /// other process is listing.
    async fn round(&self) -> anyhow::Result<()> {
        match_again(&self.db, ROUND).await?;
        let waiting = payouts::to_list(&self.db, ROUND).await?;
        if waiting.is_empty() {
            return Ok(());
        }
        // No expiry: a round waits on the providers' APIs, away from its session, for long.
        let mut lease = Lease::new(lease::PAYOUT_LISTING, None);
        if !lease.hold(&self.db).await {
            return Ok(());
        }
        // Each provider's sources once a round, read when a payout needs them.
        let mut by_provider: HashMap<Provider, Vec<Source>> = HashMap::new();
        for payout in &waiting {
            if self.shutdown.is_cancelled() {
                break;
            }
            let provider = payout.provider;
            let sources = match by_provider.entry(provider) {
                Entry::Occupied(read) => read.into_mut(),
                Entry::Vacant(unread) => unread.insert(self.sources(provider).await),
            };
            let source = sources.iter().find(|source| {
                source.account_id == payout.account_id
                    && source.connection_id == payout.connection_id
            });
            self.list_one(source, payout).await?;
        }
        lease.release().await;
        Ok(())
    }

    /// Every source of `provider`; none when they cannot be read (the lister says why on each
    /// payout that needed one).
    async fn sources(&self, provider: Provider) -> Vec<Source> {
        sources(&self.db, &self.settings, &self.keyring, provider, &Which::All)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%provider, error = format!("{error:#}"), "no source to list payouts with");
                Vec::new()
            })
    }

    async fn list_one(&self, source: Option<&Source>, payout: &PayoutRow) -> anyhow::Result<()> {
        let provider = payout.provider;
        let id = &payout.provider_payout_id;
        let outcome = match source {
            Some(source) => list(&self.db, source, payout, false)
                .await
                .map_err(|error| format!("{error:#}")),
            None => Err(match &payout.connection_id {
                Some(connection) => format!(
                    "connection `{connection}` cannot be read: it has no API key (SETTLE_CONNECTION_API_KEY at settle connections add), or is gone"
                ),
                None => no_platform_key(provider),
            }),
        };
        match outcome {
            Ok(listed) => {
                metrics::counter!(metric::PAYOUTS_LISTED, "provider" => provider.wire_name(), "outcome" => listed.as_str())
                    .increment(1);
                tracing::info!(%provider, payout = %id, outcome = listed.as_str(), "payout listed");
                if let Listed::Stored(crate::reconcile::payout::PayoutStatus::PartiallyMatched) =
                    listed
                {
                    tracing::warn!(%provider, payout = %id, "a payout's lines are not all explained: settle payouts show");
                }
            }
            Err(reason) => {
                metrics::counter!(metric::PAYOUT_LISTING_FAILURES, "provider" => provider.wire_name())
                    .increment(1);
                tracing::warn!(%provider, payout = %id, error = %reason, "payout not listed; it is tried again next interval");
                payouts::still_listing(&self.db, &payout.key(), &reason).await?;
            }
        }
        Ok(())
    }
}
