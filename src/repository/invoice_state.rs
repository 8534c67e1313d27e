//! The worker's statements for a payment event, three round trips:
//!
//! 1. `record_and_lock`: the inbox row and the invoice's `FOR UPDATE` lock, one statement (a
//!    redelivery is still told apart from a missing invoice);
//! 2. `read`: the invoice's state for the planner — every payment, its ledger, refunds and
//!    disputes, the settings levels, whether a usable method is on file. A statement of its own: under READ COMMITTED a statement's
//!    snapshot is taken before any lock wait, so a read joined to the lock would miss what the
//!    transaction it waited for wrote;
//! 3. `write`: the payment's row, the ledger's new rows, the refund and dispute rows, the
//!    invoice's figures and the outbox rows, one statement. Every
//!    value in it was decided by the planner; the rows travel as JSON records whose keys are the
//!    column names, so each value sits next to its name.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, Row};

use super::inbox::{InboxEntry, inbox_insert};
use super::invoices::InvoiceRow;
use super::outbox::{OutboxRow, outbox_insert};
use super::settings::{INVOICE_LEVELS_COLUMNS, InvoiceLevelsRow};
use crate::provider::{PaymentProvider, Provider};
use crate::reconcile::dispute::DisputeStatus;
use crate::reconcile::events::Failure;
use crate::reconcile::invoice::InvoiceStatus;
use crate::reconcile::ledger::{Ledger, Movement, MovementKind, RefundState};
use crate::reconcile::money::Currency;
use crate::reconcile::payment::PaymentStatus;
use crate::reconcile::plan::{
    DisputeFacts, Effects, InvoiceFacts, InvoiceState, PaymentFacts, RefundFacts,
};
use crate::reconcile::reconciliation_events::AmountSource;
use crate::reconcile::refund::RefundStatus;
use crate::reconcile::settings::AccountDefaults;

/// What the lock statement found.
#[derive(Debug)]
pub enum Locked {
    /// The event is in the inbox already: nothing was written.
    Duplicate,
    /// Neither a registered payment (or refund) nor the event's invoice reference names a
    /// registered invoice.
    NoInvoice,
    /// The invoice, locked for the rest of the transaction.
    Invoice(Box<InvoiceRow>),
}

/// Records the event in the inbox and locks its invoice, in the event's account ($3, the inbox
/// row's): every provider id is matched there only. The registered payment's invoice wins
/// over the provider's metadata; a GoCardless refund event names only its refund, which the
/// billing system registered against its payment; a Stripe invoice payment names the Stripe
/// invoice an earlier event linked ($7 provider, $8 provider payment id, $9 invoice reference,
/// $10 provider refund id, $11 provider invoice id).
const RECORD_AND_LOCK_INVOICE: &str = concat!(
    "WITH inbox AS (",
    inbox_insert!(),
    " RETURNING 1)
     SELECT EXISTS (SELECT FROM inbox) AS recorded, invoice.*
     FROM (SELECT 1) AS one
     LEFT JOIN LATERAL (
         SELECT * FROM invoices WHERE account_id = $3 AND id = COALESCE(
             (SELECT invoice_id FROM payments
              WHERE account_id = $3 AND provider = $7 AND provider_payment_id = $8),
             (SELECT p.invoice_id FROM refunds r
              JOIN payments p ON p.account_id = r.account_id AND p.id = r.payment_id
              WHERE r.account_id = $3 AND r.provider = $7 AND r.provider_refund_id = $10),
             $9,
             (SELECT invoice_id FROM provider_invoice_links
              WHERE account_id = $3 AND provider = $7 AND provider_invoice_id = $11))
         FOR UPDATE
     ) AS invoice ON true"
);

/// What names an event's invoice: its payment, its refund (GoCardless), the provider metadata, or
/// the provider's own invoice (linked).
#[derive(Debug, Clone, Copy, Default)]
pub struct InvoiceKey<'a> {
    pub provider_payment_id: Option<&'a str>,
    pub provider_refund_id: Option<&'a str>,
    pub invoice_ref: Option<&'a str>,
    pub provider_invoice_id: Option<&'a str>,
}

