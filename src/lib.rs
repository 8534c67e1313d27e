//! settle: webhook-driven payment reconciliation.
//!
//! ```text
//! provider ─► ingress (verify, split) ─► broker: <p>.webhooks ─► <p>.reconcile ─► worker ─► PostgreSQL
//! ```
//!
//! Modules are declared in the order data flows through them.

// Configuration, logs, metrics and the shutdown signal every part shares.
pub mod config;
pub mod shutdown;
pub mod telemetry;

// 1. The HTTP edge: provider webhooks in, health and metrics.
pub mod ingress;

// RabbitMQ: the supervised connection, the topology and confirmed publishing.
pub mod broker;

// 2. The consumers of the work queue.
pub mod worker;

// 3. The domain core (pure) and the SQL that stores it.
pub mod reconcile;
pub mod repository;

// 4. The outbox relay: committed reconciliation events out to RabbitMQ.
pub mod outbox;

// 5. Failure notifications: rows written by the worker, mailed by the sender.
pub mod notify;

// The HTTP API for internal services.
pub mod api;

// Wiring: builds a process (serve, worker or run) from its settings.
pub mod startup;

// Operator tools: dead letters, event replay.
pub mod ops;

// The command line.
pub mod cli;
