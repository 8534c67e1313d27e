//! The worker's transaction: one provider event in, its effects out, atomically.
//!
//! ```text
//! BEGIN
//!   INSERT inbox row (provider, event id) ON CONFLICT DO NOTHING  → already there: skip
//!     + lock the invoice (FOR UPDATE), same statement             → one event per invoice at a time
//!   read the payment, its siblings and the settings               → sees every earlier commit
//!   decide the payment's transition (reconcile::payment)           → pure
//!   derive the invoice's totals (reconcile::invoice)               → pure
//!   write payment + invoice totals + outbox rows, one statement    → reconciliation events, stable ids
//! COMMIT                                                           → then ack
//! ```
//!
//! Five round trips for a payment event. The read after the lock cannot join the lock's statement:
//! under READ COMMITTED that statement's snapshot is taken before a wait for the lock, and would
//! miss what the transaction it waited for wrote.
//!
//! A crash anywhere before COMMIT applies nothing; the redelivery starts again. A redelivery after
//! COMMIT finds the inbox row and changes nothing. That, not luck, is why effects happen once.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::postgres::PgArguments;
use sqlx::{FromRow, PgConnection, PgPool, Postgres, Row};

use crate::config::Settings;
use crate::reconcile::events::{DomainEvent, MethodEvent, PaymentEvent, interpret};
use crate::reconcile::invoice::{self, InvoiceStatus};
use crate::reconcile::methods::MethodProvider;
use crate::reconcile::money::Currency;
use crate::reconcile::payment::{Decision, PaymentSignal, PaymentStatus, decide};
use crate::repository::{self, customers, invoices};

/// One queued provider event, as the receiver published it.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub provider: MethodProvider,
    pub event_id: String,
    pub event_type: String,
    pub received_at: DateTime<Utc>,
    pub body: Vec<u8>,
}

/// What happened to an event; recorded in the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already in the inbox: delivered before, nothing done.
    Duplicate,
    /// Older than the payment's last applied event, or a move the transition table refuses.
    Stale,
    Ignored(&'static str),
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
            Self::Ignored(_) => "ignored",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Worth retrying later: the database is unavailable, a serialization failure, a lock timeout.
    #[error("transient: {0}")]
    Transient(#[from] sqlx::Error),
    /// The invoice may simply not be registered yet: retried, then dead-lettered.
    #[error("invoice `{0}` is not registered")]
    InvoiceNotFound(String),
    /// Retrying cannot help: dead-lettered at once.
    #[error("{reason}: {detail}")]
    Permanent {
        reason: &'static str,
        detail: String,
    },
}

impl ApplyError {
    /// The dead-letter reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Transient(_) => "transient_failures_exhausted",
            Self::InvoiceNotFound(_) => "invoice_not_found",
            Self::Permanent { reason, .. } => reason,
        }
    }
}

