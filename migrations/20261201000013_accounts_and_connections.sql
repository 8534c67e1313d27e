-- Accounts and their provider connections (issue 13). An account is one business settle
-- reconciles for; a connection is how one provider reaches it: a Stripe (Connect) account
-- `acct_…` or a GoCardless organisation `OR…`, in live or test mode, with the webhook secrets of
-- its own endpoint and an API key for the provider's API. Secrets are sealed (`src/sealed.rs`):
-- these columns never hold one in clear.
ALTER TABLE accounts ADD COLUMN name TEXT;

CREATE TABLE provider_connections (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    provider        TEXT NOT NULL CHECK (provider IN ('STRIPE', 'GOCARDLESS')),
    mode            TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    -- The provider's id for the account: Stripe `acct_…`, GoCardless `OR…`.
    external_id     TEXT NOT NULL CHECK (external_id <> ''),
    -- Newest first; the receiver accepts any of them (rotation).
    webhook_secrets TEXT[] NOT NULL DEFAULT '{}',
    api_key         TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- One connection per provider account and mode: an event routes to exactly one.
    UNIQUE (provider, mode, external_id)
);
CREATE INDEX provider_connections_account ON provider_connections (account_id);
