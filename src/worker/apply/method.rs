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
use crate::reconcile::payment_methods::MethodStatus;
use crate::reconcile::reconciliation_events::{PaymentMethodData, ReconciliationEvent};
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
                provider: Provider::Stripe,
                method_type: &method_type,
                reference_id: &reference,
                status: MethodStatus::Active,
                billing_details,
                card_exp_month: exp_month,
                card_exp_year: exp_year,
                details,
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
            let row =
                methods::set_usable(tx, account, Provider::Stripe, &pattern, false, occurred_at)
                    .await?;
            (row, occurred_at)
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
            let row = methods::set_usable(
                tx,
                account,
                Provider::GoCardless,
                &pattern,
                usable,
                occurred_at,
            )
            .await?;
            (row, occurred_at)
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
            let write = MethodWrite {
                account_id: account,
                customer_id: &old.customer_id,
                provider: Provider::GoCardless,
                method_type: &old.method_type,
                reference_id: &new_mandate,
                status: MethodStatus::Active,
                billing_details: old.billing_details.as_ref().map(|d| d.0.clone()),
                card_exp_month: None,
                card_exp_year: None,
                details: serde_json::json!({ "replaces": mandate }),
            };
            (Some(methods::put_on_file(tx, &write).await?), occurred_at)
        }
    };
    let Some(row) = row else {
        return Ok(Outcome::Ignored("payment method is not ours"));
    };
    methods::touch_last_event(tx, account, &row.id, occurred_at).await?;
    if row.on_file && row.status == MethodStatus::Active {
        charges::decide_for_customer(tx, &policy.charging, account, &row.customer_id).await?;
    }
    announce(tx, policy, entry, &row, occurred_at).await?;
    Ok(Outcome::Applied)
}

/// Queues `payment_method.updated`.
async fn announce(
    tx: &mut PgConnection,
    policy: &Policy,
    entry: &InboxEntry<'_>,
    row: &PaymentMethodRow,
    occurred_at: DateTime<Utc>,
) -> Result<(), ApplyError> {
    let event = ReconciliationEvent::PaymentMethodUpdated(PaymentMethodData {
        customer_id: row.customer_id.clone(),
        payment_method_id: row.id.clone(),
        provider: row.provider,
        method_type: row.method_type.clone(),
        reference_id: row.reference_id.clone(),
        status: row.status,
        on_file: row.on_file,
    });
    let rows = outbox_rows(
        std::slice::from_ref(&event),
        entry.provider,
        entry.event_id,
        occurred_at,
        &policy.account_id,
    )?;
    outbox::insert(tx, &policy.account_id, &rows).await?;
    Ok(())
}
