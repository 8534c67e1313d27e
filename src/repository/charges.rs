//! Automatic charges: each invoice's attempts (`charges`), decided where the invoice's lock is
//! held (its registration, a failure, a new method on file, the charger) and sent by the charger.
//!
//! `decide` is the one way an attempt is scheduled: it reads what `charging::next_attempt`
//! needs about the invoice, asks it, and writes the answer (an attempt due now or later, or the
//! open one skipped with the reason none follows). Callers hold the invoice's row lock, so two
//! decisions of one invoice take turns, and the unique index on its open attempt backs that up.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;

use super::outbox::{self, OutboxRow};
use super::settings::{INVOICE_LEVELS_COLUMNS, InvoiceLevelsRow};
use crate::clock::Clock;
use crate::provider::{PaymentProvider, Provider};
use crate::reconcile::charging::{
    self, ChargeFacts, ChargeState, LastAttempt, NextAttempt, RetrySchedule, idempotency_key,
};
use crate::reconcile::invoice;
use crate::reconcile::money::Currency;
use crate::reconcile::reconciliation_events::{ChargeData, Message, ReconciliationEvent};
use crate::reconcile::settings::{AccountDefaults, EffectiveSettings};

/// What every decision about invoices' attempts is made with, from the settings: the payment
/// settings' defaults, the waits of accounts without their own, and the clock.
#[derive(Debug, Clone)]
pub struct Rules {
    pub defaults: AccountDefaults,
    pub retry_schedule: RetrySchedule,
    pub clock: Clock,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChargeRow {
    pub account_id: String,
    pub invoice_id: String,
    pub number: i32,
    pub idempotency_key: String,
    pub state: ChargeState,
    pub due_at: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub sends: i32,
    pub provider: Option<Provider>,
    pub amount: Option<i64>,
    pub currency: Option<Currency>,
    pub method_reference: Option<String>,
    pub provider_payment_id: Option<String>,
    pub reason: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "account_id, invoice_id, number, idempotency_key, state, due_at, \
    lease_until, sends, provider, amount, currency, method_reference, provider_payment_id, reason, \
    sent_at, ended_at, created_at, updated_at";

/// An invoice's attempts, in number order.
pub async fn for_invoice(
    db: impl sqlx::PgExecutor<'_>,
    account_id: &str,
    invoice_id: &str,
) -> sqlx::Result<Vec<ChargeRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM charges WHERE account_id = $1 AND invoice_id = $2 ORDER BY number"
    ))
    .bind(account_id)
    .bind(invoice_id)
    .fetch_all(db)
    .await
}

/// The method on file the next attempt would charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodOnFile {
    pub provider: Provider,
    /// Stripe `cus_…`, `cus_…/pm_…`, …; GoCardless `MD…`.
    pub reference: String,
    pub since: DateTime<Utc>,
}

/// Everything the next attempt of an invoice is decided on, read under its lock.
#[derive(Debug, Clone)]
pub struct ChargeInputs {
    pub facts: ChargeFacts,
    pub schedule: RetrySchedule,
    pub currency: Currency,
    /// The invoice's number, for the statement a person reads.
    pub number: String,
    pub settings: EffectiveSettings,
    /// The customer's active method on file, of the effective provider.
    pub method: Option<MethodOnFile>,
    pub attempts: Vec<ChargeRow>,
}

#[derive(sqlx::FromRow)]
struct InputsRow {
    amount_due: i64,
    amount_paid: i64,
    currency: Currency,
    number: String,
    #[sqlx(flatten)]
    levels: InvoiceLevelsRow,
    charge_retry_days: Option<Vec<i16>>,
    method_provider: Option<Provider>,
    method_reference: Option<String>,
    method_since: Option<DateTime<Utc>>,
}

