# The two commands of the README: `make run` and `make test`. Both start the local services
# (PostgreSQL 15 and RabbitMQ as plain processes, data under .local/) first.
SHELL := /bin/bash
SERVICES := ./scripts/services.sh
ENV := eval "$$($(SERVICES) env)"
# The fault suite's scenarios make test runs, quick: a worker killed, a duplicate storm, poison
# messages beside healthy ones, bad signatures, the cluster's work queue leader killed, a
# connection flood at the connection limit, the PostgreSQL cluster's primary killed.
CHAOS_IN_TEST := 6 10 12 14 18 22 23 24
# The cluster scenarios: two serve and two worker processes on the three-node cluster.
CLUSTER_SCENARIOS := 18 19 20 21
# The PostgreSQL cluster's scenarios: its primary killed, switched over, its synchronous standby
# lost, its primary paused (as cut off by a network partition).
PG_CLUSTER_SCENARIOS := 24 25 26 27

# The static queries are checked at compile time against .sqlx/ (SQLX_OFFLINE in .cargo/config.toml),
# so building needs no database. After changing a query or a migration: make sqlx-prepare.

.PHONY: run test chaos cluster-test pg-cluster-test services services-chaos services-stop fmt lint unit it bench clean-test-state sqlx-prepare

## Start the local services, apply migrations and run settle (serve + worker) on 127.0.0.1:8080,
## with the services' localstripe as its Stripe API (unless STRIPE_API_BASE says otherwise).
run: services
	$(ENV) && export STRIPE_API_BASE="$${STRIPE_API_BASE:-http://127.0.0.1:56726}" \
		STRIPE_API_KEY="$${STRIPE_API_KEY:-sk_test_local_localstripe}" \
		&& SETTLE_ENV=local cargo run --release -- migrate && SETTLE_ENV=local cargo run --release -- run

## Start the services and run every check: formatting, lints, unit and integration tests.
test: services-chaos
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	# Imports point down src/lib.rs's layers, and no folder's child reaches back to its parent.
	python3 scripts/check-layers.py
	$(MAKE) clean-test-state
	# Benchmarks are programs that print figures (make bench), not tests: --lib --bins --tests.
	$(ENV) && if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --lib --bins --tests --no-fail-fast; \
	else \
		cargo test --lib --bins --tests --no-fail-fast; \
	fi
	# CI-sized variants of the fault suite's fastest scenarios (make chaos runs them all, full size).
	# Starting the services again first heals the chaos node: the outage tests above restart its
	# app, and RabbitMQ 3.10 can lose its dead-letter supervisor when queues are deleted right
	# after (scripts/services.sh, rmq_heal); the scenarios would then meet INTERNAL_ERROR.
	cargo build --bin settle --example chaos
	$(SERVICES) start --chaos --cluster --pg-cluster >/dev/null
	$(ENV) && ./target/debug/examples/chaos --quick $(CHAOS_IN_TEST)
	# Scenario 24 again with settle given every member (DATABASE_URLS) instead of HAProxy.
	$(ENV) && SETTLE_CHAOS_DATABASE=members ./target/debug/examples/chaos --quick 24

## The fault suite (not part of make test): the 27 scenarios, full size, against release builds.
## One line each; exits non-zero if anything was lost, applied twice or unexpected. CHAOS=3 8 picks.
chaos: services-chaos
	cargo build --release --bin settle --example chaos
	$(ENV) && ulimit -n 20000 && ./target/release/examples/chaos $(CHAOS)

## The cluster's scenarios of the fault suite, full size: the work queue's leader killed, a serve's
## node killed, a rolling restart, a node paused for 30 s.
cluster-test:
	$(MAKE) chaos CHAOS="$(CLUSTER_SCENARIOS)"

## The PostgreSQL cluster's scenarios, full size, with settle behind HAProxy (DATABASE_URL, the
## shape docs/operations.md recommends), then given every member (DATABASE_URLS), to compare.
pg-cluster-test:
	$(MAKE) chaos CHAOS="$(PG_CLUSTER_SCENARIOS)"
	SETTLE_CHAOS_DATABASE=members $(MAKE) chaos CHAOS="$(PG_CLUSTER_SCENARIOS)"

services:
	$(SERVICES) start

# The tests also need a second RabbitMQ node that they stop and start to simulate an outage, the
# three-node cluster the cluster scenarios kill nodes of, and the Patroni cluster of PostgreSQL
# members behind HAProxy.
services-chaos:
	$(SERVICES) start --chaos --cluster --pg-cluster

services-stop:
	$(SERVICES) stop

## Remove what earlier test and chaos runs left behind: their queues and exchanges, databases, logs.
clean-test-state:
	$(SERVICES) purge-test-queues
	rm -rf .local/chaos
	$(ENV) && psql "$$DATABASE_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'test\_%' OR datname LIKE 'chaos\_%'" \
		| while read -r db; do psql "$$DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$$db\" WITH (FORCE)" \
			|| echo "$$db is in use (an autovacuum worker may hold it): left for the next run"; done

## The benchmarks: ingress (accepted/s and ack latency beside the bare broker rate), worker
## (backlog drain events/s and end-to-end latency beside pgbench on the same database) and
## console (every page's time with a million events in the inbox, beside psql's). Leftover
## test databases go first: autovacuum visits every database, and a thousand of them starve the
## benchmark's.
bench: services clean-test-state
	$(ENV) && cargo bench --bench ingress && cargo bench --bench worker && cargo bench --bench console

## Refresh .sqlx/ (the query metadata the compile-time checks read) from a database migrated from
## migrations/: run after changing a query!/query_as! or a migration, and commit .sqlx/.
sqlx-prepare: services
	$(ENV) && db="$${DATABASE_URL%/*}/settle_sqlx" \
		&& psql "$$DATABASE_URL" -qc 'DROP DATABASE IF EXISTS settle_sqlx' \
		&& psql "$$DATABASE_URL" -qc 'CREATE DATABASE settle_sqlx' \
		&& for migration in migrations/*.sql; do psql "$$db" -q -v ON_ERROR_STOP=1 -f "$$migration"; done \
		&& rm -rf .sqlx && mkdir .sqlx && touch src/lib.rs \
		&& SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$$PWD/.sqlx" DATABASE_URL="$$db" cargo check --all-targets
