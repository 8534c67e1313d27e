//! The worker's statements for a run of money events (payments, refunds, disputes of one
//! account), three round trips however many events the run holds:
//!
//! 1. `lock`: every event's invoice resolved from its key and locked `FOR UPDATE` **in invoice id
//!    order** (two runs that share invoices take them in the same order, so they never deadlock),
//!    and whether each event is in the inbox already;
//! 2. `read`: the state of every locked invoice for the planner — its payments, ledger, refunds
//!    and disputes, the settings levels, whether a usable method is on file. A statement of its
//!    own: under READ COMMITTED a statement's snapshot is taken before any lock wait, so a read
//!    joined to the lock would miss what the transaction it waited for wrote;
//! 3. `write`: the run's inbox rows with their outcomes, the payments' rows, the ledger's new rows,
//!    the refund and dispute rows, the invoices' figures and the outbox rows, one statement, each
//!    table by one set-based part of it. Every value in it was decided by the planner; the rows
//!    travel as JSON records whose keys are the column names, so each value sits next to its
//!    name (the inbox payloads travel as text, so the event is kept byte for byte).
//!
//! The inbox check of (1) is read before the lock wait, so it can miss a concurrent delivery of
//! the same event that committed while this one waited. The inbox part of (3) cannot: it inserts
//! each row, or claims an `unmatched` one, and counts what it wrote (`Written::inbox_rows`); a
//! row another transaction recorded meanwhile is not written, the count falls short, and the
//! caller rolls the whole run back (`ApplyError::Raced`).

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, Row};

use super::inbox::InboxEntry;
use super::invoices::InvoiceRow;
use super::outbox::{OutboxRow, outbox_insert};
use super::settings::{INVOICE_LEVELS_COLUMNS, InvoiceLevelsRow};
use crate::provider::{PaymentProvider, Provider};
use crate::reconcile::dispute::DisputeStatus;
use crate::reconcile::events::Failure;
use crate::reconcile::invoice::InvoiceStatus;
use crate::reconcile::ledger::{Ledger, Movement, MovementKind, RefundState};
use crate::reconcile::money::Currency;
use crate::reconcile::outcome::Outcome;
use crate::reconcile::payment::PaymentStatus;
use crate::reconcile::plan::{
    DisputeFacts, Effects, InvoiceFacts, InvoiceState, PaymentFacts, RefundFacts,
};
use crate::reconcile::reconciliation_events::AmountSource;
use crate::reconcile::refund::RefundStatus;
use crate::reconcile::settings::AccountDefaults;

/// Resolves each event's invoice and locks them all, in id order, in the account $1: every
/// provider id is matched there only. The registered payment's invoice wins over the provider's
/// metadata; a GoCardless refund event names only its refund, which the billing system
/// registered against its payment; a Stripe invoice payment names the Stripe invoice an earlier
/// event linked. One row per event, in the order given: $2 providers, $3 event ids, $4 provider
/// payment ids, $5 invoice references, $6 provider refund ids, $7 provider invoice ids.
///
/// `ORDER BY i.id FOR UPDATE`: PostgreSQL locks the rows as the sort hands them out, so in id
/// order; every locked row is joined to an event, so the outer query reads (and locks) them all.
/// An inbox row found is share-locked: one that `settle events replay` is deleting is waited
/// for, and then not found, so the replayed event applies again instead of passing for a
/// duplicate of itself.
const LOCK_INVOICES: &str = "
    WITH keys AS (
        SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
            WITH ORDINALITY AS k(provider, event_id, provider_payment_id, invoice_ref,
                provider_refund_id, provider_invoice_id, ord)
    ), resolved AS MATERIALIZED (
        SELECT k.ord, k.provider, k.event_id, (
            SELECT i.id FROM invoices i WHERE i.account_id = $1 AND i.id = COALESCE(
                (SELECT invoice_id FROM payments
                 WHERE account_id = $1 AND provider = k.provider
                   AND provider_payment_id = k.provider_payment_id),
                (SELECT p.invoice_id FROM refunds r
                 JOIN payments p ON p.account_id = r.account_id AND p.id = r.payment_id
                 WHERE r.account_id = $1 AND r.provider = k.provider
                   AND r.provider_refund_id = k.provider_refund_id),
                k.invoice_ref,
                (SELECT invoice_id FROM provider_invoice_links
                 WHERE account_id = $1 AND provider = k.provider
                   AND provider_invoice_id = k.provider_invoice_id))
        ) AS invoice_id
        FROM keys k
    ), locked AS MATERIALIZED (
        SELECT i.* FROM invoices i
        WHERE i.account_id = $1 AND i.id IN (SELECT invoice_id FROM resolved)
        ORDER BY i.id FOR UPDATE
    )
    SELECT (SELECT CASE WHEN w.account_id = $1 THEN w.outcome ELSE 'another_account' END
            FROM webhook_events w
            WHERE w.provider = r.provider AND w.event_id = r.event_id FOR KEY SHARE) AS recorded,
        l.*
    FROM resolved r LEFT JOIN locked l ON l.id = r.invoice_id
    ORDER BY r.ord";

