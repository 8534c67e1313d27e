//! Payouts and their lines (`payouts`, `payout_lines`): what the ledger knows of a payout's
//! lines' objects, and a listed payout stored whole.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgExecutor};

use crate::provider::Provider;
use crate::reconcile::events::{PayoutEvent, PayoutStage};
use crate::reconcile::money::Currency;
use crate::reconcile::payout::{self as rules, Explained, Known, PayoutStatus, Reconciled, Source};
use crate::reconcile::reconciliation_events::{Message, PayoutData, ReconciliationEvent};
use crate::repository::outbox::{self, OutboxRow};

/// A payout as its provider describes it, before its lines.
#[derive(Debug, Clone)]
pub struct Payout {
    pub provider: Provider,
    pub provider_payout_id: String,
    pub account_id: String,
    pub amount: i64,
    pub currency: Currency,
    pub arrival_date: Option<NaiveDate>,
    /// The provider event (or listing) it comes from.
    pub event_id: String,
}

/// Settle's payment and invoice of each of `sources` that the account's ledger holds: payments
/// by their provider id, refunds and disputes by theirs. Payment ids are the caller's, so two
/// accounts may both have `pay_1`: a refund or dispute joins its own account's payment only.
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
    let rows = sqlx::query!(
        r#"SELECT 'payment' AS "kind!", p.provider_payment_id AS "object!", p.id AS "payment_id!",
                p.invoice_id AS "invoice_id!"
           FROM payments p
          WHERE p.account_id = $1 AND p.provider = $2 AND p.provider_payment_id = ANY($3)
         UNION ALL
         SELECT 'refund', r.provider_refund_id, p.id, p.invoice_id
           FROM refunds r JOIN payments p ON p.account_id = r.account_id AND p.id = r.payment_id
          WHERE r.account_id = $1 AND r.provider = $2 AND r.provider_refund_id = ANY($4)
         UNION ALL
         SELECT 'dispute', d.provider_dispute_id, p.id, p.invoice_id
           FROM disputes d JOIN payments p ON p.account_id = d.account_id AND p.id = d.payment_id
          WHERE d.account_id = $1 AND d.provider = $2 AND d.provider_dispute_id = ANY($5)"#,
        account_id,
        provider.stored_name(),
        &payments,
        &refunds,
        &disputes,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let source = match row.kind.as_str() {
                "payment" => Source::Payment(row.object),
                "refund" => Source::Refund(row.object),
                "dispute" => Source::Dispute(row.object),
                _ => return None,
            };
            Some((
                source,
                Known {
                    payment_id: row.payment_id,
                    invoice_id: row.invoice_id,
                },
            ))
        })
        .collect())
}

/// What recording a payout's event did.
#[derive(Debug)]
pub enum Recorded {
    /// The payout as it is now that the event moved it (boxed: the other variants are empty).
    Moved(Box<PayoutRow>),
    /// The event did not move it (older news, or a failure already final).
    Unmoved,
}

