-- The domain: customers, billing schedules, invoices, payments, payment settings, payment methods;
-- and the worker's tables (inbox, outbox, notifications, dead letters) so that later work adds
-- behaviour, not schema churn. Money is BIGINT minor units with a three-letter currency; the
-- constraints below refuse a bad amount or currency whatever code writes it.

CREATE DOMAIN currency_code AS TEXT CHECK (VALUE ~ '^[A-Z]{3}$');
CREATE DOMAIN minor_units AS BIGINT CHECK (VALUE >= 0);

CREATE TABLE customers (
    id                     TEXT PRIMARY KEY,
    account_id             TEXT NOT NULL REFERENCES accounts (id),
    legal_name             TEXT NOT NULL,
    contact_name           TEXT,
    email                  TEXT,
    billing_emails         TEXT[] NOT NULL DEFAULT '{}',
    telephone              TEXT,
    url                    TEXT,
    label                  TEXT,
    tax_status             TEXT,
    address                JSONB,
    customer_aliases       TEXT[] NOT NULL DEFAULT '{}',
    -- Every external id as given ([{key, value}]), and the two the worker looks customers up by.
    external_ids           JSONB NOT NULL DEFAULT '[]',
    stripe_customer_id     TEXT,
    gocardless_customer_id TEXT,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX customers_stripe_id ON customers (account_id, stripe_customer_id)
    WHERE stripe_customer_id IS NOT NULL;
CREATE UNIQUE INDEX customers_gocardless_id ON customers (account_id, gocardless_customer_id)
    WHERE gocardless_customer_id IS NOT NULL;

CREATE TABLE billing_schedules (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    customer_id TEXT NOT NULL REFERENCES customers (id),
    name        TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX billing_schedules_customer ON billing_schedules (customer_id);

CREATE TABLE invoices (
    id                  TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL REFERENCES accounts (id),
    customer_id         TEXT NOT NULL REFERENCES customers (id),
    billing_schedule_id TEXT REFERENCES billing_schedules (id),
    number              TEXT NOT NULL,
    currency            currency_code NOT NULL,
    amount_due          minor_units NOT NULL,
    -- Sum of the payments that currently count as collected; the worker keeps it in step.
    amount_paid         minor_units NOT NULL DEFAULT 0,
    status              TEXT NOT NULL DEFAULT 'OPEN'
        CHECK (status IN ('OPEN', 'PARTIALLY_PAID', 'PAID', 'PAYMENT_FAILED')),
    due_date            DATE,
    payment_link        TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (account_id, number)
);
CREATE INDEX invoices_customer_status ON invoices (customer_id, status, id);

CREATE TABLE payments (
    id                  TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL REFERENCES accounts (id),
    invoice_id          TEXT NOT NULL REFERENCES invoices (id),
    provider            TEXT NOT NULL CHECK (provider IN ('STRIPE', 'GOCARDLESS')),
    provider_payment_id TEXT NOT NULL,
    amount              minor_units NOT NULL,
    currency            currency_code NOT NULL,
    status              TEXT NOT NULL DEFAULT 'REGISTERED'
        CHECK (status IN ('REGISTERED', 'PENDING', 'SUCCEEDED', 'FAILED', 'CANCELED', 'REVERSED')),
    -- Whether the amount counts towards the invoice's amount_paid right now.
    collected           BOOLEAN NOT NULL DEFAULT false,
    failure_code        TEXT,
    failure_message     TEXT,
    -- Provider time of the last applied event: an older event never overrides a newer state.
    last_event_at       TIMESTAMPTZ,
    -- Effective payment settings when the last event was applied (provider and auto-charge).
    effective_provider  TEXT,
    effective_auto_charge BOOLEAN,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_payment_id)
);
CREATE INDEX payments_invoice ON payments (invoice_id);

CREATE TABLE payment_settings (
    id               TEXT NOT NULL UNIQUE,
    account_id       TEXT NOT NULL REFERENCES accounts (id),
    level            TEXT NOT NULL CHECK (level IN ('CUSTOMER', 'BILLING_SCHEDULE', 'INVOICE')),
    -- The customer, billing schedule or invoice id, per level.
    target_id        TEXT NOT NULL,
    -- NULL means "not set at this level": the next level down decides.
    payment_provider TEXT CHECK (payment_provider IN ('STRIPE', 'GOCARDLESS', 'NONE')),
    auto_charge      BOOLEAN,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (level, target_id)
);

CREATE TABLE payment_methods (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    customer_id     TEXT NOT NULL REFERENCES customers (id),
    provider        TEXT NOT NULL CHECK (provider IN ('STRIPE', 'GOCARDLESS')),
    type            TEXT NOT NULL,
    reference_id    TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'INACTIVE')),
    -- The method on file: the one a retry or an auto-charge would use. One per customer.
    on_file         BOOLEAN NOT NULL DEFAULT false,
    billing_details JSONB,
    card_exp_month  SMALLINT CHECK (card_exp_month BETWEEN 1 AND 12),
    card_exp_year   SMALLINT CHECK (card_exp_year BETWEEN 1000 AND 9999),
    details         JSONB NOT NULL DEFAULT '{}',
    -- Provider time of the last event applied to this method: an older one never overrides it.
    last_event_at   TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (customer_id, provider, reference_id)
);
CREATE UNIQUE INDEX payment_methods_one_on_file ON payment_methods (customer_id) WHERE on_file;

