-- The worker's hot path, measured with pg_stat_statements during the worker benchmark.
--
-- 1. Every row the worker writes carries the one configured account. A foreign key to `accounts`
--    makes each insert take a KEY SHARE lock on that single row; concurrent transactions sharing a
--    row lock turn it into a MultiXact, and that bookkeeping was the largest cost of the inserts.
--    The inbox, outbox and payments get their account from the invoice or the configuration, never
--    from a caller, and accounts are never deleted: the tables the API writes keep their keys.
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_account_id_fkey;
ALTER TABLE outbox DROP CONSTRAINT outbox_account_id_fkey;
ALTER TABLE payments DROP CONSTRAINT payments_account_id_fkey;

-- 2. Payloads are stored as the text that arrived (`json` keeps it verbatim; `jsonb` would parse it
--    into a tree, reorder its keys and cost more to write). The inbox keeps the provider's raw
--    event, so `settle events replay` re-drives exactly what was received; the outbox keeps the
--    message body the relay publishes.
ALTER TABLE webhook_events ALTER COLUMN payload TYPE json USING payload::json;
ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json;