/// Records what a payout event says, before any listing of its lines:
/// - expected (Stripe `payout.paid`): `EXPECTED`, unless it was listed or failed already;
/// - listable (Stripe `payout.reconciliation_completed`, GoCardless `payouts.paid`): `LISTING`,
///   for the payout lister, unless it was listed already;
/// - unlistable (a manual Stripe payout): `UNLISTABLE` with the reason;
/// - failed (Stripe `payout.failed`, after `payout.paid` or not): `FAILED` with the provider's
///   reason, whatever came before: the money is not in the bank; announced (`payout.failed`).
///
/// Events arrive in any order; each moves the payout only forward (`reconcile::payout::advance`
/// decides, over the payout locked; the statement keeps the rule as a guard). Only the account's own
/// payout: an event naming an id another account holds records a payout of the sender's own
/// beside it and leaves the other alone. Refusing it instead would let whichever account's
/// event came first own the id, so a tenant could squat another's payout before its own
/// provider's event arrived; its own payout's lines are listed with its own credentials, which
/// the provider refuses for a payout that is not its.
pub async fn record_event(
    tx: &mut PgConnection,
    account_id: &str,
    connection_id: Option<&str>,
    event_id: &str,
    event: &PayoutEvent,
) -> sqlx::Result<Recorded> {
    let key = PayoutKey {
        account_id,
        provider: event.provider,
        provider_payout_id: &event.provider_payout_id,
    };
    let current = lock(&mut *tx, &key).await?.map(|row| row.status);
    let Some(status) = rules::advance(current, &event.stage) else {
        return Ok(Recorded::Unmoved);
    };
    let reason = match &event.stage {
        PayoutStage::Expected | PayoutStage::Listable => None,
        PayoutStage::Unlistable(why) => Some((*why).to_owned()),
        PayoutStage::Failed(failure) => Some(
            [failure.code.as_deref(), failure.message.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": "),
        )
        .filter(|reason| !reason.is_empty()),
    };
    let moved = sqlx::query_as(
        "INSERT INTO payouts (provider, provider_payout_id, account_id, amount, currency,
                              arrival_date, status, status_reason, event_id, connection_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (account_id, provider, provider_payout_id) DO UPDATE
         SET amount = COALESCE(EXCLUDED.amount, payouts.amount),
             connection_id = COALESCE(EXCLUDED.connection_id, payouts.connection_id),
             currency = COALESCE(EXCLUDED.currency, payouts.currency),
             arrival_date = COALESCE(EXCLUDED.arrival_date, payouts.arrival_date),
             status = EXCLUDED.status, status_reason = EXCLUDED.status_reason,
             event_id = EXCLUDED.event_id, updated_at = now()
         -- Forward only: FAILED is final; a listed payout is not put back to be listed or
         -- expected; an expected one may become listable.
         WHERE payouts.status <> 'FAILED'
           AND (EXCLUDED.status = 'FAILED'
                OR payouts.status IN ('EXPECTED', 'LISTING') AND EXCLUDED.status <> 'EXPECTED')
         RETURNING *",
    )
    .bind(event.provider)
    .bind(&event.provider_payout_id)
    .bind(account_id)
    .bind(event.amount)
    .bind(event.currency)
    .bind(event.arrival_date)
    .bind(status)
    .bind(reason)
    .bind(event_id)
    .bind(connection_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(moved) = moved else {
        return Ok(Recorded::Unmoved);
    };
    // What the move announces: an event only ever fails a payout among the statuses that do.
    announce(tx, &moved, event.occurred_at).await?;
    Ok(Recorded::Moved(Box::new(moved)))
}

/// Whether another account than `account_id` holds the payout. Two accounts' first events for
/// one payout id take turns on a transaction lock of that id, so the second sees the first's row.
/// A stored payout, as the lister, the API and the CLI read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PayoutRow {
    pub provider: Provider,
    pub provider_payout_id: String,
    pub account_id: String,
    pub amount: Option<i64>,
    pub currency: Option<Currency>,
    pub arrival_date: Option<NaiveDate>,
    pub status: PayoutStatus,
    pub status_reason: Option<String>,
    pub lines_gross: Option<i64>,
    pub lines_fees: Option<i64>,
    pub lines_net: Option<i64>,
    pub difference: Option<i64>,
    pub unmatched_lines: Option<i32>,
    pub event_id: String,
    /// The connection whose credentials list its lines; `None`: the platform's own keys.
    pub connection_id: Option<String>,
    /// Its outcome's version: 1, then one more each time a listing or a match changes it (its
    /// announcements' ids carry it).
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which payout: the account's, of a provider, by the provider's id. Every statement that finds
/// one payout or its lines takes this, so none can reach another account's.
#[derive(Debug, Clone, Copy)]
pub struct PayoutKey<'a> {
    pub account_id: &'a str,
    pub provider: Provider,
    pub provider_payout_id: &'a str,
}

