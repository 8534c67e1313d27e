//! The drift check: does each provider hold what settle's books say it holds? Every
//! `books.drift_interval_secs`, one worker process at a time (a lease) reads each source's
//! balance (Stripe's `GET /v1/balance`, GoCardless's creditors' `GET /balances`: one request a
//! source, or one per creditor, well within their limits) and compares it, per currency, with its
//! account's books: collected and not yet paid out (`reconcile::books::unsettled`), less the
//! payouts on their way whose lines are not in the books yet. The finding is a gauge
//! (`settle_provider_balance_drift`) and a row (`settle books drift`, the console).
//!
//! The providers' balances are net of their fees, which settle learns only when a payout lists
//! them: between payouts, the drift is below zero by about the fees on the money waiting. Above
//! zero is money settle does not know of (a payment whose events it missed); further below is
//! money settle counts that the provider does not hold (a refund or a dispute it missed).

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::lease::{self, Lease};
use crate::provider::Provider;
use crate::providers::source::{Source, Which, sources};
use crate::reconcile::books::{Drift, drift};
use crate::repository::books::{self as store, Period};
use crate::sealed::Keyring;
use crate::telemetry as metric;

/// One source's finding.
#[derive(Debug, Clone)]
pub struct Finding {
    pub account_id: String,
    pub provider: Provider,
    pub source: String,
    /// Each currency's drift, or why the source's balance could not be read.
    pub drifts: Result<Vec<Drift>, String>,
}

/// Checks every source of each provider now, and records and exports what it found.
pub async fn check(db: &PgPool, settings: &Settings, keyring: &Keyring) -> Vec<Finding> {
    let mut findings = Vec::new();
    for provider in [Provider::Stripe, Provider::GoCardless] {
        let read = sources(db, settings, keyring, provider, &Which::All).await;
        let Ok(sources) = read else {
            // No key for the platform and no connection: nothing of this provider to check.
            continue;
        };
        for source in &sources {
            let finding = check_source(db, provider, source).await;
            if let Ok(drifts) = &finding.drifts
                && let Err(error) =
                    store::record_checks(db, &finding.account_id, provider, &finding.source, drifts)
                        .await
            {
                tracing::warn!(%error, "a drift check's finding was not stored");
            }
            export(&finding);
            findings.push(finding);
        }
    }
    findings
}

async fn check_source(db: &PgPool, provider: Provider, source: &Source) -> Finding {
    let finding = |drifts| Finding {
        account_id: source.account_id.clone(),
        provider,
        source: source.name().to_owned(),
        drifts,
    };
    let held = match source.balance().await {
        Ok(held) => held,
        Err(error) => return finding(Err(format!("{error:#}"))),
    };
    let today = Utc::now().date_naive();
    let books = async {
        // Every payout the books hold, whichever day it reaches the bank: its money has left
        // the provider's balance.
        let period = Period::new(
            today,
            NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or(today),
        )?;
        let (_, summary) = store::read(db, &source.account_id, period)
            .await
            .map_err(|error| format!("{error:#}"))?;
        let in_flight = store::in_flight(db, &source.account_id, provider)
            .await
            .map_err(|error| format!("{error:#}"))?;
        drift(provider, &summary.unsettled, &in_flight, &held)
    };
    finding(books.await)
}

fn export(finding: &Finding) {
    let provider = finding.provider.wire_name();
    match &finding.drifts {
        Ok(drifts) => {
            for drift in drifts {
                let labels = [
                    ("account", finding.account_id.clone()),
                    ("provider", provider.to_owned()),
                    ("source", finding.source.clone()),
                    ("currency", drift.currency.as_str().to_owned()),
                ];
                metrics::gauge!(metric::PROVIDER_BALANCE_DRIFT, &labels).set(drift.drift as f64);
                metrics::gauge!(metric::PROVIDER_BALANCE_HELD, &labels).set(drift.held as f64);
                metrics::gauge!(metric::PROVIDER_BALANCE_EXPECTED, &labels)
                    .set(drift.expected as f64);
                if drift.drift != 0 {
                    tracing::info!(
                        account = %finding.account_id,
                        provider,
                        source = %finding.source,
                        currency = drift.currency.as_str(),
                        held = drift.held,
                        expected = drift.expected,
                        drift = drift.drift,
                        "a provider's balance differs from what the books expect"
                    );
                }
            }
        }
        Err(error) => {
            metrics::counter!(metric::DRIFT_CHECK_FAILURES, "provider" => provider).increment(1);
            tracing::warn!(provider, source = %finding.source, %error, "a provider's balance could not be checked");
        }
    }
}

/// The worker's periodic check.
#[derive(Clone)]
pub struct DriftChecker {
    pub db: PgPool,
    pub settings: Settings,
    pub keyring: Keyring,
    pub shutdown: CancellationToken,
}

impl DriftChecker {
    pub async fn run(self) {
        let interval = Duration::from_secs(self.settings.books.drift_interval_secs);
        while crate::supervise::wait_interval(interval, &self.shutdown).await {
            // One process checks at a time: the providers' limits are per account, not per
            // process.
            let mut lease = Lease::new(lease::DRIFT_CHECK, None);
            if lease.hold(&self.db).await {
                check(&self.db, &self.settings, &self.keyring).await;
                lease.release().await;
            }
        }
    }
}
