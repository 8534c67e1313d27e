//! `settle <command>`: one binary for every role and operator tool. Each operator command's
//! options and its dispatch live beside the code that runs it (`ops::<group>::Command` and
//! `run`); this file names the commands and builds what they are given.

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::database;
use crate::ops::{
    self, accounts, api_keys, audit, backfill, books, charges, dlq, events, operators, outbox,
    payouts, unmatched,
};
use crate::role::Role;
use crate::startup::Application;

#[derive(Debug, Parser)]
#[command(
    name = "settle",
    version,
    about = "Payment webhook reconciliation service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take HTTP traffic: provider webhooks, health and metrics.
    Serve(RunOptions),
    /// Reconcile queued events.
    Worker(RunOptions),
    /// serve and worker in one process (the local default).
    Run(RunOptions),
    /// Apply pending database migrations, then exit.
    Migrate,
    /// The broker's queues and exchanges.
    Broker {
        #[command(subcommand)]
        command: BrokerCommand,
    },
    /// Dead letters: list, inspect, replay, purge.
    Dlq {
        #[command(subcommand)]
        command: dlq::Command,
    },
    /// Archived provider events.
    Events {
        #[command(subcommand)]
        command: events::Command,
    },
    /// The businesses settle reconciles for.
    Accounts {
        #[command(subcommand)]
        command: accounts::AccountsCommand,
    },
    /// Queue the provider's events of a window that settle never received (missed webhooks).
    Backfill(backfill::Args),
    /// How each provider reaches an account: its id there, webhook secrets, API key.
    Connections {
        #[command(subcommand)]
        command: accounts::ConnectionsCommand,
    },
    /// The keys an account's services call settle's API with.
    ApiKeys {
        #[command(subcommand)]
        command: api_keys::Command,
    },
    /// Who may sign in to the console (`/console` on the admin listener), with which role.
    Operators {
        #[command(subcommand)]
        command: operators::Command,
    },
    /// Bank deposits: which invoices each pays, the fees, and what nothing explains.
    Payouts {
        #[command(subcommand)]
        command: payouts::Command,
    },
    /// Rebuild the invoices whose money moved since a time from their events, in a scratch
    /// schema, and print every difference from the live tables (exit 0: none, 5: some).
    Audit(audit::Args),
    /// The books: a period's journal for Xero, QuickBooks, a spreadsheet or hledger.
    Books {
        #[command(subcommand)]
        command: books::Command,
    },
    /// Automatic charges: list, show an invoice's, retry one now, cancel an invoice's.
    Charges {
        #[command(subcommand)]
        command: charges::Command,
    },
    /// Payment events waiting for their payment's registration: list, show, discard.
    Unmatched {
        #[command(subcommand)]
        command: unmatched::Command,
    },
    /// Reconciliation events the relay gave up on (a subscriber's queue kept refusing them).
    Outbox {
        #[command(subcommand)]
        command: outbox::Command,
    },
}

#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Declare settle's queues and exchanges, then exit: a deployment's setup step, run with the
    /// broker user that may configure them (each role's own user may not).
    Declare,
}

#[derive(Debug, clap::Args)]
pub struct RunOptions {
    /// Do not apply pending migrations at start.
    #[arg(long)]
    pub no_migrate: bool,
}

impl Cli {
    /// Runs the command; the result is the process exit code.
    pub async fn execute(self, mut settings: Settings) -> anyhow::Result<u8> {
        let (role, options) = match self.command {
            Command::Serve(options) => (Role::Serve, options),
            Command::Worker(options) => (Role::Worker, options),
            Command::Run(options) => (Role::Run, options),
            Command::Migrate => {
                let db = database::pool(&settings).await?;
                crate::startup::migrate(&db).await?;
                crate::repository::ensure_account(&db, &settings.account.id).await?;
                tracing::info!("migrations applied");
                return Ok(ops::EXIT_OK);
            }
            Command::Broker {
                command: BrokerCommand::Declare,
            } => {
                let node = crate::broker::declare_topology(
                    &settings.amqp,
                    &crate::broker::Topology::from_settings(&settings),
                )
                .await?;
                tracing::info!(node, prefix = %settings.amqp.prefix, "broker topology declared");
                return Ok(ops::EXIT_OK);
            }
            Command::Accounts { command } => {
                return accounts::run_accounts(command, &database::pool(&settings).await?).await;
            }
            Command::Connections { command } => {
                let keyring = settings.keyring()?;
                let db = database::pool(&settings).await?;
                return accounts::run_connections(command, &db, &keyring).await;
            }
            Command::Charges { command } => {
                return charges::run(command, &database::pool(&settings).await?, &settings).await;
            }
            Command::Unmatched { command } => {
                return unmatched::run(command, &database::pool(&settings).await?).await;
            }
            Command::Outbox { command } => {
                return outbox::run(
                    command,
                    &database::pool(&settings).await?,
                    &settings.account.id,
                )
                .await;
            }
            Command::Operators { command } => {
                return operators::run(command, &database::pool(&settings).await?).await;
            }
            Command::ApiKeys { command } => {
                return api_keys::run(command, &database::pool(&settings).await?).await;
            }
            Command::Dlq { command } => {
                return dlq::run(command, &database::pool(&settings).await?, &settings).await;
            }
            Command::Backfill(args) => {
                return backfill::run_args(args, &database::pool(&settings).await?, &settings)
                    .await;
            }
            Command::Payouts { command } => {
                return payouts::run(command, &database::pool(&settings).await?, &settings).await;
            }
            Command::Audit(args) => {
                return audit::run(args, &database::pool(&settings).await?, &settings).await;
            }
            Command::Books { command } => {
                let db = database::pool(&settings).await?;
                let reads = database::Reads::from_settings(&settings, db).await?;
                return books::run(command, &reads, &settings).await;
            }
            Command::Events { command } => {
                return events::run(command, &database::pool(&settings).await?, &settings).await;
            }
        };
        if options.no_migrate {
            settings.database.migrate_on_start = false;
        }
        let shutdown = CancellationToken::new();
        crate::shutdown::cancel_on_signal(shutdown.clone());
        Application::build(settings, role, shutdown)
            .await?
            .run()
            .await?;
        Ok(ops::EXIT_OK)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