impl PayoutRow {
    /// The key of this payout.
    pub fn key(&self) -> PayoutKey<'_> {
        PayoutKey {
            account_id: &self.account_id,
            provider: self.provider,
            provider_payout_id: &self.provider_payout_id,
        }
    }

    /// What the reconciliation events say of it, with the invoices its lines carry.
    pub fn data(&self, invoice_ids: Vec<String>) -> PayoutData {
        PayoutData {
            provider: self.provider,
            provider_payout_id: self.provider_payout_id.clone(),
            status: self.status,
            amount: self.amount,
            currency: self.currency,
            arrival_date: self.arrival_date,
            lines_gross: self.lines_gross,
            lines_fees: self.lines_fees,
            lines_net: self.lines_net,
            difference: self.difference,
            unmatched_lines: self.unmatched_lines,
            invoice_ids,
            status_reason: self.status_reason.clone(),
        }
    }

    /// The reconciliation event its status announces, if any.
    pub fn announcement(&self, invoice_ids: Vec<String>) -> Option<ReconciliationEvent> {
        ReconciliationEvent::of_payout(self.data(invoice_ids))
    }
}

/// The reconciliation event `payout`'s status announces, if any, with the invoices its lines
/// carry. Published under the payout's id in place of a provider event's: whichever event or
/// listing caused it, one outcome of one payout is one message.
pub async fn announcement(
    tx: &mut PgConnection,
    payout: &PayoutRow,
) -> sqlx::Result<Option<ReconciliationEvent>> {
    let invoices = invoice_ids(&mut *tx, &payout.key()).await?;
    Ok(payout.announcement(invoices))
}

/// Writes the reconciliation event `payout`'s status announces, if any, to the outbox in `tx`,
/// and wakes the relay: the one way a payout is announced, from its event or its listing.
pub async fn announce(
    tx: &mut PgConnection,
    payout: &PayoutRow,
    occurred_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    let Some(event) = announcement(tx, payout).await? else {
        return Ok(());
    };
    let message = Message::of_payout(
        &event,
        payout.provider,
        &payout.provider_payout_id,
        payout.version,
        occurred_at,
        &payout.account_id,
    );
    let row = OutboxRow::of(&message).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    outbox::insert(&mut *tx, &payout.account_id, &[row]).await?;
    outbox::notify_relay(&mut *tx).await
}

/// The payout, if the account has it.
pub async fn get(db: impl PgExecutor<'_>, key: &PayoutKey<'_>) -> sqlx::Result<Option<PayoutRow>> {
    sqlx::query_as(
        "SELECT * FROM payouts
         WHERE account_id = $1 AND provider = $2 AND provider_payout_id = $3",
    )
    .bind(key.account_id)
    .bind(key.provider)
    .bind(key.provider_payout_id)
    .fetch_optional(db)
    .await
}

/// The payout locked until `tx` ends: its listing and its events take turns.
pub async fn lock(tx: &mut PgConnection, key: &PayoutKey<'_>) -> sqlx::Result<Option<PayoutRow>> {
    sqlx::query_as(
        "SELECT * FROM payouts
         WHERE account_id = $1 AND provider = $2 AND provider_payout_id = $3 FOR UPDATE",
    )
    .bind(key.account_id)
    .bind(key.provider)
    .bind(key.provider_payout_id)
    .fetch_optional(tx)
    .await
}

