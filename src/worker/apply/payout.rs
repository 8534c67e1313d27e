//! A payout's event in the worker's transaction: recorded where its account's payouts are. Its
//! lines are the payout lister's to list (`crate::payouts`), away from any transaction.

use sqlx::PgConnection;

use super::policy::{ApplyError, Policy};
use crate::envelope::QueuedEvent;
use crate::providers;
use crate::reconcile::events::PayoutEvent;
use crate::repository::inbox::InboxEntry;
use crate::repository::payouts;

/// Records a payout's event, for the connection whose credentials list its lines; one that fails
/// the payout announces it (`payout.failed`, `repository::payouts::record_event`).
pub(super) async fn record(
    tx: &mut PgConnection,
    policy: &Policy,
    event: &QueuedEvent,
    entry: &InboxEntry<'_>,
    payout: &PayoutEvent,
) -> Result<(), ApplyError> {
    let connection = payout_connection(tx, policy, event).await?;
    payouts::record_event(
        tx,
        &policy.account_id,
        connection.as_deref(),
        entry.event_id,
        payout,
    )
    .await?;
    Ok(())
}

/// The connection a payout's event came through or names, whose credentials list its lines;
/// `None`: the platform's own (an event of the platform, or of the default account's own
/// provider account).
async fn payout_connection(
    tx: &mut PgConnection,
    policy: &Policy,
    event: &QueuedEvent,
) -> Result<Option<String>, ApplyError> {
    use crate::reconcile::routing::Address;
    let addressed = providers::address(event.provider, &event.body, event.connection_id.as_deref());
    Ok(match addressed.address {
        Address::Platform => None,
        Address::Connection(id) => Some(id),
        Address::Connected(external_id) => crate::repository::accounts::routes_by_external_id(
            &mut *tx,
            event.provider.stored_name(),
            &external_id,
        )
        .await?
        .into_iter()
        .find(|route| route.account_id == policy.account_id)
        .map(|route| route.connection_id),
    })
}
