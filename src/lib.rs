//! settle: webhook-driven payment reconciliation.
//!
//! ```text
//! provider ─► ingress (verify, split) ─► broker: <p>.webhooks ─► <p>.reconcile ─► worker
//!                                                                                  │ one transaction:
//!                                                    providers: whose, interpret;  │  whose account
//!                                                    reconcile (pure):             │  inbox + lock
//!                                                    plan(state, event)            │  read state
//!                                                                                  │  write effects
//! internal services ◄── <p>.reconciliation ◄── outbox relay ◄── outbox rows ◄──────┤
//! customer, business ◄── SMTP ◄── notification sender ◄── notification rows ◄──────┘
//! billing system ──► api ──► repository ──► PostgreSQL ◄── operators: ops (the settle commands)
//! ```
//!
//! Modules are declared in the order data flows through them. Their imports follow the layers
//! below, bottom up: a module names only modules of a lower layer (and, inside its own folder,
//! its siblings, never its parent). `make test` checks it (`scripts/check-layers.py`, which reads
//! this list):
//!
//! Layers
//! 0. `clock`, `names`, `provider`, `role`, `sealed`, `shutdown`, `trace`: vocabulary, nothing of
//!    settle's
//! 1. `config`, `reconcile`: the settings; the pure core (events, planner, state machines)
//! 2. `telemetry`, `repository`: logs and metrics; every SQL statement
//! 3. `supervise`, `database`, `broker`: background tasks; the connection pools (the primary, and
//!    a replica for reads that may lag); RabbitMQ
//! 4. `lease`, `envelope`, `http`, `providers`: work one process does at a time; the queued event;
//!    web plumbing; each provider's knowledge
//! 5. `ingress`, `notify`, `outbox`, `retention`, `backfill`, `payouts`, `charger`, `sampler`:
//!    edges and jobs
//! 6. `worker`: the consumers; it renders mails (`notify`) inside its transaction, on purpose
//! 7. `api`: it runs the worker's apply path (`worker::apply`) for the events a payment's
//!    registration releases
//! 8. `ops`: operator commands; their JSON is the API's (`api`'s payout views)
//! 9. `console`: the operators' pages; they act through `ops`' and `api`'s functions
//! 10. `startup`: the composition root
//! 11. `cli`: the command line
//!
//! Errors, per boundary: `ingress` answers with its `IngressError` (status, code and metric label
//! in one place); `api` with `ApiError` (what the caller can fix, or an opaque 500 whose cause
//! chain is logged); the worker's transaction fails with `ApplyError`, whose `retryable` and
//! `reason` decide retry or dead letter; database errors are classified once by
//! `repository::classify` for both; the core returns its own small `thiserror` enums
//! (`EventError`, `PlanError`) or a `String` a field validator reads; `startup`, `ops` and `cli`
//! use `anyhow` with context; the console answers with its `Refusal` (a page that says why).

// `pub` only for the modules the binary, the integration tests, the benchmarks and the fault
// suite reach into; the others are the crate's own.

// Configuration, logs, metrics, the shutdown signal, the supervisor of background tasks and the
// provider vocabulary every part shares; names (message ids, header texts) bounded where they
// are built.
pub mod clock;
pub mod config;
mod names;
pub mod provider;
pub mod role;
mod sealed;
mod shutdown;
mod supervise;
// W3C trace context across settle's hops (request, queue, transaction, outbox, subscribers).
pub mod telemetry;
pub mod trace;

// The connection pool, kept on the primary of a PostgreSQL cluster.
pub mod database;

// Leases: work that one process of a deployment does at a time (a PostgreSQL advisory lock).
pub mod lease;

// Web plumbing below both HTTP edges: the error body, the probes.
mod http;

// 1. The HTTP edge for providers: webhooks in.
mod ingress;

// RabbitMQ: the supervised connection, the topology and confirmed publishing; the queued-event
// message (settle's own contract on the work queue).
pub mod broker;
pub mod envelope;

// 2. The consumers of the work queue: one transaction per batch of events.
pub mod worker;

// 3. The domain core (pure) and the SQL that stores it.
pub mod reconcile;
pub mod repository;

// Each payment provider's knowledge, one folder per provider: webhook signatures and wire
// format, how its events and payouts read, its ids, its API (for backfill and payouts).
pub mod providers;

// 4. The outbox relay: committed reconciliation events out to RabbitMQ.
mod outbox;

// 5. Failure notifications: rendered by the worker's transaction, mailed by the sender.
mod notify;

// 6. Retention: what is past its window leaves the database, in small batches.
mod retention;

// 7. Backfill: the providers' own event lists (read through `providers`), for what webhooks
// missed.
mod backfill;

// 8. Payouts: each bank deposit's lines, listed from the provider and matched to the ledger.
mod payouts;

// 9. Automatic charging: the attempts invoices' settings decide, sent to the providers.
mod charger;

// Figures only a look can give (the broker's state, queue depths, money waiting on a person),
// sampled into gauges for the shipped alerts and dashboard.
mod sampler;

// The HTTP API for internal services.
pub mod api;

// Operator tools: the `settle` commands of accounts, connections, keys, dead letters, events,
// backfill, payouts, unmatched events and the outbox.
pub mod ops;

// The operator console: HTML pages on the admin listener, acting through the commands' functions.
mod console;

// Wiring: builds a process (serve, worker or run) from its settings.
pub mod startup;

// The command line.
pub mod cli;
