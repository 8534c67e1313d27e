//! The worker's statements for a payment event, three round trips:
//!
//! 1. `record_and_lock`: the inbox row and the invoice's `FOR UPDATE` lock, one statement (a
//!    redelivery is still told apart from a missing invoice);
//! 2. `read`: the invoice's state for the planner — every payment, the settings levels, whether
//!    a usable method is on file. A statement of its own: under READ COMMITTED a statement's
//!    snapshot is taken before any lock wait, so a read joined to the lock would miss what the
//!    transaction it waited for wrote;
//! 3. `write`: the payment's row, the invoice's totals and the outbox rows, one statement. Every
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
use crate::reconcile::events::Failure;
use crate::reconcile::invoice::InvoiceStatus;
use crate::reconcile::money::Currency;
use crate::reconcile::payment::PaymentStatus;
use crate::reconcile::plan::{Effects, InvoiceFacts, InvoiceState, PaymentFacts};
use crate::reconcile::settings::AccountDefaults;

/// What the lock statement found.
#[derive(Debug)]
pub enum Locked {
    /// The event is in the inbox already: nothing was written.
    Duplicate,
    /// Neither a registered payment nor the event's invoice reference names a registered invoice.
    NoInvoice,
    /// The invoice, locked for the rest of the transaction.
    Invoice(Box<InvoiceRow>),
}

/// Records the event in the inbox and locks its invoice. The registered payment's invoice wins
/// over the provider's metadata ($7 provider, $8 provider payment id, $9 invoice reference).
const RECORD_AND_LOCK_INVOICE: &str = concat!(
    "WITH inbox AS (",
    inbox_insert!(),
    " RETURNING 1)
     SELECT EXISTS (SELECT FROM inbox) AS recorded, invoice.*
     FROM (SELECT 1) AS one
     LEFT JOIN LATERAL (
         SELECT * FROM invoices WHERE id = COALESCE(
             (SELECT invoice_id FROM payments WHERE provider = $7 AND provider_payment_id = $8), $9)
         FOR UPDATE
     ) AS invoice ON true"
);

/// Every writer of an invoice's payments and totals holds this lock, so events of one invoice
/// apply one at a time.
pub async fn record_and_lock(
    tx: &mut PgConnection,
    entry: &InboxEntry<'_>,
    provider_payment_id: &str,
    invoice_ref: Option<&str>,
) -> sqlx::Result<Locked> {
    let row = entry
        .bind(sqlx::query(RECORD_AND_LOCK_INVOICE))
        .bind(entry.provider)
        .bind(provider_payment_id)
        .bind(invoice_ref)
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

#[derive(FromRow)]
struct StateRow {
    payments: Json<Vec<PaymentJson>>,
    #[sqlx(flatten)]
    levels: InvoiceLevelsRow,
    usable_method_on_file: bool,
}

/// $1 the invoice, $2 its customer.
static READ_STATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT COALESCE((
                SELECT json_agg(json_build_object(
                    'id', p.id, 'provider', p.provider, 'provider_payment_id', p.provider_payment_id,
                    'amount', p.amount, 'status', p.status, 'last_event_at', p.last_event_at,
                    'failure_code', p.failure_code, 'failure_message', p.failure_message,
                    'failure_attempt_id', p.failure_attempt_id)
                    ORDER BY p.created_at, p.id)
                FROM payments p WHERE p.invoice_id = $1), '[]') AS payments,
            {INVOICE_LEVELS_COLUMNS},
            EXISTS (SELECT 1 FROM payment_methods m
                    WHERE m.customer_id = $2 AND m.on_file AND m.status = 'ACTIVE') AS usable_method_on_file
         FROM invoice_settings s WHERE s.invoice_id = $1"
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
        .fetch_one(tx)
        .await?;
    Ok(InvoiceState {
        invoice: InvoiceFacts {
            id: invoice.id.clone(),
            customer_id: invoice.customer_id.clone(),
            number: invoice.number.clone(),
            currency: invoice.currency,
            amount_due: invoice.amount_due,
            amount_paid: invoice.amount_paid,
            status: invoice.status,
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
struct InvoiceTotalsRecord<'a> {
    id: &'a str,
    amount_paid: i64,
    status: InvoiceStatus,
}

/// $1 the payment record (or NULL), $2 the invoice totals record (or NULL), then
/// `outbox_insert!`'s $3 account, $4 ids, $5 types, $6 payloads. A payment record either inserts
/// a payment seen for the first time or updates the existing row with the same id.
const WRITE_EFFECTS: &str = concat!(
    "WITH payment AS (
         INSERT INTO payments (id, account_id, invoice_id, provider, provider_payment_id, amount,
             currency, status, collected, failure_code, failure_message, failure_attempt_id,
             last_event_at, effective_provider, effective_auto_charge)
         SELECT id, account_id, invoice_id, provider, provider_payment_id, amount,
             currency, status, collected, failure_code, failure_message, failure_attempt_id,
             last_event_at, effective_provider, effective_auto_charge
         FROM jsonb_populate_record(NULL::payments, $1) WHERE $1 IS NOT NULL
         ON CONFLICT (id) DO UPDATE SET
             status = EXCLUDED.status, collected = EXCLUDED.collected, amount = EXCLUDED.amount,
             failure_code = EXCLUDED.failure_code, failure_message = EXCLUDED.failure_message,
             failure_attempt_id = EXCLUDED.failure_attempt_id, last_event_at = EXCLUDED.last_event_at,
             effective_provider = EXCLUDED.effective_provider,
             effective_auto_charge = EXCLUDED.effective_auto_charge, updated_at = now()
     ), invoice_totals AS (
         UPDATE invoices i SET amount_paid = t.amount_paid, status = t.status, updated_at = now()
         FROM jsonb_populate_record(NULL::invoices, $2) t WHERE i.id = t.id
     )
     ",
    outbox_insert!("$3", "$4", "$5", "$6")
);

/// Writes a plan's effects in one statement (none when there is nothing to write).
pub async fn write(
    tx: &mut PgConnection,
    invoice: &InvoiceRow,
    effects: &Effects,
    outbox: &[OutboxRow],
) -> sqlx::Result<()> {
    let payment = effects.payment.as_ref().map(|write| {
        let p = &write.payment;
        Json(PaymentRecord {
            id: &p.id,
            account_id: &invoice.account_id,
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
    let totals = effects.invoice_totals.map(|(amount_paid, status)| {
        Json(InvoiceTotalsRecord {
            id: &invoice.id,
            amount_paid,
            status,
        })
    });
    if payment.is_none() && totals.is_none() && outbox.is_empty() {
        return Ok(());
    }
    let query = sqlx::query(WRITE_EFFECTS).bind(payment).bind(totals);
    OutboxRow::bind(query, &invoice.account_id, outbox)
        .execute(tx)
        .await?;
    Ok(())
}