/// What names an event's invoice: its payment, its refund (GoCardless), the provider metadata, or
/// the provider's own invoice (linked).
#[derive(Debug, Clone, Copy, Default)]
pub struct InvoiceKey<'a> {
    pub provider_payment_id: Option<&'a str>,
    pub provider_refund_id: Option<&'a str>,
    pub invoice_ref: Option<&'a str>,
    pub provider_invoice_id: Option<&'a str>,
}

/// An event to lock the invoice of.
#[derive(Debug, Clone, Copy)]
pub struct LockRequest<'a> {
    pub provider: Provider,
    pub event_id: &'a str,
    pub key: InvoiceKey<'a>,
}

/// What the lock statement found for one event.
#[derive(Debug)]
pub struct Found {
    /// The event's inbox row is there already with a final outcome: a redelivery. (An `unmatched`
    /// row is not final: applying the event claims it. Another account's row, unmatched or not,
    /// counts as recorded: only its own account claims it, see `repository::inbox`.)
    pub recorded: bool,
    /// The event's invoice, locked for the rest of the transaction; `None` when neither a
    /// registered payment (or refund) nor the event's references name a registered invoice.
    pub invoice: Option<InvoiceRow>,
}

/// Every writer of an invoice's payments and totals holds this lock, so events of one invoice
/// apply one at a time. One `Found` per request, in order.
pub async fn lock(
    tx: &mut PgConnection,
    account_id: &str,
    requests: &[LockRequest<'_>],
) -> sqlx::Result<Vec<Found>> {
    fn column<'r>(
        requests: &[LockRequest<'r>],
        field: impl Fn(&LockRequest<'r>) -> Option<&'r str>,
    ) -> Vec<Option<&'r str>> {
        requests.iter().map(field).collect()
    }
    let rows = sqlx::query(LOCK_INVOICES)
        .bind(account_id)
        .bind(column(requests, |r| Some(r.provider.stored_name())))
        .bind(column(requests, |r| Some(r.event_id)))
        .bind(column(requests, |r| r.key.provider_payment_id))
        .bind(column(requests, |r| r.key.invoice_ref))
        .bind(column(requests, |r| r.key.provider_refund_id))
        .bind(column(requests, |r| r.key.provider_invoice_id))
        .fetch_all(tx)
        .await?;
    rows.iter()
        .map(|row| {
            let recorded = row.try_get::<Option<String>, _>("recorded")?;
            let invoice = match row.try_get::<Option<String>, _>("id")? {
                Some(_) => Some(InvoiceRow::from_row(row)?),
                None => None,
            };
            Ok(Found {
                recorded: recorded.is_some_and(|outcome| outcome != Outcome::Unmatched.as_str()),
                invoice,
            })
        })
        .collect()
}

/// A payment as the read returns it (a JSON record per payment of the invoice).
#[derive(Deserialize)]
struct PaymentJson {
    id: String,
    provider: Provider,
    provider_payment_id: String,
    amount: i64,
    status: PaymentStatus,
    last_event_at: Option<DateTime<Utc>>,
    failure_code: Option<String>,
    failure_message: Option<String>,
    failure_attempt_id: Option<String>,
    hold_expires_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct MovementJson {
    payment_id: String,
    provider: Provider,
    provider_object_id: String,
    kind: MovementKind,
    seq: i32,
    amount: i64,
    amount_source: AmountSource,
}

#[derive(FromRow)]
struct StateRow {
    invoice_id: String,
    payments: Json<Vec<PaymentJson>>,
    movements: Json<Vec<MovementJson>>,
    refunds: Json<Vec<RefundFacts>>,
    disputes: Json<Vec<DisputeFacts>>,
    #[sqlx(flatten)]
    levels: InvoiceLevelsRow,
    usable_method_on_file: bool,
}

/// One row per invoice: $1 the invoices, $2 their customers, $3 their account.
static READ_STATES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT inv.id AS invoice_id, COALESCE((
                SELECT json_agg(json_build_object(
                    'id', p.id, 'provider', p.provider, 'provider_payment_id', p.provider_payment_id,
                    'amount', p.amount, 'status', p.status, 'last_event_at', p.last_event_at,
                    'failure_code', p.failure_code, 'failure_message', p.failure_message,
                    'failure_attempt_id', p.failure_attempt_id,
                    'hold_expires_at', p.hold_expires_at)
                    ORDER BY p.created_at, p.id)
                FROM payments p WHERE p.account_id = $3 AND p.invoice_id = inv.id), '[]') AS payments,
            COALESCE((
                SELECT json_agg(json_build_object(
                    'payment_id', m.payment_id, 'provider', m.provider,
                    'provider_object_id', m.provider_object_id, 'kind', m.kind, 'seq', m.seq,
                    'amount', m.amount, 'amount_source', m.amount_source) ORDER BY m.id)
                FROM money_movements m WHERE m.account_id = $3 AND m.invoice_id = inv.id), '[]') AS movements,
            COALESCE((
                SELECT json_agg(row_to_json(r) ORDER BY r.created_at, r.id)
                FROM refunds r JOIN payments p ON p.account_id = r.account_id AND p.id = r.payment_id
                WHERE p.account_id = $3 AND p.invoice_id = inv.id), '[]') AS refunds,
            COALESCE((
                SELECT json_agg(row_to_json(d) ORDER BY d.created_at, d.id)
                FROM disputes d JOIN payments p ON p.account_id = d.account_id AND p.id = d.payment_id
                WHERE p.account_id = $3 AND p.invoice_id = inv.id), '[]') AS disputes,
            {INVOICE_LEVELS_COLUMNS},
            EXISTS (SELECT 1 FROM payment_methods m
                    WHERE m.account_id = $3 AND m.customer_id = inv.customer_id AND m.on_file
                      AND m.status = 'ACTIVE' AND m.provider IS NOT NULL) AS usable_method_on_file
         FROM unnest($1::text[], $2::text[]) AS inv(id, customer_id)
         JOIN invoice_settings s ON s.account_id = $3 AND s.invoice_id = inv.id"
    )
});