/// Every writer of an invoice's payments and totals holds this lock, so events of one invoice
/// apply one at a time.
pub async fn record_and_lock(
    tx: &mut PgConnection,
    entry: &InboxEntry<'_>,
    key: InvoiceKey<'_>,
) -> sqlx::Result<Locked> {
    let row = entry
        .bind(sqlx::query(RECORD_AND_LOCK_INVOICE))
        .bind(entry.provider)
        .bind(key.provider_payment_id)
        .bind(key.invoice_ref)
        .bind(key.provider_refund_id)
        .bind(key.provider_invoice_id)
        .fetch_one(tx)
        .await?;
    if !row.try_get::<bool, _>("recorded")? {
        return Ok(Locked::Duplicate);
    }
    if row.try_get::<Option<String>, _>("id")?.is_none() {
        return Ok(Locked::NoInvoice);
    }
    Ok(Locked::Invoice(Box::new(InvoiceRow::from_row(&row)?)))
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

/// A `refunds` row (`row_to_json`).
#[derive(Deserialize)]
struct RefundJson {
    id: String,
    payment_id: String,
    provider: Provider,
    provider_refund_id: String,
    amount: Option<i64>,
    amount_source: Option<AmountSource>,
    status: RefundStatus,
    failure_reason: Option<String>,
    last_event_at: Option<DateTime<Utc>>,
}

/// A `disputes` row (`row_to_json`).
#[derive(Deserialize)]
struct DisputeJson {
    id: String,
    payment_id: String,
    provider: Provider,
    provider_dispute_id: String,
    amount: i64,
    status: DisputeStatus,
    provider_status: Option<String>,
    reason: Option<String>,
    evidence_due_by: Option<DateTime<Utc>>,
    last_event_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
struct StateRow {
    payments: Json<Vec<PaymentJson>>,
    movements: Json<Vec<MovementJson>>,
    refunds: Json<Vec<RefundJson>>,
    disputes: Json<Vec<DisputeJson>>,
    #[sqlx(flatten)]
    levels: InvoiceLevelsRow,
    usable_method_on_file: bool,
}

/// $1 the invoice, $2 its customer, $3 its account.
static READ_STATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT COALESCE((
                SELECT json_agg(json_build_object(
                    'id', p.id, 'provider', p.provider, 'provider_payment_id', p.provider_payment_id,
                    'amount', p.amount, 'status', p.status, 'last_event_at', p.last_event_at,
                    'failure_code', p.failure_code, 'failure_message', p.failure_message,
                    'failure_attempt_id', p.failure_attempt_id)
                    ORDER BY p.created_at, p.id)
                FROM payments p WHERE p.account_id = $3 AND p.invoice_id = $1), '[]') AS payments,
            COALESCE((
                SELECT json_agg(json_build_object(
                    'payment_id', m.payment_id, 'provider', m.provider,
                    'provider_object_id', m.provider_object_id, 'kind', m.kind, 'seq', m.seq,
                    'amount', m.amount, 'amount_source', m.amount_source) ORDER BY m.id)
                FROM money_movements m WHERE m.account_id = $3 AND m.invoice_id = $1), '[]') AS movements,
            COALESCE((
                SELECT json_agg(row_to_json(r) ORDER BY r.created_at, r.id)
                FROM refunds r JOIN payments p ON p.account_id = r.account_id AND p.id = r.payment_id
                WHERE p.account_id = $3 AND p.invoice_id = $1), '[]') AS refunds,
            COALESCE((
                SELECT json_agg(row_to_json(d) ORDER BY d.created_at, d.id)
                FROM disputes d JOIN payments p ON p.account_id = d.account_id AND p.id = d.payment_id
                WHERE p.account_id = $3 AND p.invoice_id = $1), '[]') AS disputes,
            {INVOICE_LEVELS_COLUMNS},
            EXISTS (SELECT 1 FROM payment_methods m
                    WHERE m.account_id = $3 AND m.customer_id = $2 AND m.on_file
                      AND m.status = 'ACTIVE') AS usable_method_on_file
         FROM invoice_settings s WHERE s.account_id = $3 AND s.invoice_id = $1"
    )
});

