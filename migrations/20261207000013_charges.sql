-- Automatic charging (issue 31). settle charges an invoice's method on file when its effective
-- settings say `autoCharge`, and tries a failed automatic charge again on the account's schedule.
-- Each attempt is a row here, written in the transaction that decides it (the invoice's
-- registration, a failure, a new method on file): the charger sends it, with an idempotency key
-- that is the same for every send of the attempt, so a crash, a retry or two workers charge once.
--
--   SCHEDULED  decided, due at `due_at`: not sent yet (at most one per invoice)
--   SENDING    the charger took it: sent, or about to be, or sent again after `lease_until`
--              (a crash, the provider down or rate-limiting); amount and method are fixed
--   SENT       the provider took it; its webhooks decide
--   SUCCEEDED / FAILED / NEEDS_AUTHENTICATION / PROVIDER_RETRIES   how it ended
--   REFUSED    the provider refused the request itself (400): dead-lettered with its reason
--   SKIPPED    due, but no longer to be sent (auto-charge off, paid, no method): not an attempt
--   CANCELLED  an operator stopped the invoice's automatic charging
CREATE TABLE charges (
    account_id          TEXT NOT NULL,
    invoice_id          TEXT NOT NULL,
    -- The invoice's attempt sequence (1 for the first); its idempotency key's part.
    number              INTEGER NOT NULL CHECK (number >= 1),
    idempotency_key     TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('SCHEDULED', 'SENDING', 'SENT', 'SUCCEEDED',
                            'FAILED', 'NEEDS_AUTHENTICATION', 'PROVIDER_RETRIES', 'REFUSED',
                            'SKIPPED', 'CANCELLED')),
    due_at              TIMESTAMPTZ NOT NULL,
    -- SENDING: when another send may start (a crashed sender's lease, or a provider's backoff).
    lease_until         TIMESTAMPTZ,
    sends               INTEGER NOT NULL DEFAULT 0,
    -- Fixed when the charger takes it: every send of one key asks for the same.
    provider            TEXT CHECK (provider IN ('STRIPE', 'GOCARDLESS')),
    amount              BIGINT CHECK (amount > 0),
    currency            currency_code,
    method_reference    TEXT,
    provider_payment_id TEXT,
    reason              TEXT,
    sent_at             TIMESTAMPTZ,
    ended_at            TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, invoice_id, number),
    UNIQUE (account_id, idempotency_key),
    FOREIGN KEY (account_id, invoice_id) REFERENCES invoices (account_id, id),
    CHECK (state IN ('SCHEDULED', 'SKIPPED', 'CANCELLED')
        OR (provider IS NOT NULL AND amount IS NOT NULL AND currency IS NOT NULL
            AND method_reference IS NOT NULL))
);
-- One attempt waiting or in flight per invoice: deciding twice updates it.
CREATE UNIQUE INDEX charges_one_open ON charges (account_id, invoice_id)
    WHERE state IN ('SCHEDULED', 'SENDING');
-- The charger's work list.
CREATE INDEX charges_due ON charges (due_at) WHERE state IN ('SCHEDULED', 'SENDING');
-- A webhook names its payment: the attempt that made it.
CREATE INDEX charges_payment ON charges (account_id, provider_payment_id)
    WHERE provider_payment_id IS NOT NULL;

-- The account's own retry schedule, waits in whole days; NULL: `[charging] retry_days`.
ALTER TABLE accounts ADD COLUMN charge_retry_days SMALLINT[]
    CHECK (0 < ALL (charge_retry_days) AND cardinality(charge_retry_days) <= 10);

-- When the method went on file: one put on file after a failed automatic charge brings the next
-- attempt forward. Methods on file before this migration count from their last change.
ALTER TABLE payment_methods ADD COLUMN on_file_since TIMESTAMPTZ;
UPDATE payment_methods SET on_file_since = updated_at WHERE on_file;