/// The locked invoices' states, for the planner, by invoice id. Run after `lock` (see the module
/// doc). The invoices are of one account.
pub async fn read(
    tx: &mut PgConnection,
    invoices: &[&InvoiceRow],
    defaults: AccountDefaults,
) -> sqlx::Result<HashMap<String, InvoiceState>> {
    let Some(first) = invoices.first() else {
        return Ok(HashMap::new());
    };
    let ids: Vec<&str> = invoices.iter().map(|i| i.id.as_str()).collect();
    let customers: Vec<&str> = invoices.iter().map(|i| i.customer_id.as_str()).collect();
    let rows: Vec<StateRow> = sqlx::query_as(&READ_STATES)
        .bind(ids)
        .bind(customers)
        .bind(&first.account_id)
        .fetch_all(tx)
        .await?;
    let mut states = HashMap::with_capacity(rows.len());
    for row in rows {
        let Some(invoice) = invoices.iter().find(|i| i.id == row.invoice_id) else {
            continue;
        };
        states.insert(row.invoice_id.clone(), state_of(invoice, row, defaults));
    }
    Ok(states)
}

fn state_of(invoice: &InvoiceRow, row: StateRow, defaults: AccountDefaults) -> InvoiceState {
    InvoiceState {
        invoice: InvoiceFacts {
            id: invoice.id.clone(),
            customer_id: invoice.customer_id.clone(),
            number: invoice.number.clone(),
            currency: invoice.currency,
            amount_due: invoice.amount_due,
            figures: invoice.figures(),
        },
        payments: row
            .payments
            .0
            .into_iter()
            .map(|p| PaymentFacts {
                id: p.id,
                provider: p.provider,
                provider_payment_id: p.provider_payment_id,
                amount: p.amount,
                status: p.status,
                last_event_at: p.last_event_at,
                failure: (p.failure_code.is_some() || p.failure_message.is_some()).then_some(
                    Failure {
                        code: p.failure_code,
                        message: p.failure_message,
                    },
                ),
                failure_attempt: p.failure_attempt_id,
                hold_expires_at: p.hold_expires_at,
            })
            .collect(),
        ledger: Ledger {
            movements: row
                .movements
                .0
                .into_iter()
                .map(|m| Movement {
                    payment_id: m.payment_id,
                    provider: m.provider,
                    provider_object_id: m.provider_object_id,
                    kind: m.kind,
                    seq: m.seq,
                    amount: m.amount,
                    amount_source: m.amount_source.as_str(),
                })
                .collect(),
        },
        refunds: row.refunds.0,
        disputes: row.disputes.0,
        settings: row.levels.levels().resolve(defaults),
        usable_method_on_file: row.usable_method_on_file,
    }
}