/// Applies one event in one transaction.
pub async fn apply(
    db: &PgPool,
    settings: &Settings,
    envelope: &Envelope,
) -> Result<Outcome, ApplyError> {
    let unparseable = |detail: String| ApplyError::Permanent {
        reason: "unparseable",
        detail,
    };
    // The inbox keeps the body exactly as it arrived; JSON is UTF-8, so this text is what parses.
    let raw_payload =
        std::str::from_utf8(&envelope.body).map_err(|e| unparseable(e.to_string()))?;
    let payload: Value =
        serde_json::from_str(raw_payload).map_err(|e| unparseable(e.to_string()))?;
    let event = interpret(
        envelope.provider,
        &envelope.event_type,
        &payload,
        settings.worker.gocardless_collected_at,
    )
    .map_err(|error| unparseable(error.to_string()))?;
    let account_id = settings.account.id.as_str();

    let mut tx = db.begin().await?;
    let mut context = Context {
        settings,
        envelope,
        account_id,
        raw_payload,
        outbox: Vec::new(),
    };
    // A payment event is recorded by the statement that locks its invoice (the hot path, one round
    // trip fewer); every other event is recorded first.
    let recorded_first = !matches!(event, DomainEvent::Payment(_));
    if recorded_first && !context.record_in_inbox(&mut tx).await? {
        return Ok(Outcome::Duplicate);
    }
    let outcome = match event {
        DomainEvent::Payment(event) => apply_payment(&mut tx, &mut context, event).await?,
        DomainEvent::Method(event) => apply_method(&mut tx, &mut context, event).await?,
        DomainEvent::Ignored(why) => Outcome::Ignored(why),
    };
    if outcome == Outcome::Duplicate {
        // Nothing was written; dropping the transaction releases the invoice's lock.
        return Ok(outcome);
    }
    if outcome != Outcome::Applied {
        sqlx::query("UPDATE webhook_events SET outcome = $3 WHERE provider = $1 AND event_id = $2")
            .bind(envelope.provider.as_str())
            .bind(&envelope.event_id)
            .bind(outcome.as_str())
            .execute(&mut *tx)
            .await?;
    }
    context.flush_outbox(&mut tx).await?;
    tx.commit().await?;
    Ok(outcome)
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

struct Context<'a> {
    settings: &'a Settings,
    envelope: &'a Envelope,
    account_id: &'a str,
    /// The event as it arrived, for the inbox.
    raw_payload: &'a str,
    /// Reconciliation events of this transaction: (id, type, JSON body), written in one statement.
    outbox: Vec<(String, &'static str, String)>,
}

/// Records the event in the inbox, as applied (the common case; another outcome is written over
/// it later): $1 provider, $2 event id, $3 account, $4 type, $5 raw JSON, $6 received time. Writes
/// nothing when the event is there already. A macro so the invoice lock can share it.
macro_rules! inbox_insert {
    () => {
        "INSERT INTO webhook_events (provider, event_id, account_id, event_type, payload, received_at, outcome)
         VALUES ($1, $2, $3, $4, $5::json, $6, 'applied')
         ON CONFLICT (provider, event_id) DO NOTHING"
    };
}

/// Writes the queued reconciliation events: $1 the account, $2 ids, $3 types, $4 JSON bodies.
/// A macro so that `PaymentChange` can end its statement with the same insert.
macro_rules! outbox_insert {
    () => {
        "INSERT INTO outbox (account_id, message_id, routing_key, payload)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[]::json[])
         ON CONFLICT (message_id) DO NOTHING"
    };
}

impl<'a> Context<'a> {
    /// Binds `inbox_insert!`'s parameters, $1 to $6.
    fn bind_inbox(&self, query: PgQuery<'a>) -> PgQuery<'a> {
        query
            .bind(self.envelope.provider.as_str())
            .bind(&self.envelope.event_id)
            .bind(self.account_id)
            .bind(&self.envelope.event_type)
            .bind(self.raw_payload)
            .bind(self.envelope.received_at)
    }

    /// Records the event in the inbox; false when it was there already (a redelivery).
    async fn record_in_inbox(&self, tx: &mut PgConnection) -> sqlx::Result<bool> {
        let inserted = self
            .bind_inbox(sqlx::query(inbox_insert!()))
            .execute(tx)
            .await?
            .rows_affected();
        Ok(inserted == 1)
    }

    /// Queues a reconciliation event for the outbox. Its id is derived from the provider event and
    /// the type, so replays and redeliveries can never produce a second one.
    fn emit(&mut self, event_type: &'static str, occurred_at: DateTime<Utc>, data: Value) {
        let id = format!(
            "{}:{}:{}",
            self.envelope.provider.as_str().to_lowercase(),
            self.envelope.event_id,
            event_type
        );
        let payload = json!({
            "id": id,
            "type": event_type,
            "occurredAt": occurred_at,
            "accountId": self.account_id,
            "data": data,
        });
        self.outbox.push((id, event_type, payload.to_string()));
    }

    /// The queued reconciliation events as the columns `outbox_insert!` binds ($2, $3, $4).
    fn take_outbox(&mut self) -> (Vec<String>, Vec<&'static str>, Vec<String>) {
        self.outbox.drain(..).fold(
            (vec![], vec![], vec![]),
            |(mut ids, mut types, mut payloads), (id, kind, payload)| {
                ids.push(id);
                types.push(kind);
                payloads.push(payload);
                (ids, types, payloads)
            },
        )
    }

    async fn flush_outbox(&mut self, tx: &mut PgConnection) -> sqlx::Result<()> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let (ids, types, payloads) = self.take_outbox();
        sqlx::query(outbox_insert!())
            .bind(self.account_id)
            .bind(&ids)
            .bind(&types)
            .bind(&payloads)
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// Everything decided about one payment event under the invoice's lock: the payment's row, the
/// invoice's totals and the queued reconciliation events are then written in one statement, one
/// round trip, instead of one each.
struct PaymentChange<'a> {
    payment_id: &'a str,
    /// A payment settle sees for the first time.
    insert: bool,
    /// A known payment the event moves.
    update: bool,
    status: PaymentStatus,
    amount: i64,
    failure: Option<&'a crate::reconcile::events::Failure>,
    /// The event's provider time, when the event was applied.
    applied_at: Option<DateTime<Utc>>,
    effective: crate::reconcile::settings::EffectiveSettings,
    /// The invoice's new amount paid and status, when they changed.
    invoice_totals: Option<(i64, InvoiceStatus)>,
}

const WRITE_PAYMENT_CHANGE: &str = concat!(
    "WITH new_payment AS (
         INSERT INTO payments (id, account_id, invoice_id, provider, provider_payment_id, amount,
             currency, status, collected, failure_code, failure_message, last_event_at,
             effective_provider, effective_auto_charge)
         SELECT $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18
         WHERE $19
     ), moved_payment AS (
         UPDATE payments SET status = $12, collected = $13, amount = $10,
             failure_code = CASE WHEN $21 THEN $14 ELSE failure_code END,
             failure_message = CASE WHEN $21 THEN $15 ELSE failure_message END,
             last_event_at = GREATEST(last_event_at, $16),
             effective_provider = $17, effective_auto_charge = $18, updated_at = now()
         WHERE id = $5 AND $20
     ), invoice_totals AS (
         UPDATE invoices SET amount_paid = $22, status = $23, updated_at = now()
         WHERE id = $7 AND $23 IS NOT NULL
     )
     ",
    outbox_insert!()
);

impl PaymentChange<'_> {
    async fn write(
        &self,
        tx: &mut PgConnection,
        ctx: &mut Context<'_>,
        invoice: &invoices::InvoiceRow,
        event: &PaymentEvent,
    ) -> sqlx::Result<()> {
        let (ids, types, payloads) = ctx.take_outbox();
        let (amount_paid, invoice_status) = self.invoice_totals.unzip();
        sqlx::query(WRITE_PAYMENT_CHANGE)
            .bind(ctx.account_id)
            .bind(&ids)
            .bind(&types)
            .bind(&payloads)
            .bind(self.payment_id)
            .bind(&invoice.account_id)
            .bind(&invoice.id)
            .bind(event.provider.as_str())
            .bind(&event.provider_payment_id)
            .bind(self.amount)
            .bind(&invoice.currency)
            .bind(self.status.as_str())
            .bind(self.status.is_collected())
            .bind(self.failure.and_then(|f| f.code.as_deref()))
            .bind(self.failure.and_then(|f| f.message.as_deref()))
            .bind(self.applied_at)
            .bind(self.effective.payment_provider.value.as_str())
            .bind(self.effective.auto_charge.value)
            .bind(self.insert)
            .bind(self.update)
            .bind(self.failure.is_some())
            .bind(amount_paid)
            .bind(invoice_status.map(InvoiceStatus::as_str))
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// What the worker needs to know about an invoice's payments and settings, read in one query
/// once the invoice is locked (so it sees every change committed before the lock was granted).
#[derive(sqlx::FromRow)]
struct PaymentContext {
    payment_id: Option<String>,
    payment_amount: Option<i64>,
    payment_status: Option<String>,
    payment_last_event_at: Option<DateTime<Utc>>,
    /// Collected amounts of the invoice's other payments.
    others_collected: i64,
    /// The status of the other payment with the latest provider event, and that event's time.
    latest_other_status: Option<String>,
    latest_other_at: Option<DateTime<Utc>>,
    invoice_provider: Option<String>,
    invoice_auto: Option<bool>,
    schedule_provider: Option<String>,
    schedule_auto: Option<bool>,
    customer_provider: Option<String>,
    customer_auto: Option<bool>,
}

impl PaymentContext {
    fn effective(
        &self,
        defaults: crate::reconcile::settings::AccountDefaults,
    ) -> crate::reconcile::settings::EffectiveSettings {
        use crate::reconcile::settings::{LevelSettings, PaymentProvider, resolve};
        let level = |provider: &Option<String>, auto_charge: Option<bool>| LevelSettings {
            payment_provider: provider.as_deref().and_then(PaymentProvider::parse),
            auto_charge,
        };
        resolve(
            Some(level(&self.invoice_provider, self.invoice_auto)),
            Some(level(&self.schedule_provider, self.schedule_auto)),
            Some(level(&self.customer_provider, self.customer_auto)),
            defaults,
        )
    }
}

const PAYMENT_CONTEXT: &str = "
    SELECT p.id AS payment_id, p.amount AS payment_amount, p.status AS payment_status,
           p.last_event_at AS payment_last_event_at,
           (SELECT COALESCE(sum(o.amount), 0)::bigint FROM payments o
             WHERE o.invoice_id = $3 AND o.collected AND o.id IS DISTINCT FROM p.id) AS others_collected,
           latest.status AS latest_other_status, latest.last_event_at AS latest_other_at,
           i_s.payment_provider AS invoice_provider, i_s.auto_charge AS invoice_auto,
           b_s.payment_provider AS schedule_provider, b_s.auto_charge AS schedule_auto,
           c_s.payment_provider AS customer_provider, c_s.auto_charge AS customer_auto
    FROM (SELECT 1) AS one
    LEFT JOIN payments p ON p.provider = $1 AND p.provider_payment_id = $2
    LEFT JOIN LATERAL (
        SELECT o.status, o.last_event_at FROM payments o
        WHERE o.invoice_id = $3 AND o.id IS DISTINCT FROM p.id
        ORDER BY o.last_event_at DESC NULLS LAST, o.updated_at DESC LIMIT 1
    ) latest ON true
    LEFT JOIN payment_settings i_s ON i_s.level = 'INVOICE' AND i_s.target_id = $3
    LEFT JOIN payment_settings b_s ON b_s.level = 'BILLING_SCHEDULE' AND b_s.target_id = $4
    LEFT JOIN payment_settings c_s ON c_s.level = 'CUSTOMER' AND c_s.target_id = $5";

/// Records the event in the inbox and locks its invoice, in one statement: `recorded` is false for
/// a redelivery, the invoice's columns are NULL when it is not registered. The registered payment's
/// invoice wins over the provider's metadata ($7 provider, $8 provider payment id, $9 invoice ref).
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

async fn apply_payment(
    tx: &mut PgConnection,
    ctx: &mut Context<'_>,
    event: PaymentEvent,
) -> Result<Outcome, ApplyError> {
    let provider = event.provider.as_str();
    // Lock the invoice first: every writer of an invoice's payments and totals holds this lock, so
    // events of one invoice apply one at a time.
    let locked = ctx
        .bind_inbox(sqlx::query(RECORD_AND_LOCK_INVOICE))
        .bind(provider)
        .bind(&event.provider_payment_id)
        .bind(&event.invoice_ref)
        .fetch_one(&mut *tx)
        .await?;
    if !locked.try_get::<bool, _>("recorded")? {
        return Ok(Outcome::Duplicate);
    }
    if locked.try_get::<Option<String>, _>("id")?.is_none() {
        return match &event.invoice_ref {
            Some(invoice_ref) => Err(ApplyError::InvoiceNotFound(invoice_ref.clone())),
            // No registered payment and no invoice reference: not one of ours.
            None => Ok(Outcome::Ignored("payment is not ours")),
        };
    }
    let invoice = invoices::InvoiceRow::from_row(&locked)?;
    if let Some(currency) = &event.currency {
        let currency =
            Currency::parse_any_case(currency).map_err(|detail| ApplyError::Permanent {
                reason: "unparseable",
                detail,
            })?;
        if currency.as_str() != invoice.currency {
            return Err(ApplyError::Permanent {
                reason: "currency_mismatch",
                detail: format!(
                    "{} payment {} is in {currency}, invoice {} is in {}",
                    provider, event.provider_payment_id, invoice.id, invoice.currency
                ),
            });
        }
    }
    // Read after the lock was granted: a new statement sees everything committed before it.
    let known: PaymentContext = sqlx::query_as(PAYMENT_CONTEXT)
        .bind(provider)
        .bind(&event.provider_payment_id)
        .bind(&invoice.id)
        .bind(&invoice.billing_schedule_id)
        .bind(&invoice.customer_id)
        .fetch_one(&mut *tx)
        .await?;
    let effective = known.effective(ctx.settings.account.defaults());
    let effective_provider = effective.payment_provider.value;
    let provider_mismatch =
        crate::reconcile::settings::PaymentProvider::from(event.provider) != effective_provider;

    let current = known
        .payment_status
        .as_deref()
        .and_then(PaymentStatus::parse)
        .unwrap_or(PaymentStatus::Registered);
    let decision = decide(
        current,
        known.payment_last_event_at,
        event.signal,
        event.occurred_at,
    );
    let next = match decision {
        Decision::Apply(next) => next,
        Decision::Stale | Decision::NoChange => current,
    };
    // A payment settle has not seen before is registered now: with the event's amount, else (a
    // GoCardless event carries none) the invoice's outstanding amount.
    let (previous_amount, amount_source) = match known.payment_amount {
        Some(amount) => (
            amount,
            if event.amount.is_some() {
                "event"
            } else {
                "registered_payment"
            },
        ),
        None => match event.amount {
            Some(amount) => (amount, "event"),
            None => (
                (invoice.amount_due - invoice.amount_paid).max(0),
                "invoice_outstanding",
            ),
        },
    };
    // A success carries the amount that actually moved; anything else keeps the attempt's amount.
    let amount = match (next, event.amount) {
        (PaymentStatus::Succeeded, Some(amount)) if matches!(decision, Decision::Apply(_)) => {
            amount
        }
        _ => previous_amount,
    };
    let failure = event
        .failure
        .clone()
        .filter(|_| next == PaymentStatus::Failed);
    let applied = matches!(decision, Decision::Apply(_)) && event.signal != PaymentSignal::Recorded;
    let new_payment = known.payment_id.is_none();
    let payment_id = known
        .payment_id
        .clone()
        .unwrap_or_else(|| repository::new_id("pay"));
    let mut change = PaymentChange {
        payment_id: &payment_id,
        insert: new_payment,
        update: applied && !new_payment,
        status: next,
        amount,
        failure: failure.as_ref(),
        applied_at: applied.then_some(event.occurred_at),
        effective,
        invoice_totals: None,
    };
    if !applied {
        // A payment settle has not seen before is recorded even when no event applies to it.
        if new_payment {
            change.write(tx, ctx, &invoice, &event).await?;
        }
        return Ok(
            if event.signal == PaymentSignal::Recorded && matches!(decision, Decision::Apply(_)) {
                Outcome::Applied
            } else {
                Outcome::Stale
            },
        );
    }

    // The invoice's totals follow from its payments (reconcile::invoice, pure).
    let mut collected = vec![known.others_collected];
    if next.is_collected() {
        collected.push(amount);
    }
    let this_event_at = known
        .payment_last_event_at
        .map_or(event.occurred_at, |last| last.max(event.occurred_at));
    let latest_failed = match known.latest_other_at {
        Some(other_at) if other_at > this_event_at => {
            known.latest_other_status.as_deref() == Some("FAILED")
        }
        _ => next == PaymentStatus::Failed,
    };
    let before = InvoiceStatus::parse(&invoice.status).unwrap_or(InvoiceStatus::Open);
    let totals = invoice::totals(invoice.amount_due, &collected, latest_failed);
    if totals.amount_paid != invoice.amount_paid || totals.status != before {
        change.invoice_totals = Some((totals.amount_paid, totals.status));
    }

    let payment_data = json!({
        "paymentId": payment_id,
        "invoiceId": invoice.id,
        "provider": provider,
        "providerPaymentId": event.provider_payment_id,
        "amount": amount,
        "currency": invoice.currency,
        "amountSource": amount_source,
        "status": next.as_str(),
        "failureCode": failure.as_ref().and_then(|f| f.code.clone()),
        "failureMessage": failure.as_ref().and_then(|f| f.message.clone()),
        "providerWillRetry": event.provider_will_retry,
        "effectivePaymentProvider": effective_provider.as_str(),
        "providerMismatch": provider_mismatch,
    });
    match next {
        PaymentStatus::Succeeded if current != PaymentStatus::Succeeded => {
            ctx.emit("payment.succeeded", event.occurred_at, payment_data);
        }
        PaymentStatus::Failed => ctx.emit("payment.failed", event.occurred_at, payment_data),
        _ => {}
    }
    let invoice_data = json!({
        "invoiceId": invoice.id,
        "customerId": invoice.customer_id,
        "number": invoice.number,
        "currency": invoice.currency,
        "amountDue": invoice.amount_due,
        "amountPaid": totals.amount_paid,
        "status": totals.status.as_str(),
        "overpaid": totals.overpaid,
        "paymentId": payment_id,
        "provider": provider,
        "effectivePaymentProvider": effective_provider.as_str(),
        "providerMismatch": provider_mismatch,
    });
    for event_type in invoice::status_events(before, totals, invoice.amount_paid) {
        ctx.emit(event_type, event.occurred_at, invoice_data.clone());
    }
    change.write(tx, ctx, &invoice, &event).await?;
    // A failure on an invoice that is still not paid tells the customer and the business, once
    // per (payment, failure event): the rows' key makes redeliveries and replays write nothing.
    if next == PaymentStatus::Failed && totals.status != InvoiceStatus::Paid {
        let will_retry = retry_outlook(tx, &invoice.customer_id, &event, effective).await?;
        notify_failure(tx, ctx, &invoice, &payment_id, amount, &event, will_retry).await?;
    }
    if totals.overpaid {
        tracing::warn!(invoice = %invoice.id, amount_paid = totals.amount_paid, amount_due = invoice.amount_due, "invoice overpaid");
    }
    if provider_mismatch {
        tracing::info!(invoice = %invoice.id, provider, effective = effective_provider.as_str(), "payment from a provider other than the effective one");
    }
    Ok(Outcome::Applied)
}

/// Whether the failed payment will be retried, and why, in one sentence for the mails.
async fn retry_outlook(
    tx: &mut PgConnection,
    customer_id: &str,
    event: &PaymentEvent,
    effective: crate::reconcile::settings::EffectiveSettings,
) -> sqlx::Result<(bool, String)> {
    if let Some(provider_retries) = event.provider_will_retry {
        return Ok(if provider_retries {
            (
                true,
                "GoCardless will retry the payment automatically in the next few days.".into(),
            )
        } else {
            (false, "GoCardless will not retry this payment.".into())
        });
    }
    let usable_method: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM payment_methods WHERE customer_id = $1 AND on_file AND status = 'ACTIVE')",
    )
    .bind(customer_id)
    .fetch_one(&mut *tx)
    .await?;
    Ok(match (effective.auto_charge.value, usable_method) {
        (true, true) => (
            true,
            "We will retry the payment automatically with the payment method on file.".into(),
        ),
        (true, false) => (
            false,
            "There is no usable payment method on file to retry with.".into(),
        ),
        (false, _) => (
            false,
            "Automatic collection is off for this invoice.".into(),
        ),
    })
}

