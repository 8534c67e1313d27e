//! `settle charges list|show|retry-now|cancel`: automatic charges (`docs/charging.md`). An
//! operator sees what was sent and what is scheduled, brings a scheduled attempt forward to now
//! (a customer who says the money is there), or stops an invoice's automatic charging, with a
//! reason that is kept.

use anyhow::bail;
use chrono::Utc;
use sqlx::PgPool;

use super::shared::{EXIT_NOTHING_MATCHED, EXIT_OK, Output, left, or_dash, print_table, right};
use crate::api::charges::{self as views, ChargeView};
use crate::config::Settings;
use crate::reconcile::charging::ChargeState;
use crate::repository::charges::{self, Stopped};
use crate::worker::apply::Policy;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List attempts, the latest due first (exit 3 when there is none).
    List {
        /// Whose (default: every account's).
        #[arg(long)]
        account: Option<String>,
        /// In this state (SCHEDULED, SENDING, SENT, SUCCEEDED, FAILED, NEEDS_AUTHENTICATION,
        /// PROVIDER_RETRIES, REFUSED, SKIPPED, CANCELLED).
        #[arg(long, value_parser = parse_state)]
        state: Option<ChargeState>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one invoice's attempts and what comes next, as JSON (exit 3: no such invoice).
    Show {
        invoice_id: String,
        /// The invoice's account (default: the configured one).
        #[arg(long)]
        account: Option<String>,
    },
    /// Make the invoice's scheduled attempt (or a send waiting for the provider) due now
    /// (exit 3: nothing is waiting).
    RetryNow {
        invoice_id: String,
        #[arg(long)]
        account: Option<String>,
    },
    /// Stop the invoice's automatic charging: its scheduled attempt and every later one (exit 3:
    /// no such invoice; 1 while an attempt is being sent).
    Cancel {
        invoice_id: String,
        #[arg(long)]
        account: Option<String>,
        /// Why, kept with the attempt.
        #[arg(long)]
        reason: String,
    },
}

fn parse_state(text: &str) -> Result<ChargeState, String> {
    text.to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("`{text}` is not a charge state"))
}

/// Runs `settle charges <command>`.
pub async fn run(command: Command, db: &PgPool, settings: &Settings) -> anyhow::Result<u8> {
    let account_or_default =
        |account: Option<String>| account.unwrap_or_else(|| settings.account.id.clone());
    match command {
        Command::List {
            account,
            state,
            limit,
            output,
        } => {
            let rows: Vec<(String, String, ChargeView)> =
                charges::list(db, account.as_deref(), state, limit)
                    .await?
                    .into_iter()
                    .map(|row| (row.account_id.clone(), row.invoice_id.clone(), row.into()))
                    .collect();
            print(&rows, output)?;
            Ok(super::shared::listed(&rows))
        }
        Command::Show {
            invoice_id,
            account,
        } => {
            let account = account_or_default(account);
            let rules = Policy::from_settings(settings).charging;
            let Some((attempts, next)) =
                views::of_invoice(db, &rules, &account, &invoice_id).await?
            else {
                eprintln!("no invoice `{invoice_id}` in account `{account}`");
                return Ok(EXIT_NOTHING_MATCHED);
            };
            let shown = serde_json::json!({
                "accountId": account,
                "invoiceId": invoice_id,
                "charges": attempts,
                "nextCharge": next,
            });
            println!("{}", serde_json::to_string_pretty(&shown)?);
            Ok(EXIT_OK)
        }
        Command::RetryNow {
            invoice_id,
            account,
        } => {
            let account = account_or_default(account);
            match charges::retry_now(db, &account, &invoice_id, Utc::now()).await? {
                Some(attempt) => {
                    eprintln!("attempt {attempt} of invoice `{invoice_id}` is due now");
                    Ok(EXIT_OK)
                }
                None => {
                    eprintln!(
                        "invoice `{invoice_id}` has no attempt waiting in account `{account}`"
                    );
                    Ok(EXIT_NOTHING_MATCHED)
                }
            }
        }
        Command::Cancel {
            invoice_id,
            account,
            reason,
        } => {
            let reason = reason.trim();
            if reason.is_empty() || reason.chars().any(char::is_control) {
                bail!("--reason must say why, on one line");
            }
            let account = account_or_default(account);
            let recorded = format!("cancelled by an operator: {reason}");
            match charges::cancel(db, &account, &invoice_id, &recorded).await? {
                Stopped::Cancelled(attempt) => {
                    eprintln!(
                        "automatic charging of invoice `{invoice_id}` stopped (attempt {attempt} cancelled)"
                    );
                    Ok(EXIT_OK)
                }
                Stopped::Sending(attempt) => bail!(
                    "attempt {attempt} of invoice `{invoice_id}` is being sent: it may be at the provider already; cancel again once it is answered"
                ),
                Stopped::NoInvoice => {
                    eprintln!("no invoice `{invoice_id}` in account `{account}`");
                    Ok(EXIT_NOTHING_MATCHED)
                }
            }
        }
    }
}

fn print(rows: &[(String, String, ChargeView)], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            let shown: Vec<serde_json::Value> = rows
                .iter()
                .map(|(account, invoice, charge)| {
                    let mut shown = serde_json::to_value(charge)?;
                    shown["accountId"] = account.as_str().into();
                    shown["invoiceId"] = invoice.as_str().into();
                    Ok(shown)
                })
                .collect::<serde_json::Result<_>>()?;
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        Output::Table => {
            let columns = [
                left("account"),
                left("invoice"),
                right("attempt"),
                left("state"),
                left("due at"),
                left("provider"),
                right("amount"),
                left("currency"),
                left("provider payment"),
                left("reason"),
            ];
            print_table(
                &columns,
                rows.iter().map(|(account, invoice, charge)| {
                    let state: &'static str = charge.state.into();
                    vec![
                        account.clone(),
                        invoice.clone(),
                        charge.attempt.to_string(),
                        state.to_owned(),
                        charge.due_at.to_rfc3339(),
                        or_dash(charge.provider.map(|p| p.display_name())),
                        charge
                            .amount
                            .map_or_else(|| "-".to_owned(), |a| a.to_string()),
                        charge
                            .currency
                            .map_or_else(|| "-".to_owned(), |c| c.as_str().to_owned()),
                        or_dash(charge.provider_payment_id.as_deref()),
                        or_dash(charge.reason.as_deref()),
                    ]
                }),
            );
        }
    }
    Ok(())
}
