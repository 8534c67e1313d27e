-- Every row settle stores belongs to an account (the billing system's sequenceAccountId).
CREATE TABLE accounts (
    id         TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