async fn notify_failure(
    tx: &mut PgConnection,
    ctx: &Context<'_>,
    invoice: &invoices::InvoiceRow,
    payment_id: &str,
    amount: i64,
    event: &PaymentEvent,
    (will_retry, retry_explanation): (bool, String),
) -> sqlx::Result<()> {
    let customer = customers::get(&mut *tx, &invoice.customer_id)
        .await?
        .expect("an invoice's customer exists (foreign key)");
    let recipients = if customer.billing_emails.is_empty() {
        customer.email.iter().cloned().collect()
    } else {
        customer.billing_emails.clone()
    };
    let currency = Currency::parse(&invoice.currency).expect("stored currencies are valid");
    let failure = event
        .failure
        .clone()
        .unwrap_or(crate::reconcile::events::Failure {
            code: None,
            message: None,
        });
    let notifications = &ctx.settings.notifications;
    let notice = crate::notify::FailureNotice {
        customer_id: customer.id.clone(),
        customer_name: customer
            .contact_name
            .clone()
            .unwrap_or_else(|| customer.legal_name.clone()),
        invoice_id: invoice.id.clone(),
        invoice_number: invoice.number.clone(),
        amount: crate::reconcile::money::format_amount(
            crate::reconcile::money::MinorUnits::new(amount).expect("stored amounts are ≥ 0"),
            currency,
        ),
        provider: event.provider.as_str().to_owned(),
        provider_payment_id: event.provider_payment_id.clone(),
        payment_id: payment_id.to_owned(),
        event_id: ctx.envelope.event_id.clone(),
        reason: crate::notify::plain_reason(failure.code.as_deref(), failure.message.as_deref()),
        failure_code: failure.code,
        failure_message: failure.message,
        will_retry,
        retry_explanation,
        payment_link: invoice.payment_link.clone(),
        business_name: notifications.business_name.clone(),
        customer_recipients: recipients.join(", "),
    };
    let business = Some(notifications.business_email.as_str()).filter(|e| !e.is_empty());
    crate::notify::enqueue(tx, ctx.account_id, &notice, &recipients, business).await
}

