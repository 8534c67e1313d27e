//! Payouts and their lines (`payouts`, `payout_lines`): what the ledger knows of a payout's
//! lines' objects, and a listed payout stored whole.

use std::collections::HashMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgExecutor};

use crate::provider::Provider;
use crate::reconcile::events::{PayoutEvent, PayoutStage};
use crate::reconcile::payout::{Explained, Known, Reconciled, Source};

/// A payout as its provider describes it, before its lines.
#[derive(Debug, Clone)]
pub struct Payout {
    pub provider: Provider,
    pub provider_payout_id: String,
    pub account_id: String,
    pub amount: i64,
    pub currency: String,
    pub arrival_date: Option<NaiveDate>,
    /// The provider event (or listing) it comes from.
    pub event_id: String,
}

/// Settle's payment and invoice of each of `sources` that the account's ledger holds: payments
/// by their provider id, refunds and disputes by theirs.
pub async fn knows(
    db: impl PgExecutor<'_>,
    account_id: &str,
    provider: Provider,
    sources: &[Source],
) -> sqlx::Result<HashMap<Source, Known>> {
    let ids = |wanted: fn(&Source) -> Option<&String>| -> Vec<String> {
        sources.iter().filter_map(wanted).cloned().collect()
    };
    let payments = ids(|s| match s {
        Source::Payment(id) => Some(id),
        _ => None,
    });
    let refunds = ids(|s| match s {
        Source::Refund(id) => Some(id),
        _ => None,
    });
    let disputes = ids(|s| match s {
        Source::Dispute(id) => Some(id),
        _ => None,
    });
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT 'payment', p.provider_payment_id, p.id, p.invoice_id
           FROM payments p
          WHERE p.account_id = $1 AND p.provider = $2 AND p.provider_payment_id = ANY($3)
         UNION ALL
         SELECT 'refund', r.provider_refund_id, p.id, p.invoice_id
           FROM refunds r JOIN payments p ON p.id = r.payment_id
          WHERE r.account_id = $1 AND r.provider = $2 AND r.provider_refund_id = ANY($4)
         UNION ALL
         SELECT 'dispute', d.provider_dispute_id, p.id, p.invoice_id
           FROM disputes d JOIN payments p ON p.id = d.payment_id
          WHERE d.account_id = $1 AND d.provider = $2 AND d.provider_dispute_id = ANY($5)",
    )
    .bind(account_id)
    .bind(provider)
    .bind(&payments)
    .bind(&refunds)
    .bind(&disputes)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(kind, object, payment_id, invoice_id)| {
            let source = match kind.as_str() {
                "payment" => Source::Payment(object),
                "refund" => Source::Refund(object),
                "dispute" => Source::Dispute(object),
                _ => return None,
            };
            Some((
                source,
                Known {
                    payment_id,
                    invoice_id,
                },
            ))
        })
        .collect())
}

/// Records what a payout event says, before any listing of its lines:
/// - expected (Stripe `payout.paid`): `EXPECTED`, unless it was listed or failed already;
/// - listable (Stripe `payout.reconciliation_completed`, GoCardless `payouts.paid`): `LISTING`,
///   for the payout lister, unless it was listed already;
/// - unlistable (a manual Stripe payout): `UNLISTABLE` with the reason;
/// - failed (Stripe `payout.failed`, after `payout.paid` or not): `FAILED` with the provider's
///   reason, whatever came before: the money is not in the bank.
///
/// Events arrive in any order; each moves the payout only forward.
pub async fn record_event(
    tx: &mut PgConnection,
    account_id: &str,
    event_id: &str,
    event: &PayoutEvent,
) -> sqlx::Result<()> {
    let (status, reason) = match &event.stage {
        PayoutStage::Expected => ("EXPECTED", None),
        PayoutStage::Listable => ("LISTING", None),
        PayoutStage::Unlistable(why) => ("UNLISTABLE", Some((*why).to_owned())),
        PayoutStage::Failed(failure) => (
            "FAILED",
            Some(
                [failure.code.as_deref(), failure.message.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": "),
            )
            .filter(|reason| !reason.is_empty()),
        ),
    };
    sqlx::query(
        "INSERT INTO payouts (provider, provider_payout_id, account_id, amount, currency,
                              arrival_date, status, status_reason, event_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (provider, provider_payout_id) DO UPDATE
         SET amount = COALESCE(EXCLUDED.amount, payouts.amount),
             currency = COALESCE(EXCLUDED.currency, payouts.currency),
             arrival_date = COALESCE(EXCLUDED.arrival_date, payouts.arrival_date),
             status = EXCLUDED.status, status_reason = EXCLUDED.status_reason,
             event_id = EXCLUDED.event_id, updated_at = now()
         -- Forward only: FAILED is final; a listed payout is not put back to be listed or
         -- expected; an expected one may become listable.
         WHERE payouts.status <> 'FAILED'
           AND (EXCLUDED.status = 'FAILED'
                OR payouts.status IN ('EXPECTED', 'LISTING') AND EXCLUDED.status <> 'EXPECTED')",
    )
    .bind(event.provider)
    .bind(&event.provider_payout_id)
    .bind(account_id)
    .bind(event.amount)
    .bind(event.currency.map(|c| c.as_str()))
    .bind(event.arrival_date)
    .bind(status)
    .bind(reason)
    .bind(event_id)
    .execute(tx)
    .await?;
    Ok(())
}

