//! Sends pending notification rows over SMTP, one row per transaction: the row is locked
//! (`SKIP LOCKED`, so several workers share the table), sent, and its outcome committed at once.
//! A crash can therefore re-send only the one mail that was in flight, never those already sent.
//! A recipient that keeps failing is retried with exponential backoff and so steps aside for the
//! others. A transient failure (server down, 4xx) is retried for as long as it takes; a permanent
//! one (5xx, bad address) is retried a few times, then the row is marked FAILED for an operator.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{NotificationSettings, SmtpSettings};
use crate::repository::notifications::{self as rows, PendingNotification};
use crate::telemetry as metric;

#[derive(Clone)]
pub struct Sender {
    db: PgPool,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The most one send may take, connection and every reply included.
    send_timeout: Duration,
    settings: NotificationSettings,
    shutdown: CancellationToken,
}

impl Sender {
    pub fn new(
        db: PgPool,
        smtp: &SmtpSettings,
        settings: NotificationSettings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp.url.expose_secret())
            .map_err(|e| anyhow::anyhow!("SMTP_URL (smtp.url) is not a valid SMTP URL: {e}"))?
            .timeout(Some(Duration::from_secs(smtp.timeout_secs)))
            .build();
        let from = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("notifications.from is not a mailbox: {e}"))?;
        Ok(Self {
            db,
            transport,
            from,
            send_timeout: Duration::from_secs(smtp.timeout_secs),
            settings,
            shutdown,
        })
    }

    pub async fn run(self) {
        let poll = Duration::from_millis(self.settings.poll_ms);
        loop {
            // Send every row that is due, one at a time, then wait for the next poll.
            loop {
                match self.send_next().await {
                    Ok(true) if !self.shutdown.is_cancelled() => continue,
                    Ok(_) => {}
                    Err(error) => tracing::warn!(
                        error = format!("{error:#}"),
                        "notification sender failed; will retry"
                    ),
                }
                break;
            }
            self.report_oldest_pending().await;
            if !crate::supervise::wait_interval(poll, &self.shutdown).await {
                return;
            }
        }
    }

    /// Sends the next due row in its own transaction; false when none is due.
    async fn send_next(&self) -> anyhow::Result<bool> {
        let mut tx = self.db.begin().await?;
        let Some(row) = rows::lock_next_due(&mut tx).await? else {
            return Ok(false);
        };
        match self.send(&row).await {
            Ok(()) => {
                rows::mark_sent(&mut tx, row.id).await?;
                metrics::counter!(metric::NOTIFICATIONS, "outcome" => "sent").increment(1);
            }
            Err(failure) => {
                let attempts = row.attempts + 1;
                let give_up =
                    failure.permanent && attempts >= self.settings.permanent_failure_attempts;
                let backoff = backoff(attempts, self.settings.max_backoff_secs);
                rows::mark_attempt_failed(
                    &mut tx,
                    row.id,
                    attempts,
                    &failure.message,
                    give_up,
                    backoff,
                )
                .await?;
                let outcome = if give_up { "failed" } else { "retry" };
                metrics::counter!(metric::NOTIFICATIONS, "outcome" => outcome).increment(1);
                tracing::warn!(notification = row.id, attempts, error = %failure.message, outcome, "notification not sent");
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn send(&self, row: &PendingNotification) -> Result<(), SendFailure> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(&row.subject);
        for recipient in &row.recipients {
            let mailbox: Mailbox = recipient.parse().map_err(|e| SendFailure {
                permanent: true,
                message: format!("bad recipient `{recipient}`: {e}"),
            })?;
            builder = builder.to(mailbox);
        }
        let message = builder
            .multipart(MultiPart::alternative_plain_html(
                row.body_text.clone(),
                row.body_html.clone(),
            ))
            .map_err(|e| SendFailure {
                permanent: true,
                message: e.to_string(),
            })?;
        // lettre's timeout bounds each socket operation, but a server that accepts the message and
        // never answers its DATA holds an async send forever: bound the whole send as well, so one
        // hung server cannot stop the sender (or a graceful shutdown).
        let sent = tokio::time::timeout(self.send_timeout, self.transport.send(message))
            .await
            .map_err(|_| SendFailure {
                permanent: false,
                message: format!(
                    "the SMTP server did not answer within {:?}",
                    self.send_timeout
                ),
            })?;
        sent.map(|_| ()).map_err(|e| SendFailure {
            permanent: e.is_permanent(),
            message: e.to_string(),
        })
    }

    async fn report_oldest_pending(&self) {
        let age = rows::oldest_pending_age(&self.db).await.unwrap_or(0.0);
        metrics::gauge!(metric::NOTIFICATIONS_OLDEST_PENDING_SECONDS).set(age);
    }
}

struct SendFailure {
    permanent: bool,
    message: String,
}

/// 1 s, 2 s, 4 s, … capped at `max_secs`.
fn backoff(attempts: i32, max_secs: u64) -> Duration {
    let exponent = attempts.clamp(1, 20) as u32 - 1;
    Duration::from_secs(2u64.saturating_pow(exponent).min(max_secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let seconds: Vec<u64> = (1..=12).map(|n| super::backoff(n, 600).as_secs()).collect();
        assert_eq!(seconds, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
    }
}