/// A `payments` row, keyed by column name.
#[derive(Serialize)]
struct PaymentRecord<'a> {
    id: &'a str,
    account_id: &'a str,
    invoice_id: &'a str,
    provider: Provider,
    provider_payment_id: &'a str,
    amount: i64,
    currency: Currency,
    status: PaymentStatus,
    collected: bool,
    failure_code: Option<&'a str>,
    failure_message: Option<&'a str>,
    failure_attempt_id: Option<&'a str>,
    last_event_at: Option<DateTime<Utc>>,
    hold_expires_at: Option<DateTime<Utc>>,
    effective_provider: PaymentProvider,
    effective_auto_charge: bool,
}

/// The `invoices` columns the worker moves.
#[derive(Serialize)]
struct InvoiceFiguresRecord<'a> {
    account_id: &'a str,
    id: &'a str,
    amount_paid: i64,
    amount_refunded: i64,
    amount_in_dispute: i64,
    refund_state: RefundState,
    status: InvoiceStatus,
}

/// A `money_movements` row.
#[derive(Serialize)]
struct MovementRecord<'a> {
    account_id: &'a str,
    invoice_id: &'a str,
    payment_id: &'a str,
    provider: Provider,
    provider_object_id: &'a str,
    kind: MovementKind,
    seq: i32,
    amount: i64,
    currency: Currency,
    amount_source: &'a str,
    occurred_at: DateTime<Utc>,
    event_id: &'a str,
}

