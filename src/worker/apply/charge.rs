//! What a payment's events do to automatic charging, in the worker's transaction, under the
//! invoice's lock: the attempt that made the payment ends as the payment did (found by the
//! payment's id, or by the idempotency key its metadata carries back, when the webhook beats the
//! charger's answer), and after a failure the invoice's next attempt is decided and the failure
//! mail names it (`charging::outlook`): its date, or why none follows.

use sqlx::PgConnection;

use super::policy::{ApplyError, Policy};
use crate::reconcile::charging::{self, ChargeState, NextAttempt};
use crate::reconcile::events::PaymentEvent;
use crate::reconcile::payment::PaymentStatus;
use crate::reconcile::plan::{Effects, FailureNotification, RetryOutlook};
use crate::reconcile::reconciliation_events::ReconciliationEvent;
use crate::repository::charges::{self, MovedBy};
use crate::repository::invoices::InvoiceRow;

/// Stripe's code for a card that must be authenticated by its holder (off-session, it cannot be).
const AUTHENTICATION_REQUIRED: &str = "authentication_required";

/// After `event` applied `effects` to `invoice`: ends the attempt it belongs to, and after a
/// failure decides the next one, dating `notification`'s retry sentence.
pub(super) async fn after_payment(
    tx: &mut PgConnection,
    policy: &Policy,
    invoice: &InvoiceRow,
    event: &PaymentEvent,
    effects: &Effects,
    notification: Option<&mut FailureNotification>,
) -> Result<(), ApplyError> {
    let failed = effects
        .events
        .iter()
        .any(|e| matches!(e, ReconciliationEvent::PaymentFailed(_)));
    let Some(write) = &effects.payment else {
        return Ok(());
    };
    if event.charge_key.is_none() && !failed {
        return Ok(());
    }
    let charge = charges::of_payment(
        tx,
        &policy.account_id,
        &event.provider_payment_id,
        event.charge_key.as_deref(),
    )
    .await?;
    if let Some(charge) = &charge {
        let code = event.failure.as_ref().and_then(|f| f.code.as_deref());
        let ending = match write.payment.status {
            PaymentStatus::Succeeded => Some(ChargeState::Succeeded),
            PaymentStatus::Failed | PaymentStatus::Canceled if failed => {
                Some(match (event.provider_will_retry, code) {
                    (Some(true), _) => ChargeState::ProviderRetries,
                    (_, Some(AUTHENTICATION_REQUIRED)) => ChargeState::NeedsAuthentication,
                    _ => ChargeState::Failed,
                })
            }
            _ => None,
        };
        if let Some(state) = ending {
            let payment = Some(event.provider_payment_id.as_str());
            charges::end(tx, charge, MovedBy::Webhook, state, code, payment).await?;
        }
    }
    if !failed {
        return Ok(());
    }
    let rules = &policy.charging;
    let decided = charges::decide(
        tx,
        rules,
        &policy.account_id,
        &invoice.id,
        // A payment the billing system made: its failure is the last attempt's.
        charge.is_none().then_some(event.occurred_at),
    )
    .await?;
    let (Some(decided), Some(notification)) = (decided, notification) else {
        return Ok(());
    };
    // The mail says what settle will do: the provider's own retry, when it said it retries;
    // settle's next attempt, or why there is none, for settle's own attempts and whenever one
    // follows.
    let retrying = matches!(
        decided.next,
        NextAttempt::Now { .. } | NextAttempt::At { .. }
    );
    let automatic = charge.is_some() && notification.outlook != RetryOutlook::ProviderRetries;
    if retrying || automatic {
        let (outlook, retry_at) = charging::outlook(decided.next, rules.clock.now());
        notification.outlook = outlook;
        notification.retry_at = retry_at;
    }
    Ok(())
}
