//! One integration-test binary (linked once), a module per area. Every test starts the real app
//! in-process on port 0 with its own database and its own RabbitMQ name prefix, against the real
//! PostgreSQL and RabbitMQ started by `scripts/services.sh`.

// A test that cannot set up has failed: unwrap and expect are how these tests report it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod account_scoping;
mod accounts;
mod admission;
mod api_customers;
mod api_customers_list;
mod api_invoices;
mod api_settings;
mod authorisations;
mod backfill;
mod books;
mod books_export;
mod broker_hygiene;
mod broker_outage;
mod broker_roles;
mod charging;
mod charging_gocardless;
mod console;
mod customer_merge;
mod delivery_limit;
mod health;
mod hostile_data;
mod money;
mod notify;
mod observability;
mod openapi;
mod ops;
mod payment_methods;
mod payouts;
mod payouts_gocardless;
mod payouts_late;
mod pg_cluster;
mod replica_reads;
mod retention;
mod routing;
mod shutdown;
mod startup;
mod tenant_keys;
mod traces;
mod unmatched;
mod unmatched_expiry;
mod webhooks;
mod worker;
