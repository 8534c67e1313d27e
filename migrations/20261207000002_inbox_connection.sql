-- Issue 28 (tenants): the connection endpoint an event came through, kept with its inbox row so
-- `settle events replay` routes it as the original delivery was routed. Without it a replayed
-- event is routed by its body alone, and one from a direct account's own endpoint (no `account`
-- in the body) would go to the default account. NULL: the platform's endpoint (or a row from
-- before this column, which replays as it did).
ALTER TABLE webhook_events ADD COLUMN connection_id TEXT;