/// What the next attempt of the invoice is decided on; `None` when the account has no such
/// invoice. `failed_at`: a payment the billing system made failed then (it counts as the last
/// attempt when settle has made none).
pub async fn inputs(
    tx: &mut PgConnection,
    rules: &Rules,
    account_id: &str,
    invoice_id: &str,
    failed_at: Option<DateTime<Utc>>,
) -> sqlx::Result<Option<ChargeInputs>> {
    let row: Option<InputsRow> = sqlx::query_as(&format!(
        "SELECT i.amount_due, i.amount_paid, i.currency, i.number, {INVOICE_LEVELS_COLUMNS},
             a.charge_retry_days, m.provider AS method_provider,
             m.reference_id AS method_reference,
             COALESCE(m.on_file_since, m.updated_at) AS method_since
         FROM invoices i
         JOIN invoice_settings s ON s.account_id = i.account_id AND s.invoice_id = i.id
         JOIN accounts a ON a.id = i.account_id
         LEFT JOIN payment_methods m ON m.account_id = i.account_id
             AND m.customer_id = i.customer_id AND m.on_file AND m.status = 'ACTIVE'
         WHERE i.account_id = $1 AND i.id = $2"
    ))
    .bind(account_id)
    .bind(invoice_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let attempts = for_invoice(&mut *tx, account_id, invoice_id).await?;
    let settings = row.levels.levels().resolve(rules.defaults);
    let provider = settings.payment_provider.value;
    let method = match (row.method_provider, row.method_reference, row.method_since) {
        (Some(method_provider), Some(reference), Some(since))
            if PaymentProvider::from(method_provider) == provider =>
        {
            Some(MethodOnFile {
                provider: method_provider,
                reference,
                since,
            })
        }
        _ => None,
    };
    // A stored schedule the table's check let in is a valid one; a wait of 0 would be refused.
    let schedule = row
        .charge_retry_days
        .and_then(|days| {
            let days: Vec<u16> = days.into_iter().filter_map(|d| d.try_into().ok()).collect();
            RetrySchedule::of_days(&days).ok()
        })
        .unwrap_or_else(|| rules.retry_schedule.clone());
    let (made, mut last) = charging::history(attempts.iter().map(|a| (a.state, a.ended_at)));
    if last.is_none() {
        last = failed_at.map(|at| LastAttempt::Failed { at });
    }
    Ok(Some(ChargeInputs {
        facts: ChargeFacts {
            owed: invoice::outstanding(row.amount_due, row.amount_paid),
            auto_charge: settings.auto_charge.value,
            provider,
            method_on_file_since: method.as_ref().map(|m| m.since),
            attempts: made,
            last,
        },
        schedule,
        currency: row.currency,
        number: row.number,
        settings,
        method,
        attempts,
    }))
}

/// What `decide` decided, and the attempt it left open.
#[derive(Debug, Clone)]
pub struct Decided {
    pub next: NextAttempt,
    /// The invoice's open attempt after the decision (scheduled, or being sent).
    pub open: Option<ChargeRow>,
    /// The decision scheduled an attempt that was not scheduled before (or moved one).
    pub scheduled: bool,
}

/// Decides the invoice's next attempt and writes it (see the module doc). The caller holds the
/// invoice's lock. `None`: no such invoice.
pub async fn decide(
    tx: &mut PgConnection,
    rules: &Rules,
    account_id: &str,
    invoice_id: &str,
    failed_at: Option<DateTime<Utc>>,
) -> sqlx::Result<Option<Decided>> {
    let now = rules.clock.now();
    let Some(inputs) = inputs(tx, rules, account_id, invoice_id, failed_at).await? else {
        return Ok(None);
    };
    let next = charging::next_attempt(&inputs.facts, &inputs.schedule, now);
    let open = inputs.attempts.iter().find(|a| a.state.is_open()).cloned();
    let due = match next {
        NextAttempt::Now { .. } => Some(now),
        NextAttempt::At { at, .. } => Some(at),
        NextAttempt::None(_) => None,
    };
    let written = match (due, open) {
        (Some(due), Some(open)) if open.state == ChargeState::Scheduled => {
            let moved = open.due_at != due;
            let row = sqlx::query_as(&format!(
                "UPDATE charges SET due_at = $4, updated_at = now()
                 WHERE account_id = $1 AND invoice_id = $2 AND number = $3 RETURNING {COLUMNS}"
            ))
            .bind(account_id)
            .bind(invoice_id)
            .bind(open.number)
            .bind(due)
            .fetch_one(&mut *tx)
            .await?;
            (Some(row), moved)
        }
        // Being sent: its answer decides what follows.
        (_, Some(open)) if open.state == ChargeState::Sending => (Some(open), false),
        (Some(due), _) => {
            let number = inputs.attempts.last().map_or(1, |a| a.number + 1);
            let key = idempotency_key(
                account_id,
                invoice_id,
                u32::try_from(number).unwrap_or(u32::MAX),
            );
            let row = sqlx::query_as(&format!(
                "INSERT INTO charges (account_id, invoice_id, number, idempotency_key, state, due_at)
                 VALUES ($1, $2, $3, $4, 'SCHEDULED', $5) RETURNING {COLUMNS}"
            ))
            .bind(account_id)
            .bind(invoice_id)
            .bind(number)
            .bind(key)
            .bind(due)
            .fetch_one(&mut *tx)
            .await?;
            (Some(row), true)
        }
        (None, Some(open)) => {
            let NextAttempt::None(why) = next else {
                unreachable!("no due time only when no attempt follows")
            };
            let reason = Some(why.as_str());
            end(
                tx,
                &open,
                MovedBy::Settle,
                ChargeState::Skipped,
                reason,
                None,
            )
            .await?;
            (None, false)
        }
        (None, None) => (None, false),
    };
    let (open, scheduled) = written;
    // A retry: an attempt scheduled after one that failed (a first attempt is announced when it
    // is requested).
    if let (true, Some(row), Some(_), Some(method)) =
        (scheduled, &open, inputs.facts.last, &inputs.method)
    {
        let data = ChargeData {
            invoice_id: invoice_id.to_owned(),
            attempt: row.number,
            provider: method.provider,
            amount: None,
            currency: inputs.currency,
            due_at: row.due_at,
            idempotency_key: row.idempotency_key.clone(),
        };
        announce(
            tx,
            account_id,
            ReconciliationEvent::ChargeRetryScheduled,
            data,
            now,
        )
        .await?;
    }
    Ok(Some(Decided {
        next,
        open,
        scheduled,
    }))
}

/// Writes a charge's reconciliation event to the outbox, and wakes the relay.
async fn announce(
    tx: &mut PgConnection,
    account_id: &str,
    kind: fn(ChargeData) -> ReconciliationEvent,
    data: ChargeData,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let event = kind(data.clone());
    let message = Message::of_charge(&event, &data, now, account_id);
    let row = OutboxRow::of(&message).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    outbox::insert(&mut *tx, account_id, &[row]).await?;
    outbox::notify_relay(&mut *tx).await
}

/// Who moves an attempt, which says from which states it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovedBy {
    /// settle itself, before a send: a scheduled attempt skipped or cancelled.
    Settle,
    /// The provider's answer to the charger's send: only the send it answers (a webhook that came
    /// first knows more, and is not overwritten).
    Answer,
    /// The payment's webhooks: whatever the provider still reports on (a GoCardless retry that
    /// failed in the end, a late failure after a success, a card its holder authenticated).
    Webhook,
}