/// The locked invoice's state, for the planner. Run after `record_and_lock` (see the module doc).
pub async fn read(
    tx: &mut PgConnection,
    invoice: &InvoiceRow,
    defaults: AccountDefaults,
) -> sqlx::Result<InvoiceState> {
    let row: StateRow = sqlx::query_as(&READ_STATE)
        .bind(&invoice.id)
        .bind(&invoice.customer_id)
        .bind(&invoice.account_id)
        .fetch_one(tx)
        .await?;
    Ok(InvoiceState {
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
        refunds: row
            .refunds
            .0
            .into_iter()
            .map(|r| RefundFacts {
                id: r.id,
                payment_id: r.payment_id,
                provider: r.provider,
                provider_refund_id: r.provider_refund_id,
                amount: r.amount,
                amount_source: r.amount_source,
                status: r.status,
                failure_reason: r.failure_reason,
                last_event_at: r.last_event_at,
            })
            .collect(),
        disputes: row
            .disputes
            .0
            .into_iter()
            .map(|d| DisputeFacts {
                id: d.id,
                payment_id: d.payment_id,
                provider: d.provider,
                provider_dispute_id: d.provider_dispute_id,
                amount: d.amount,
                status: d.status,
                provider_status: d.provider_status.unwrap_or_default(),
                reason: d.reason,
                evidence_due_by: d.evidence_due_by,
                last_event_at: d.last_event_at,
            })
            .collect(),
        settings: row.levels.levels().resolve(defaults),
        usable_method_on_file: row.usable_method_on_file,
    })
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

/// $1 the payment record (or NULL), $2 the invoice figures record (or NULL), $3 the ledger's new
/// rows, $4 refund records, $5 the dispute record (or NULL), then `outbox_insert!`'s $6 account,
/// $7 ids, $8 types, $9 payloads; $10 and $11 the provider and id of a payment seen for the
/// first time (else NULL): the statement says whether unmatched events of the account wait for
/// it, so the common case (none) costs no round trip of its own. A payment, refund or dispute
/// record either inserts a row seen for the first time or updates the account's existing row
/// with the same id. A movement is only ever inserted: its unique key refuses a second count of
/// the same money. (The ledger's foreign key to a payment inserted by the same statement holds:
/// constraint triggers fire at its end.) Every record carries the invoice's account.
const WRITE_EFFECTS: &str = concat!(
    "WITH payment AS (
         INSERT INTO payments (id, account_id, invoice_id, provider, provider_payment_id, amount,
             currency, status, collected, failure_code, failure_message, failure_attempt_id,
             last_event_at, effective_provider, effective_auto_charge)
         SELECT id, account_id, invoice_id, provider, provider_payment_id, amount,
             currency, status, collected, failure_code, failure_message, failure_attempt_id,
             last_event_at, effective_provider, effective_auto_charge
         FROM jsonb_populate_record(NULL::payments, $1) WHERE $1 IS NOT NULL
         ON CONFLICT (account_id, id) DO UPDATE SET
             status = EXCLUDED.status, collected = EXCLUDED.collected, amount = EXCLUDED.amount,
             failure_code = EXCLUDED.failure_code, failure_message = EXCLUDED.failure_message,
             failure_attempt_id = EXCLUDED.failure_attempt_id, last_event_at = EXCLUDED.last_event_at,
             effective_provider = EXCLUDED.effective_provider,
             effective_auto_charge = EXCLUDED.effective_auto_charge, updated_at = now()
     ), invoice_figures AS (
         UPDATE invoices i SET amount_paid = t.amount_paid, amount_refunded = t.amount_refunded,
             amount_in_dispute = t.amount_in_dispute, refund_state = t.refund_state,
             status = t.status, updated_at = now()
         FROM jsonb_populate_record(NULL::invoices, $2) t
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
     ), dispute_row AS (
         INSERT INTO disputes (id, account_id, payment_id, provider, provider_dispute_id, amount,
             status, provider_status, reason, evidence_due_by, last_event_at)
         SELECT id, account_id, payment_id, provider, provider_dispute_id, amount, status,
             provider_status, reason, evidence_due_by, last_event_at
         FROM jsonb_populate_record(NULL::disputes, $5) WHERE $5 IS NOT NULL
         ON CONFLICT (account_id, id) DO UPDATE SET
             amount = EXCLUDED.amount, status = EXCLUDED.status,
             provider_status = EXCLUDED.provider_status, reason = EXCLUDED.reason,
             evidence_due_by = EXCLUDED.evidence_due_by, last_event_at = EXCLUDED.last_event_at,
             updated_at = now()
     ), outbox_rows AS (",
    outbox_insert!("$6", "$7", "$8", "$9"),
    ")
     SELECT EXISTS (SELECT 1 FROM webhook_events
                    WHERE account_id = $6 AND provider = $10
                      AND unmatched_provider_payment_id = $11) AS waiting"
);

/// The provider event whose effects are written: each ledger row names it.
#[derive(Debug, Clone, Copy)]
pub struct RecordedBy<'a> {
    pub event_id: &'a str,
    pub occurred_at: DateTime<Utc>,
}

