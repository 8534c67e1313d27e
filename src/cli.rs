//! `settle <command>`: one binary for every role and operator tool.

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::ops::{self, dlq};
use crate::provider::Provider;
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
    /// Dead letters: list, inspect, replay, purge.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Archived provider events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters (exit 3 when none match).
    List {
        #[command(flatten)]
        filters: dlq::Filters,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        output: dlq::Output,
    },
    /// Show one dead letter with its payload and failure history.
    Show { id: i64 },
    /// Republish dead letters to the work queue, with confirms, then mark them replayed.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "all"])))]
    Replay {
        /// Dead-letter ids.
        ids: Vec<i64>,
        /// Every dead letter matching the filters that was not replayed yet.
        #[arg(long)]
        all: bool,
        /// With --all: those already replayed too.
        #[arg(long, requires = "all")]
        include_replayed: bool,
        #[command(flatten)]
        filters: dlq::Filters,
        /// Say what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete dead letters. Destructive: needs --yes.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "older_than"])))]
    Purge {
        ids: Vec<i64>,
        /// Those dead-lettered longer ago than this (90s, 30m, 24h, 7d).
        #[arg(long, value_parser = crate::ops::parse_duration)]
        older_than: Option<chrono::Duration>,
        /// Confirm the deletion.
        #[arg(long, required = true)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Re-drive an event archived in the inbox: it is applied again (its effects are idempotent).
    Replay {
        /// stripe or gocardless.
        #[arg(value_parser = ops::parse_provider)]
        provider: Provider,
        event_id: String,
    },
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
                let db = crate::startup::database_pool(&settings)?;
                crate::startup::migrate(&db).await?;
                crate::repository::ensure_account(&db, &settings.account.id).await?;
                tracing::info!("migrations applied");
                return Ok(ops::EXIT_OK);
            }
            Command::Dlq { command } => {
                let db = crate::startup::database_pool(&settings)?;
                return match command {
                    DlqCommand::List {
                        filters,
                        limit,
                        output,
                    } => dlq::list(&db, &filters, limit, output).await,
                    DlqCommand::Show { id } => dlq::show(&db, id).await,
                    DlqCommand::Replay {
                        ids,
                        all: _,
                        include_replayed,
                        filters,
                        dry_run,
                    } => {
                        dlq::replay(&db, &settings, &ids, &filters, include_replayed, dry_run).await
                    }
                    DlqCommand::Purge {
                        ids,
                        older_than,
                        yes: _,
                    } => dlq::purge(&db, &ids, older_than).await,
                };
            }
            Command::Events {
                command: EventsCommand::Replay { provider, event_id },
            } => {
                let db = crate::startup::database_pool(&settings)?;
                return ops::events::replay(&db, &settings, provider, &event_id).await;
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