/// A `refunds` row.
#[derive(Serialize)]
struct RefundRecord<'a> {
    id: &'a str,
    account_id: &'a str,
    payment_id: &'a str,
    provider: Provider,
    provider_refund_id: &'a str,
    amount: Option<i64>,
    amount_source: Option<AmountSource>,
    status: RefundStatus,
    failure_reason: Option<&'a str>,
    last_event_at: Option<DateTime<Utc>>,
}

/// A `disputes` row.
#[derive(Serialize)]
struct DisputeRecord<'a> {
    id: &'a str,
    account_id: &'a str,
    payment_id: &'a str,
    provider: Provider,
    provider_dispute_id: &'a str,
    amount: i64,
    status: DisputeStatus,
    provider_status: &'a str,
    reason: Option<&'a str>,
    evidence_due_by: Option<DateTime<Utc>>,
    last_event_at: Option<DateTime<Utc>>,
}

/// $1 payment records, $2 invoice figures records, $3 the ledger's new rows, $4 refund records,
/// $5 dispute records, then `outbox_insert!`'s $6 account, $7 ids, $8 types, $9 payloads; $10 and
/// $11 the providers and ids of the payments seen for the first time: the statement says which of
/// them unmatched events of the account wait for, so the common case (none) costs no round trip
/// of its own; $12 to $20 and $21 the inbox rows (provider, event id, type, payload as received,
/// received time, outcome, its reason, the payment an unmatched event waits for and its provider
/// time; the connection it came through), $22 the ids each is found by, joined by chr(31)
/// (`InboxEntry::joined_object_ids`); $23 `outbox_insert!`'s traces.
///
/// A payment, refund or dispute record either inserts a row seen for the first time or updates
/// the account's existing row with the same id (the caller sends each row once, in its last
/// state). A movement is only ever inserted: its unique key refuses a second count of the same
/// money. An inbox row is inserted, or claims the row of an `unmatched` event (see
/// `repository::inbox`); `inbox_rows` counts what it wrote. (The ledger's foreign key to a
/// payment inserted by the same statement holds: constraint triggers fire at its end.) Every
/// record carries the invoice's account.
const WRITE_EFFECTS: &str = concat!(
    "WITH inbox AS (
         INSERT INTO webhook_events (provider, event_id, account_id, event_type, payload,
             received_at, outcome, outcome_reason, unmatched_provider_payment_id,
             unmatched_occurred_at, connection_id, object_ids)
         SELECT provider, event_id, $6, event_type, payload::json, received_at, outcome,
             outcome_reason, unmatched_provider_payment_id, unmatched_occurred_at, connection_id,
             string_to_array(object_ids, chr(31))
         FROM unnest($12::text[], $13::text[], $14::text[], $15::text[], $16::timestamptz[],
             $17::text[], $18::text[], $19::text[], $20::timestamptz[], $21::text[], $22::text[])
             AS t(provider, event_id, event_type, payload, received_at, outcome, outcome_reason,
                 unmatched_provider_payment_id, unmatched_occurred_at, connection_id, object_ids)
         ON CONFLICT (provider, event_id) DO UPDATE SET outcome = EXCLUDED.outcome,
             outcome_reason = EXCLUDED.outcome_reason,
             unmatched_provider_payment_id = EXCLUDED.unmatched_provider_payment_id,
             unmatched_occurred_at = EXCLUDED.unmatched_occurred_at, processed_at = now()
         WHERE webhook_events.outcome = 'unmatched'
           AND webhook_events.account_id = EXCLUDED.account_id
         RETURNING 1
     ), payment AS (
         INSERT INTO payments (id, account_id, invoice_id, provider, provider_payment_id, amount,
             currency, status, collected, failure_code, failure_message, failure_attempt_id,
             last_event_at, hold_expires_at, effective_provider, effective_auto_charge)
         SELECT id, account_id, invoice_id, provider, provider_payment_id, amount,
             currency, status, collected, failure_code, failure_message, failure_attempt_id,
             last_event_at, hold_expires_at, effective_provider, effective_auto_charge
         FROM jsonb_populate_recordset(NULL::payments, $1)
         ON CONFLICT (account_id, id) DO UPDATE SET
             status = EXCLUDED.status, collected = EXCLUDED.collected, amount = EXCLUDED.amount,
             failure_code = EXCLUDED.failure_code, failure_message = EXCLUDED.failure_message,
             failure_attempt_id = EXCLUDED.failure_attempt_id, last_event_at = EXCLUDED.last_event_at,
             hold_expires_at = EXCLUDED.hold_expires_at,
             effective_provider = EXCLUDED.effective_provider,
             effective_auto_charge = EXCLUDED.effective_auto_charge, updated_at = now()
     ), invoice_figures AS (
         UPDATE invoices i SET amount_paid = t.amount_paid, amount_refunded = t.amount_refunded,
             amount_in_dispute = t.amount_in_dispute, refund_state = t.refund_state,
             status = t.status, updated_at = now()
         FROM jsonb_populate_recordset(NULL::invoices, $2) t
         WHERE i.account_id = t.account_id AND i.id = t.id
     ), movements AS (
         INSERT INTO money_movements (account_id, invoice_id, payment_id, provider,
             provider_object_id, kind, seq, amount, currency, amount_source, occurred_at, event_id)
         SELECT account_id, invoice_id, payment_id, provider, provider_object_id, kind, seq,
             amount, currency, amount_source, occurred_at, event_id
         FROM jsonb_populate_recordset(NULL::money_movements, $3)
     ), refund_rows AS (
         INSERT INTO refunds (id, account_id, payment_id, provider, provider_refund_id, amount,
             amount_source, status, failure_reason, last_event_at)
         SELECT id, account_id, payment_id, provider, provider_refund_id, amount, amount_source,
             status, failure_reason, last_event_at
         FROM jsonb_populate_recordset(NULL::refunds, $4)
         ON CONFLICT (account_id, id) DO UPDATE SET
             amount = EXCLUDED.amount, amount_source = EXCLUDED.amount_source,
             status = EXCLUDED.status, failure_reason = EXCLUDED.failure_reason,
             last_event_at = EXCLUDED.last_event_at, updated_at = now()
     ), dispute_rows AS (
         INSERT INTO disputes (id, account_id, payment_id, provider, provider_dispute_id, amount,
             status, provider_status, reason, evidence_due_by, last_event_at)
         SELECT id, account_id, payment_id, provider, provider_dispute_id, amount, status,
             provider_status, reason, evidence_due_by, last_event_at
         FROM jsonb_populate_recordset(NULL::disputes, $5)
         ON CONFLICT (account_id, id) DO UPDATE SET
             amount = EXCLUDED.amount, status = EXCLUDED.status,
             provider_status = EXCLUDED.provider_status, reason = EXCLUDED.reason,
             evidence_due_by = EXCLUDED.evidence_due_by, last_event_at = EXCLUDED.last_event_at,
             updated_at = now()
     ), ",
    outbox_insert!("$6", "$7", "$8", "$9", "$23"),
    "
     SELECT (SELECT count(*) FROM inbox) AS inbox_rows,
         ARRAY(SELECT n.ord::int4
               FROM unnest($10::text[], $11::text[]) WITH ORDINALITY AS n(provider, payment, ord)
               WHERE EXISTS (SELECT 1 FROM webhook_events w
                             WHERE w.account_id = $6 AND w.provider = n.provider
                               AND w.unmatched_provider_payment_id = n.payment)) AS waiting"
);

