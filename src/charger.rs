//! The charger: sends the automatic charges that came due, one invoice at a time, and stores what
//! the provider answered. Every worker process runs one; two never send one attempt at once
//! (each takes it under the invoice's lock, with a lease), and if they did, or a process died
//! between a send and its answer's commit, the attempt's idempotency key makes the provider
//! answer with the payment it created the first time.
//!
//! An attempt is sent in three steps, each its own transaction but the call:
//! 1. take: under the invoice's lock, decide again (`charging::next_attempt`) whether an attempt
//!    still follows: auto-charge turned off at some level, the invoice paid meanwhile, the method
//!    taken off file, and the attempt is skipped with its reason; else it is `SENDING` with its
//!    terms fixed (the amount still owed, the method on file) and a lease;
//! 2. the provider's create call, with the attempt's key (`providers::charge`);
//! 3. store: created (its webhooks will say how it ends), declined (a failed attempt: the next
//!    one is scheduled now), needs authentication (no more attempts), refused (dead-lettered with
//!    the provider's reason), or later (429, 5xx, unreachable: the same send again after a
//!    backoff, not a failure).
//!
//! An attempt still unanswered 23 hours after its first send is not sent again (`REFUSED`): the
//! providers keep its key for 24 hours, and a later send could charge twice.
//!
//! A process that stops between 1 and 3 (killed, or shutting down: it does not wait for a
//! provider's answer) leaves the attempt `SENDING`; when its lease ends, another charger sends it
//! again with the same key.
//!
//! Webhooks of the payment may arrive before step 3: the payment's metadata names the invoice and
//! the attempt, and the worker ends the attempt itself; step 3 then changes nothing.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::provider::Provider;
use crate::providers::charge::{ChargeAnswer, ChargeRequest};
use crate::providers::source::{self, Which};
use crate::reconcile::charging::{ChargeState, NextAttempt};
use crate::repository::charges::{self, ChargeRow, MovedBy, Rules, SendTerms};
use crate::sealed::Keyring;
use crate::telemetry as metric;

/// The charger's answers move only the send they answer.
const ANSWER: MovedBy = MovedBy::Answer;
/// How long after its first send an attempt is sent again at most: Stripe keeps an idempotency
/// key for 24 hours, and a send after that could create a second payment.
const IDEMPOTENCY_WINDOW: chrono::Duration = chrono::Duration::hours(23);
const UNANSWERED: &str = "unanswered for 23 hours: the provider keeps an idempotency key for 24, \
    so it is not sent again; look for a payment with this attempt's key at the provider";
/// Attempts taken per look.
const ROUND: i64 = 16;
/// The first wait after a provider asked to be called later, doubled each send, up to the last.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// What one invoice's turn did.
enum Attempted {
    Sent,
    Nothing,
    /// The process is shutting down: the send was left to the next charger.
    Abandoned,
}

/// An attempt taken for a send, with what its request says besides its row.
struct Taken {
    charge: ChargeRow,
    invoice_number: String,
}

#[derive(Clone)]
pub struct Charger {
    pub db: PgPool,
    pub settings: Settings,
    pub keyring: Keyring,
    /// What it decides with: the worker's (`Policy::charging`).
    pub rules: Rules,
    pub shutdown: CancellationToken,
}

