//! settle: webhook-driven payment reconciliation.
//!
//! ```text
//! provider ─► ingress (verify, split) ─► broker: <p>.webhooks ─► <p>.reconcile ─► worker
//!                                                                                  │ one transaction:
//!                                                    reconcile (pure): route,      │  whose account
//!                                                    interpret,                    │  inbox + lock
//!                                                    plan(state, event)            │  read state
//!                                                                                  │  write effects
//! internal services ◄── <p>.reconciliation ◄── outbox relay ◄── outbox rows ◄──────┤
//! customer, business ◄── SMTP ◄── notification sender ◄── notification rows ◄──────┘
//! billing system ──► api ──► repository ──► PostgreSQL ◄── operators: ops (dlq, events replay)
//! ```
//!
//! Modules are declared in the order data flows through them. Imports point down the list of
//! layers, never up: `startup` (the composition root) and `cli` import everything and nothing
//! imports them; the edges (`ingress`, `api`, `worker`, `outbox`, `notify`, `ops`) import the
//! plumbing (`http`, `broker`, `envelope`, `repository`) and the core, and one edge another: `api`
//! runs the worker's apply path (`worker::apply`) when a payment's registration applies the events
//! that waited for it; the core (`reconcile`) imports only `provider` and `names`; `config`
//! imports only `provider` and `sealed` (its keyring); `names`, `provider`, `role` and `sealed`
//! import nothing of settle's.
//!
//! Errors, per boundary: `ingress` answers with its `IngressError` (status, code and metric label
//! in one place); `api` with `ApiError` (what the caller can fix, or an opaque 500 whose cause
//! chain is logged); the worker's transaction fails with `ApplyError`, whose `retryable` and
//! `reason` decide retry or dead letter; database errors are classified once by
//! `repository::classify` for both; the core returns its own small `thiserror` enums
//! (`EventError`, `PlanError`) or a `String` a field validator reads; `startup`, `ops` and `cli`
//! use `anyhow` with context.

// Configuration, logs, metrics, the shutdown signal, the supervisor of background tasks and the
// provider vocabulary every part shares; names (message ids, header texts) bounded where they
// are built.
pub mod config;
pub mod names;
pub mod provider;
pub mod role;
pub mod sealed;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;

// Web plumbing below both HTTP edges: the error body, the probes.
pub mod http;

// 1. The HTTP edge for providers: webhooks in.
pub mod ingress;

// RabbitMQ: the supervised connection, the topology and confirmed publishing; the queued-event
// message (settle's own contract on the work queue).
pub mod broker;
pub mod envelope;

// 2. The consumers of the work queue: one transaction per batch of events.
pub mod worker;

// 3. The domain core (pure) and the SQL that stores it.
pub mod reconcile;
pub mod repository;

// 4. The outbox relay: committed reconciliation events out to RabbitMQ.
pub mod outbox;

// 5. Failure notifications: rendered by the worker's transaction, mailed by the sender.
pub mod notify;

// 6. Retention: what is past its window leaves the database, in small batches.
pub mod retention;

// 7. Backfill: the providers' own event lists (their APIs' clients), for what webhooks missed.
pub mod backfill;
pub mod provider_api;

// 8. Payouts: each bank deposit's lines, listed from the provider and matched to the ledger.
pub mod payouts;

// The HTTP API for internal services.
pub mod api;

// Operator tools: dead letters, event replay.
pub mod ops;

// Wiring: builds a process (serve, worker or run) from its settings.
pub mod startup;

// The command line.
pub mod cli;