/// Stores `payout` with its `reconciled` lines, replacing whatever an earlier listing stored:
/// listing a payout again, or its event delivered twice, stores nothing twice.
pub async fn store(
    tx: &mut PgConnection,
    payout: &Payout,
    reconciled: &Reconciled,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO payouts (provider, provider_payout_id, account_id, amount, currency,
                              arrival_date, status, status_reason, lines_gross, lines_fees,
                              lines_net, difference, unmatched_lines, event_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (provider, provider_payout_id) DO UPDATE
         SET amount = EXCLUDED.amount, currency = EXCLUDED.currency,
             arrival_date = EXCLUDED.arrival_date, status = EXCLUDED.status,
             status_reason = NULL, lines_gross = EXCLUDED.lines_gross,
             lines_fees = EXCLUDED.lines_fees, lines_net = EXCLUDED.lines_net,
             difference = EXCLUDED.difference, unmatched_lines = EXCLUDED.unmatched_lines,
             event_id = EXCLUDED.event_id, updated_at = now()",
    )
    .bind(payout.provider)
    .bind(&payout.provider_payout_id)
    .bind(&payout.account_id)
    .bind(payout.amount)
    .bind(&payout.currency)
    .bind(payout.arrival_date)
    .bind(reconciled.status.as_str())
    .bind(reconciled.gross)
    .bind(reconciled.fees)
    .bind(reconciled.net)
    .bind(reconciled.difference)
    .bind(i32::try_from(reconciled.unmatched).unwrap_or(i32::MAX))
    .bind(&payout.event_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM payout_lines WHERE provider = $1 AND provider_payout_id = $2")
        .bind(payout.provider)
        .bind(&payout.provider_payout_id)
        .execute(&mut *tx)
        .await?;
    let lines = &reconciled.lines;
    let column = |part: fn(&crate::reconcile::payout::MatchedLine) -> Decimal| -> Vec<Decimal> {
        lines.iter().map(part).collect()
    };
    sqlx::query(
        "INSERT INTO payout_lines (provider, provider_payout_id, position, category, source_id,
                                   explained, payment_id, invoice_id, gross, fee, net)
         SELECT $1, $2, l.position, l.category, l.source_id, l.explained, l.payment_id,
                l.invoice_id, l.gross, l.fee, l.net
         FROM unnest($3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                     $9::numeric[], $10::numeric[], $11::numeric[])
              AS l (position, category, source_id, explained, payment_id, invoice_id, gross,
                    fee, net)",
    )
    .bind(payout.provider)
    .bind(&payout.provider_payout_id)
    .bind((0..lines.len() as i32).collect::<Vec<i32>>())
    .bind(
        lines
            .iter()
            .map(|l| l.line.category.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        lines
            .iter()
            .map(|l| l.line.source_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        lines
            .iter()
            .map(|l| explained_name(l.explained))
            .collect::<Vec<_>>(),
    )
    .bind(
        lines
            .iter()
            .map(|l| l.known.as_ref().map(|k| k.payment_id.clone()))
            .collect::<Vec<_>>(),
    )
    .bind(
        lines
            .iter()
            .map(|l| l.known.as_ref().map(|k| k.invoice_id.clone()))
            .collect::<Vec<_>>(),
    )
    .bind(column(|l| l.line.gross))
    .bind(column(|l| l.line.fee))
    .bind(column(|l| l.line.net))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn explained_name(explained: Explained) -> &'static str {
    match explained {
        Explained::Matched => "MATCHED",
        Explained::Provider => "PROVIDER",
        Explained::Unmatched => "UNMATCHED",
    }
}

/// A stored line, as the API and the CLI show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LineRow {
    pub position: i32,
    pub category: String,
    pub source_id: Option<String>,
    pub explained: String,
    pub payment_id: Option<String>,
    pub invoice_id: Option<String>,
    pub gross: Decimal,
    pub fee: Decimal,
    pub net: Decimal,
}

/// A payout's lines in the provider's order.
pub async fn lines(
    db: impl PgExecutor<'_>,
    provider: Provider,
    provider_payout_id: &str,
) -> sqlx::Result<Vec<LineRow>> {
    sqlx::query_as(
        "SELECT position, category, source_id, explained, payment_id, invoice_id, gross, fee, net
         FROM payout_lines WHERE provider = $1 AND provider_payout_id = $2 ORDER BY position",
    )
    .bind(provider)
    .bind(provider_payout_id)
    .fetch_all(db)
    .await
}
