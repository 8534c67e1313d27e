//! The shell for payment-method events: keep the customer's method on file current.
//!
//! Ordering as for payments: each method keeps the provider time of the last event applied to
//! it, and an older event is `Stale`. The events of one customer's methods are serialised by a
//! lock on the customer, taken before the staleness check: without it, an older `attached` and a
//! newer `detached` running at once would each find no newer event, and the older could commit
//! last and win.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::policy::{ApplyError, Policy, outbox_rows};
use crate::provider::Provider;
use crate::reconcile::events::MethodEvent;
use crate::reconcile::outcome::Outcome;
use crate::reconcile::payment_methods::{Gateway, MethodStatus};
use crate::reconcile::reconciliation_events::ReconciliationEvent;
use crate::repository::inbox::InboxEntry;
use crate::repository::payment_methods::{self as methods, MethodWrite, PaymentMethodRow};
use crate::repository::{charges, customers, outbox};

pub(super) async fn apply(
    tx: &mut PgConnection,
    policy: &Policy,
    entry: &InboxEntry<'_>,
    event: MethodEvent,
) -> Result<Outcome, ApplyError> {
    // The event's account: its customers, methods and mandates are the only ones it can name.
    let account = policy.account_id.as_str();
    let (row, occurred_at) = match event {
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
            let Some(stripe_customer) = customer else {
                return Ok(Outcome::Ignored("customer is not ours"));
            };
            let Some(customer_row) = customers::find_by_provider_customer_id(
                &mut *tx,
                account,
                Provider::Stripe,
                &stripe_customer,
            )
            .await?
            else {
                return Ok(Outcome::Ignored("customer is not ours"));
            };
            customers::lock(tx, account, &customer_row.id).await?;
            let pattern = methods::ReferenceMatch::stripe_method(&method_id);
            if methods::newer_event_exists(tx, account, Provider::Stripe, &pattern, occurred_at)
                .await?
            {
                return Ok(Outcome::Stale);
            }
            let reference = format!("{stripe_customer}/{method_id}");
            let write = MethodWrite {
                account_id: account,
                customer_id: &customer_row.id,
                gateway: Gateway::Stripe,
                method_type: &method_type,
                reference_id: &reference,
                status: MethodStatus::Active,
                billing_details,
                card_exp_month: exp_month,
                card_exp_year: exp_year,
                details,
                metadata: None,
            };
            let row = if on_file {
                methods::put_on_file(tx, &write).await?
            } else {
                methods::upsert(&mut *tx, &write, false).await?
            };
            (Some(row), occurred_at)
        }
        MethodEvent::StripeDetached {
            method_id,
            occurred_at,
        } => {
            let pattern = methods::ReferenceMatch::stripe_method(&method_id);
            methods::lock_holders(tx, account, Provider::Stripe, &pattern).await?;
            if methods::newer_event_exists(tx, account, Provider::Stripe, &pattern, occurred_at)
                .await?
            {
                return Ok(Outcome::Stale);
            }
            let change =
                methods::set_usable(tx, account, Provider::Stripe, &pattern, false, occurred_at)
                    .await?;
            return after_status_change(tx, policy, entry, change, occurred_at).await;
        }
        MethodEvent::Mandate {
            mandate,
            usable,
            occurred_at,
        } => {
            let pattern = methods::ReferenceMatch::exact(&mandate);
            methods::lock_holders(tx, account, Provider::GoCardless, &pattern).await?;
            if methods::newer_event_exists(tx, account, Provider::GoCardless, &pattern, occurred_at)
                .await?
            {
                return Ok(Outcome::Stale);
            }
            let change = methods::set_usable(
                tx,
                account,
                Provider::GoCardless,
                &pattern,
                usable,
                occurred_at,
            )
            .await?;
            return after_status_change(tx, policy, entry, change, occurred_at).await;
        }
        MethodEvent::MandateReplaced {
            mandate,
            new_mandate,
            occurred_at,
        } => {
            let pattern = methods::ReferenceMatch::exact(&mandate);
            methods::lock_holders(tx, account, Provider::GoCardless, &pattern).await?;
            let Some(old) = methods::set_usable(
                tx,
                account,
                Provider::GoCardless,
                &pattern,
                false,
                occurred_at,
            )
            .await?
            else {
                return Ok(Outcome::Ignored("mandate is not ours"));
            };
            let old = old.row;
            let write = MethodWrite {
                account_id: account,
                customer_id: &old.customer_id,
                gateway: Gateway::Gocardless,
                method_type: &old.method_type,
                reference_id: &new_mandate,
                status: MethodStatus::Active,
                billing_details: old.billing_details.as_ref().map(|d| d.0.clone()),
                card_exp_month: None,
                card_exp_year: None,
                details: serde_json::json!({ "replaces": mandate }),
                metadata: None,
            };
            (Some(methods::put_on_file(tx, &write).await?), occurred_at)
        }
    };
    let Some(row) = row else {
        return Ok(Outcome::Ignored("payment method is not ours"));
    };
    applied(tx, policy, entry, &[row], occurred_at).await
}

/// After a method became usable or not: when it was the one on file and is no longer, the
/// customer's next usable method takes over, and both changes are announced.
async fn after_status_change(
    tx: &mut PgConnection,
    policy: &Policy,
    entry: &InboxEntry<'_>,
    change: Option<methods::StatusChange>,
    occurred_at: DateTime<Utc>,
) -> Result<Outcome, ApplyError> {
    let Some(change) = change else {
        return Ok(Outcome::Ignored("payment method is not ours"));
    };
    let next = if change.left_no_method_on_file() {
        methods::promote_next(tx, &policy.account_id, &change.row.customer_id).await?
    } else {
        None
    };
    let rows: Vec<PaymentMethodRow> = std::iter::once(change.row).chain(next).collect();
    applied(tx, policy, entry, &rows, occurred_at).await
}

/// Records the event's time on the changed methods, decides the charges a usable method on file
/// allows, and announces each change.
async fn applied(
    tx: &mut PgConnection,
    policy: &Policy,
    entry: &InboxEntry<'_>,
    rows: &[PaymentMethodRow],
    occurred_at: DateTime<Utc>,
) -> Result<Outcome, ApplyError> {
    let account = policy.account_id.as_str();
    for row in rows {
        methods::touch_last_event(tx, account, &row.id, occurred_at).await?;
    }
    if let Some(row) = rows
        .iter()
        .find(|row| row.on_file && row.status == MethodStatus::Active)
    {
        charges::decide_for_customer(tx, &policy.charging, account, &row.customer_id).await?;
    }
    let events: Vec<ReconciliationEvent> = rows
        .iter()
        .map(|row| ReconciliationEvent::PaymentMethodUpdated(row.announced()))
        .collect();
    let rows = outbox_rows(&events, entry, occurred_at, account)?;
    outbox::insert(tx, account, &rows).await?;
    Ok(Outcome::Applied)
}
