-- Payouts (issue 17): the providers' bank deposits, and the lines that make each up (Stripe's
-- balance transactions, GoCardless's payout items), matched to settle's payments and invoices.
-- A payout's lines are replaced whole each time they are listed, in one transaction, so a
-- payout event delivered twice, or listed again, stores nothing twice.
CREATE TABLE payouts (
    provider           TEXT NOT NULL CHECK (provider IN ('STRIPE', 'GOCARDLESS')),
    provider_payout_id TEXT NOT NULL,
    account_id         TEXT NOT NULL REFERENCES accounts (id),
    -- The deposit, in the currency's minor unit. A GoCardless payout event carries neither:
    -- they are known once the payout is listed.
    amount             BIGINT,
    currency           TEXT,
    arrival_date       DATE,
    -- EXPECTED (sent, its lines not final yet), LISTING (its lines are to be listed),
    -- RECONCILED, PARTIALLY_MATCHED, FAILED (the money did not reach the bank), UNLISTABLE (the provider cannot list its lines: a manual Stripe
    -- payout, a GoCardless payout older than 6 months).
    status             TEXT NOT NULL,
    -- Why it is UNLISTABLE or FAILED, as the provider said.
    status_reason      TEXT,
    -- The sums of its lines (rounded after summing) and what they leave unexplained.
    lines_gross        BIGINT,
    lines_fees         BIGINT,
    lines_net          BIGINT,
    difference         BIGINT,
    unmatched_lines    INTEGER,
    -- The provider event that last changed it.
    event_id           TEXT NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, provider_payout_id)
);
CREATE INDEX payouts_by_account ON payouts (account_id, created_at, provider, provider_payout_id);
CREATE INDEX payouts_to_list ON payouts (updated_at) WHERE status = 'LISTING';

CREATE TABLE payout_lines (
    provider           TEXT NOT NULL,
    provider_payout_id TEXT NOT NULL,
    -- The line's place in the provider's listing.
    position           INTEGER NOT NULL,
    -- The provider's category: Stripe's `reporting_category`, GoCardless's item `type`.
    category           TEXT NOT NULL,
    source_id          TEXT,
    -- MATCHED (a payment of settle's), PROVIDER (the provider's own fee, the payout's own line),
    -- UNMATCHED (nothing settle knows explains it).
    explained          TEXT NOT NULL CHECK (explained IN ('MATCHED', 'PROVIDER', 'UNMATCHED')),
    payment_id         TEXT,
    invoice_id         TEXT,
    -- Exact decimals in the minor unit: GoCardless's items come to a tenth of a penny.
    gross              NUMERIC NOT NULL,
    fee                NUMERIC NOT NULL,
    net                NUMERIC NOT NULL,
    PRIMARY KEY (provider, provider_payout_id, position),
    FOREIGN KEY (provider, provider_payout_id) REFERENCES payouts ON DELETE CASCADE
);
CREATE INDEX payout_lines_by_invoice ON payout_lines (invoice_id) WHERE invoice_id IS NOT NULL;
