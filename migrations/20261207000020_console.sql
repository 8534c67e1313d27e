-- The operator console (issue 32): who may sign in, their sessions, what they did, and how an
-- event is found by any id it names.

-- An operator of the console. The secret (a password or a generated login token) is kept as an
-- Argon2id PHC string only. `accounts` NULL: every account; otherwise only these.
CREATE TABLE operators (
    name        TEXT PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._@-]{0,63}$'),
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    accounts    TEXT[] CHECK (accounts IS NULL OR cardinality(accounts) > 0),
    secret_hash TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled_at TIMESTAMPTZ
);

-- A signed-in browser: the cookie carries a random token, the table its SHA-256 (a stolen
-- backup signs no one in), with the form token that every POST of the session must send back.
CREATE TABLE operator_sessions (
    token_sha256 BYTEA PRIMARY KEY,
    operator     TEXT NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX operator_sessions_operator ON operator_sessions (operator);

-- Every write an operator makes in the console: who, what, when, why and what it touched. Only
-- ever inserted. `account_id` is the account of what it touched, when it has one.
CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    operator   TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    account_id TEXT,
    reason     TEXT NOT NULL CHECK (btrim(reason) <> ''),
    outcome    TEXT NOT NULL
);

-- The ids an operator finds an event by: its own, its object's, and the payment, mandate, refund
-- or payout it names (`providers::Rules::object_ids`), written with the inbox row. NULL for rows
-- written before this column (they are found by event id through the primary key).
ALTER TABLE webhook_events ADD COLUMN object_ids TEXT[];
CREATE INDEX webhook_events_object_ids ON webhook_events USING gin (object_ids);

-- The console lists events newest first, a page at a time (keyset on received_at): a b-tree
-- gives that order, where the BRIN index retention used only finds ranges. Retention's
-- `received_at < cutoff` reads the b-tree as well. An insert adds one entry at its right edge.
CREATE INDEX webhook_events_received ON webhook_events (received_at);
DROP INDEX webhook_events_received_at;

-- The console's filters, newest first a page at a time: by type (a rare one among a million
-- must not mean reading them all) and by outcome (an `ignored` or `stale` among the applied).
-- The worker writes an outcome other than `applied` in the insert itself, or in one update of
-- the row it just inserted.
-- Not led by the account: an operator of every account (the platform's) filters all of them at
-- once, and one scoped to a few reads these in time order, skipping the others' rows.
CREATE INDEX webhook_events_by_type ON webhook_events (event_type, received_at);
CREATE INDEX webhook_events_by_outcome ON webhook_events (outcome, received_at);