impl MovedBy {
    fn movable_states(self) -> &'static [&'static str] {
        match self {
            Self::Settle => &["SCHEDULED"],
            Self::Answer => &["SENDING"],
            Self::Webhook => &[
                "SENDING",
                "SENT",
                "SUCCEEDED",
                "FAILED",
                "NEEDS_AUTHENTICATION",
                "PROVIDER_RETRIES",
            ],
        }
    }
}

/// Moves attempt `charge` to `state` (a final one, or `SENT`), with the reason and the provider's
/// payment when known, if `by` may move it from where it is (`MovedBy`). Whether it changed.
pub async fn end(
    tx: &mut PgConnection,
    charge: &ChargeRow,
    by: MovedBy,
    state: ChargeState,
    reason: Option<&str>,
    provider_payment_id: Option<&str>,
) -> sqlx::Result<bool> {
    let ends = !matches!(state, ChargeState::Sent | ChargeState::Sending);
    let changed = sqlx::query(
        "UPDATE charges SET state = $4, reason = COALESCE($5, reason),
             provider_payment_id = COALESCE(provider_payment_id, $6),
             ended_at = CASE WHEN $7 THEN now() ELSE ended_at END,
             lease_until = NULL, updated_at = now()
         WHERE account_id = $1 AND invoice_id = $2 AND number = $3
           AND state = ANY($8) AND state <> $4",
    )
    .bind(&charge.account_id)
    .bind(&charge.invoice_id)
    .bind(charge.number)
    .bind(state)
    .bind(reason)
    .bind(provider_payment_id)
    .bind(ends)
    .bind(by.movable_states())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 0 && provider_payment_id.is_some() {
        // Ended already (by the charger's answer, or the webhook): the payment's id is still news
        // when the provider's answer did not name it.
        sqlx::query(
            "UPDATE charges SET provider_payment_id = $4, updated_at = now()
             WHERE account_id = $1 AND invoice_id = $2 AND number = $3
               AND provider_payment_id IS NULL",
        )
        .bind(&charge.account_id)
        .bind(&charge.invoice_id)
        .bind(charge.number)
        .bind(provider_payment_id)
        .execute(&mut *tx)
        .await?;
    }
    Ok(changed == 1)
}