async fn apply_method(
    tx: &mut PgConnection,
    ctx: &mut Context<'_>,
    event: MethodEvent,
) -> Result<Outcome, ApplyError> {
    use crate::repository::methods::{MethodWrite, PaymentMethodRow};
    let (row, occurred_at): (Option<PaymentMethodRow>, DateTime<Utc>) = match event {
        MethodEvent::StripeMethod {
            customer,
            method_id,
            method_type,
            on_file,
            exp_month,
            exp_year,
            billing_details,
            details,
            occurred_at,
        } => {
            let customer_row = match &customer {
                Some(stripe_customer) => {
                    customers::find_by_provider_customer_id(
                        &mut *tx,
                        ctx.account_id,
                        MethodProvider::Stripe,
                        stripe_customer,
                    )
                    .await?
                }
                None => None,
            };
            let Some(customer_row) = customer_row else {
                return Ok(Outcome::Ignored("customer is not ours"));
            };
            if newer_method_event_exists(tx, "STRIPE", &format!("%/{method_id}"), occurred_at)
                .await?
            {
                return Ok(Outcome::Stale);
            }
            let reference = format!("{}/{method_id}", customer.expect("found by it"));
            let write = MethodWrite {
                account_id: ctx.account_id,
                customer_id: &customer_row.id,
                provider: "STRIPE",
                method_type: &method_type,
                reference_id: &reference,
                status: "ACTIVE",
                billing_details,
                card_exp_month: exp_month,
                card_exp_year: exp_year,
                details,
            };
            let row = if on_file {
                crate::repository::methods::put_on_file(tx, &write).await?
            } else {
                crate::repository::methods::upsert(&mut *tx, &write, false).await?
            };
            (Some(row), occurred_at)
        }
        MethodEvent::StripeDetached {
            method_id,
            occurred_at,
        } => {
            if newer_method_event_exists(tx, "STRIPE", &format!("%/{method_id}"), occurred_at)
                .await?
            {
                return Ok(Outcome::Stale);
            }
            let row =
                set_method_status(tx, "STRIPE", &format!("%/{method_id}"), false, occurred_at)
                    .await?;
            (row, occurred_at)
        }
        MethodEvent::Mandate {
            mandate,
            usable,
            occurred_at,
            ..
        } => {
            if newer_method_event_exists(tx, "GOCARDLESS", &mandate, occurred_at).await? {
                return Ok(Outcome::Stale);
            }
            (
                set_method_status(tx, "GOCARDLESS", &mandate, usable, occurred_at).await?,
                occurred_at,
            )
        }
        MethodEvent::MandateReplaced {
            mandate,
            new_mandate,
            occurred_at,
        } => {
            let Some(old) =
                set_method_status(tx, "GOCARDLESS", &mandate, false, occurred_at).await?
            else {
                return Ok(Outcome::Ignored("mandate is not ours"));
            };
            let write = MethodWrite {
                account_id: ctx.account_id,
                customer_id: &old.customer_id,
                provider: "GOCARDLESS",
                method_type: &old.method_type,
                reference_id: &new_mandate,
                status: "ACTIVE",
                billing_details: old.billing_details.as_ref().map(|d| d.0.clone()),
                card_exp_month: None,
                card_exp_year: None,
                details: json!({ "replaces": mandate }),
            };
            let row = crate::repository::methods::put_on_file(tx, &write).await?;
            (Some(row), occurred_at)
        }
    };
    let Some(row) = row else {
        return Ok(Outcome::Ignored("payment method is not ours"));
    };
    sqlx::query(
        "UPDATE payment_methods SET last_event_at = GREATEST(last_event_at, $2) WHERE id = $1",
    )
    .bind(&row.id)
    .bind(occurred_at)
    .execute(&mut *tx)
    .await?;
    let data = json!({
        "customerId": row.customer_id,
        "paymentMethodId": row.id,
        "provider": row.provider,
        "type": row.method_type,
        "referenceId": row.reference_id,
        "status": row.status,
        "onFile": row.on_file,
    });
    ctx.emit("payment_method.updated", occurred_at, data);
    Ok(Outcome::Applied)
}

