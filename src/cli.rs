//! `settle <command>`: one binary for every role and operator tool.

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::ops::{self, Output, accounts, api_keys, dlq, secret_input};
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
    /// The broker's queues and exchanges.
    Broker {
        #[command(subcommand)]
        command: BrokerCommand,
    },
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
    /// The businesses settle reconciles for.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Queue the provider's events of a window that settle never received (missed webhooks).
    Backfill(BackfillArgs),
    /// How each provider reaches an account: its id there, webhook secrets, API key.
    Connections {
        #[command(subcommand)]
        command: ConnectionsCommand,
    },
    /// The keys an account's services call settle's API with.
    ApiKeys {
        #[command(subcommand)]
        command: ApiKeysCommand,
    },
    /// Bank deposits: which invoices each pays, the fees, and what nothing explains.
    Payouts {
        #[command(subcommand)]
        command: PayoutsCommand,
    },
    /// Payment events waiting for their payment's registration: list, show, discard.
    Unmatched {
        #[command(subcommand)]
        command: UnmatchedCommand,
    },
    /// Reconciliation events the relay gave up on (a subscriber's queue kept refusing them).
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Declare settle's queues and exchanges, then exit: a deployment's setup step, run with the
    /// broker user that may configure them (each role's own user may not).
    Declare,
}