/// The provider event whose effects are written: each ledger row names it.
#[derive(Debug, Clone, Copy)]
pub struct RecordedBy<'a> {
    pub event_id: &'a str,
    pub occurred_at: DateTime<Utc>,
}

/// An event's inbox row, with its outcome.
#[derive(Debug, Clone, Copy)]
pub struct InboxRecord<'a> {
    pub entry: &'a InboxEntry<'a>,
    pub outcome: Outcome,
    /// An `unmatched` event's wait: the provider payment id (or refund, or provider invoice) it
    /// waits for, and its provider time.
    pub waits_for: Option<(&'a str, DateTime<Utc>)>,
}

/// One event's effects on its invoice.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    pub invoice: &'a InvoiceRow,
    pub effects: &'a Effects,
    pub recorded_by: RecordedBy<'a>,
}

/// What the write statement reports.
#[derive(Debug, Default)]
pub struct Written {
    /// Inbox rows inserted or claimed.
    pub inbox_rows: usize,
    /// Payments seen for the first time for which unmatched events of the account wait.
    pub waiting: Vec<(Provider, String)>,
}

/// Keeps the last of the items that share a key, in the order their keys first appear: a row
/// two events of a run changed is written once, as the later one left it.
fn last_of_each<K: Eq + std::hash::Hash, T>(items: impl Iterator<Item = (K, T)>) -> Vec<T> {
    let mut position = HashMap::new();
    let mut kept: Vec<T> = Vec::new();
    for (key, item) in items {
        match position.get(&key) {
            Some(&i) => kept[i] = item,
            None => {
                position.insert(key, kept.len());
                kept.push(item);
            }
        }
    }
    kept
}