/// The attempt that made a provider's payment: by the payment's id once its answer was stored,
/// or by the idempotency key the payment's metadata carries back (a webhook may come first).
pub async fn of_payment(
    tx: &mut PgConnection,
    account_id: &str,
    provider_payment_id: &str,
    key: Option<&str>,
) -> sqlx::Result<Option<ChargeRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM charges
         WHERE account_id = $1 AND (provider_payment_id = $2 OR idempotency_key = $3)
         ORDER BY number DESC LIMIT 1"
    ))
    .bind(account_id)
    .bind(provider_payment_id)
    .bind(key)
    .fetch_optional(tx)
    .await
}

/// Attempts that came due by `now`: scheduled ones, and sends whose lease ran out (a crashed
/// sender's, or a provider's backoff). (account, invoice) pairs, oldest due first.
pub async fn due(
    db: impl sqlx::PgExecutor<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT account_id, invoice_id FROM charges
         WHERE (state = 'SCHEDULED' AND due_at <= $1) OR (state = 'SENDING' AND lease_until <= $1)
         ORDER BY due_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Locks the invoice's row (every writer of its money and attempts holds it); whether it exists.
pub async fn lock_invoice(
    tx: &mut PgConnection,
    account_id: &str,
    invoice_id: &str,
) -> sqlx::Result<bool> {
    let found = sqlx::query("SELECT 1 FROM invoices WHERE account_id = $1 AND id = $2 FOR UPDATE")
        .bind(account_id)
        .bind(invoice_id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(found.is_some())
}

/// What a send asks the provider for: fixed when the attempt is first taken.
#[derive(Debug, Clone)]
pub struct SendTerms<'a> {
    pub provider: Provider,
    pub amount: i64,
    pub currency: Currency,
    pub method_reference: &'a str,
}

/// Takes the invoice's open attempt for a send until `lease_until`: a scheduled one with `terms`
/// (announced: `charge.requested`), a sending one again with its own. The row as taken.
pub async fn take(
    tx: &mut PgConnection,
    charge: &ChargeRow,
    terms: Option<&SendTerms<'_>>,
    now: DateTime<Utc>,
    lease: Duration,
) -> sqlx::Result<ChargeRow> {
    let taken: ChargeRow = sqlx::query_as(&format!(
        "UPDATE charges SET state = 'SENDING', sends = sends + 1, lease_until = $4,
             sent_at = COALESCE(sent_at, $5),
             provider = COALESCE(provider, $6), amount = COALESCE(amount, $7),
             currency = COALESCE(currency, $8), method_reference = COALESCE(method_reference, $9),
             updated_at = now()
         WHERE account_id = $1 AND invoice_id = $2 AND number = $3 RETURNING {COLUMNS}"
    ))
    .bind(&charge.account_id)
    .bind(&charge.invoice_id)
    .bind(charge.number)
    .bind(now + lease)
    .bind(now)
    .bind(terms.map(|t| t.provider))
    .bind(terms.map(|t| t.amount))
    .bind(terms.map(|t| t.currency))
    .bind(terms.map(|t| t.method_reference))
    .fetch_one(&mut *tx)
    .await?;
    if let Some(terms) = terms {
        let data = ChargeData {
            invoice_id: taken.invoice_id.clone(),
            attempt: taken.number,
            provider: terms.provider,
            amount: Some(terms.amount),
            currency: terms.currency,
            due_at: taken.due_at,
            idempotency_key: taken.idempotency_key.clone(),
        };
        announce(
            tx,
            &taken.account_id,
            ReconciliationEvent::ChargeRequested,
            data,
            now,
        )
        .await?;
    }
    Ok(taken)
}

/// A send the provider asked to repeat later (429, 5xx, unreachable): the attempt stays in
/// flight, with the same key and terms, until `retry_at`. Not a failed charge.
pub async fn send_later(
    tx: &mut PgConnection,
    charge: &ChargeRow,
    retry_at: DateTime<Utc>,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE charges SET lease_until = $4, reason = $5, updated_at = now()
         WHERE account_id = $1 AND invoice_id = $2 AND number = $3 AND state = 'SENDING'",
    )
    .bind(&charge.account_id)
    .bind(&charge.invoice_id)
    .bind(charge.number)
    .bind(retry_at)
    .bind(reason)
    .execute(tx)
    .await?;
    Ok(())
}

