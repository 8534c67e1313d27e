-- Every row belongs to an account, and every read is scoped by it (issue 13, §3). The same
-- customer, billing schedule, invoice or payment id may exist in two accounts (they are the
-- billing system's ids, and two businesses number alike); provider ids (`pi_…`, `re_…`, `dp_…`,
-- `in_…`, mandates) are matched within an account only.
--
-- So every key starts with account_id: primary keys are (account_id, id), every foreign key
-- between the domain tables is (account_id, x_id) → (account_id, id), which also makes a row
-- that points into another account impossible whatever code writes it, and every unique key on
-- a provider id holds within an account. Indexes that serve a lookup by invoice, customer or
-- payment lead with account_id, as every such lookup now does.
--
-- The inbox keeps its key (provider, event_id): a provider's event ids are unique across all of
-- its accounts, and one event delivered through two endpoints (the platform's and a
-- connection's) is one event. The outbox, notifications and dead letters keep their own keys.
--
-- Every existing row carries the one configured account, so every existing row satisfies the
-- new keys: the migration changes keys, never data (but for the new column of the links,
-- filled from each link's invoice).

-- 1. The foreign keys that reference the old single-column keys go first.
ALTER TABLE billing_schedules DROP CONSTRAINT billing_schedules_customer_id_fkey;
ALTER TABLE invoices DROP CONSTRAINT invoices_customer_id_fkey,
    DROP CONSTRAINT invoices_billing_schedule_id_fkey;
ALTER TABLE payments DROP CONSTRAINT payments_invoice_id_fkey;
ALTER TABLE payment_methods DROP CONSTRAINT payment_methods_customer_id_fkey;
ALTER TABLE notifications DROP CONSTRAINT notifications_payment_id_fkey;
ALTER TABLE money_movements DROP CONSTRAINT money_movements_invoice_id_fkey,
    DROP CONSTRAINT money_movements_payment_id_fkey;
ALTER TABLE refunds DROP CONSTRAINT refunds_payment_id_fkey;
ALTER TABLE disputes DROP CONSTRAINT disputes_payment_id_fkey;
ALTER TABLE provider_invoice_links DROP CONSTRAINT provider_invoice_links_invoice_id_fkey;

-- 2. Primary keys: (account_id, id).
ALTER TABLE customers DROP CONSTRAINT customers_pkey, ADD PRIMARY KEY (account_id, id);
ALTER TABLE billing_schedules DROP CONSTRAINT billing_schedules_pkey,
    ADD PRIMARY KEY (account_id, id);
ALTER TABLE invoices DROP CONSTRAINT invoices_pkey, ADD PRIMARY KEY (account_id, id);
ALTER TABLE payments DROP CONSTRAINT payments_pkey, ADD PRIMARY KEY (account_id, id);
ALTER TABLE refunds DROP CONSTRAINT refunds_pkey, ADD PRIMARY KEY (account_id, id);
ALTER TABLE disputes DROP CONSTRAINT disputes_pkey, ADD PRIMARY KEY (account_id, id);
ALTER TABLE payment_methods DROP CONSTRAINT payment_methods_pkey,
    ADD PRIMARY KEY (account_id, id);

-- 3. Unique keys on provider ids hold within an account. (The names the API recognises a
--    conflict by: `payments_account_provider_payment_key`, `refunds_account_provider_refund_key`.)
ALTER TABLE payments DROP CONSTRAINT payments_provider_provider_payment_id_key,
    ADD CONSTRAINT payments_account_provider_payment_key
        UNIQUE (account_id, provider, provider_payment_id);
ALTER TABLE refunds DROP CONSTRAINT refunds_provider_provider_refund_id_key,
    ADD CONSTRAINT refunds_account_provider_refund_key
        UNIQUE (account_id, provider, provider_refund_id);
ALTER TABLE disputes DROP CONSTRAINT disputes_provider_provider_dispute_id_key,
    ADD CONSTRAINT disputes_account_provider_dispute_key
        UNIQUE (account_id, provider, provider_dispute_id);
ALTER TABLE money_movements DROP CONSTRAINT money_movements_provider_provider_object_id_kind_seq_key,
    ADD CONSTRAINT money_movements_account_provider_object_kind_seq_key
        UNIQUE (account_id, provider, provider_object_id, kind, seq);
ALTER TABLE payment_methods DROP CONSTRAINT payment_methods_customer_id_provider_reference_id_key,
    ADD CONSTRAINT payment_methods_account_customer_provider_reference_key
        UNIQUE (account_id, customer_id, provider, reference_id);
DROP INDEX payment_methods_one_on_file;
CREATE UNIQUE INDEX payment_methods_one_on_file ON payment_methods (account_id, customer_id)
    WHERE on_file;
ALTER TABLE notifications
    DROP CONSTRAINT notifications_payment_id_failure_event_id_recipient_kind_key,
    ADD CONSTRAINT notifications_account_payment_failure_recipient_key
        UNIQUE (account_id, payment_id, failure_event_id, recipient_kind);

-- 4. The links of provider invoices gain the account of the invoice they link to.
ALTER TABLE provider_invoice_links ADD COLUMN account_id TEXT;
UPDATE provider_invoice_links l SET account_id = i.account_id FROM invoices i WHERE i.id = l.invoice_id;
ALTER TABLE provider_invoice_links ALTER COLUMN account_id SET NOT NULL,
    DROP CONSTRAINT provider_invoice_links_pkey,
    ADD PRIMARY KEY (account_id, provider, provider_invoice_id);

-- 5. The foreign keys again, composite: a row can only point into its own account.
ALTER TABLE billing_schedules ADD CONSTRAINT billing_schedules_customer_fkey
    FOREIGN KEY (account_id, customer_id) REFERENCES customers (account_id, id);
ALTER TABLE invoices
    ADD CONSTRAINT invoices_customer_fkey
        FOREIGN KEY (account_id, customer_id) REFERENCES customers (account_id, id),
    -- MATCH SIMPLE (the default): an invoice without a billing schedule references none.
    ADD CONSTRAINT invoices_billing_schedule_fkey
        FOREIGN KEY (account_id, billing_schedule_id) REFERENCES billing_schedules (account_id, id);
ALTER TABLE payments ADD CONSTRAINT payments_invoice_fkey
    FOREIGN KEY (account_id, invoice_id) REFERENCES invoices (account_id, id);
ALTER TABLE payment_methods ADD CONSTRAINT payment_methods_customer_fkey
    FOREIGN KEY (account_id, customer_id) REFERENCES customers (account_id, id);
ALTER TABLE notifications ADD CONSTRAINT notifications_payment_fkey
    FOREIGN KEY (account_id, payment_id) REFERENCES payments (account_id, id);
ALTER TABLE money_movements
    ADD CONSTRAINT money_movements_invoice_fkey
        FOREIGN KEY (account_id, invoice_id) REFERENCES invoices (account_id, id),
    ADD CONSTRAINT money_movements_payment_fkey
        FOREIGN KEY (account_id, payment_id) REFERENCES payments (account_id, id);
ALTER TABLE refunds ADD CONSTRAINT refunds_payment_fkey
    FOREIGN KEY (account_id, payment_id) REFERENCES payments (account_id, id);
ALTER TABLE disputes ADD CONSTRAINT disputes_payment_fkey
    FOREIGN KEY (account_id, payment_id) REFERENCES payments (account_id, id);
ALTER TABLE provider_invoice_links ADD CONSTRAINT provider_invoice_links_invoice_fkey
    FOREIGN KEY (account_id, invoice_id) REFERENCES invoices (account_id, id);

-- 6. Lookups by customer, invoice or payment, and the registration's lookup of unmatched
--    events, lead with the account. (No index reads a column the worker updates: the invoice's
--    and the inbox's updates stay HOT.)
DROP INDEX billing_schedules_customer;
CREATE INDEX billing_schedules_customer ON billing_schedules (account_id, customer_id);
DROP INDEX invoices_customer;
CREATE INDEX invoices_customer ON invoices (account_id, customer_id, id);
DROP INDEX payments_invoice;
CREATE INDEX payments_invoice ON payments (account_id, invoice_id);
DROP INDEX money_movements_invoice;
CREATE INDEX money_movements_invoice ON money_movements (account_id, invoice_id, id);
DROP INDEX money_movements_payment;
CREATE INDEX money_movements_payment ON money_movements (account_id, payment_id, id);
DROP INDEX refunds_payment;
CREATE INDEX refunds_payment ON refunds (account_id, payment_id);
DROP INDEX disputes_payment;
CREATE INDEX disputes_payment ON disputes (account_id, payment_id);
DROP INDEX webhook_events_unmatched;
CREATE INDEX webhook_events_unmatched
    ON webhook_events (account_id, provider, unmatched_provider_payment_id)
    WHERE unmatched_provider_payment_id IS NOT NULL;

-- 7. Payment settings: keyed within the account, and a fourth level, the account's own
--    (issue 13, §5), whose target is the account itself. It takes over from config's
--    `[account]` defaults field by field: a field the row does not set still falls back to them.
ALTER TABLE payment_settings DROP CONSTRAINT payment_settings_pkey,
    ADD PRIMARY KEY (account_id, level, target_id),
    DROP CONSTRAINT payment_settings_level_check,
    ADD CONSTRAINT payment_settings_level_check
        CHECK (level IN ('CUSTOMER', 'BILLING_SCHEDULE', 'INVOICE', 'ACCOUNT')),
    ADD CONSTRAINT payment_settings_account_level_targets_the_account
        CHECK (level <> 'ACCOUNT' OR target_id = account_id);

-- The view of an invoice's stored levels joins within the invoice's account, and shows the
-- account's level beside the other three (the override order stays in Rust).
DROP VIEW invoice_settings;
CREATE VIEW invoice_settings AS
SELECT i.account_id, i.id AS invoice_id,
       i_s.payment_provider AS invoice_provider, i_s.auto_charge AS invoice_auto,
       b_s.payment_provider AS schedule_provider, b_s.auto_charge AS schedule_auto,
       c_s.payment_provider AS customer_provider, c_s.auto_charge AS customer_auto,
       a_s.payment_provider AS account_provider, a_s.auto_charge AS account_auto
FROM invoices i
LEFT JOIN payment_settings i_s ON i_s.account_id = i.account_id
    AND i_s.level = 'INVOICE' AND i_s.target_id = i.id
LEFT JOIN payment_settings b_s ON b_s.account_id = i.account_id
    AND b_s.level = 'BILLING_SCHEDULE' AND b_s.target_id = i.billing_schedule_id
LEFT JOIN payment_settings c_s ON c_s.account_id = i.account_id
    AND c_s.level = 'CUSTOMER' AND c_s.target_id = i.customer_id
LEFT JOIN payment_settings a_s ON a_s.account_id = i.account_id
    AND a_s.level = 'ACCOUNT' AND a_s.target_id = i.account_id;

-- 8. API keys per account (issue 13, §4). `settle api-keys create` prints `<id>:<secret>` once;
--    only the secret's SHA-256 is stored. The secret is 32 random bytes, so it cannot be guessed
--    and a fast hash is the right one: a slow, salted password hash (argon2, bcrypt) protects
--    low-entropy secrets against guessing, which 256 random bits do not need, and would cost
--    every API request its work factor. A revoked key stays, so its id is never reissued and the
--    record of who had access remains.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    secret_hash BYTEA NOT NULL CHECK (length(secret_hash) = 32),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX api_keys_account ON api_keys (account_id);