/// Writes a run's inbox rows and the plans' effects in one statement (none when there is
/// nothing to write).
pub async fn write(
    tx: &mut PgConnection,
    account_id: &str,
    inbox: &[InboxRecord<'_>],
    applied: &[Applied<'_>],
    outbox: &[OutboxRow],
) -> sqlx::Result<Written> {
    let payments = last_of_each(applied.iter().filter_map(|a| {
        let write = a.effects.payment.as_ref()?;
        let p = &write.payment;
        let record = PaymentRecord {
            id: &p.id,
            account_id,
            invoice_id: &a.invoice.id,
            provider: p.provider,
            provider_payment_id: &p.provider_payment_id,
            amount: p.amount,
            currency: a.invoice.currency,
            status: p.status,
            collected: p.status.is_collected(),
            failure_code: p.failure.as_ref().and_then(|f| f.code.as_deref()),
            failure_message: p.failure.as_ref().and_then(|f| f.message.as_deref()),
            failure_attempt_id: p.failure_attempt.as_deref(),
            last_event_at: p.last_event_at,
            hold_expires_at: p.hold_expires_at,
            effective_provider: write.settings.payment_provider.value,
            effective_auto_charge: write.settings.auto_charge.value,
        };
        Some((p.id.as_str(), record))
    }));
    let figures = last_of_each(applied.iter().filter_map(|a| {
        let figures = a.effects.invoice_figures?;
        let record = InvoiceFiguresRecord {
            account_id,
            id: &a.invoice.id,
            amount_paid: figures.amount_paid,
            amount_refunded: figures.amount_refunded,
            amount_in_dispute: figures.amount_in_dispute,
            refund_state: figures.refund_state,
            status: figures.status,
        };
        Some((a.invoice.id.as_str(), record))
    }));
    let movements: Vec<_> = applied
        .iter()
        .flat_map(|a| {
            a.effects.movements.iter().map(move |m| MovementRecord {
                account_id,
                invoice_id: &a.invoice.id,
                payment_id: &m.payment_id,
                provider: m.provider,
                provider_object_id: &m.provider_object_id,
                kind: m.kind,
                seq: m.seq,
                amount: m.amount,
                currency: a.invoice.currency,
                amount_source: m.amount_source,
                occurred_at: a.recorded_by.occurred_at,
                event_id: a.recorded_by.event_id,
            })
        })
        .collect();
    let refunds = last_of_each(applied.iter().flat_map(|a| {
        a.effects.refunds.iter().map(|r| {
            let record = RefundRecord {
                id: &r.id,
                account_id,
                payment_id: &r.payment_id,
                provider: r.provider,
                provider_refund_id: &r.provider_refund_id,
                amount: r.amount,
                amount_source: r.amount_source,
                status: r.status,
                failure_reason: r.failure_reason.as_deref(),
                last_event_at: r.last_event_at,
            };
            (r.id.as_str(), record)
        })
    }));
    let disputes = last_of_each(applied.iter().filter_map(|a| {
        let d = a.effects.dispute.as_ref()?;
        let record = DisputeRecord {
            id: &d.id,
            account_id,
            payment_id: &d.payment_id,
            provider: d.provider,
            provider_dispute_id: &d.provider_dispute_id,
            amount: d.amount,
            status: d.status,
            provider_status: &d.provider_status,
            reason: d.reason.as_deref(),
            evidence_due_by: d.evidence_due_by,
            last_event_at: d.last_event_at,
        };
        Some((d.id.as_str(), record))
    }));
    let nothing = inbox.is_empty()
        && payments.is_empty()
        && figures.is_empty()
        && movements.is_empty()
        && refunds.is_empty()
        && disputes.is_empty()
        && outbox.is_empty();
    if nothing {
        return Ok(Written::default());
    }
    let new_payments = last_of_each(applied.iter().filter_map(|a| {
        let write = a.effects.payment.as_ref().filter(|write| write.is_new)?;
        let p = &write.payment;
        Some(((p.provider, p.provider_payment_id.as_str()), p))
    }));
    let inbox_column = |f: fn(&InboxRecord<'_>) -> Option<String>| -> Vec<Option<String>> {
        inbox.iter().map(f).collect()
    };
    let inbox_time =
        |f: fn(&InboxRecord<'_>) -> Option<DateTime<Utc>>| -> Vec<Option<DateTime<Utc>>> {
            inbox.iter().map(f).collect()
        };
    let query = sqlx::query(WRITE_EFFECTS)
        .bind(Json(payments))
        .bind(Json(figures))
        .bind(Json(movements))
        .bind(Json(refunds))
        .bind(Json(disputes));
    let row = OutboxRow::bind(query, account_id, outbox)
        .bind(
            new_payments
                .iter()
                .map(|p| p.provider.stored_name())
                .collect::<Vec<_>>(),
        )
        .bind(
            new_payments
                .iter()
                .map(|p| p.provider_payment_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(inbox_column(|r| {
            Some(r.entry.provider.stored_name().to_owned())
        }))
        .bind(inbox_column(|r| Some(r.entry.event_id.to_owned())))
        .bind(inbox_column(|r| Some(r.entry.event_type.to_owned())))
        .bind(inbox_column(|r| Some(r.entry.payload.to_owned())))
        .bind(inbox_time(|r| Some(r.entry.received_at)))
        .bind(inbox_column(|r| Some(r.outcome.as_str().to_owned())))
        .bind(inbox_column(|r| r.outcome.reason().map(str::to_owned)))
        .bind(inbox_column(|r| r.waits_for.map(|(id, _)| id.to_owned())))
        .bind(inbox_time(|r| r.waits_for.map(|(_, at)| at)))
        .bind(inbox_column(|r| r.entry.connection_id.map(str::to_owned)))
        .bind(inbox_column(|r| Some(r.entry.joined_object_ids())));
    let row = OutboxRow::bind_traces(row, outbox).fetch_one(tx).await?;
    let inbox_rows: i64 = row.try_get("inbox_rows")?;
    // Ordinals (from 1) into the new payments.
    let waiting: Vec<i32> = row.try_get("waiting")?;
    Ok(Written {
        inbox_rows: usize::try_from(inbox_rows).unwrap_or(0),
        waiting: waiting
            .iter()
            .filter_map(|&ord| new_payments.get(usize::try_from(ord - 1).ok()?))
            .map(|p| (p.provider, p.provider_payment_id.clone()))
            .collect(),
    })
}