-- The worker's inbox: one row per (provider, event id), inserted in the same transaction as the
-- event's effects, so an event is applied exactly once however often it is delivered.
CREATE TABLE webhook_events (
    provider     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    event_type   TEXT NOT NULL,
    payload      JSONB NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- applied, stale (recorded, older than the payment's state) or ignored (not ours / unknown).
    outcome      TEXT NOT NULL,
    PRIMARY KEY (provider, event_id)
);

-- Outgoing reconciliation events, written in the worker's transaction and published afterwards by
-- the relay: none is lost when a process dies between commit and publish.
CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    message_id   TEXT NOT NULL UNIQUE,
    routing_key  TEXT NOT NULL,
    payload      JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Failure emails, written in the worker's transaction and sent afterwards: one row per
-- (payment, failure event, recipient kind), so redelivery never sends twice.
CREATE TABLE notifications (
    id               BIGSERIAL PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts (id),
    payment_id       TEXT NOT NULL REFERENCES payments (id),
    failure_event_id TEXT NOT NULL,
    recipient_kind   TEXT NOT NULL CHECK (recipient_kind IN ('CUSTOMER', 'BUSINESS')),
    recipients       TEXT[] NOT NULL,
    subject          TEXT NOT NULL,
    body_text        TEXT NOT NULL,
    body_html        TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SENT', 'FAILED')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at          TIMESTAMPTZ,
    UNIQUE (payment_id, failure_event_id, recipient_kind)
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'PENDING';

-- Dead letters copied off the DLQ so operators can list, inspect and replay them.
CREATE TABLE dead_letters (
    id               BIGSERIAL PRIMARY KEY,
    -- Set by whoever dead-lettered the message; the DLQ consumer inserts ON CONFLICT DO NOTHING on
    -- it, so a redelivered dead letter is copied once.
    dead_letter_key  TEXT NOT NULL UNIQUE,
    message_id       TEXT,
    provider         TEXT,
    event_id         TEXT,
    event_type       TEXT,
    routing_key      TEXT NOT NULL,
    headers          JSONB NOT NULL DEFAULT '{}',
    body             BYTEA NOT NULL,
    reason           TEXT NOT NULL,
    last_error       TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    first_failure_at TIMESTAMPTZ,
    last_failure_at  TIMESTAMPTZ,
    dead_lettered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    replayed_at      TIMESTAMPTZ,
    replay_count     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX dead_letters_listing ON dead_letters (dead_lettered_at DESC);
