//! Sends pending notification rows over SMTP. Each row is sent on its own: a recipient that keeps
//! failing is retried with exponential backoff and never holds up the others. A transient failure
//! (server down, 4xx) is retried for as long as it takes; a permanent one (5xx, bad address) is
//! retried a few times, then the row is marked FAILED for an operator to look at.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::startup::AppState;

/// Rows taken per pass.
const BATCH: i64 = 50;

#[derive(sqlx::FromRow)]
struct Pending {
    id: i64,
    recipients: Vec<String>,
    subject: String,
    body_text: String,
    body_html: String,
    attempts: i32,
}

pub struct Sender {
    state: AppState,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Sender {
    pub fn new(state: AppState) -> anyhow::Result<Self> {
        let smtp = &state.settings.smtp;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp.url.expose_secret())
            .map_err(|e| anyhow::anyhow!("SMTP_URL (smtp.url) is not a valid SMTP URL: {e}"))?
            .timeout(Some(Duration::from_secs(smtp.timeout_secs)))
            .build();
        let from = state
            .settings
            .notifications
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("notifications.from is not a mailbox: {e}"))?;
        Ok(Self {
            state,
            transport,
            from,
        })
    }

    pub async fn run(self) {
        let poll = Duration::from_millis(self.state.settings.notifications.poll_ms);
        loop {
            match self.send_due().await {
                Ok(sent) if sent as i64 == BATCH => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "notification sender failed; will retry"
                ),
            }
            self.report_oldest_pending().await;
            tokio::select! {
                _ = self.state.shutdown.cancelled() => return,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// One pass over the rows that are due. Each row is locked (`SKIP LOCKED`, so several
    /// workers share the table), sent, and its outcome committed with it.
    async fn send_due(&self) -> anyhow::Result<usize> {
        let mut tx = self.state.db.begin().await?;
        let rows: Vec<Pending> = sqlx::query_as(
            "SELECT id, recipients, subject, body_text, body_html, attempts FROM notifications
             WHERE status = 'PENDING' AND next_attempt_at <= now()
             ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let count = rows.len();
        for row in rows {
            let outcome = self.send(&row).await;
            let settings = &self.state.settings.notifications;
            match outcome {
                Ok(()) => {
                    sqlx::query("UPDATE notifications SET status = 'SENT', sent_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = $1")
                        .bind(row.id)
                        .execute(&mut *tx)
                        .await?;
                    metrics::counter!("settle_notifications_total", "outcome" => "sent")
                        .increment(1);
                }
                Err(failure) => {
                    let attempts = row.attempts + 1;
                    let give_up =
                        failure.permanent && attempts >= settings.permanent_failure_attempts;
                    let backoff = backoff(attempts, settings.max_backoff_secs);
                    sqlx::query(
                        "UPDATE notifications SET attempts = $2, last_error = $3,
                             status = CASE WHEN $4 THEN 'FAILED' ELSE 'PENDING' END,
                             next_attempt_at = now() + make_interval(secs => $5)
                         WHERE id = $1",
                    )
                    .bind(row.id)
                    .bind(attempts)
                    .bind(&failure.message)
                    .bind(give_up)
                    .bind(backoff.as_secs_f64())
                    .execute(&mut *tx)
                    .await?;
                    let outcome = if give_up { "failed" } else { "retry" };
                    metrics::counter!("settle_notifications_total", "outcome" => outcome)
                        .increment(1);
                    tracing::warn!(notification = row.id, attempts, error = %failure.message, outcome, "notification not sent");
                }
            }
        }
        tx.commit().await?;
        Ok(count)
    }

    async fn send(&self, row: &Pending) -> Result<(), SendFailure> {
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
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| SendFailure {
                permanent: e.is_permanent(),
                message: e.to_string(),
            })
    }

    async fn report_oldest_pending(&self) {
        if let Ok(Some(age)) = sqlx::query_scalar::<_, Option<f64>>(
            "SELECT EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM notifications WHERE status = 'PENDING'",
        )
        .fetch_one(&self.state.db)
        .await
        {
            metrics::gauge!("settle_notifications_oldest_pending_seconds").set(age);
        } else {
            metrics::gauge!("settle_notifications_oldest_pending_seconds").set(0.0);
        }
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
