//! One payout's lines: listed from its provider, matched, stored whole with what its outcome
//! announces; payouts waiting on the ledger matched again; the payouts the events missed fetched.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::providers::rules;
use crate::providers::source::{PayoutListing, Source};
use crate::reconcile::payout::{self as matcher, PayoutStatus, listable};
use crate::repository::payouts::{self, Payout, PayoutRow, announce};

/// What listing a payout did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    Stored(PayoutStatus),
    /// The provider no longer lists its lines.
    Unlistable,
    /// Another listing, or an event (it failed), changed it meanwhile: left as that made it.
    Passed,
}

impl Listed {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stored(status) => status.as_str(),
            Self::Unlistable => "UNLISTABLE",
            Self::Passed => "PASSED",
        }
    }
}

/// Lists `row`'s lines from `source` (its account's at its provider), matches them to the
/// ledger and stores the outcome with its announcement. An error (the provider down, an answer
/// of another shape) leaves the payout as it was.
pub async fn list(
    db: &PgPool,
    source: &Source,
    row: &PayoutRow,
    again: bool,
) -> anyhow::Result<Listed> {
    let provider = row.provider;
    let id = row.provider_payout_id.as_str();
    let key = row.key();
    let (described, raw_lines) = match source.payout_lines(id).await? {
        PayoutListing::Listed { payout, lines } => (payout, lines),
        PayoutListing::Gone(said) => {
            let mut tx = db.begin().await?;
            match payouts::lock(&mut tx, &key).await? {
                Some(now) if listable(now.status, again) => {}
                _ => return Ok(Listed::Passed),
            }
            let reason = format!(
                "{} lists the items of payouts of the last 6 months only: {said}",
                provider.display_name()
            );
            payouts::unlistable(&mut tx, &key, &reason).await?;
            tx.commit().await?;
            return Ok(Listed::Unlistable);
        }
    };
    // GoCardless's event names the payout only: its own record says how much, in what.
    let described = described
        .map(|payout| rules(provider).listed_payout(&payout))
        .transpose()
        .context("the payout, as the provider returned it")?
        .flatten();
    let amount = described
        .as_ref()
        .and_then(|payout| payout.amount)
        .or(row.amount)
        .context("the payout's amount is unknown")?;
    let currency = described
        .as_ref()
        .and_then(|payout| payout.currency)
        .or(row.currency)
        .context("the payout's currency is unknown")?;
    let arrival_date = described
        .as_ref()
        .and_then(|payout| payout.arrival_date)
        .or(row.arrival_date);
    let lines = raw_lines
        .iter()
        .map(|line| rules(provider).payout_line(line))
        .collect::<Result<Vec<_>, String>>()
        .map_err(|detail| {
            anyhow::anyhow!("a line of the payout, as the provider listed it: {detail}")
        })?;
    let sources: Vec<_> = lines.iter().map(|line| line.source.clone()).collect();
    let knows = payouts::knows(db, &row.account_id, provider, &sources).await?;
    let reconciled = matcher::reconcile(amount, lines, &knows)
        .map_err(|reason| anyhow::anyhow!("the payout, as the provider listed it: {reason}"))?;

    let mut tx = db.begin().await?;
    let now = match payouts::lock(&mut tx, &key).await? {
        Some(now) if listable(now.status, again) => now,
        _ => return Ok(Listed::Passed),
    };
    let payout = Payout {
        provider,
        provider_payout_id: id.to_owned(),
        account_id: now.account_id.clone(),
        amount,
        currency,
        arrival_date,
        event_id: now.event_id.clone(),
    };
    let stored = payouts::store(&mut tx, &payout, &reconciled).await?;
    announce(&mut tx, &stored, Utc::now()).await?;
    tx.commit().await?;
    Ok(Listed::Stored(reconciled.status))
}

