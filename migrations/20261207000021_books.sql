-- The books (issue 33): a period's movements and payouts of one account, read by the day they
-- happened (`settle books export`), and what the drift check last found per provider balance.
CREATE INDEX money_movements_by_time ON money_movements (account_id, occurred_at);
CREATE INDEX payouts_by_arrival ON payouts (account_id, arrival_date);

-- The webhook gap: how many events the last successful sweep of a source found that no webhook
-- delivered (`settle_webhook_gap_events`), and the last sweep that found any (`settle books
-- drift`, the console): a sweep a second later finds none, the operator still needs to know.
ALTER TABLE backfill_cursors
    ADD COLUMN last_missed INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN gap_events INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN gap_at TIMESTAMPTZ;

-- What each provider balance check found: the provider's balance for an account's source, what
-- settle's books expect it to hold, per currency. The worker's drift check writes it; the console
-- and `settle books drift` read it.
CREATE TABLE provider_balance_checks (
    account_id TEXT NOT NULL,
    provider   TEXT NOT NULL CHECK (provider IN ('STRIPE', 'GOCARDLESS')),
    source     TEXT NOT NULL,
    currency   currency_code NOT NULL,
    held       BIGINT NOT NULL,
    expected   BIGINT NOT NULL,
    drift      BIGINT NOT NULL,
    checked_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, provider, source, currency)
);

-- Each self-audit (`settle audit`): what it rebuilt from the inbox's events and every difference
-- from the live tables it found, for the console.
CREATE TABLE audit_runs (
    id          BIGSERIAL PRIMARY KEY,
    since       TIMESTAMPTZ NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    invoices    INTEGER NOT NULL,
    events      INTEGER NOT NULL,
    differences JSONB NOT NULL
);