#[derive(Debug, Subcommand)]
pub enum UnmatchedCommand {
    /// List the waiting events, newest first (exit 3 when there is none).
    List {
        /// Whose (default: every account's).
        #[arg(long)]
        account: Option<String>,
        #[arg(long, value_parser = ops::parse_provider)]
        provider: Option<Provider>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one waiting event with the body it arrived with, as JSON.
    Show {
        #[arg(value_parser = ops::parse_provider)]
        provider: Provider,
        event_id: String,
    },
    /// Stop events waiting (recorded `discarded` with the reason): a registration of their
    /// payment then leaves them be.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["event_ids", "older_than"])))]
    Discard {
        /// These events (with --provider).
        #[arg(requires = "provider")]
        event_ids: Vec<String>,
        /// Every event that has waited longer than this (90s, 30m, 24h, 7d).
        #[arg(long, value_parser = ops::parse_duration)]
        older_than: Option<chrono::Duration>,
        #[arg(long, value_parser = ops::parse_provider)]
        provider: Option<Provider>,
        /// Of one account (default: every account's).
        #[arg(long)]
        account: Option<String>,
        /// Why, kept with each event.
        #[arg(long)]
        reason: String,
        /// Say which would be discarded, and discard nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List the parked events, oldest first (exit 3 when there is none).
    Parked {
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Put parked events back on the relay's work list, their attempts reset.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "all"])))]
    Retry {
        /// Outbox row ids (`settle outbox parked`).
        ids: Vec<i64>,
        /// Every parked event.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PayoutsCommand {
    /// List payouts, the most recently recorded last (exit 3 when none match).
    List {
        /// Whose (default: the configured account).
        #[arg(long)]
        account: Option<String>,
        /// EXPECTED, LISTING, RECONCILED, PARTIALLY_MATCHED, FAILED or UNLISTABLE.
        #[arg(long)]
        status: Option<String>,
        /// Recorded since: an RFC 3339 time or a duration back from now (24h, 7d).
        #[arg(long, value_parser = ops::parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// csv: one row per line of each payout, for accounting.
        #[arg(long, value_enum, default_value_t)]
        output: ops::payouts::Format,
    },
    /// Show one payout (the provider's id) with its lines.
    Show {
        id: String,
        #[arg(long)]
        account: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: ops::payouts::Format,
    },
    /// List the provider's payouts created since a time and the lines of each paid one, again
    /// if settle listed it before (for payouts the events missed).
    Fetch {
        /// stripe or gocardless.
        #[arg(value_parser = ops::parse_provider)]
        provider: Provider,
        /// An RFC 3339 time or a duration back from now (24h, 7d).
        #[arg(long, value_parser = ops::parse_since)]
        since: chrono::DateTime<chrono::Utc>,
        /// One connection's (default: the default account's and every connection's).
        #[arg(long)]
        connection: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeysCommand {
    /// Create a key for an account; prints `<key id>:<secret>` once (only a hash is stored).
    Create {
        #[arg(long)]
        account: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List an account's keys, without secrets (exit 3 when there is none).
    List {
        #[arg(long)]
        account: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke a key: requests with it get 401 from then on (exit 3 when it does not exist).
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account.
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// Where the business's copies of failure and dispute mails go.
        #[arg(long)]
        business_email: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List the accounts (exit 3 when there is none).
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show an account and its connections (exit 3 when it does not exist).
    Show(Shown),
}

/// `show <id> [--output table|json]`.
#[derive(Debug, clap::Args)]
pub struct Shown {
    id: String,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Add a connection to an account; prints its id. Secrets are sealed before they are stored.
    ///
    /// Secrets never go on the command line (any user can read it in /proc, and shells keep it):
    /// SETTLE_CONNECTION_WEBHOOK_SECRETS, the webhook signing secrets of the connection's own
    /// endpoint (comma-separated, the newest first, several while rotating), and
    /// SETTLE_CONNECTION_API_KEY, the provider API key settle reads the provider's event list
    /// with; or standard input with --secrets-from-stdin. A connection may have neither.
    Add {
        #[arg(long)]
        account: String,
        /// stripe or gocardless.
        #[arg(long, value_parser = ops::parse_provider)]
        provider: Provider,
        /// The provider's id for the account: Stripe `acct_…`, GoCardless `OR…`.
        #[arg(long)]
        external_id: String,
        #[arg(long, value_enum, default_value_t)]
        mode: accounts::Mode,
        /// Read the secrets from standard input instead of the environment: lines
        /// `webhook_secret=…` (repeat while rotating, the newest first) and `api_key=…`; blank
        /// lines and surrounding whitespace are ignored.
        #[arg(long)]
        secrets_from_stdin: bool,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List connections, of one account or all (exit 3 when there is none).
    List {
        #[arg(long)]
        account: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show a connection, without its secrets (exit 3 when it does not exist).
    Show(Shown),
    /// Rotate a connection's webhook secret: --new adds one beside the newest old one (both
    /// verify); --retire-old then keeps only the newest.
    ///
    /// The new secret is read from SETTLE_CONNECTION_WEBHOOK_SECRET, or with --secret-from-stdin
    /// from the first line of standard input: never from the command line.
    #[command(group(clap::ArgGroup::new("rotation").required(true).args(["new", "retire_old"])))]
    RotateSecret {
        id: String,
        /// Add the new secret.
        #[arg(long)]
        new: bool,
        /// Read the new secret from the first line of standard input.
        // `requires = "new"` would not do: a flag's default `false` counts as present for it.
        #[arg(long, conflicts_with = "retire_old")]
        secret_from_stdin: bool,
        #[arg(long)]
        retire_old: bool,
    },
    /// Seal every stored secret again under the first key of SETTLE_SECRET_KEYS (key rotation:
    /// afterwards the other keys can be removed).
    Reseal,
    /// Remove a connection. Destructive: needs --yes.
    Remove {
        id: String,
        #[arg(long, required = true)]
        yes: bool,
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
        output: Output,
    },
    /// Show one dead letter with its payload and failure history.
    Show { id: i64 },
    /// Republish dead letters to the work queue, with confirms, then mark them replayed.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "all", "reason"])))]
    Replay {
        /// Dead-letter ids.
        ids: Vec<i64>,
        /// Every dead letter matching the filters that was not replayed yet (implied by
        /// --reason alone: `replay --reason unknown_account`).
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

/// `settle backfill <provider> [--connection C | --all] --since T [--until T] [--types …]`.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// stripe or gocardless.
    #[arg(value_parser = ops::parse_provider)]
    provider: Provider,
    /// One connection's events (default: the default account's, from the configured API key).
    #[arg(long, conflicts_with = "all")]
    connection: Option<String>,
    /// The default account's (when its key is configured) and every connection's of the provider.
    #[arg(long)]
    all: bool,
    /// From: an RFC 3339 time or a duration back from now (24h, 7d). Stripe keeps 30 days.
    #[arg(long, value_parser = ops::parse_since, required_unless_present = "verify_open_invoices")]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// To (default: now).
    #[arg(long, value_parser = ops::parse_since)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only these event types (Stripe), comma-separated.
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    /// Say what would be queued, queue nothing.
    #[arg(long)]
    dry_run: bool,
    /// Instead of listing events, ask Stripe about every PaymentIntent registered against an
    /// unpaid invoice and not settled yet, and queue an event for each one Stripe says settled.
    #[arg(long, conflicts_with_all = ["since", "until", "types"])]
    verify_open_invoices: bool,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
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
                let db = crate::startup::database_pool(&settings)?;
                return match command {
                    AccountsCommand::Create {
                        id,
                        name,
                        business_email,
                        output,
                    } => {
                        accounts::create_account(
                            &db,
                            &id,
                            name.as_deref(),
                            business_email.as_deref(),
                            output,
                        )
                        .await
                    }
                    AccountsCommand::List { output } => accounts::list_accounts(&db, output).await,
                    AccountsCommand::Show(Shown { id, output }) => {
                        accounts::show_account(&db, &id, output).await
                    }
                };
            }
            Command::Connections { command } => {
                let db = crate::startup::database_pool(&settings)?;
                let keyring = settings.keyring()?;
                return match command {
                    ConnectionsCommand::Add {
                        account,
                        provider,
                        external_id,
                        mode,
                        secrets_from_stdin,
                        output,
                    } => {
                        let secrets = secret_input::connection_secrets(secrets_from_stdin)?;
                        let new = accounts::NewConnection {
                            account: &account,
                            provider,
                            external_id: &external_id,
                            mode,
                            webhook_secrets: &secrets.webhook_secrets,
                            api_key: secrets.api_key.as_ref(),
                        };
                        accounts::add_connection(&db, &keyring, &new, output).await
                    }
                    ConnectionsCommand::List { account, output } => {
                        accounts::list_connections(&db, account.as_deref(), output).await
                    }
                    ConnectionsCommand::Show(Shown { id, output }) => {
                        accounts::show_connection(&db, &id, output).await
                    }
                    ConnectionsCommand::RotateSecret {
                        id,
                        new,
                        secret_from_stdin,
                        retire_old: _,
                    } => {
                        let secret = new
                            .then(|| secret_input::new_webhook_secret(secret_from_stdin))
                            .transpose()?;
                        let rotation = match &secret {
                            Some(secret) => accounts::Rotation::Add(secret),
                            None => accounts::Rotation::RetireOld,
                        };
                        accounts::rotate_secret(&db, &keyring, &id, rotation).await
                    }
                    ConnectionsCommand::Reseal => accounts::reseal(&db, &keyring).await,
                    ConnectionsCommand::Remove { id, yes: _ } => {
                        accounts::remove_connection(&db, &id).await
                    }
                };
            }
            Command::Unmatched { command } => {
                let db = crate::startup::database_pool(&settings)?;
                return match command {
                    UnmatchedCommand::List {
                        account,
                        provider,
                        limit,
                        output,
                    } => {
                        ops::unmatched::list(&db, account.as_deref(), provider, limit, output).await
                    }
                    UnmatchedCommand::Show { provider, event_id } => {
                        ops::unmatched::show(&db, provider, &event_id).await
                    }
                    UnmatchedCommand::Discard {
                        event_ids,
                        older_than,
                        provider,
                        account,
                        reason,
                        dry_run,
                        output,
                    } => {
                        let which = crate::repository::inbox::Discarding {
                            account_id: account.as_deref(),
                            provider,
                            event_ids: (!event_ids.is_empty()).then_some(event_ids.as_slice()),
                            received_before: older_than.map(|age| chrono::Utc::now() - age),
                        };
                        ops::unmatched::discard(&db, &which, &reason, dry_run, output).await
                    }
                };
            }
            Command::Outbox { command } => {
                let db = crate::startup::database_pool(&settings)?;
                return match command {
                    OutboxCommand::Parked { limit, output } => {
                        ops::outbox::parked(&db, limit, output).await
                    }
                    OutboxCommand::Retry { ids, all } => ops::outbox::retry(&db, &ids, all).await,
                };
            }
            Command::ApiKeys { command } => {
                let db = crate::startup::database_pool(&settings)?;
                return match command {
                    ApiKeysCommand::Create { account, output } => {
                        api_keys::create(&db, &account, output).await
                    }
                    ApiKeysCommand::List { account, output } => {
                        api_keys::list(&db, &account, output).await
                    }
                    ApiKeysCommand::Revoke { id } => api_keys::revoke(&db, &id).await,
                };
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
            Command::Backfill(args) => {
                let db = crate::startup::database_pool(&settings)?;
                let which = match (args.connection, args.all) {
                    (Some(id), _) => crate::providers::source::Which::Connection(id),
                    (None, true) => crate::providers::source::Which::All,
                    (None, false) => crate::providers::source::Which::Default,
                };
                let mode = match args.since {
                    Some(since) if !args.verify_open_invoices => {
                        ops::backfill::Mode::Events(crate::providers::Window {
                            since,
                            until: args.until,
                        })
                    }
                    _ => ops::backfill::Mode::VerifyOpenInvoices,
                };
                let request = ops::backfill::Request {
                    provider: args.provider,
                    which,
                    mode,
                    types: &args.types,
                    dry_run: args.dry_run,
                    output: args.output,
                };
                return ops::backfill::run(&db, &settings, &request).await;
            }
            Command::Payouts { command } => {
                let db = crate::startup::database_pool(&settings)?;
                let default_account = settings.account.id.clone();
                return match command {
                    PayoutsCommand::List {
                        account,
                        status,
                        since,
                        limit,
                        output,
                    } => {
                        let filters = ops::payouts::Filters {
                            account: account.unwrap_or(default_account),
                            status,
                            since,
                            limit,
                        };
                        ops::payouts::list(&db, &filters, output).await
                    }
                    PayoutsCommand::Show {
                        id,
                        account,
                        output,
                    } => {
                        let account = account.unwrap_or(default_account);
                        ops::payouts::show(&db, &account, &id, output).await
                    }
                    PayoutsCommand::Fetch {
                        provider,
                        since,
                        connection,
                        output,
                    } => {
                        ops::payouts::fetch(&db, &settings, provider, connection, since, output)
                            .await
                    }
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
