-- Retention (issue 12, §6): the worker deletes, in small batches, inbox rows older than
-- retention.inbox_days (their payloads hold personal data), published outbox rows, sent or failed
-- notifications and replayed dead letters past their own windows.
--
-- The inbox is found by age through a BRIN index on received_at: rows arrive in time order, so a
-- few hundred bytes of block ranges find the old ones, and an insert costs next to nothing (a
-- b-tree would add an entry to every insert of the worker's hot path). received_at is never
-- updated, so the worker's outcome updates stay HOT. The other tables are read oldest first through
-- their primary keys, which grow with time.
CREATE INDEX webhook_events_received_at ON webhook_events USING brin (received_at);
