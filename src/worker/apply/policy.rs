//! What the worker's decisions share, below the apply paths that use them (`payment`, `method`
//! and the orchestration in `apply`): the policy an event is applied under, the error an event
//! fails with, and the outbox rows of what it announces.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::clock::Clock;
use crate::config::Settings;
use crate::provider::{GoCardlessCollectedAt, Provider};
use crate::reconcile::charging::RetrySchedule;
use crate::reconcile::reconciliation_events::{Message, ReconciliationEvent};
use crate::reconcile::settings::AccountDefaults;
use crate::repository::charges::Rules;
use crate::repository::inbox::InboxEntry;
use crate::repository::outbox::OutboxRow;
use crate::repository::{DbFailure, classify};

/// What the worker's decisions depend on besides the event: the account it writes for and the
/// operator's choices. Built from the settings for the configured (default) account; an event
/// routed to another account is applied under `for_account`'s copy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The account every row the event writes belongs to, and every read is scoped by.
    pub account_id: String,
    /// Payment settings used when no level of an invoice sets them.
    pub defaults: AccountDefaults,
    /// The default account's own ids at the providers (`[account]`): an event that names one is
    /// the default account's, like one that names none.
    pub own_provider_accounts: Vec<(Provider, String)>,
    pub gocardless_collected_at: GoCardlessCollectedAt,
    /// Where the business's copy of a failure mail goes (`None`: nowhere).
    pub business_email: Option<String>,
    /// The business's name as its customers know it, for the mails.
    pub business_name: String,
    /// What automatic charging decides with (`[charging] retry_days`, the clock a test moves).
    pub charging: Rules,
}

impl Policy {
    /// The policy of the configured (default) account, from the settings: its id, its defaults
    /// for payment settings (`[account]`) and the operator's choices. The worker, the API (a
    /// registration applies the events waiting for it, and decides an invoice's first automatic
    /// attempt) and the operator commands all take it from here.
    pub fn from_settings(settings: &Settings) -> Self {
        let defaults = AccountDefaults {
            payment_provider: settings.account.default_payment_provider,
            auto_charge: settings.account.default_auto_charge,
        };
        Self {
            account_id: settings.account.id.clone(),
            defaults,
            own_provider_accounts: [
                (Provider::Stripe, &settings.account.stripe_account_id),
                (
                    Provider::GoCardless,
                    &settings.account.gocardless_organisation_id,
                ),
            ]
            .into_iter()
            .filter(|(_, id)| !id.is_empty())
            .map(|(provider, id)| (provider, id.clone()))
            .collect(),
            gocardless_collected_at: settings.worker.gocardless_collected_at,
            business_email: Some(settings.notifications.business_email.clone())
                .filter(|email| !email.is_empty()),
            business_name: settings.notifications.business_name.clone(),
            charging: Rules {
                defaults,
                // Validated when the settings were loaded.
                retry_schedule: RetrySchedule::of_days(&settings.charging.retry_days)
                    .unwrap_or_default(),
                clock: Clock::system(),
            },
        }
    }

    /// The policy for an event routed to another account: that account's id, name and business
    /// address (never the default account's: its mail must not reach another business); the
    /// operator's choices unchanged.
    pub fn for_account(
        &self,
        account_id: &str,
        name: Option<&str>,
        business_email: Option<&str>,
    ) -> Self {
        Self {
            account_id: account_id.to_owned(),
            business_email: business_email.map(str::to_owned),
            business_name: name.unwrap_or(account_id).to_owned(),
            ..self.clone()
        }
    }
}

/// The policy for the events of `account_id` (the API's registrations apply the caller's
/// waiting events with it): the configured one for the default account, else one built from the
/// account's row.
pub async fn policy_for<'p>(
    tx: &mut PgConnection,
    policy: &'p Policy,
    account_id: &str,
) -> Result<Cow<'p, Policy>, ApplyError> {
    if account_id == policy.account_id {
        return Ok(Cow::Borrowed(policy));
    }
    let account = crate::repository::accounts::find(&mut *tx, account_id)
        .await?
        .ok_or_else(|| ApplyError::Permanent {
            reason: "unknown_account",
            detail: format!("settle has no account `{account_id}`"),
        })?;
    Ok(Cow::Owned(policy.for_account(
        &account.id,
        account.name.as_deref(),
        account.business_email.as_deref(),
    )))
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Classified by `repository::classify`: retried when it may pass, dead-lettered
    /// (`database_error`) when retrying cannot fix it.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The invoice may simply not be registered yet: retried, then dead-lettered.
    #[error("invoice `{0}` is not registered")]
    InvoiceNotFound(String),
    /// Retrying cannot help: dead-lettered at once.
    #[error("{reason}: {detail}")]
    Permanent {
        reason: &'static str,
        detail: String,
    },
    /// A bug: retried like a failure that may pass (a transient cause is possible), then
    /// dead-lettered.
    #[error("the handler panicked: {0}")]
    Panicked(String),
    /// Another transaction recorded an event of the batch while this one applied it: the batch
    /// is rolled back, and a retry finds the event recorded.
    #[error("raced: {0}")]
    Raced(String),
}

impl ApplyError {
    /// Whether a later attempt may succeed. A unique violation counts: it is a race with another
    /// transaction that registered the same row first, and a retry sees that row.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Database(error) => classify(error) != DbFailure::Permanent,
            Self::InvoiceNotFound(_) | Self::Panicked(_) | Self::Raced(_) => true,
            Self::Permanent { .. } => false,
        }
    }

    /// Whether the database is out of reach (`repository::is_outage`): the delivery should wait
    /// for it, not spend an attempt.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Database(error) if crate::repository::is_outage(error))
    }

    /// The dead-letter reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Database(_) if self.retryable() => "transient_failures_exhausted",
            Self::Raced(_) => "transient_failures_exhausted",
            Self::Database(_) => "database_error",
            Self::InvoiceNotFound(_) => "invoice_not_found",
            Self::Permanent { reason, .. } => reason,
            Self::Panicked(_) => "panicked",
        }
    }

    /// Whether the failure is the transaction's, not one event's: the whole batch is rolled
    /// back.
    pub(super) fn is_the_batchs(&self) -> bool {
        matches!(self, Self::Database(_) | Self::Raced(_))
    }
}

pub(super) fn unparseable(detail: impl ToString) -> ApplyError {
    ApplyError::Permanent {
        reason: "unparseable",
        detail: detail.to_string(),
    }
}

pub(super) fn internal(detail: &str) -> ApplyError {
    ApplyError::Permanent {
        reason: "internal_error",
        detail: detail.to_owned(),
    }
}

/// The outbox rows of reconciliation events caused by one provider event, in its trace.
pub(super) fn outbox_rows(
    events: &[ReconciliationEvent],
    entry: &InboxEntry<'_>,
    occurred_at: DateTime<Utc>,
    account_id: &str,
) -> Result<Vec<OutboxRow>, ApplyError> {
    events
        .iter()
        .map(|event| {
            outbox_row(&Message::new(
                event,
                entry.provider,
                entry.event_id,
                occurred_at,
                account_id,
            ))
            .map(|row| row.in_trace(entry.trace))
        })
        .collect()
}

/// The outbox row of one reconciliation event's message.
pub(super) fn outbox_row(message: &Message<'_>) -> Result<OutboxRow, ApplyError> {
    OutboxRow::of(message).map_err(|error| ApplyError::Permanent {
        reason: "internal_error",
        detail: format!("a reconciliation event did not serialize: {error}"),
    })
}
