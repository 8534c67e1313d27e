//! `settle <command>`: one binary for every role and operator tool.

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::startup::{Application, Role};

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
}

#[derive(Debug, clap::Args)]
pub struct RunOptions {
    /// Do not apply pending migrations at start.
    #[arg(long)]
    pub no_migrate: bool,
}

impl Cli {
    pub async fn execute(self, mut settings: Settings) -> anyhow::Result<()> {
        let (role, options) = match self.command {
            Command::Serve(options) => (Role::Serve, options),
            Command::Worker(options) => (Role::Worker, options),
            Command::Run(options) => (Role::Run, options),
            Command::Migrate => {
                let db = crate::startup::database_pool(&settings)?;
                crate::startup::migrate(&db).await?;
                crate::repository::ensure_account(&db, &settings.account.id).await?;
                tracing::info!("migrations applied");
                return Ok(());
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
            .await
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
