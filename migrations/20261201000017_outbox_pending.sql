-- The outbox relay's work list (issue 15, §3): the ids of the outbox rows not published yet.
--
-- The relay used to mark a row published by setting outbox.published_at, and the partial index
-- that found the unpublished rows (WHERE published_at IS NULL) made every such update non-HOT: a
-- new copy of the row, its JSON body included, and a new entry in each of the outbox's indexes,
-- for every reconciliation event, then dead tuples for vacuum to clear from the heap and the
-- indexes. Now the outbox is append-only (inserted by the worker's transaction, deleted by
-- retention), its id goes into this small table in the same statement, and publishing deletes
-- the id: a few dozen bytes per event, in a table that stays as small as the backlog.
--
-- No foreign key to the outbox: the pair is written by one statement (`outbox_insert!`), and
-- retention deletes only outbox rows whose id is no longer here. A key would cost a lookup per
-- row on the worker's hot path to prove what that statement already guarantees.
CREATE TABLE outbox_pending (
    id BIGINT PRIMARY KEY
);
INSERT INTO outbox_pending (id) SELECT id FROM outbox WHERE published_at IS NULL;
DROP INDEX outbox_unpublished;
ALTER TABLE outbox DROP COLUMN published_at;
COMMENT ON TABLE outbox_pending IS
    'ids of the outbox rows the relay has not published yet; published = deleted from here';