/// Decides again the next attempt of each of the customer's invoices that still owe money (a
/// method put on file, or usable again, may bring an attempt forward or make one possible),
/// locking them in id order as the worker does.
pub async fn decide_for_customer(
    tx: &mut PgConnection,
    rules: &Rules,
    account_id: &str,
    customer_id: &str,
) -> sqlx::Result<()> {
    let invoices: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM invoices
         WHERE account_id = $1 AND customer_id = $2 AND amount_paid < amount_due
         ORDER BY id FOR UPDATE",
    )
    .bind(account_id)
    .bind(customer_id)
    .fetch_all(&mut *tx)
    .await?;
    for invoice_id in invoices {
        decide(tx, rules, account_id, &invoice_id, None).await?;
    }
    Ok(())
}

/// Attempts of every account (or of `account_id`), in `state` if given, the latest due first:
/// (account, invoice, attempt).
pub async fn list(
    db: impl sqlx::PgExecutor<'_>,
    account_id: Option<&str>,
    state: Option<ChargeState>,
    limit: i64,
) -> sqlx::Result<Vec<ChargeRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM charges
         WHERE ($1::text IS NULL OR account_id = $1) AND ($2::text IS NULL OR state = $2)
         ORDER BY due_at DESC, account_id, invoice_id, number DESC LIMIT $3"
    ))
    .bind(account_id)
    .bind(state)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Makes the invoice's waiting attempt due at `now`: a scheduled one, or a send waiting for the
/// provider. Its number, if one was waiting.
pub async fn retry_now(
    db: impl sqlx::PgExecutor<'_>,
    account_id: &str,
    invoice_id: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar(
        "UPDATE charges SET
             due_at = CASE WHEN state = 'SCHEDULED' THEN $3 ELSE due_at END,
             lease_until = CASE WHEN state = 'SENDING' THEN $3 ELSE lease_until END,
             updated_at = now()
         WHERE account_id = $1 AND invoice_id = $2 AND state IN ('SCHEDULED', 'SENDING')
         RETURNING number",
    )
    .bind(account_id)
    .bind(invoice_id)
    .bind(now)
    .fetch_optional(db)
    .await
}

/// What `cancel` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// This attempt is `CANCELLED`: the scheduled one, or a new row that stops the ones after.
    Cancelled(i32),
    /// An attempt is being sent: it may be at the provider already, and is not cancelled.
    Sending(i32),
    NoInvoice,
}

/// Stops the invoice's automatic charging, with `reason`: its scheduled attempt is cancelled, or,
/// with none scheduled, a cancelled one is recorded so that no later decision schedules another.
pub async fn cancel(
    db: &sqlx::PgPool,
    account_id: &str,
    invoice_id: &str,
    reason: &str,
) -> sqlx::Result<Stopped> {
    let mut tx = db.begin().await?;
    if !lock_invoice(&mut tx, account_id, invoice_id).await? {
        return Ok(Stopped::NoInvoice);
    }
    let attempts = for_invoice(&mut *tx, account_id, invoice_id).await?;
    let open = attempts.iter().find(|a| a.state.is_open());
    let stopped = match open {
        Some(sending) if sending.state == ChargeState::Sending => {
            return Ok(Stopped::Sending(sending.number));
        }
        Some(scheduled) => {
            end(
                &mut tx,
                scheduled,
                MovedBy::Settle,
                ChargeState::Cancelled,
                Some(reason),
                None,
            )
            .await?;
            scheduled.number
        }
        None => {
            let number = attempts.last().map_or(1, |a| a.number + 1);
            let key = idempotency_key(
                account_id,
                invoice_id,
                u32::try_from(number).unwrap_or(u32::MAX),
            );
            sqlx::query(
                "INSERT INTO charges (account_id, invoice_id, number, idempotency_key, state,
                     due_at, reason, ended_at)
                 VALUES ($1, $2, $3, $4, 'CANCELLED', now(), $5, now())",
            )
            .bind(account_id)
            .bind(invoice_id)
            .bind(number)
            .bind(key)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
            number
        }
    };
    tx.commit().await?;
    Ok(Stopped::Cancelled(stopped))
}