/// Matches again, from their stored lines and without asking the provider, the partly matched
/// payouts one of whose unmatched lines' objects the ledger has learned since they were listed
/// (at most `limit`), and stores and announces each whose outcome changed, as a new version.
/// How many changed.
pub async fn match_again(db: &PgPool, limit: i64) -> anyhow::Result<usize> {
    let mut changed = 0;
    for row in payouts::to_match_again(db, limit).await? {
        let key = row.key();
        let (Some(lines), Some(amount)) = (payouts::stored_lines(db, &key).await?, row.amount)
        else {
            continue;
        };
        let sources: Vec<_> = lines.iter().map(|line| line.source.clone()).collect();
        let knows = payouts::knows(db, &row.account_id, row.provider, &sources).await?;
        let reconciled = matcher::reconcile(amount, lines, &knows)
            .map_err(|reason| anyhow::anyhow!("payout {}: {reason}", row.provider_payout_id))?;
        let mut tx = db.begin().await?;
        // Matched again by another process meanwhile, or failed by an event: left as it is.
        let Some(now) = payouts::lock(&mut tx, &key).await? else {
            continue;
        };
        if now.status != PayoutStatus::PartiallyMatched
            || now.unmatched_lines == i32::try_from(reconciled.unmatched).ok()
        {
            continue;
        }
        let Some(currency) = now.currency else {
            continue; // a listed payout has one
        };
        let payout = Payout {
            provider: now.provider,
            provider_payout_id: now.provider_payout_id.clone(),
            account_id: now.account_id.clone(),
            amount,
            currency,
            arrival_date: now.arrival_date,
            event_id: now.event_id.clone(),
        };
        let stored = payouts::store(&mut tx, &payout, &reconciled).await?;
        announce(&mut tx, &stored, Utc::now()).await?;
        tx.commit().await?;
        tracing::info!(
            provider = %stored.provider,
            payout = %stored.provider_payout_id,
            status = stored.status.as_str(),
            version = stored.version,
            "payout matched again: the ledger learned what its lines are"
        );
        changed += 1;
    }
    Ok(changed)
}

/// What one source's `fetch` did.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchReport {
    pub source: String,
    /// Paid (or failed) payouts the provider listed since the time asked.
    pub found: usize,
    pub reconciled: usize,
    pub partially_matched: usize,
    /// Recorded without lines: failed, manual, too old, or not final yet (`EXPECTED`).
    pub without_lines: usize,
    /// Not listed, for `error`.
    pub failed: usize,
    pub error: Option<String>,
}

/// Lists `source`'s payouts created since `since`, records each the events missed (as the event
/// its state stands for would have) and lists the lines of every paid one, again if it was
/// listed before.
pub async fn fetch(db: &PgPool, source: &Source, since: DateTime<Utc>) -> FetchReport {
    let mut report = FetchReport {
        source: source.name().to_owned(),
        ..FetchReport::default()
    };
    let listed = match source.payouts(since).await {
        Ok(listed) => listed,
        Err(error) => {
            report.error = Some(error.to_string());
            return report;
        }
    };
    for object in &listed {
        match fetch_one(db, source, object).await {
            Ok(None) => {}
            Ok(Some(listed)) => {
                report.found += 1;
                match listed {
                    Listed::Stored(PayoutStatus::Reconciled) => report.reconciled += 1,
                    // Matching's other outcome.
                    Listed::Stored(_) => report.partially_matched += 1,
                    Listed::Unlistable | Listed::Passed => report.without_lines += 1,
                }
            }
            Err(error) => {
                report.found += 1;
                report.failed += 1;
                report.error = Some(format!("{error:#}"));
            }
        }
    }
    report
}

/// One listed payout: `None` when it is not paid yet.
async fn fetch_one(
    db: &PgPool,
    source: &Source,
    object: &serde_json::Value,
) -> anyhow::Result<Option<Listed>> {
    let Some(event) = rules(source.provider).listed_payout(object)? else {
        return Ok(None);
    };
    let mut tx = db.begin().await?;
    // A failure it records is announced with it.
    payouts::record_event(
        &mut tx,
        &source.account_id,
        source.connection_id.as_deref(),
        "fetch",
        &event,
    )
    .await?;
    tx.commit().await?;
    let key = payouts::PayoutKey {
        account_id: &source.account_id,
        provider: source.provider,
        provider_payout_id: &event.provider_payout_id,
    };
    let row = payouts::get(db, &key)
        .await?
        .context("the payout just recorded")?;
    if !listable(row.status, true) {
        return Ok(Some(Listed::Passed));
    }
    list(db, source, &row, true).await.map(Some)
}