/// Writes a plan's effects in one statement (none when there is nothing to write). True when
/// the plan registered a payment for which unmatched events wait.
pub async fn write(
    tx: &mut PgConnection,
    invoice: &InvoiceRow,
    effects: &Effects,
    outbox: &[OutboxRow],
    recorded_by: RecordedBy<'_>,
) -> sqlx::Result<bool> {
    let account_id = invoice.account_id.as_str();
    let payment = effects.payment.as_ref().map(|write| {
        let p = &write.payment;
        Json(PaymentRecord {
            id: &p.id,
            account_id,
            invoice_id: &invoice.id,
            provider: p.provider,
            provider_payment_id: &p.provider_payment_id,
            amount: p.amount,
            currency: invoice.currency,
            status: p.status,
            collected: p.status.is_collected(),
            failure_code: p.failure.as_ref().and_then(|f| f.code.as_deref()),
            failure_message: p.failure.as_ref().and_then(|f| f.message.as_deref()),
            failure_attempt_id: p.failure_attempt.as_deref(),
            last_event_at: p.last_event_at,
            effective_provider: write.settings.payment_provider.value,
            effective_auto_charge: write.settings.auto_charge.value,
        })
    });
    let figures = effects.invoice_figures.map(|figures| {
        Json(InvoiceFiguresRecord {
            account_id,
            id: &invoice.id,
            amount_paid: figures.amount_paid,
            amount_refunded: figures.amount_refunded,
            amount_in_dispute: figures.amount_in_dispute,
            refund_state: figures.refund_state,
            status: figures.status,
        })
    });
    let movements: Vec<_> = effects
        .movements
        .iter()
        .map(|m| MovementRecord {
            account_id,
            invoice_id: &invoice.id,
            payment_id: &m.payment_id,
            provider: m.provider,
            provider_object_id: &m.provider_object_id,
            kind: m.kind,
            seq: m.seq,
            amount: m.amount,
            currency: invoice.currency,
            amount_source: m.amount_source,
            occurred_at: recorded_by.occurred_at,
            event_id: recorded_by.event_id,
        })
        .collect();
    let refunds: Vec<_> = effects
        .refunds
        .iter()
        .map(|r| RefundRecord {
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
        })
        .collect();
    let dispute = effects.dispute.as_ref().map(|d| {
        Json(DisputeRecord {
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
        })
    });
    let nothing = payment.is_none()
        && figures.is_none()
        && movements.is_empty()
        && refunds.is_empty()
        && dispute.is_none()
        && outbox.is_empty();
    if nothing {
        return Ok(false);
    }
    let new_payment = effects
        .payment
        .as_ref()
        .filter(|write| write.is_new)
        .map(|write| &write.payment);
    let query = sqlx::query(WRITE_EFFECTS)
        .bind(payment)
        .bind(figures)
        .bind(Json(movements))
        .bind(Json(refunds))
        .bind(dispute);
    OutboxRow::bind(query, account_id, outbox)
        .bind(new_payment.map(|p| p.provider))
        .bind(new_payment.map(|p| p.provider_payment_id.as_str()))
        .fetch_one(tx)
        .await?
        .try_get("waiting")
}