/// Whether a method matching `reference` (a LIKE pattern) has seen a newer event already.
async fn newer_method_event_exists(
    tx: &mut PgConnection,
    provider: &str,
    reference: &str,
    occurred_at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM payment_methods
                        WHERE provider = $1 AND reference_id LIKE $2 AND last_event_at > $3)",
    )
    .bind(provider)
    .bind(reference)
    .bind(occurred_at)
    .fetch_one(tx)
    .await
}

/// Marks the method usable or not; an unusable method is no longer the one on file.
async fn set_method_status(
    tx: &mut PgConnection,
    provider: &str,
    reference: &str,
    usable: bool,
    occurred_at: DateTime<Utc>,
) -> sqlx::Result<Option<crate::repository::methods::PaymentMethodRow>> {
    sqlx::query_as(
        "UPDATE payment_methods SET status = $3, on_file = on_file AND $4,
             last_event_at = GREATEST(last_event_at, $5), updated_at = now()
         WHERE provider = $1 AND reference_id LIKE $2
         RETURNING id, account_id, customer_id, provider, type, reference_id, status, on_file,
             billing_details, card_exp_month, card_exp_year, details, created_at, updated_at",
    )
    .bind(provider)
    .bind(reference)
    .bind(if usable { "ACTIVE" } else { "INACTIVE" })
    .bind(usable)
    .bind(occurred_at)
    .fetch_optional(tx)
    .await
}
