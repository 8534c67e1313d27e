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

// Wiring: builds a process (serve, worker or run) from its settings.
pub mod startup;

// The command line.
pub mod cli;