/// Payouts waiting to be listed, the longest-waiting first.
pub async fn to_list(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<PayoutRow>> {
    sqlx::query_as("SELECT * FROM payouts WHERE status = 'LISTING' ORDER BY updated_at LIMIT $1")
        .bind(limit)
        .fetch_all(db)
        .await
}

/// Why a payout is still waiting to be listed (its provider down, no key to read it): shown to
/// operators, and it goes to the back of the list.
pub async fn still_listing(
    db: impl PgExecutor<'_>,
    key: &PayoutKey<'_>,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE payouts SET status_reason = $4, updated_at = now()
         WHERE account_id = $1 AND provider = $2 AND provider_payout_id = $3
           AND status = 'LISTING'",
        key.account_id,
        key.provider.stored_name(),
        key.provider_payout_id,
        reason,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records that the provider cannot list the payout's lines, and why.
pub async fn unlistable(
    tx: &mut PgConnection,
    key: &PayoutKey<'_>,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE payouts SET status = 'UNLISTABLE', status_reason = $4, updated_at = now()
         WHERE account_id = $1 AND provider = $2 AND provider_payout_id = $3",
        key.account_id,
        key.provider.stored_name(),
        key.provider_payout_id,
        reason,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// The invoices a payout's matched lines belong to, each once, in the order of its lines.
pub async fn invoice_ids(
    db: impl PgExecutor<'_>,
    key: &PayoutKey<'_>,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT invoice_id AS "invoice_id!" FROM payout_lines
         WHERE account_id = $1 AND provider = $2 AND provider_payout_id = $3
           AND invoice_id IS NOT NULL
         GROUP BY invoice_id ORDER BY min(position)"#,
        key.account_id,
        key.provider.stored_name(),
        key.provider_payout_id,
    )
    .fetch_all(db)
    .await
}

/// Stores `payout` with its `reconciled` lines, replacing whatever an earlier listing stored:
/// listing a payout again, or its event delivered twice, stores nothing twice.
pub async fn store(
    tx: &mut PgConnection,
    payout: &Payout,
    reconciled: &Reconciled,
) -> sqlx::Result<PayoutRow> {
    let stored: PayoutRow = sqlx::query_as(
        "INSERT INTO payouts (provider, provider_payout_id, account_id, amount, currency,
                              arrival_date, status, status_reason, lines_gross, lines_fees,
                              lines_net, difference, unmatched_lines, event_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (account_id, provider, provider_payout_id) DO UPDATE
         SET amount = EXCLUDED.amount, currency = EXCLUDED.currency,
             arrival_date = EXCLUDED.arrival_date, status = EXCLUDED.status,
             status_reason = NULL, lines_gross = EXCLUDED.lines_gross,
             lines_fees = EXCLUDED.lines_fees, lines_net = EXCLUDED.lines_net,
             difference = EXCLUDED.difference, unmatched_lines = EXCLUDED.unmatched_lines,
             event_id = EXCLUDED.event_id, updated_at = now(),
             -- An outcome stored before that changes is a new version; the same one again
             -- (a payout listed twice) is not.
             version = payouts.version + CASE
                 WHEN payouts.status IN ('RECONCILED', 'PARTIALLY_MATCHED')
                  AND (payouts.status, payouts.lines_gross, payouts.lines_fees, payouts.lines_net,
                       payouts.difference, payouts.unmatched_lines)
                      IS DISTINCT FROM (EXCLUDED.status, EXCLUDED.lines_gross, EXCLUDED.lines_fees,
                       EXCLUDED.lines_net, EXCLUDED.difference, EXCLUDED.unmatched_lines)
                 THEN 1 ELSE 0 END
         RETURNING *",
    )
    .bind(payout.provider)
    .bind(&payout.provider_payout_id)
    .bind(&payout.account_id)
    .bind(payout.amount)
    .bind(payout.currency)
    .bind(payout.arrival_date)
    .bind(reconciled.status)
    .bind(reconciled.gross)
    .bind(reconciled.fees)
    .bind(reconciled.net)
    .bind(reconciled.difference)
    .bind(i32::try_from(reconciled.unmatched).unwrap_or(i32::MAX))
    .bind(&payout.event_id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        "DELETE FROM payout_lines
         WHERE account_id = $1 AND provider = $2 AND provider_payout_id = $3",
        payout.account_id,
        payout.provider.stored_name(),
        payout.provider_payout_id,
    )
    .execute(&mut *tx)
    .await?;
    let lines = &reconciled.lines;
    let column = |part: fn(&crate::reconcile::payout::MatchedLine) -> Decimal| -> Vec<Decimal> {
        lines.iter().map(part).collect()
    };
    sqlx::query(
        "INSERT INTO payout_lines (account_id, provider, provider_payout_id, position, category,
                                   source_id, explained, payment_id, invoice_id, gross, fee, net,
                                   source_kind, source_key, role)
         SELECT $12, $1, $2, l.position, l.category, l.source_id, l.explained, l.payment_id,
                l.invoice_id, l.gross, l.fee, l.net, l.source_kind, l.source_key, l.role
         FROM unnest($3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                     $9::numeric[], $10::numeric[], $11::numeric[], $13::text[], $14::text[],
                     $15::text[])
              AS l (position, category, source_id, explained, payment_id, invoice_id, gross,
                    fee, net, source_kind, source_key, role)",
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
    .bind(&payout.account_id)
    .bind(
        lines
            .iter()
            .map(|l| l.line.source.stored().0)
            .collect::<Vec<_>>(),
    )
    .bind(
        lines
            .iter()
            .map(|l| l.line.source.stored().1)
            .collect::<Vec<_>>(),
    )
    .bind(
        lines
            .iter()
            .map(|l| <&'static str>::from(l.line.role))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    Ok(stored)
}

/// Partly matched payouts one of whose unmatched lines' objects the ledger has learned since
/// (a payment, refund or dispute of the account registered after the payout was listed), at most
/// `limit`, most recently changed first. Only payouts stored with their lines' sources (from
/// this version on) can be matched again from storage; older ones are listed again instead.
pub async fn to_match_again(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<PayoutRow>> {
    sqlx::query_as(
        "SELECT p.* FROM payouts p
         WHERE p.status = 'PARTIALLY_MATCHED'
           AND NOT EXISTS (SELECT 1 FROM payout_lines l
                           WHERE l.account_id = p.account_id AND l.provider = p.provider
                             AND l.provider_payout_id = p.provider_payout_id
                             AND l.source_kind IS NULL)
           AND EXISTS (
               SELECT 1 FROM payout_lines l
               WHERE l.account_id = p.account_id AND l.provider = p.provider
                 AND l.provider_payout_id = p.provider_payout_id AND l.explained = 'UNMATCHED'
                 AND (l.source_kind = 'PAYMENT' AND EXISTS (
                          SELECT 1 FROM payments x WHERE x.account_id = p.account_id
                            AND x.provider = p.provider AND x.provider_payment_id = l.source_key)
                   OR l.source_kind = 'REFUND' AND EXISTS (
                          SELECT 1 FROM refunds x WHERE x.account_id = p.account_id
                            AND x.provider = p.provider AND x.provider_refund_id = l.source_key)
                   OR l.source_kind = 'DISPUTE' AND EXISTS (
                          SELECT 1 FROM disputes x WHERE x.account_id = p.account_id
                            AND x.provider = p.provider AND x.provider_dispute_id = l.source_key)))
         ORDER BY p.updated_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A stored line, as the matcher reads it again.
#[derive(sqlx::FromRow)]
struct StoredLine {
    category: String,
    source_id: Option<String>,
    source_kind: Option<String>,
    source_key: Option<String>,
    role: Option<String>,
    gross: Decimal,
    fee: Decimal,
    net: Decimal,
}

/// The payout's lines as they were listed, for the matcher; `None` when one was stored without
/// its source (before lines kept theirs).
pub async fn stored_lines(
    db: impl PgExecutor<'_>,
    key: &PayoutKey<'_>,
) -> sqlx::Result<Option<Vec<crate::reconcile::payout::Line>>> {
    let rows: Vec<StoredLine> = sqlx::query_as(
        "SELECT category, source_id, source_kind, source_key, role, gross, fee, net
         FROM payout_lines
         WHERE account_id = $1 AND provider = $2 AND provider_payout_id = $3
         ORDER BY position",
    )
    .bind(key.account_id)
    .bind(key.provider)
    .bind(key.provider_payout_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            Some(crate::reconcile::payout::Line {
                source: Source::from_stored(row.source_kind.as_deref()?, row.source_key)?,
                role: row.role?.parse().ok()?,
                category: row.category,
                source_id: row.source_id,
                gross: row.gross,
                fee: row.fee,
                net: row.net,
            })
        })
        .collect())
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
    /// The matched invoice's customer.
    pub customer_id: Option<String>,
    pub gross: Decimal,
    pub fee: Decimal,
    pub net: Decimal,
}

/// A payout's lines in the provider's order.
pub async fn lines(db: impl PgExecutor<'_>, key: &PayoutKey<'_>) -> sqlx::Result<Vec<LineRow>> {
    sqlx::query_as!(
        LineRow,
        r#"SELECT l.position, l.category, l.source_id, l.explained, l.payment_id, l.invoice_id,
                i.customer_id AS "customer_id?", l.gross, l.fee, l.net
         FROM payout_lines l
         LEFT JOIN invoices i ON i.account_id = l.account_id AND i.id = l.invoice_id
         WHERE l.account_id = $1 AND l.provider = $2 AND l.provider_payout_id = $3
         ORDER BY l.position"#,
        key.account_id,
        key.provider.stored_name(),
        key.provider_payout_id,
    )
    .fetch_all(db)
    .await
}

/// Where a page of `list` starts: after this payout in its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    pub created_at: DateTime<Utc>,
    pub provider: Provider,
    pub provider_payout_id: String,
}

/// The account's payouts recorded since `since` (all when `None`), in `status` when given, in the
/// order settle recorded them, from after `after`.
pub async fn list(
    db: impl PgExecutor<'_>,
    account_id: &str,
    status: Option<PayoutStatus>,
    since: Option<DateTime<Utc>>,
    after: Option<&After>,
    limit: i64,
) -> sqlx::Result<Vec<PayoutRow>> {
    sqlx::query_as(
        "SELECT * FROM payouts
         WHERE account_id = $1
           AND ($2::text IS NULL OR status = $2)
           AND ($3::timestamptz IS NULL OR created_at >= $3)
           AND ($4::timestamptz IS NULL
                OR (created_at, provider, provider_payout_id) > ($4, $5, $6))
         ORDER BY created_at, provider, provider_payout_id
         LIMIT $7",
    )
    .bind(account_id)
    .bind(status)
    .bind(since)
    .bind(after.map(|a| a.created_at))
    .bind(after.map(|a| a.provider))
    .bind(after.map(|a| a.provider_payout_id.as_str()))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The account's payout `provider_payout_id` (the providers' ids do not overlap: `po_…`,
/// `PO…`).
pub async fn find(
    db: impl PgExecutor<'_>,
    account_id: &str,
    provider_payout_id: &str,
) -> sqlx::Result<Option<PayoutRow>> {
    sqlx::query_as(
        "SELECT * FROM payouts WHERE account_id = $1 AND provider_payout_id = $2
         ORDER BY provider LIMIT 1",
    )
    .bind(account_id)
    .bind(provider_payout_id)
    .fetch_optional(db)
    .await
}

/// A payout that carried some of an invoice's money, and how much of it (its lines' net).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvoicePayout {
    pub provider: Provider,
    pub provider_payout_id: String,
    pub status: PayoutStatus,
    pub arrival_date: Option<NaiveDate>,
    pub net: Decimal,
}

/// The payouts whose lines carry the account's invoice `invoice_id`'s money, earliest first.
pub async fn of_invoice(
    db: impl PgExecutor<'_>,
    account_id: &str,
    invoice_id: &str,
) -> sqlx::Result<Vec<InvoicePayout>> {
    sqlx::query_as!(
        InvoicePayout,
        r#"SELECT p.provider AS "provider: Provider", p.provider_payout_id,
                p.status AS "status: PayoutStatus", p.arrival_date, sum(l.net) AS "net!"
         FROM payout_lines l JOIN payouts p USING (account_id, provider, provider_payout_id)
         WHERE l.account_id = $1 AND l.invoice_id = $2
         -- The whole key: the other columns of `p` depend on it.
         GROUP BY p.account_id, p.provider, p.provider_payout_id
         ORDER BY p.arrival_date NULLS LAST, p.created_at"#,
        account_id,
        invoice_id,
    )
    .fetch_all(db)
    .await
}

/// The account's `limit` most recently recorded payouts, newest first (the console's list).
pub async fn recent(
    db: impl PgExecutor<'_>,
    account_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<PayoutRow>> {
    sqlx::query_as(
        "SELECT * FROM payouts WHERE account_id = $1
         ORDER BY created_at DESC, provider DESC, provider_payout_id DESC LIMIT $2",
    )
    .bind(account_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Payouts of any account not reconciled yet: waiting for their lines, or partly matched.
pub async fn not_reconciled(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM payouts WHERE status IN ('EXPECTED', 'LISTING', 'PARTIALLY_MATCHED')",
    )
    .fetch_one(db)
    .await
}

/// How many payouts are `PARTIALLY_MATCHED`, across accounts, and since when the oldest has been
/// (its last change): what the alerts on money left unexplained read.
pub async fn partially_matched_backlog(
    db: impl PgExecutor<'_>,
) -> sqlx::Result<(i64, Option<DateTime<Utc>>)> {
    sqlx::query_as(
        "SELECT count(*), min(updated_at) FROM payouts WHERE status = 'PARTIALLY_MATCHED'",
    )
    .fetch_one(db)
    .await
}