impl Charger {
    pub async fn run(self) {
        let poll = Duration::from_millis(self.settings.charging.poll_ms);
        loop {
            match self.round().await {
                Ok(sent) if sent > 0 => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "automatic charges not sent; will look again"
                ),
            }
            if !crate::supervise::wait_interval(poll, &self.shutdown).await {
                return;
            }
        }
    }

    /// Sends what came due; how many sends it made.
    async fn round(&self) -> anyhow::Result<usize> {
        let due = charges::due(&self.db, self.rules.clock.now(), ROUND).await?;
        let mut sent = 0;
        for (account_id, invoice_id) in due {
            if self.shutdown.is_cancelled() {
                break;
            }
            // One invoice's failure (its row, a database error) is logged and leaves the others
            // to be sent: it comes up again at the next look.
            match self.attempt(&account_id, &invoice_id).await {
                Ok(Attempted::Sent) => sent += 1,
                Ok(Attempted::Nothing) => {}
                Ok(Attempted::Abandoned) => break,
                Err(error) => tracing::warn!(
                    account = %account_id,
                    invoice = %invoice_id,
                    error = format!("{error:#}"),
                    "automatic charge not sent; will look again"
                ),
            }
        }
        Ok(sent)
    }

    /// Takes, sends and stores the invoice's attempt that came due.
    async fn attempt(&self, account_id: &str, invoice_id: &str) -> anyhow::Result<Attempted> {
        let Some(taken) = self.take(account_id, invoice_id).await? else {
            return Ok(Attempted::Nothing);
        };
        // Shutting down does not wait for a provider's answer: the attempt stays `SENDING`, and
        // is sent again with its key when its lease ends.
        let answer = tokio::select! {
            answer = self.send(&taken) => answer,
            () = self.shutdown.cancelled() => return Ok(Attempted::Abandoned),
        };
        self.store(&taken.charge, answer).await?;
        Ok(Attempted::Sent)
    }

    /// Step 1: the invoice's open attempt, taken for a send; `None` when nothing is to be sent.
    async fn take(&self, account_id: &str, invoice_id: &str) -> anyhow::Result<Option<Taken>> {
        let rules = &self.rules;
        let now = rules.clock.now();
        let mut tx = self.db.begin().await?;
        if !charges::lock_invoice(&mut tx, account_id, invoice_id).await? {
            return Ok(None);
        }
        let Some(inputs) = charges::inputs(&mut tx, rules, account_id, invoice_id, None).await?
        else {
            return Ok(None);
        };
        let Some(open) = inputs.attempts.iter().find(|a| a.state.is_open()) else {
            return Ok(None);
        };
        let lease = chrono::Duration::seconds(
            i64::try_from(self.settings.charging.send_lease_secs).unwrap_or(i64::MAX / 1000),
        );
        let taken = match open.state {
            ChargeState::Sending if open.lease_until.is_none_or(|until| until <= now) => {
                if open
                    .sent_at
                    .is_some_and(|sent| now - sent >= IDEMPOTENCY_WINDOW)
                {
                    tracing::error!(invoice = %invoice_id, attempt = open.number, "automatic charge unanswered for 23 hours: not sent again (settle charges list --state REFUSED)");
                    charges::end(
                        &mut tx,
                        open,
                        ANSWER,
                        ChargeState::Refused,
                        Some(UNANSWERED),
                        None,
                    )
                    .await?;
                    None
                } else {
                    Some(charges::take(&mut tx, open, None, now, lease).await?)
                }
            }
            ChargeState::Scheduled if open.due_at <= now => {
                let next =
                    crate::reconcile::charging::next_attempt(&inputs.facts, &inputs.schedule, now);
                // The row's due time stands (the schedule's, a new method's, or an operator's
                // `retry-now`); what is decided again is whether an attempt still follows.
                match (next, &inputs.method) {
                    (NextAttempt::Now { .. } | NextAttempt::At { .. }, Some(method)) => {
                        let terms = SendTerms {
                            provider: method.provider,
                            amount: inputs.facts.owed,
                            currency: inputs.currency,
                            method_reference: &method.reference,
                        };
                        Some(charges::take(&mut tx, open, Some(&terms), now, lease).await?)
                    }
                    // None follows any more: skipped, with the reason.
                    _ => {
                        charges::decide(&mut tx, rules, account_id, invoice_id, None).await?;
                        None
                    }
                }
            }
            _ => None,
        };
        tx.commit().await?;
        Ok(taken.map(|charge| Taken {
            charge,
            invoice_number: inputs.number,
        }))
    }

    /// Step 2: the provider's create call.
    async fn send(&self, taken: &Taken) -> ChargeAnswer {
        let charge = &taken.charge;
        let (Some(provider), Some(amount), Some(currency), Some(method_reference)) = (
            charge.provider,
            charge.amount,
            charge.currency,
            charge.method_reference.as_deref(),
        ) else {
            return ChargeAnswer::Refused {
                detail: "the attempt was taken without its terms".into(),
            };
        };
        let which = Which::Account(charge.account_id.clone());
        let source = match source::sources(
            &self.db,
            &self.settings,
            &self.keyring,
            provider,
            &which,
        )
        .await
        {
            Ok(mut sources) if !sources.is_empty() => sources.swap_remove(0),
            Ok(_) => return no_source(provider, "no source"),
            Err(error) => return no_source(provider, &format!("{error:#}")),
        };
        let request = ChargeRequest {
            idempotency_key: &charge.idempotency_key,
            amount,
            currency,
            method_reference,
            invoice_id: &charge.invoice_id,
            invoice_number: &taken.invoice_number,
        };
        source.charge(&request).await
    }

    /// Step 3: what the answer means for the attempt, and the next one.
    async fn store(&self, charge: &ChargeRow, answer: ChargeAnswer) -> anyhow::Result<()> {
        let now = self.rules.clock.now();
        let provider = charge.provider.map_or("none", |p| p.stored_name());
        let mut tx = self.db.begin().await?;
        charges::lock_invoice(&mut tx, &charge.account_id, &charge.invoice_id).await?;
        let (label, ended) = match &answer {
            ChargeAnswer::Created {
                provider_payment_id,
                succeeded,
            } => {
                let state = if *succeeded {
                    ChargeState::Succeeded
                } else {
                    ChargeState::Sent
                };
                let label = if *succeeded { "succeeded" } else { "created" };
                charges::end(
                    &mut tx,
                    charge,
                    ANSWER,
                    state,
                    None,
                    Some(provider_payment_id),
                )
                .await?;
                (label, false)
            }
            ChargeAnswer::Declined {
                provider_payment_id,
                code,
                message,
            } => {
                let reason = code.as_deref().or(message.as_deref()).unwrap_or("declined");
                let ended = charges::end(
                    &mut tx,
                    charge,
                    ANSWER,
                    ChargeState::Failed,
                    Some(reason),
                    provider_payment_id.as_deref(),
                )
                .await?;
                ("declined", ended)
            }
            ChargeAnswer::NeedsAuthentication {
                provider_payment_id,
            } => {
                let ended = charges::end(
                    &mut tx,
                    charge,
                    ANSWER,
                    ChargeState::NeedsAuthentication,
                    Some("needs_authentication"),
                    provider_payment_id.as_deref(),
                )
                .await?;
                ("needs_authentication", ended)
            }
            ChargeAnswer::Later { after, detail } => {
                let wait = after.unwrap_or_else(|| backoff(charge.sends));
                let retry_at = now + chrono::Duration::from_std(wait).unwrap_or_default();
                tracing::warn!(invoice = %charge.invoice_id, attempt = charge.number, provider, %detail, retry_at = %retry_at, "automatic charge not answered; sending it again later");
                charges::send_later(&mut tx, charge, retry_at, detail).await?;
                ("later", false)
            }
            ChargeAnswer::Refused { detail } => {
                tracing::error!(invoice = %charge.invoice_id, attempt = charge.number, provider, %detail, "automatic charge refused by the provider; dead-lettered (settle charges list --state REFUSED)");
                let ended = charges::end(
                    &mut tx,
                    charge,
                    ANSWER,
                    ChargeState::Refused,
                    Some(detail),
                    None,
                )
                .await?;
                ("refused", ended)
            }
        };
        if ended {
            // A failure that ended here, not by a webhook: the next attempt follows from it.
            let (account, invoice) = (&charge.account_id, &charge.invoice_id);
            charges::decide(&mut tx, &self.rules, account, invoice, None).await?;
        }
        tx.commit().await?;
        metrics::counter!(metric::CHARGE_SENDS, "provider" => provider, "answer" => label)
            .increment(1);
        Ok(())
    }
}

/// No API key for the account at the provider: the send waits, like an unreachable provider,
/// until an operator adds one (or cancels the attempt).
fn no_source(provider: Provider, detail: &str) -> ChargeAnswer {
    ChargeAnswer::Later {
        after: Some(MAX_BACKOFF),
        detail: format!(
            "no {} API key for the account: {detail}",
            provider.display_name()
        ),
    }
}

/// The wait before send `sends + 1` of an attempt the provider asked to repeat.
fn backoff(sends: i32) -> Duration {
    let doublings = u32::try_from(sends.saturating_sub(1)).unwrap_or(0).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_that_asks_for_later_is_asked_less_and_less_often() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }
}
